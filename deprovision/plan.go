package deprovision

// StepKind names what a step does. DPS steps come before hub steps in every plan.
type StepKind string

// Step kinds.
const (
	StepDisableEnrollment        StepKind = "dps.disable-enrollment"
	StepEnableEnrollment         StepKind = "dps.enable-enrollment"
	StepDeleteEnrollment         StepKind = "dps.delete-enrollment"
	StepCreateBlockingEnrollment StepKind = "dps.create-blocking-enrollment"
	StepDeleteBlockingEnrollment StepKind = "dps.delete-blocking-enrollment"
	StepRetargetEnrollment       StepKind = "dps.retarget-enrollment"
	StepCreateMoveEnrollment     StepKind = "dps.create-move-enrollment"
	StepDeleteRegistration       StepKind = "dps.delete-registration"
	StepDisableGroup             StepKind = "dps.disable-group"
	StepDeleteGroup              StepKind = "dps.delete-group"
	StepDisableDevice            StepKind = "hub.disable-device"
	StepEnableDevice             StepKind = "hub.enable-device"
	StepDeleteDevice             StepKind = "hub.delete-device"
	// StepGroupMembers applies a hub action to every registered member of a group (fan-out).
	StepGroupMembers StepKind = "hub.group-members"
	// StepDisableDerivedEnrollments disables every enabled individual enrollment whose keys
	// derive from a compromised symmetric-key group's keys.
	StepDisableDerivedEnrollments StepKind = "dps.disable-derived-enrollments"
	// StepAwaitMove keeps a moved device's old identity until DPS shows the device assigned
	// to the target hub; [Moves] confirms the move later.
	StepAwaitMove StepKind = "hub.await-move"
	// StepConfirmMove is the journal record of a confirmed move (written by [Moves], not planned).
	StepConfirmMove StepKind = "hub.confirm-move"
)

// Step is one action of a plan, with the reason policy chose it.
type Step struct {
	Kind StepKind
	// Target names what the step acts on, e.g. "dps/enrollments/sensor-042" or
	// "hub1.azure-devices.net/devices/sensor-042".
	Target string
	// Reason says why policy chose this step, in words an auditor can check against the matrix.
	Reason string
	// Params carries what the step needs beyond its target (hub, device id, status reason,
	// target hub, attestation of a blocking enrollment, action for group members). Never secrets.
	Params map[string]string
}

// Plan is the ordered list of steps for one request. It is the pure output of the planner.
type Plan struct {
	Intent Intent
	// Path names the row of the policy matrix that was chosen, e.g. "individual/tpm/revoke".
	Path  string
	Steps []Step
	// Notes explain choices that are not steps (e.g. "X.509 enrollment disabled, not deleted:
	// enabled group g1 signs its issuer").
	Notes []string
}

package deprovision

import "time"

// Intent is what happened to a device or a group, as the sender says it (docs/policy.md).
type Intent string

// The intents. Their meaning, and the path each takes for each kind of device, is the policy
// matrix in docs/policy.md.
const (
	IntentCompromised      Intent = "compromised"
	IntentStolen           Intent = "stolen"
	IntentLost             Intent = "lost"
	IntentRecovered        Intent = "recovered"
	IntentSold             Intent = "sold"
	IntentMoved            Intent = "moved"
	IntentRetired          Intent = "retired"
	IntentGroupCompromised Intent = "group-compromised"
	IntentGroupRetired     Intent = "group-retired"
)

// Action is the hub action a sender may ask for where policy allows a choice.
type Action string

// Actions.
const (
	ActionDefault Action = ""
	ActionDisable Action = "disable"
	ActionDelete  Action = "delete"
)

// Request is one event normalized: everything the engine needs and nothing of the transport.
type Request struct {
	// EventID and Source identify the event; together they identify the operation, so a
	// redelivered event resumes its operation instead of starting another.
	EventID   string
	Source    string
	EventType string
	EventTime time.Time

	Intent            Intent
	RegistrationID    string
	DeviceID          string
	Hub               string
	EnrollmentGroupID string
	// CertificatePEM is the device's leaf certificate, when the sender has it.
	CertificatePEM string
	Reason         string
	Action         Action
	TargetHub      string
	DryRun         bool
	// SubmittedBy is who asked through the Operations endpoints (nil for events): verified
	// when App Service authentication signed the caller in. It does not make the request
	// another event (RequestDiff leaves it out).
	SubmittedBy *Principal `json:",omitempty"`
}

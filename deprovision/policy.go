package deprovision

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Parameter names of [Step.Params].
const (
	ParamHub            = "hub"
	ParamDeviceID       = "deviceId"
	ParamRegistrationID = "registrationId"
	ParamGroupID        = "groupId"
	ParamStatusReason   = "statusReason"
	ParamTargetHub      = "targetHub"
	ParamAttestation    = "attestation"
	ParamAction         = "action"
	// ParamBefore is the target's state when the plan was made ("enabled", "disabled",
	// "present", "missing"): on a resume it tells a step finished before an interruption
	// ("done") from one that found nothing to do ("no-change").
	ParamBefore = "before"
	// ParamCovers marks an individual enrollment that stands in front of an enrollment group
	// ("group"): the device row remembers it (GroupMember), so later events never delete it.
	ParamCovers = "covers"
)

// StepDeleteGroupRegistrations deletes every registration record of a retired group, so that
// orphaned records do not count against the DPS registrations quota (Microsoft's "How to
// deprovision devices" notes that deleting a group leaves its records, and they still count).
const StepDeleteGroupRegistrations StepKind = "dps.delete-group-registrations"

// DPSStep reports whether k acts on DPS (every DPS step of a plan comes before its hub steps).
func (k StepKind) DPSStep() bool { return strings.HasPrefix(string(k), "dps.") }

func (p *Plan) add(k StepKind, target, reason string, params map[string]string) {
	p.Steps = append(p.Steps, Step{Kind: k, Target: target, Reason: reason, Params: params})
}

func (p *Plan) note(format string, args ...any) {
	p.Notes = append(p.Notes, fmt.Sprintf(format, args...))
}

// String renders the plan for a person: the matrix row, numbered steps with their reasons, and notes.
func (p *Plan) String() string {
	if p == nil {
		return "(no plan)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "plan for %s (path %s)\n", p.Intent, p.Path)
	if len(p.Steps) == 0 {
		b.WriteString("  no steps: nothing to change\n")
	}
	for i, s := range p.Steps {
		fmt.Fprintf(&b, "  %d. %s %s\n     because %s\n", i+1, s.Kind, s.Target, s.Reason)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	return b.String()
}

// Target names.
func enrollmentTarget(rid string) string   { return "dps/enrollments/" + rid }
func registrationTarget(rid string) string { return "dps/registrations/" + rid }
func groupTarget(gid string) string        { return "dps/enrollmentGroups/" + gid }
func deviceTarget(hub, id string) string   { return hub + "/devices/" + id }

func enabledWord(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

// StatusReason is the hub statusReason the engine writes: the intent and the sender's reason,
// cut to the hub's 128 characters.
func StatusReason(req Request) string {
	s := "dpsdeprov " + string(req.Intent)
	if req.Reason != "" {
		s += ": " + req.Reason
	}
	for utf8.RuneCountInString(s) > 128 {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// PlanFor is the policy matrix (docs/policy.md) as a pure function: the resolved device, the
// request and the device's journal row (nil when this system never touched it) in, an ordered
// plan out. It returns a [Refusal] when policy says no; the reason says why and what to do.
func PlanFor(r *Resolved, req Request, prior *DeviceState) (*Plan, error) {
	if prior != nil && prior.Intent == "" {
		prior = nil // a row that only holds a lock records no change
	}
	if p, ok, err := planSpecial(r, req, prior); ok {
		return p, err
	}
	if err := precedence(req, prior); err != nil {
		return nil, err
	}
	action, err := hubAction(req.Intent, req.Action)
	if err != nil {
		return nil, err
	}
	p := &Plan{Intent: req.Intent}
	p.Notes = append(p.Notes, r.Notes...)

	if req.Intent.GroupWide() {
		return planGroup(p, r, req, action)
	}
	if r.Kind == KindUnknown {
		if prior != nil && prior.Intent.Final() && req.Intent.Revoking() {
			p.Path = "unknown/after-" + string(prior.Intent)
			p.note("the device was %s by operation %s: nothing is left to revoke", prior.Intent, prior.OperationID)
			return p, nil
		}
		return nil, refuse("unknown device %s: DPS has no individual enrollment and no registration state for it; if it is a member of an enrollment group that never registered, send enrollmentGroupId", r.RegistrationID)
	}
	// An individual enrollment this system (or an operator) created to block a group member
	// must never be deleted: deleting it re-admits the device through its group.
	blocking := r.Kind == KindIndividual && (prior != nil && (prior.BlockingEnrollment || prior.GroupMember) ||
		r.Group != nil && r.Group.Enabled)

	switch req.Intent {
	case IntentCompromised, IntentLost, IntentStolen:
		planRevoke(p, r, req, blocking)
	case IntentSold, IntentRetired:
		planRemove(p, r, req, blocking, prior)
	case IntentMoved:
		if err := planMove(p, r, req, action); err != nil {
			return nil, err
		}
		return p, nil // the old identity waits for the move (move.go), instead of a hub step
	case IntentRecovered:
		return planRecover(p, r, req, prior)
	}
	planHub(p, r, req, action)
	return p, nil
}

// precedence applies the rules between the device row and the new event (docs/policy.md,
// "Conflicting events").
func precedence(req Request, prior *DeviceState) error {
	if req.Intent.GroupWide() {
		return nil
	}
	if prior == nil {
		if req.Intent == IntentRecovered {
			return refuse("nothing to recover: this system has no lost or stolen revocation of %s on record", req.RegistrationID)
		}
		return nil
	}
	if !req.EventTime.IsZero() && !prior.EventTime.IsZero() && req.EventTime.Before(prior.EventTime) &&
		req.Intent.rank() <= prior.Intent.rank() {
		return refuse("stale event: it happened at %s, before the device's last change (%s at %s by operation %s)",
			req.EventTime.UTC().Format("2006-01-02T15:04:05Z07:00"), prior.Intent,
			prior.EventTime.UTC().Format("2006-01-02T15:04:05Z07:00"), prior.OperationID)
	}
	switch {
	case prior.Intent.Final():
		switch req.Intent {
		case IntentRecovered, IntentLost, IntentStolen, IntentMoved:
			return refuse("the device was %s by operation %s, which is final: %s cannot apply", prior.Intent, prior.OperationID, req.Intent)
		}
	case prior.Intent == IntentCompromised:
		switch req.Intent {
		case IntentRecovered:
			return refuse("the device is compromised (operation %s): recovered never undoes a compromise; re-enroll it deliberately with new credentials, then send re-enrolled", prior.OperationID)
		case IntentLost, IntentStolen:
			return refuse("the device is already compromised (operation %s), which outranks %s: nothing to change", prior.OperationID, req.Intent)
		case IntentMoved:
			return refuse("the device is compromised (operation %s): a compromised device is not moved", prior.OperationID)
		}
	case prior.Intent == IntentLost || prior.Intent == IntentStolen:
		if req.Intent == IntentMoved {
			return refuse("the device is %s (operation %s): send device-recovered before moving it", prior.Intent, prior.OperationID)
		}
	default: // recovered, moved
		if req.Intent == IntentRecovered {
			return refuse("nothing to recover: the device's last change was %s (operation %s), not a lost or stolen revocation", prior.Intent, prior.OperationID)
		}
	}
	return nil
}

// planRevoke: lost, stolen, compromised: temporary in DPS (disable, or a disabled blocking
// enrollment for a group member), so evidence stays and lost/stolen can be undone.
func planRevoke(p *Plan, r *Resolved, req Request, blocking bool) {
	rid := r.RegistrationID
	switch {
	case r.Kind == KindIndividual && blocking:
		p.Path = "group-member/blocked/revoke"
		p.add(StepDisableEnrollment, enrollmentTarget(rid),
			"the device's individual enrollment stands in front of its enrollment group: it stays, and must be disabled",
			map[string]string{ParamBefore: enabledWord(r.Enrollment.Enabled), ParamCovers: "group"})
	case r.Kind == KindIndividual:
		p.Path = "individual/" + string(r.Attestation) + "/revoke"
		p.add(StepDisableEnrollment, enrollmentTarget(rid),
			fmt.Sprintf("%s of an individual %s enrollment: disable it (temporary, keeps the record)", req.Intent, r.Attestation),
			map[string]string{ParamBefore: enabledWord(r.Enrollment.Enabled)})
	default:
		addBlock(p, r, req, "revoke")
	}
}

// addBlock adds the disabled individual enrollment that blocks one group member.
func addBlock(p *Plan, r *Resolved, req Request, verb string) {
	rid := r.RegistrationID
	att := AttestationSymmetricKey
	why := "no leaf certificate in the request: a disabled symmetric-key individual enrollment with the device's registration id blocks it (DPS looks up individual enrollments by registration id first)"
	if r.Attestation == AttestationSymmetricKey {
		why = "member of a symmetric-key group: a disabled symmetric-key individual enrollment with the same registration id blocks it (DPS looks up individual enrollments first)"
	} else if r.Leaf != nil && !strings.EqualFold(CommonName(r.Leaf.SubjectName), rid) {
		p.note("the certificate's CN %q is not the registration id %s, so it cannot block this device; a symmetric-key block on the registration id is used instead", CommonName(r.Leaf.SubjectName), rid)
	} else if r.Leaf != nil {
		att = AttestationX509
		why = "member of an X.509 group: a disabled individual enrollment for its leaf certificate (registration id = certificate CN) blocks it while the group stays enabled"
	}
	at := string(r.Attestation)
	if at == "" {
		at = "unknown"
	}
	p.Path = "group-member/" + at + "/" + verb
	params := map[string]string{ParamAttestation: string(att), ParamBefore: "missing"}
	if r.Group != nil {
		params[ParamGroupID] = r.Group.ID
	}
	if r.EnrollmentUnread {
		params[ParamProbe] = "true"
	}
	p.add(StepCreateBlockingEnrollment, enrollmentTarget(rid), why, params)
	p.note("never delete the blocking enrollment of %s: the device would re-enroll through its group", rid)
}

// planRemove: sold, retired: permanent in DPS where that is safe.
func planRemove(p *Plan, r *Resolved, req Request, blocking bool, prior *DeviceState) {
	rid := r.RegistrationID
	switch {
	case r.Kind == KindIndividual && blocking:
		p.Path = "group-member/blocked/remove"
		p.add(StepDisableEnrollment, enrollmentTarget(rid),
			"the device's individual enrollment stands in front of its enrollment group: deleting it would let the group admit the device again, so it stays, disabled",
			map[string]string{ParamBefore: enabledWord(r.Enrollment.Enabled), ParamCovers: "group"})
	case r.Kind == KindIndividual:
		p.Path = "individual/" + string(r.Attestation) + "/remove"
		// Deleting is safe only when no enabled group could admit the device without the
		// enrollment: the X.509 chain, and the evidence of DPS and the hub (evidence.go).
		cover := removeCover(p, r, req, prior)
		if cover.Covered {
			p.add(StepDisableEnrollment, enrollmentTarget(rid),
				fmt.Sprintf("%s individual enrollment disabled, not deleted: %s; deleting it would let the device re-enroll through that group", r.Attestation, cover.Reason),
				map[string]string{ParamBefore: enabledWord(r.Enrollment.Enabled), ParamCovers: "group"})
		} else {
			p.add(StepDeleteEnrollment, enrollmentTarget(rid),
				fmt.Sprintf("%s of an individual %s enrollment: delete it, which is safe because %s", req.Intent, r.Attestation, cover.Reason),
				map[string]string{ParamBefore: "present"})
		}
	default:
		addBlock(p, r, req, "remove")
	}
	if r.Registration != nil {
		p.add(StepDeleteRegistration, registrationTarget(rid),
			"ownership ends: the registration record goes too (orphaned records count against the DPS quota)",
			map[string]string{ParamBefore: "present"})
	}
}

func x509Cover(p *Plan, r *Resolved, req Request) Cover {
	certs := r.Enrollment.ClientCerts
	if len(certs) == 0 {
		return Cover{Covered: true, Reason: "DPS returned no certificate info for the enrollment, so no group can be ruled out"}
	}
	var last Cover
	for _, leaf := range certs {
		ch, note := BuildChain(leaf, req.CertificatePEM)
		if note != "" {
			p.note("%s", note)
		}
		if last = CoveringGroup(ch, r.Groups, ""); last.Covered {
			return last
		}
	}
	return last
}

// planMove: the enrollment stays (or is created for a group member) pointing at the target
// hub, and the old identity waits until DPS shows the device assigned to it (addAwaitMove).
func planMove(p *Plan, r *Resolved, req Request, action Action) error {
	rid := r.RegistrationID
	if r.Hub != "" && strings.EqualFold(r.Hub, req.TargetHub) {
		return refuse("the device is already assigned to %s: nothing to move", req.TargetHub)
	}
	if r.Kind == KindIndividual {
		p.Path = "individual/" + string(r.Attestation) + "/move"
		p.add(StepRetargetEnrollment, enrollmentTarget(rid),
			fmt.Sprintf("moved: the enrollment stays and points at %s (static allocation; re-provisioning moves the device)", req.TargetHub),
			map[string]string{ParamTargetHub: req.TargetHub})
		if !r.Enrollment.Enabled {
			p.note("the enrollment is disabled: the device will not provision in %s until it is enabled", req.TargetHub)
		}
		addAwaitMove(p, r, req, action)
		return nil
	}
	params := map[string]string{ParamTargetHub: req.TargetHub, ParamBefore: "missing"}
	switch {
	case r.Attestation == AttestationSymmetricKey:
		if r.Group == nil {
			return refuse("moving %s, a member of a symmetric-key group, needs enrollmentGroupId: its individual enrollment uses the keys derived from that group's keys", rid)
		}
		switch r.Membership {
		case MemberConfirmed:
			if !r.Group.Enabled {
				return refuse("group %s is disabled, so %s cannot provision now; an enabled individual enrollment would let it: enable the group first, or send device-retired", r.Group.ID, rid)
			}
		case MemberMismatch:
			return refuse("%s is not a member of group %s: no key derived from the group's keys is the hub identity's; an individual enrollment with those keys would lock the device out", rid, r.Group.ID)
		default:
			return refuse("cannot confirm that %s is a member of group %s: it has no SAS hub identity to compare the group's derived keys with, and an individual enrollment with keys of the wrong group would lock the device out", rid, r.Group.ID)
		}
		p.Path = "group-member/symmetricKey/move"
		params[ParamAttestation] = string(AttestationSymmetricKey)
		params[ParamGroupID] = r.Group.ID
		p.add(StepCreateMoveEnrollment, enrollmentTarget(rid),
			fmt.Sprintf("moved group member (its hub identity's key derives from group %s's keys): an enabled individual enrollment with both keys derived from the group's primary and secondary key, pointed at %s", r.Group.ID, req.TargetHub), params)
	case r.Leaf != nil:
		if !strings.EqualFold(CommonName(r.Leaf.SubjectName), rid) {
			return refuse("the certificate's CN %q is not the registration id %s: DPS would not match it", CommonName(r.Leaf.SubjectName), rid)
		}
		// An enabled individual enrollment would admit the device whatever its group says:
		// the move may only keep a device that its group admits now (a group disabled by
		// hand or by group-compromised must not be bypassed).
		g, why := admittingGroup(*r.Leaf, req.CertificatePEM, r.Groups)
		switch {
		case g == nil:
			return refuse("cannot tell that %s can provision now: %s; a move gives it an enabled individual enrollment", rid, why)
		case !g.Enabled:
			return refuse("group %s, which admits %s, is disabled, so the device cannot provision now; an enabled individual enrollment would let it: enable the group first, or send device-retired", g.ID, rid)
		}
		p.Path = "group-member/x509/move"
		params[ParamAttestation] = string(AttestationX509)
		p.add(StepCreateMoveEnrollment, enrollmentTarget(rid),
			fmt.Sprintf("moved group member: an enabled individual X.509 enrollment for its leaf certificate, pointed at %s", req.TargetHub), params)
	default:
		return refuse("moving %s, a group member, needs its leaf certificate (X.509) or enrollmentGroupId of its symmetric-key group", rid)
	}
	addAwaitMove(p, r, req, action)
	return nil
}

// addAwaitMove adds the hub side of a move: the old identity stays, with its twin and the
// channel that tells the device to re-provision, until DPS shows the device assigned to the
// target hub. With migrateDeviceData DPS moves the twin and removes the old identity itself
// when the device re-provisions (move.go has the sources); the Cleanup timer then confirms
// the move and removes whatever is left ([Moves]).
func addAwaitMove(p *Plan, r *Resolved, req Request, action Action) {
	if r.Hub == "" {
		p.note("%s has no assigned hub (it never provisioned): no hub identity to leave", r.RegistrationID)
		return
	}
	params := map[string]string{ParamHub: r.Hub, ParamDeviceID: r.DeviceID, ParamTargetHub: req.TargetHub, ParamAction: string(action)}
	p.add(StepAwaitMove, deviceTarget(r.Hub, r.DeviceID),
		fmt.Sprintf("moved: the identity in %s stays until DPS shows the device assigned to %s (DPS migrates its twin and removes it when the device re-provisions); the Cleanup timer confirms the move, and then %ss what is left", r.Hub, req.TargetHub, action),
		params)
}

// planRecover undoes this system's own lost/stolen revocation, as the device row proves it.
func planRecover(p *Plan, r *Resolved, req Request, prior *DeviceState) (*Plan, error) {
	rid := r.RegistrationID
	if prior.BlockingEnrollment {
		p.Path = "group-member/recover"
		before := "missing"
		if r.Enrollment != nil {
			before = "present"
		}
		p.add(StepDeleteBlockingEnrollment, enrollmentTarget(rid),
			fmt.Sprintf("recovered: delete the blocking enrollment this system created for %s (operation %s)", prior.Intent, prior.OperationID),
			map[string]string{ParamBefore: before})
	} else {
		p.Path = "individual/recover"
		switch {
		case r.Enrollment == nil:
			return nil, refuse("cannot recover %s: its individual enrollment no longer exists", rid)
		case prior.FoundDisabled:
			// Not this system's doing: a block made by hand, or someone else's revocation.
			p.note("the individual enrollment of %s was disabled before this system revoked it: it stays disabled", rid)
		default:
			p.add(StepEnableEnrollment, enrollmentTarget(rid),
				fmt.Sprintf("recovered: enable the enrollment this system disabled for %s (operation %s)", prior.Intent, prior.OperationID),
				map[string]string{ParamBefore: enabledWord(r.Enrollment.Enabled)})
		}
	}
	hub, id := r.Hub, r.DeviceID
	if hub == "" {
		hub, id = prior.Hub, prior.DeviceID
	}
	switch {
	case prior.HubAction == "disabled" && hub != "":
		before := "missing"
		if r.Device != nil {
			before = enabledWord(r.Device.Enabled)
		}
		p.add(StepEnableDevice, deviceTarget(hub, id),
			"recovered: enable the hub identity this system disabled",
			map[string]string{ParamHub: hub, ParamDeviceID: id, ParamBefore: before})
	case prior.HubAction == "disabled":
		p.note("the hub of %s is unknown: its identity cannot be enabled", rid)
	}
	return p, nil
}

// planHub adds the hub step, after every DPS step.
func planHub(p *Plan, r *Resolved, req Request, action Action) {
	if r.Hub == "" {
		p.note("%s has no assigned hub (it never provisioned): no hub identity to change", r.RegistrationID)
		return
	}
	params := map[string]string{ParamHub: r.Hub, ParamDeviceID: r.DeviceID}
	before := "missing"
	if r.Device != nil {
		before = enabledWord(r.Device.Enabled)
	}
	switch action {
	case ActionDisable:
		params[ParamStatusReason] = StatusReason(req)
		params[ParamBefore] = before
		p.add(StepDisableDevice, deviceTarget(r.Hub, r.DeviceID),
			fmt.Sprintf("%s: disable the hub identity (the hub checks no revocation list; disabled blocks every device-facing endpoint, and the identity stays as a record)", req.Intent), params)
	case ActionDelete:
		if before != "missing" {
			before = "present"
		}
		params[ParamBefore] = before
		why := fmt.Sprintf("%s: delete the hub identity", req.Intent)
		if req.Intent == IntentMoved {
			why = "moved: the device leaves its old hub"
		}
		p.add(StepDeleteDevice, deviceTarget(r.Hub, r.DeviceID), why, params)
	}
}

func planGroup(p *Plan, r *Resolved, req Request, action Action) (*Plan, error) {
	if r.Kind != KindGroup || r.Group == nil {
		return nil, refuse("enrollment group %s does not exist in DPS", req.EnrollmentGroupID)
	}
	g := r.Group
	p.Path = "group/" + string(g.Attestation) + "/" + strings.TrimPrefix(string(req.Intent), "group-")
	p.add(StepDisableGroup, groupTarget(g.ID),
		"first disable the group, so that no member can provision again while its hub identities change",
		map[string]string{ParamBefore: enabledWord(g.Enabled)})
	if req.Intent == IntentGroupCompromised && g.Attestation == AttestationSymmetricKey {
		p.add(StepDisableDerivedEnrollments, groupTarget(g.ID)+"/derived-enrollments",
			"the group's keys are compromised: an individual enrollment whose keys derive from them (a moved member's, whoever made it) admits whoever holds the group key, so each is disabled and its device recorded compromised (recovered cannot enable it again)",
			map[string]string{ParamGroupID: g.ID})
	}
	params := map[string]string{ParamGroupID: g.ID, ParamAction: string(action)}
	if action == ActionDisable {
		params[ParamStatusReason] = StatusReason(req)
	}
	p.add(StepGroupMembers, groupTarget(g.ID)+"/members",
		fmt.Sprintf("%s: %s every registered member's hub identity, page by page from the group's registration states", req.Intent, action), params)
	if req.Intent != IntentGroupRetired {
		return p, nil
	}
	p.add(StepDeleteGroupRegistrations, groupTarget(g.ID)+"/registrations",
		"the group goes away: delete its registration records first (deleting a group leaves them, and they count against the DPS quota)",
		map[string]string{ParamGroupID: g.ID})
	if c := groupCover(r, req); c.Covered {
		p.note("group %s is kept, disabled, not deleted: %s; deleting it could let its devices re-enroll through that group", g.ID, c.Reason)
	} else {
		p.add(StepDeleteGroup, groupTarget(g.ID),
			"the group goes away, which is safe because "+c.Reason,
			map[string]string{ParamBefore: "present"})
	}
	return p, nil
}

// groupCover: could another enabled group sign this group's certificate?
func groupCover(r *Resolved, req Request) Cover {
	g := r.Group
	if g.Attestation != AttestationX509 {
		return Cover{Reason: "a " + string(g.Attestation) + " group has no certificate another group could sign"}
	}
	if len(g.SigningCerts) == 0 {
		ch := Chain{Above: map[string]bool{}, Top: "its DPS-registered CA"}
		return CoveringGroup(ch, r.Groups, g.ID)
	}
	var last Cover
	for _, s := range g.SigningCerts {
		ch, _ := BuildChain(s, req.CertificatePEM)
		// The group's own certificate counts: another group with the same CA would admit its devices.
		ch.Above[normName(s.SubjectName)] = true
		if t := thumb(s.SHA1Thumbprint); t != "" {
			ch.Above[t] = true
		}
		if last = CoveringGroup(ch, r.Groups, g.ID); last.Covered {
			return last
		}
	}
	return last
}

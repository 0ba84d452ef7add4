package deprovision

import "fmt"

// IntentOrphaned removes a registration record that nothing can use any more: its enrollment
// group was deleted (DPS keeps the records of a deleted group, and they count against the
// registration quota) and the hub identity it points at is gone. The cleanup's orphans pass
// sends it, naming the deleted group. A record whose hub identity still exists is kept: it is
// how a later revocation of the device finds it, even after a group of the same id returns.
const IntentOrphaned Intent = "orphaned"

// planOrphaned deletes the record only while the group is gone, the device has no individual
// enrollment, and its hub identity is gone.
func planOrphaned(r *Resolved, req Request, _ *DeviceState) (*Plan, error) {
	rid := r.RegistrationID
	if req.Action != ActionDefault {
		return nil, refuse("orphaned takes no action (got %q): it deletes a registration record only", req.Action)
	}
	if req.EnrollmentGroupID == "" {
		return nil, refuse("orphaned needs enrollmentGroupId: the deleted group whose record %s is", rid)
	}
	if r.Group != nil {
		return nil, refuse("enrollment group %s exists: the records of its members are not orphaned", req.EnrollmentGroupID)
	}
	if r.Enrollment != nil {
		return nil, refuse("%s has an individual enrollment: its registration record is the enrollment's, not an orphan", rid)
	}
	p := &Plan{Intent: IntentOrphaned}
	if r.Registration == nil {
		p.Path = "orphan/gone"
		p.note("the registration record of %s is already gone: nothing to delete", rid)
		return p, nil
	}
	if r.Device != nil {
		return nil, refuse("the hub identity %s in %s still exists: the record of %s is kept, so that a later revocation of the device can find it", r.DeviceID, r.Hub, rid)
	}
	p.Path = "orphan/delete"
	p.add(StepDeleteRegistration, registrationTarget(rid),
		fmt.Sprintf("the registration record of deleted enrollment group %s, whose hub identity is gone: nothing can use it, and it counts against the DPS registration quota", req.EnrollmentGroupID),
		map[string]string{ParamBefore: "present"})
	return p, nil
}

package deprovision_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
)

// A block made by hand (Microsoft's recipe: a disabled individual enrollment) for a member
// of a symmetric-key group, with no journal row and no group named: sold must not delete it.
func TestSoldKeepsABlockMadeByHand(t *testing.T) {
	w := newWorld()
	setupSKMember(w)
	w.dps.AddEnrollment(d.Enrollment{RegistrationID: "sensor-042", Attestation: d.AttestationSymmetricKey, Enabled: false,
		PrimaryKey: "cmFuZG9tLWtleS1vbmUtMTIzNDU2Nzg5MGFiY2RlZg==", SecondaryKey: "cmFuZG9tLWtleS10d28tMTIzNDU2Nzg5MGFiY2RlZg=="})
	op := submit(t, w.engine(w.deps()), devReq("s", d.IntentSold))
	if op.Status != d.StatusSucceeded || op.Plan.Steps[0].Kind != d.StepDisableEnrollment {
		t.Fatalf("%s %s\n%s", op.Status, op.Reason, op.Plan)
	}
	if !strings.Contains(op.Plan.Steps[0].Reason, "sk-group") {
		t.Errorf("the plan must name the group whose derived key the hub identity holds: %s", op.Plan.Steps[0].Reason)
	}
	if w.dps.CanProvision("sensor-042", "sk-group") {
		t.Fatal("the sold device can provision through its group")
	}
}

// After a symmetric-key group's compromise, the individual enrollment this system made for a
// moved member (keys derived from the group's) admits nobody.
func TestGroupCompromiseDisablesEnrollmentsKeyedFromTheGroup(t *testing.T) {
	w := newWorld()
	setupSKMember(w)
	// An unrelated enabled symmetric-key enrollment must stay.
	w.dps.AddEnrollment(d.Enrollment{RegistrationID: "other-1", Attestation: d.AttestationSymmetricKey, Enabled: true,
		PrimaryKey: "b3RoZXIta2V5LW9uZS0xMjM0NTY3ODkwYWJjZGVm", SecondaryKey: "b3RoZXIta2V5LXR3by0xMjM0NTY3ODkwYWJjZGVm"})
	e := w.engine(w.deps())
	m := devReq("m", d.IntentMoved)
	m.TargetHub, m.EnrollmentGroupID = hub2, "sk-group"
	if op := submit(t, e, m); op.Status != d.StatusSucceeded {
		t.Fatalf("moved: %s %s", op.Status, op.Reason)
	}
	k, err := w.dps.EnrollmentKeys(context.Background(), "sensor-042")
	want, _ := d.DerivedKeys(d.SymmetricKeys{Primary: groupKey, Secondary: groupKey}, "sensor-042")
	if err != nil || k != want {
		t.Fatalf("the move enrollment must hold both derived keys: %v", err)
	}
	g := d.Request{EventID: "gc", Source: "sec", Intent: d.IntentGroupCompromised, EnrollmentGroupID: "sk-group", EventTime: t0.Add(3 * time.Hour)}
	op := w.run(t, e, g)
	if op.Status != d.StatusSucceeded {
		t.Fatalf("group-compromised: %s %s\n%s", op.Status, op.Reason, op.Plan)
	}
	if en, _ := w.dps.Enrollment("sensor-042"); en.Enabled {
		t.Fatal("the moved member's enrollment, keyed from the compromised group, is still enabled")
	}
	if en, _ := w.dps.Enrollment("other-1"); !en.Enabled {
		t.Fatal("an enrollment with keys of its own was disabled")
	}
	steps, _ := w.j.Steps(context.Background(), op.ID)
	found := false
	for _, s := range steps {
		found = found || s.Kind == d.StepDisableDerivedEnrollments && s.Outcome == d.StepDone && strings.Contains(s.Error, "sensor-042")
	}
	if !found {
		t.Fatalf("the journal does not name the disabled enrollment: %+v", steps)
	}
	// Its device row says compromised: a later recovered cannot enable its enrollment again.
	if ds, _ := w.j.GetDevice(context.Background(), "sensor-042"); ds.Intent != d.IntentCompromised || ds.OperationID != op.ID {
		t.Fatalf("device row %+v", ds)
	}
	r := devReq("found", d.IntentRecovered)
	r.EventTime = t0.Add(4 * time.Hour)
	if op := submit(t, e, r); op.Status != d.StatusRejected {
		t.Fatalf("recovered after the group's compromise: %s %s", op.Status, op.Reason)
	}
}

// A moved symmetric-key member whose named group is not its own is refused, and nothing changes.
func TestMoveChecksTheNamedGroup(t *testing.T) {
	w := newWorld()
	setupSKMember(w)
	w.dps.AddGroup(d.Group{ID: "other-group", Attestation: d.AttestationSymmetricKey, Enabled: true}, "b3RoZXItZ3JvdXAta2V5LTEyMzQ1Njc4OTBhYmNkZWY=")
	m := devReq("m", d.IntentMoved)
	m.TargetHub, m.EnrollmentGroupID = hub2, "other-group"
	op := submit(t, w.engine(w.deps()), m)
	if op.Status != d.StatusRejected || !strings.Contains(op.Reason, "not a member of group other-group") {
		t.Fatalf("%s %s", op.Status, op.Reason)
	}
	if _, ok := w.dps.Enrollment("sensor-042"); ok {
		t.Fatal("a refused move created an enrollment")
	}
}

// A group disable writes each identity back as read: X.509 members cost one registry
// operation (after one query per batch), SAS members two; keys and types stay.
func TestGroupDisableKeepsIdentities(t *testing.T) {
	w := newWorld()
	w.dps.AddGroup(d.Group{ID: "g", Attestation: d.AttestationSymmetricKey, Enabled: true}, groupKey)
	const n = 150
	for i := range n {
		id := fmt.Sprintf("m-%03d", i)
		w.dps.AddRegistration(d.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "g")
		dev := d.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "certificateAuthority"}
		if i%3 == 0 {
			dev.AuthType = "sas"
			dev.Keys, _ = d.DerivedKeys(d.SymmetricKeys{Primary: groupKey, Secondary: groupKey}, id)
		}
		if i == 7 {
			dev.Enabled = false // already disabled: no write
		}
		w.hubs.AddDevice(dev)
	}
	op := w.run(t, w.engine(w.deps()), d.Request{EventID: "gc", Source: "sec", Intent: d.IntentGroupCompromised, EnrollmentGroupID: "g", EventTime: t0.Add(time.Hour)})
	if op.Status != d.StatusSucceeded || op.Progress.Done != n {
		t.Fatalf("%s %s %+v", op.Status, op.Reason, op.Progress)
	}
	sas := (n + 2) / 3
	wantOps := (n - sas - 1) + 2*sas // X.509: the write; SAS: the read and the write; one already disabled
	if w.hubs.RegistryOps != wantOps || w.hubs.Queries != 2 {
		t.Errorf("registry operations %d, queries %d; want %d and 2", w.hubs.RegistryOps, w.hubs.Queries, wantOps)
	}
	for i := range n {
		id := fmt.Sprintf("m-%03d", i)
		dev, _ := w.hubs.Device(hub1, id)
		keys, _ := d.DerivedKeys(d.SymmetricKeys{Primary: groupKey, Secondary: groupKey}, id)
		if dev.Enabled || i%3 == 0 && (dev.AuthType != "sas" || dev.Keys != keys) || i%3 != 0 && dev.AuthType != "certificateAuthority" {
			t.Fatalf("%s after the disable: enabled=%v auth=%s", id, dev.Enabled, dev.AuthType)
		}
	}
}

// A move keeps the old identity; the confirmation waits until DPS shows the device in its
// target hub, then journals the move and ends the wait.
func TestMoveWaitsForTheDevice(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	setupTPM(w)
	op := submit(t, w.engine(w.deps()), func() d.Request { r := devReq("m", d.IntentMoved); r.TargetHub = hub2; return r }())
	if op.Status != d.StatusSucceeded {
		t.Fatalf("%s %s", op.Status, op.Reason)
	}
	if _, ok := w.hubs.Device(hub1, "sensor-042"); !ok {
		t.Fatal("the old identity was removed before the device moved")
	}
	ds, _ := w.j.GetDevice(ctx, "sensor-042")
	if ds.MoveTarget != hub2 || ds.HubAction != d.HubAwaitingMove || ds.Hub != hub1 {
		t.Fatalf("device row %+v", ds)
	}
	moves := d.NewMoves(w.deps())
	if res, err := moves.Confirm(ctx, ds); err != nil || res != d.MoveWaiting {
		t.Fatalf("before the device moved: %s %v", res, err)
	}
	// The device provisions again: DPS assigns it to hub2, migrates it and removes the old
	// identity; here DPS forgot to remove it, so the confirmation does.
	w.dps.AddRegistration(d.Registration{RegistrationID: "sensor-042", DeviceID: "sensor-042", AssignedHub: hub2}, "")
	w.hubs.AddDevice(d.Device{Hub: hub2, DeviceID: "sensor-042", Enabled: true, AuthType: "sas"})
	res, err := moves.Confirm(ctx, ds)
	if err != nil || res != d.MoveConfirmed {
		t.Fatalf("after the device moved: %s %v", res, err)
	}
	if _, ok := w.hubs.Device(hub1, "sensor-042"); ok {
		t.Fatal("the identity left in the old hub was not removed")
	}
	if _, ok := w.hubs.Device(hub2, "sensor-042"); !ok {
		t.Fatal("the new identity was touched")
	}
	ds, _ = w.j.GetDevice(ctx, "sensor-042")
	if ds.MoveTarget != "" || ds.HubAction != d.HubMoved || ds.Hub != hub2 {
		t.Fatalf("device row after confirmation %+v", ds)
	}
	steps, _ := w.j.Steps(ctx, op.ID)
	if last := steps[len(steps)-1]; last.Kind != d.StepConfirmMove || last.Outcome != d.StepDone {
		t.Fatalf("journal %+v", steps)
	}
	if res, _ := moves.Confirm(ctx, ds); res != d.MoveNone {
		t.Fatalf("a confirmed move confirmed again: %s", res)
	}
}

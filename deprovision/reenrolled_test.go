package deprovision_test

import (
	"context"
	"strings"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
)

func approve(t *testing.T, e *d.Engine, id string) *d.Operation {
	t.Helper()
	op, err := e.Approve(context.Background(), id, d.Approval{By: "alice", Reason: "checked the new certificate"})
	if err != nil {
		t.Fatalf("approving %s: %v", id, err)
	}
	return op
}

// The way out of a compromise: the device is re-enrolled with a new certificate, and
// re-enrolled, with that certificate as evidence and a person's approval, ends the compromise
// on record. The old certificate, a disabled enrollment or a claim older than the compromise
// are refused; the evidence is checked again when the approved operation runs.
func TestReEnrolledEndsACompromiseWithEvidenceAndApproval(t *testing.T) {
	w := newWorld()
	ctx := context.Background()
	old, fresh := root.Issue("cam-9", false), root.Issue("cam-9", false)
	w.dps.AddEnrollment(d.Enrollment{RegistrationID: "cam-9", Attestation: d.AttestationX509, Enabled: true, ClientCerts: []d.CertInfo{old.Info()}})
	w.dps.AddRegistration(d.Registration{RegistrationID: "cam-9", DeviceID: "cam-9", AssignedHub: hub1}, "")
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: "cam-9", Enabled: true, AuthType: "selfSigned"})
	e := w.engine(w.deps())
	sub := func(id string, in d.Intent, at time.Time, cert, reason string) *d.Operation {
		t.Helper()
		op, err := e.Submit(ctx, d.Request{EventID: id, Source: "/security", Intent: in, RegistrationID: "cam-9", EventTime: at, CertificatePEM: cert, Reason: reason})
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return op
	}
	compromisedAt := w.clock.Now()
	if op := sub("c", d.IntentCompromised, compromisedAt, "", ""); op.Status != d.StatusSucceeded {
		t.Fatalf("compromised: %s %s", op.Status, op.Reason)
	}
	if op := sub("r", d.IntentRecovered, compromisedAt.Add(time.Minute), "", ""); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "re-enrolled") {
		t.Fatalf("recovered after compromised: %s %q; want refused, naming re-enrolled", op.Status, op.Reason)
	}
	// Not yet re-enrolled: the enrollment is disabled and holds the old certificate.
	if op := sub("e1", d.IntentReEnrolled, compromisedAt.Add(time.Hour), fresh.PEM, ""); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "disabled") {
		t.Fatalf("re-enrolled before re-enrolling: %s %q", op.Status, op.Reason)
	}
	en, _ := w.dps.GetEnrollment(ctx, "cam-9")
	en.Enabled, en.ClientCerts = true, []d.CertInfo{fresh.Info()}
	if _, err := w.dps.PutEnrollment(ctx, en, "*"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		at   time.Time
		cert string
		want string
	}{
		"old certificate": {compromisedAt.Add(time.Hour), old.PEM, "not the one the enrollment"},
		"no certificate":  {compromisedAt.Add(time.Hour), "", "needs the new leaf certificate"},
		"older claim":     {compromisedAt.Add(-time.Hour), fresh.PEM, "older than the compromise"},
	} {
		if op := sub("bad-"+name, d.IntentReEnrolled, c.at, c.cert, ""); op.Status != d.StatusRejected || !strings.Contains(op.Reason, c.want) {
			t.Errorf("re-enrolled with %s: %s %q; want refused (%s)", name, op.Status, op.Reason, c.want)
		}
	}
	held := sub("e2", d.IntentReEnrolled, compromisedAt.Add(time.Hour), fresh.PEM, "new certificate issued")
	if held.Status != d.StatusAwaitingApproval || held.Hold == nil || held.Hold.Limit != d.HoldReEnrolled {
		t.Fatalf("re-enrolled with evidence: %s %+v; want held for a person", held.Status, held.Hold)
	}
	if ds, _, _ := e.DeviceHistory(ctx, "cam-9"); ds.Intent != d.IntentCompromised {
		t.Fatalf("the device row changed before the approval: %+v", ds)
	}
	if op := approve(t, e, held.ID); op.Status != d.StatusSucceeded {
		t.Fatalf("approved re-enrolled: %s %s", op.Status, op.Reason)
	}
	ds, _, _ := e.DeviceHistory(ctx, "cam-9")
	if ds.Intent != d.IntentReEnrolled || ds.Intent.Revoking() {
		t.Fatalf("device row after re-enrolled: %+v; want re-enrolled, not revoking", ds)
	}
	if got, _ := w.dps.Enrollment("cam-9"); !got.Enabled {
		t.Fatal("re-enrolled changed the enrollment")
	}
	// A compromise event older than the re-enrollment is stale; a new one applies.
	if op := sub("c-old", d.IntentCompromised, compromisedAt.Add(30*time.Minute), "", ""); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "stale") {
		t.Fatalf("an older compromise after re-enrolled: %s %q", op.Status, op.Reason)
	}
	if op := sub("c-new", d.IntentCompromised, compromisedAt.Add(2*time.Hour), "", ""); op.Status != d.StatusSucceeded {
		t.Fatalf("a new compromise after re-enrolled: %s %q", op.Status, op.Reason)
	}
}

// A re-enrolled operation approved after its evidence stopped holding fails at its check.
func TestReEnrolledChecksTheEvidenceAgainWhenApproved(t *testing.T) {
	w := newWorld()
	ctx := context.Background()
	setupTPM(w)
	e := w.engine(w.deps())
	at := w.clock.Now()
	if op, _ := e.Submit(ctx, d.Request{EventID: "c", Source: "/s", Intent: d.IntentCompromised, RegistrationID: "sensor-042", EventTime: at}); op.Status != d.StatusSucceeded {
		t.Fatalf("compromised: %+v", op)
	}
	en, _ := w.dps.GetEnrollment(ctx, "sensor-042")
	en.Enabled = true
	if _, err := w.dps.PutEnrollment(ctx, en, "*"); err != nil {
		t.Fatal(err)
	}
	req := d.Request{EventID: "e", Source: "/s", Intent: d.IntentReEnrolled, RegistrationID: "sensor-042", EventTime: at.Add(time.Hour)}
	if op, _ := e.Submit(ctx, req); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "evidence in reason") {
		t.Fatalf("TPM re-enrolled without a statement: %s %q", op.Status, op.Reason)
	}
	req.EventID, req.Reason = "e2", "new EK after board swap, ticket 4411"
	op, err := e.Submit(ctx, req)
	if err != nil || op.Status != d.StatusAwaitingApproval {
		t.Fatalf("TPM re-enrolled with a statement: %v %+v", err, op)
	}
	en, _ = w.dps.GetEnrollment(ctx, "sensor-042")
	en.Enabled = false
	if _, err := w.dps.PutEnrollment(ctx, en, "*"); err != nil {
		t.Fatal(err)
	}
	got, err := e.Approve(ctx, op.ID, d.Approval{By: "bob", Reason: "ticket checked"})
	if err != nil {
		t.Fatal(err)
	}
	// Planned again on approval: the enrollment is disabled now, so policy refuses it.
	if got.Status != d.StatusRejected || !strings.Contains(got.Reason, "disabled") {
		t.Fatalf("approved re-enrolled of a disabled enrollment: %s %q; want refused", got.Status, got.Reason)
	}
	if ds, _, _ := e.DeviceHistory(ctx, "sensor-042"); ds.Intent != d.IntentCompromised {
		t.Fatalf("device row after a failed re-enrolled: %+v", ds)
	}
}

// orphaned deletes a registration record only while its group is gone, the device has no
// individual enrollment and its hub identity is gone.
func TestOrphanedDeletesARecordOnlyWhenNothingCanUseIt(t *testing.T) {
	w := newWorld()
	ctx := context.Background()
	w.dps.AddGroup(d.Group{ID: "line", Attestation: d.AttestationSymmetricKey, Enabled: true}, groupKey)
	for _, id := range []string{"o-1", "o-2"} {
		w.dps.AddRegistration(d.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "line")
	}
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: "o-1", Enabled: true, AuthType: "sas"})
	e := w.engine(w.deps())
	sub := func(id string) *d.Operation {
		t.Helper()
		op, err := e.Submit(ctx, d.Request{EventID: "orphan-" + id + "-" + w.clock.Now().String(), Source: "cleanup", Intent: d.IntentOrphaned,
			RegistrationID: id, EnrollmentGroupID: "line", EventTime: w.clock.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	if op := sub("o-2"); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "exists") {
		t.Fatalf("orphaned while the group exists: %s %q", op.Status, op.Reason)
	}
	if err := w.dps.DeleteGroup(ctx, "line", ""); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(time.Second)
	if op := sub("o-1"); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "still exists") || !w.dps.HasRegistration("o-1") {
		t.Fatalf("orphaned with its hub identity present: %s %q", op.Status, op.Reason)
	}
	if op := sub("o-2"); op.Status != d.StatusSucceeded || w.dps.HasRegistration("o-2") {
		t.Fatalf("orphaned with its hub identity gone: %s %q, record left %t", op.Status, op.Reason, w.dps.HasRegistration("o-2"))
	}
}

// holder is a deprovision.Holder that owns the operations of one source.
type holder struct {
	source string
	hold   bool
	refuse bool
	asked  int
}

func (h *holder) Hold(_ context.Context, op *d.Operation) (d.HoldDecision, error) {
	if op.Request.Source != h.source {
		return d.HoldDecision{}, nil
	}
	h.asked++
	if h.refuse {
		return d.HoldDecision{}, &d.Refusal{Reason: "the plan acts on another hub"}
	}
	if h.hold {
		return d.HoldDecision{Own: true, Hold: &d.Hold{Limit: "OWN_LIMIT", Max: 1, Count: 2}, Reason: "over its own limit"}, nil
	}
	return d.HoldDecision{Own: true}, nil
}

// A Holder's own operations are not counted against MAX_DESTRUCTIVE_PER_HOUR; it may hold them
// for approval, or refuse them, and it leaves everyone else's to the hourly budget.
func TestHolderKeepsItsOwnOperationsOffTheHourlyBudget(t *testing.T) {
	w := newWorld()
	ctx := context.Background()
	for _, id := range []string{"h-1", "h-2", "h-3", "h-4"} {
		w.dps.AddEnrollment(d.Enrollment{RegistrationID: id, Attestation: d.AttestationSymmetricKey, Enabled: true})
		w.dps.AddRegistration(d.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "")
		w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	b := &memBudget{}
	h := &holder{source: "cleanup"}
	deps := w.deps()
	deps.Budget, deps.Holder = b, h
	e := d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, Guard: d.Guardrails{MaxDestructivePerHour: 1}})
	sub := func(id, source string) *d.Operation {
		t.Helper()
		op, err := e.Submit(ctx, d.Request{EventID: "ev-" + id, Source: source, Intent: d.IntentRetired, RegistrationID: id, EventTime: w.clock.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	if op := sub("h-1", "cleanup"); op.Status != d.StatusSucceeded || b.count(w.clock.Now().UTC().Format("2006010215")) != 0 {
		t.Fatalf("the holder's own operation: %s, hourly count %d", op.Status, b.count(w.clock.Now().UTC().Format("2006010215")))
	}
	if op := sub("h-2", "/assets"); op.Status != d.StatusSucceeded {
		t.Fatalf("an event's operation after the holder's: %s %q; the holder's must not use the allowance", op.Status, op.Reason)
	}
	h.hold = true
	if op := sub("h-3", "cleanup"); op.Status != d.StatusAwaitingApproval || op.Hold.Limit != "OWN_LIMIT" || !strings.Contains(op.Reason, "over its own limit") {
		t.Fatalf("held by the holder: %s %+v %q", op.Status, op.Hold, op.Reason)
	}
	h.hold, h.refuse = false, true
	op := sub("h-4", "cleanup")
	if op.Status != d.StatusRejected || !strings.Contains(op.Reason, "another hub") {
		t.Fatalf("refused by the holder: %s %q", op.Status, op.Reason)
	}
	if _, ok := w.hubs.Device(hub1, "h-4"); !ok {
		t.Fatal("a refused operation changed the hub")
	}
	if h.asked != 3 {
		t.Fatalf("the holder was asked %d times, want 3 (its own destructive operations)", h.asked)
	}
}

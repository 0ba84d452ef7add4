package deprovision_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// memBudget is an in-memory deprovision.Budget with the Table store's rules: an operation is
// counted once per window.
type memBudget struct {
	mu      sync.Mutex
	windows map[string]map[string]bool
}

func (b *memBudget) Admit(_ context.Context, window, opID string, limit int) (bool, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.windows == nil {
		b.windows = map[string]map[string]bool{}
	}
	w := b.windows[window]
	if w == nil {
		w = map[string]bool{}
		b.windows[window] = w
	}
	if w[opID] {
		return true, len(w), nil
	}
	if len(w) >= limit {
		return false, len(w), nil
	}
	w[opID] = true
	return true, len(w), nil
}

func (b *memBudget) count(window string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.windows[window])
}

func guardedEngine(w *world, g d.Guardrails, b d.Budget) *d.Engine {
	deps := w.deps()
	deps.Budget = b
	return d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, GroupPageSize: 2, Guard: g})
}

func writes(w *world) int { return len(w.dps.Writes) + len(w.hubs.Writes) }

func groupReq(id string) d.Request {
	return d.Request{EventID: id, Source: "/security", Intent: d.IntentGroupCompromised, EnrollmentGroupID: "g-x509", EventTime: t0.Add(time.Hour)}
}

func TestGuardHoldsLargeGroupUntilApproved(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	setupGroup(5)(w)
	e := guardedEngine(w, d.Guardrails{MaxGroupDevices: 3}, nil)

	op := submit(t, e, groupReq("g1"))
	if op.Status != d.StatusAwaitingApproval || !strings.Contains(op.Reason, "MAX_GROUP_DEVICES") || !strings.Contains(op.Reason, "more than 3") {
		t.Fatalf("group of 5 with limit 3: %s %q, want awaiting-approval naming the limit", op.Status, op.Reason)
	}
	if n := writes(w); n != 0 {
		t.Fatalf("a held operation wrote %d times to DPS and hubs: %v %v", n, w.dps.Writes, w.hubs.Writes)
	}
	stored, steps, err := e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Status != d.StatusAwaitingApproval || stored.Plan == nil || len(steps) != 0 || stored.LeaseOwner != "" {
		t.Fatalf("journal of the held operation: %s plan %v steps %v lease %q", stored.Status, stored.Plan, steps, stored.LeaseOwner)
	}

	// A redelivery answers at once without running: it waits on a person, not on a fault.
	again := submit(t, e, groupReq("g1"))
	if again.Status != d.StatusAwaitingApproval || writes(w) != 0 {
		t.Fatalf("redelivery: %s, %d writes", again.Status, writes(w))
	}

	if _, err := e.Approve(ctx, op.ID, d.Approval{Reason: "ok"}); err == nil {
		t.Fatal("an approval without an approver was accepted")
	}
	if _, err := e.Approve(ctx, op.ID, d.Approval{By: "alice@contoso.com"}); err == nil {
		t.Fatal("an approval without a reason was accepted")
	}
	if writes(w) != 0 {
		t.Fatal("a refused approval ran the operation")
	}

	if _, err := e.Approve(ctx, op.ID, d.Approval{By: "alice@contoso.com", Via: "request body", Reason: "the CA key leaked (INC-7)"}); err != nil {
		t.Fatal(err)
	}
	if err := w.q.DeliverAll(ctx, e); err != nil {
		t.Fatal(err)
	}
	done, _, err := e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != d.StatusSucceeded || done.Progress.Done != 5 {
		t.Fatalf("after approval: %s %+v", done.Status, done.Progress)
	}
	for i := range 5 {
		id := fmt.Sprintf("m-%04d", i)
		dev, _ := w.hubs.Device([]string{hub1, hub2}[i%2], id)
		if dev.Enabled {
			t.Errorf("member %s still enabled after the approved group compromise", id)
		}
	}
	_, steps, err = e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 || steps[0].Index != d.ApprovalIndex || steps[0].Kind != d.StepApproval ||
		!strings.Contains(steps[0].Target, "alice@contoso.com") || !strings.Contains(steps[0].Error, "INC-7") || steps[0].Time.IsZero() {
		t.Fatalf("the approval is not journaled as the first record: %+v", steps)
	}

	// Approving twice is harmless; a redelivery finds it finished.
	before := writes(w)
	if again, err := e.Approve(ctx, op.ID, d.Approval{By: "bob", Reason: "again"}); err != nil || again.Status != d.StatusSucceeded {
		t.Fatalf("second approval: %v %v", again, err)
	}
	if again := submit(t, e, groupReq("g1")); again.Status != d.StatusSucceeded || writes(w) != before {
		t.Fatalf("redelivery after approval: %s, writes %d → %d", again.Status, before, writes(w))
	}
}

func TestGuardLetsGroupAtTheLimitRun(t *testing.T) {
	w := newWorld()
	setupGroup(3)(w)
	e := guardedEngine(w, d.Guardrails{MaxGroupDevices: 3}, nil)
	if op := w.run(t, e, groupReq("g1")); op.Status != d.StatusSucceeded {
		t.Fatalf("group of 3 with limit 3: %s %q", op.Status, op.Reason)
	}
}

func TestGuardApproveRefusesWhatIsNotHeld(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	setupTPM(w)
	e := guardedEngine(w, d.Guardrails{MaxGroupDevices: 3}, nil)
	op := submit(t, e, devReq("e1", d.IntentStolen))
	if op.Status != d.StatusSucceeded {
		t.Fatalf("stolen: %s", op.Status)
	}
	if _, err := e.Approve(ctx, op.ID, d.Approval{By: "alice", Reason: "x"}); !errors.Is(err, d.ErrNotAwaitingApproval) {
		t.Fatalf("approving a finished operation: %v, want ErrNotAwaitingApproval", err)
	}
	if _, err := e.Approve(ctx, "op-missing", d.Approval{By: "alice", Reason: "x"}); !errors.Is(err, d.ErrNotFound) {
		t.Fatalf("approving an unknown operation: %v, want ErrNotFound", err)
	}
}

func addTPM(w *world, id string) {
	w.dps.AddEnrollment(d.Enrollment{RegistrationID: id, Attestation: d.AttestationTPM, Enabled: true})
	w.dps.AddRegistration(d.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "")
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"})
}

func tpmReq(event, id string, i d.Intent) d.Request {
	return d.Request{EventID: event, Source: "/asset-system", Intent: i, RegistrationID: id, EventTime: t0.Add(time.Hour)}
}

func TestGuardDestructivePerHour(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	for i := range 6 {
		addTPM(w, fmt.Sprintf("dev-%d", i))
	}
	b := &memBudget{}
	e := guardedEngine(w, d.Guardrails{MaxDestructivePerHour: 2}, b)
	window := w.clock.Now().UTC().Format("2006010215")

	for i := range 2 {
		if op := submit(t, e, tpmReq(fmt.Sprint("s", i), fmt.Sprint("dev-", i), d.IntentSold)); op.Status != d.StatusSucceeded {
			t.Fatalf("sold %d within the budget: %s %q", i, op.Status, op.Reason)
		}
	}
	// A redelivery of a counted operation is not counted again.
	submit(t, e, tpmReq("s0", "dev-0", d.IntentSold))
	if n := b.count(window); n != 2 {
		t.Fatalf("budget counts %d operations, want 2", n)
	}
	before := writes(w)
	held := submit(t, e, tpmReq("s2", "dev-2", d.IntentRetired))
	if held.Status != d.StatusAwaitingApproval || !strings.Contains(held.Reason, "MAX_DESTRUCTIVE_PER_HOUR") || writes(w) != before {
		t.Fatalf("third destructive operation in the hour: %s %q, writes %d → %d", held.Status, held.Reason, before, writes(w))
	}
	// Compromise of one device is never held, and the held operation does not lock its
	// device: a compromise of that very device goes through.
	if op := submit(t, e, tpmReq("c3", "dev-3", d.IntentCompromised)); op.Status != d.StatusSucceeded {
		t.Fatalf("compromised beyond the budget: %s %q", op.Status, op.Reason)
	}
	if op := submit(t, e, tpmReq("c2", "dev-2", d.IntentCompromised)); op.Status != d.StatusSucceeded {
		t.Fatalf("compromised for a device with a held operation: %s %q", op.Status, op.Reason)
	}
	if n := b.count(window); n != 2 {
		t.Fatalf("compromised operations were counted: %d", n)
	}
	// The next hour has a fresh budget.
	w.clock.Advance(time.Hour)
	if op := submit(t, e, tpmReq("s4", "dev-4", d.IntentSold)); op.Status != d.StatusSucceeded {
		t.Fatalf("sold in the next hour: %s %q", op.Status, op.Reason)
	}
	// The held one runs once approved, though the budget is still spent.
	submit(t, e, tpmReq("s5", "dev-5", d.IntentSold))
	op, err := e.Approve(ctx, held.ID, d.Approval{By: "ops-lead", Reason: "planned retirement batch"})
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != d.StatusSucceeded {
		t.Fatalf("approved retirement: %s %q", op.Status, op.Reason)
	}
	if _, ok := w.dps.Enrollment("dev-2"); ok {
		t.Fatal("the approved retirement left the enrollment")
	}
}

// A held operation that changes nothing is not held: a duplicate revocation of a device
// already revoked costs no budget.
func TestGuardIgnoresPlansThatChangeNothing(t *testing.T) {
	w := newWorld()
	addTPM(w, "dev-0")
	addTPM(w, "dev-1")
	b := &memBudget{}
	e := guardedEngine(w, d.Guardrails{MaxDestructivePerHour: 1}, b)
	submit(t, e, tpmReq("s0", "dev-0", d.IntentStolen))
	if op := submit(t, e, tpmReq("s0b", "dev-0", d.IntentLost)); op.Status != d.StatusSucceeded {
		t.Fatalf("lost after stolen (nothing left to disable): %s %q", op.Status, op.Reason)
	}
	if op := submit(t, e, tpmReq("s1", "dev-1", d.IntentStolen)); op.Status != d.StatusAwaitingApproval {
		t.Fatalf("second real revocation with a budget of 1: %s", op.Status)
	}
}

func TestGuardDenyEndsTheHeldOperation(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	addTPM(w, "dev-0")
	addTPM(w, "dev-1")
	e := guardedEngine(w, d.Guardrails{MaxDestructivePerHour: 1}, &memBudget{})
	submit(t, e, tpmReq("s0", "dev-0", d.IntentSold))
	held := submit(t, e, tpmReq("s1", "dev-1", d.IntentSold))
	if held.Status != d.StatusAwaitingApproval {
		t.Fatalf("second sale: %s", held.Status)
	}
	before := writes(w)
	if _, err := e.Deny(ctx, held.ID, d.Approval{By: "ops-lead"}); err == nil {
		t.Fatal("a denial without a reason was accepted")
	}
	op, err := e.Deny(ctx, held.ID, d.Approval{By: "ops-lead", Via: "request body", Reason: "not one of ours: upstream bug ASSET-88"})
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != d.StatusRejected || !strings.Contains(op.Reason, "denied by ops-lead") || !strings.Contains(op.Reason, "ASSET-88") {
		t.Fatalf("denied: %s %q", op.Status, op.Reason)
	}
	if writes(w) != before {
		t.Fatal("a denied operation wrote to DPS or a hub")
	}
	if again, err := e.Deny(ctx, held.ID, d.Approval{By: "x", Reason: "y"}); err != nil || again.Status != d.StatusRejected {
		t.Fatalf("second denial: %v %v", again, err)
	}
	if _, err := e.Approve(ctx, held.ID, d.Approval{By: "x", Reason: "y"}); !errors.Is(err, d.ErrNotAwaitingApproval) {
		t.Fatalf("approving a denied operation: %v", err)
	}
	if again := submit(t, e, tpmReq("s1", "dev-1", d.IntentSold)); again.Status != d.StatusRejected || writes(w) != before {
		t.Fatalf("redelivery of the denied event: %s", again.Status)
	}
	_, steps, err := e.Operation(ctx, held.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].Index != d.DenialIndex || steps[0].Kind != d.StepDenial || steps[0].Target != "ops-lead (request body)" {
		t.Fatalf("the denial is not journaled: %+v", steps)
	}
}

// TestApprovalSurvivesACrash kills the engine right after each durable effect of an approval
// in turn, then does what the people and systems around it would: the Event Grid redelivery
// (which resumes the operation if the approval had turned it running) and, if it is still
// waiting, the approver sending the approval again. The end matches an uninterrupted approval.
func TestApprovalSurvivesACrash(t *testing.T) {
	ctx := context.Background()
	a := d.Approval{By: "alice", Reason: "confirmed"}
	g := d.Guardrails{MaxGroupDevices: 3}
	ref := newWorld()
	setupGroup(5)(ref)
	e := guardedEngine(ref, g, nil)
	held := submit(t, e, groupReq("g1"))
	if _, err := e.Approve(ctx, held.ID, a); err != nil {
		t.Fatalf("uninterrupted approval: %v", err)
	}
	if err := ref.q.DeliverAll(ctx, e); err != nil {
		t.Fatal(err)
	}
	want := observe(t, ref, held.ID, "")
	for at := 1; ; at++ {
		w := newWorld()
		setupGroup(5)(w)
		submit(t, guardedEngine(w, g, nil), groupReq("g1"))
		cr := &fake.Crasher{At: at}
		deps := cr.Wrap(w.deps())
		if !fake.Run(func() {
			e := d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, GroupPageSize: 2, Guard: g})
			_, _ = e.Approve(ctx, held.ID, a)
			_ = w.q.DeliverAll(ctx, e)
		}) {
			t.Logf("crashed after each of the %d effects of an approval in turn", at-1)
			return
		}
		w.clock.Advance(2 * time.Minute)
		e := guardedEngine(w, g, nil)
		op := submit(t, e, groupReq("g1"))
		if op.Status == d.StatusAwaitingApproval {
			if _, err := e.Approve(ctx, held.ID, a); err != nil {
				t.Fatalf("crash after effect %d: approving again: %v", at, err)
			}
		}
		if err := w.q.DeliverAll(ctx, e); err != nil {
			t.Fatalf("crash after effect %d: GroupWork: %v", at, err)
		}
		got := observe(t, w, held.ID, "")
		if got.status != d.StatusSucceeded || got.dps != want.dps || got.hubs != want.hubs || !slices.Equal(got.dpsWrites, want.dpsWrites) || !slices.Equal(got.steps, want.steps) {
			t.Fatalf("crash after effect %d: end differs\n%+v\nwant\n%+v", at, got, want)
		}
	}
}

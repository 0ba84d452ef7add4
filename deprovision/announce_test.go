package deprovision_test

import (
	"context"
	"slices"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

func unannounced(t *testing.T, w *world) []string {
	t.Helper()
	var ids []string
	for op, err := range w.j.UnannouncedOperations(context.Background(), w.clock.Now().Add(time.Hour)) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, op.ID+" "+string(op.Status))
	}
	return ids
}

func TestHoldIsAnnouncedOnceOnTheWayIn(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	setupGroup(5)(w)
	e := guardedEngine(w, d.Guardrails{MaxGroupDevices: 3}, nil)

	op := submit(t, e, groupReq("g1"))
	if op.Status != d.StatusAwaitingApproval {
		t.Fatalf("group of 5 with limit 3: %s %q", op.Status, op.Reason)
	}
	want := []string{op.ID + " awaiting-approval"}
	if !slices.Equal(w.note.held, want) || len(w.note.ops) != 0 {
		t.Fatalf("after the hold: held %v, outcomes %v; want held %v and no outcome", w.note.held, w.note.ops, want)
	}
	stored, _, err := e.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Announced.IsZero() || stored.Hold == nil || stored.Hold.Limit != "MAX_GROUP_DEVICES" || stored.Hold.Max != 3 || stored.Hold.Count <= 3 {
		t.Fatalf("stored hold %+v, announced %v: want MAX_GROUP_DEVICES, max 3, a count above 3, announced", stored.Hold, stored.Announced)
	}
	// Redeliveries, before and after the lease would have run out, find it held and say nothing.
	submit(t, e, groupReq("g1"))
	w.clock.Advance(10 * time.Minute)
	submit(t, e, groupReq("g1"))
	if len(w.note.held) != 1 {
		t.Fatalf("redeliveries of a held event announced it again: %v", w.note.held)
	}
	if got := unannounced(t, w); len(got) != 0 {
		t.Fatalf("announced hold listed as unannounced: %v", got)
	}

	got, err := e.Approve(ctx, op.ID, d.Approval{By: "alice", Reason: "planned decommission"})
	if err != nil || got.Status != d.StatusRunning || !got.Progress.FannedOut {
		t.Fatalf("approve: %v %v; want the group fanned out to the GroupWork queue", got, err)
	}
	if err := w.q.DeliverAll(ctx, e); err != nil {
		t.Fatal(err)
	}
	if len(w.note.held) != 1 || !slices.Equal(w.note.ops, []string{op.ID + " succeeded"}) {
		t.Fatalf("after approval: held %v, outcomes %v", w.note.held, w.note.ops)
	}
	stored, _, _ = e.Operation(ctx, op.ID)
	if stored.Hold != nil || stored.Announced.IsZero() {
		t.Fatalf("ended operation keeps hold %+v, announced %v", stored.Hold, stored.Announced)
	}
}

// effects counts the durable effects of an uninterrupted run of req.
func effects(t *testing.T, setup func(*world), g d.Guardrails, req d.Request) int {
	t.Helper()
	w := newWorld()
	setup(w)
	c := &fake.Crasher{}
	deps := c.Wrap(w.deps())
	if _, err := d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, GroupPageSize: 2, Guard: g}).Submit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	return c.Count()
}

// A process that dies right after journaling the end of an operation (or its hold) never
// calls the notifier; Announce, which the cleanup's resume pass calls, makes up for it once.
func TestAnnounceAfterCrashBeforeNotifier(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(*world)
		guard  d.Guardrails
		req    d.Request
		status d.Status
	}{
		{"succeeded", setupTPM, d.Guardrails{}, devReq("e1", d.IntentCompromised), d.StatusSucceeded},
		{"rejected", func(*world) {}, d.Guardrails{}, devReq("e1", d.IntentCompromised), d.StatusRejected},
		{"held", setupGroup(5), d.Guardrails{MaxGroupDevices: 3}, groupReq("g1"), d.StatusAwaitingApproval},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			// The last effect is the announced mark; the one before, the state's own write.
			n := effects(t, c.setup, c.guard, c.req)
			w := newWorld()
			c.setup(w)
			deps := (&fake.Crasher{At: n - 1}).Wrap(w.deps())
			if !fake.Run(func() {
				_, _ = d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, GroupPageSize: 2, Guard: c.guard}).Submit(ctx, c.req)
			}) {
				t.Fatalf("no crash at effect %d", n-1)
			}
			if len(w.note.ops)+len(w.note.held) != 0 {
				t.Fatalf("crashed before the notifier, yet announced: %v %v", w.note.ops, w.note.held)
			}
			id := d.OperationID(c.req.Source, c.req.EventID)
			if got, want := unannounced(t, w), []string{id + " " + string(c.status)}; !slices.Equal(got, want) {
				t.Fatalf("unannounced after the crash: %v, want %v", got, want)
			}
			e := guardedEngine(w, c.guard, nil)
			op, did, err := e.Announce(ctx, id)
			if err != nil || !did || op.Announced.IsZero() {
				t.Fatalf("Announce: %v %v %v", op, did, err)
			}
			if _, did, err := e.Announce(ctx, id); err != nil || did {
				t.Fatalf("second Announce: announced %v, %v", did, err)
			}
			all := append(slices.Clone(w.note.ops), w.note.held...)
			if want := []string{id + " " + string(c.status)}; !slices.Equal(all, want) {
				t.Fatalf("announcements %v, want %v", all, want)
			}
			if got := unannounced(t, w); len(got) != 0 {
				t.Fatalf("still unannounced: %v", got)
			}
		})
	}
}

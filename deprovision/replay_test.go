package deprovision_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
)

// Two different events under one (source, id), submitted at the same moment: the conflict is
// decided on the journaled row, so exactly one runs and the other is journaled as a rejected
// conflict under its own id, whichever wins, in every round. (Before the check moved into
// the engine, both passed the handler's pre-check and the loser silently got the winner's
// operation back.) Odd rounds race a Reject against a Submit, as a hostile reuse of the id does.
func TestConcurrentReplayConflict(t *testing.T) {
	w := newWorld()
	e := w.engine(w.deps())
	ctx := context.Background()
	for round := range 60 {
		ra, rb := fmt.Sprintf("race-a-%d", round), fmt.Sprintf("race-b-%d", round)
		for _, rid := range []string{ra, rb} {
			w.dps.AddEnrollment(d.Enrollment{RegistrationID: rid, Attestation: d.AttestationTPM, Enabled: true})
		}
		src, id := "/asset-system", fmt.Sprintf("ev-%d", round)
		reqs := []d.Request{
			{EventID: id, Source: src, Intent: d.IntentCompromised, RegistrationID: ra, EventTime: t0.Add(time.Hour)},
			{EventID: id, Source: src, Intent: d.IntentCompromised, RegistrationID: rb, EventTime: t0.Add(time.Hour)},
		}
		ops := make([]*d.Operation, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if i == 1 && round%2 == 1 {
					ops[i], errs[i] = e.Reject(ctx, reqs[i], "refused by the test")
					return
				}
				ops[i], errs[i] = e.Submit(ctx, reqs[i])
			}()
		}
		close(start)
		wg.Wait()
		checkOneRanOneConflicted(t, round, e, reqs, ops, errs, func(rid string) bool {
			en, _ := w.dps.Enrollment(rid)
			return !en.Enabled
		})
	}
}

// checkOneRanOneConflicted asserts the outcome of one round of two different requests under
// one (source, id): one call got the operation of that id, the other a rejected conflict
// whose reason names the difference, journaled; only the winner's device was changed.
func checkOneRanOneConflicted(t *testing.T, round int, e *d.Engine, reqs []d.Request, ops []*d.Operation, errs []error, changed func(rid string) bool) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("round %d: call %d: %v", round, i, err)
		}
	}
	want := d.OperationID(reqs[0].Source, reqs[0].EventID)
	winner, loser := -1, -1
	for i, op := range ops {
		if op.ID == want {
			winner = i
		} else {
			loser = i
		}
	}
	if winner < 0 || loser < 0 {
		t.Fatalf("round %d: want one call on %s and one conflict, got %s and %s", round, want, ops[0].ID, ops[1].ID)
	}
	stored, _, err := e.Operation(context.Background(), want)
	if err != nil || stored.Request.RegistrationID != reqs[winner].RegistrationID {
		t.Fatalf("round %d: the operation of the id holds %+v (%v), want the winner's request", round, stored, err)
	}
	c, _, err := e.Operation(context.Background(), ops[loser].ID)
	if err != nil || c.Status != d.StatusRejected || c.Request.RegistrationID != reqs[loser].RegistrationID ||
		!strings.HasPrefix(c.Request.EventID, reqs[loser].EventID+"~conflict-") ||
		!strings.Contains(c.Reason, "already received with different content") || !strings.Contains(c.Reason, "differs in registrationId") {
		t.Fatalf("round %d: the loser's conflict is journaled as %+v (%v)", round, c, err)
	}
	if changed(reqs[loser].RegistrationID) {
		t.Fatalf("round %d: the conflicting request (%s) changed its device", round, reqs[loser].RegistrationID)
	}
	ranSubmit := stored.Status != d.StatusRejected
	if ranSubmit && (stored.Status != d.StatusSucceeded || !changed(reqs[winner].RegistrationID)) {
		t.Fatalf("round %d: the winner %s ended %s (%s) without changing its device", round, reqs[winner].RegistrationID, stored.Status, stored.Reason)
	}
}

package scenario_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"dpsdeprov/deprovision"
	"dpsdeprov/internal/testenv"
)

// Two different events under one (source, id), submitted at the same moment by two engines
// (two instances of the app) over one journal in Azurite and the emulator's DPS: the
// conflict is decided on the journal's row, so in every round exactly one request runs and
// the other is journaled as a rejected conflict under its own id, its device untouched.
func TestConcurrentReplayConflictInAzurite(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	engines := []*deprovision.Engine{e.engine(nil), e.engine(nil)}
	uid := testenv.UniqueName("race")
	for round := range 12 {
		ra, rb := fmt.Sprintf("%s-a-%d", uid, round), fmt.Sprintf("%s-b-%d", uid, round)
		e.individualTPM(ra)
		e.individualTPM(rb)
		id := fmt.Sprintf("%s-ev-%d", uid, round)
		reqs := []deprovision.Request{
			{EventID: id, Source: "/asset-system", Intent: deprovision.IntentCompromised, RegistrationID: ra, EventTime: e.clock.Now()},
			{EventID: id, Source: "/asset-system", Intent: deprovision.IntentCompromised, RegistrationID: rb, EventTime: e.clock.Now()},
		}
		ops := make([]*deprovision.Operation, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ops[i], errs[i] = engines[i].Submit(ctx, reqs[i])
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: request %d: %v", round, i, err)
			}
		}
		want := deprovision.OperationID(reqs[0].Source, id)
		winner := -1
		for i, op := range ops {
			if op.ID == want {
				winner = i
			}
		}
		if winner < 0 || ops[0].ID == ops[1].ID {
			t.Fatalf("round %d: want one request on %s and one conflict, got %s (%s) and %s (%s)", round, want, ops[0].ID, ops[0].Status, ops[1].ID, ops[1].Status)
		}
		loser := 1 - winner
		c, _, err := engines[0].Operation(ctx, ops[loser].ID)
		if err != nil || c.Status != deprovision.StatusRejected || c.Request.RegistrationID != reqs[loser].RegistrationID ||
			!strings.HasPrefix(c.Request.EventID, id+"~conflict-") || !strings.Contains(c.Reason, "differs in registrationId") {
			t.Fatalf("round %d: the conflict is journaled as %+v (%v)", round, c, err)
		}
		stored, _, err := engines[1].Operation(ctx, want)
		if err != nil || stored.Status != deprovision.StatusSucceeded || stored.Request.RegistrationID != reqs[winner].RegistrationID {
			t.Fatalf("round %d: the operation of the id: %+v (%v)", round, stored, err)
		}
		if en := e.enrollment(reqs[winner].RegistrationID); en.ProvisioningStatus != "disabled" {
			t.Fatalf("round %d: the winner's enrollment is %s", round, en.ProvisioningStatus)
		}
		if en := e.enrollment(reqs[loser].RegistrationID); en.ProvisioningStatus != "enabled" {
			t.Fatalf("round %d: the conflicting request changed its enrollment: %s", round, en.ProvisioningStatus)
		}
	}
}

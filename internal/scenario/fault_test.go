package scenario_test

import (
	"context"
	"testing"

	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
)

// TestTransientFailureResumes: the hub keeps failing with 500 after DPS was changed; the
// delivery fails transiently (Event Grid will redeliver), the journal shows where it stopped and
// why, and the redelivery finishes the hub step without repeating the DPS one.
func TestTransientFailureResumes(t *testing.T) {
	e := newEnv(t)
	key := randomKey()
	e.individualSK("tf-1", key)
	hub := e.mustProvision("tf-1", skCred(key))
	e.em.ResetStats()
	if err := e.em.AddFault(emulator.Fault{Op: "hub.devices.put", Status: 500, Count: 20}); err != nil {
		t.Fatal(err)
	}
	r := request("tf", deprovision.IntentStolen, "tf-1", 0)
	op, err := e.engine(nil).Submit(context.Background(), r)
	if !deprovision.IsTransient(err) {
		t.Fatalf("hub failing: err %v, want transient", err)
	}
	got, steps, err := e.engine(nil).Operation(context.Background(), op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != deprovision.StatusRunning || len(steps) != 2 || steps[0].Outcome != deprovision.StepDone ||
		steps[1].Outcome != deprovision.StepFailed || steps[1].HTTPStatus != 500 {
		t.Fatalf("journal after the failure: %s %+v", got.Status, steps)
	}
	e.em.ClearFaults()
	op, err = e.engine(nil).Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	succeeded(t, op)
	disabledIn(t, e, hub, "tf-1", "stolen")
	if n := e.em.Stats().Operations["dps.enrollments.put"].Statuses["200"]; n != 1 {
		t.Fatalf("the enrollment was written %d times, want once", n)
	}
	e.mustNotProvision("tf-1", skCred(key))
}

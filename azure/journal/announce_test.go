package journal_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"dpsdeprov/deprovision"
)

// An operation's announced mark and hold survive the journal, and only operations in an
// announced state without the mark are listed as unannounced.
func TestUnannouncedOperations(t *testing.T) {
	j, _ := newJournal(t)
	ctx := context.Background()
	put := func(id string, st deprovision.Status, announced bool) *deprovision.Operation {
		op := sampleOp(id)
		op.Status = st
		if announced {
			op.Announced = t0.Add(time.Second)
		}
		if st == deprovision.StatusAwaitingApproval {
			op.Hold = &deprovision.Hold{Limit: "MAX_DESTRUCTIVE_PER_HOUR", Max: 20, Count: 20}
		}
		stored, _, err := j.CreateOperation(ctx, op)
		if err != nil {
			t.Fatal(err)
		}
		return stored
	}
	put("op-ann-a", deprovision.StatusRunning, false)
	ended := put("op-ann-b", deprovision.StatusSucceeded, false)
	put("op-ann-c", deprovision.StatusFailed, true)
	put("op-ann-d", deprovision.StatusAwaitingApproval, false)
	put("op-ann-e", deprovision.StatusAwaitingApproval, true)
	list := func() []string {
		var ids []string
		for op, err := range j.UnannouncedOperations(ctx, t0.Add(time.Minute)) {
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, op.ID)
		}
		return ids
	}
	if got, want := list(), []string{"op-ann-b", "op-ann-d"}; !slices.Equal(got, want) {
		t.Fatalf("unannounced %v, want %v", got, want)
	}
	for op := range j.UnannouncedOperations(ctx, t0) {
		t.Fatalf("%v listed, though updated at %v, not before it", op, t0)
	}
	held, err := j.GetOperation(ctx, "op-ann-e")
	if err != nil {
		t.Fatal(err)
	}
	if held.Hold == nil || *held.Hold != (deprovision.Hold{Limit: "MAX_DESTRUCTIVE_PER_HOUR", Max: 20, Count: 20}) || !held.Announced.Equal(t0.Add(time.Second)) {
		t.Fatalf("read back hold %+v, announced %v", held.Hold, held.Announced)
	}
	ended.Announced = t0.Add(2 * time.Second)
	if err := j.UpdateOperation(ctx, ended); err != nil {
		t.Fatal(err)
	}
	if got, want := list(), []string{"op-ann-d"}; !slices.Equal(got, want) {
		t.Fatalf("after marking %s announced: %v, want %v", ended.ID, got, want)
	}
	// Terminal operations stay out of the open list whether announced or not.
	for op, err := range j.OpenOperations(ctx, t0.Add(time.Minute)) {
		if err != nil {
			t.Fatal(err)
		}
		if op.Status.Terminal() {
			t.Fatalf("terminal %s listed as open", op.ID)
		}
	}
}

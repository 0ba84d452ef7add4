package journal_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/internal/testenv"
)

func TestBudgetCountsEachOperationOnceUpToTheLimit(t *testing.T) {
	ctx := context.Background()
	_, svc := newJournal(t)
	opts := journal.Options{TablePrefix: testenv.UniqueName("b")}
	// Two instances of the app: two stores over one table.
	stores := make([]*journal.Budget, 2)
	for i := range stores {
		b, err := journal.NewBudget(ctx, svc, opts)
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = b
	}
	const limit, asking = 5, 12
	var mu sync.Mutex
	admitted := map[string]bool{}
	var wg sync.WaitGroup
	for i := range asking {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("op-%02d", i)
			ok, n, err := stores[i%2].Admit(ctx, "2026030110", id, limit)
			if err != nil {
				t.Errorf("Admit %s: %v", id, err)
				return
			}
			if n > limit {
				t.Errorf("Admit %s: count %d above the limit %d", id, n, limit)
			}
			if ok {
				mu.Lock()
				admitted[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(admitted) != limit {
		t.Fatalf("%d of %d concurrent operations admitted with a limit of %d", len(admitted), asking, limit)
	}
	for id := range admitted {
		ok, n, err := stores[1].Admit(ctx, "2026030110", id, limit)
		if err != nil || !ok || n != limit {
			t.Fatalf("asking again for counted %s: %v %d %v, want admitted without counting", id, ok, n, err)
		}
	}
	if ok, n, err := stores[0].Admit(ctx, "2026030110", "op-new", limit); err != nil || ok || n != limit {
		t.Fatalf("one more in the spent window: %v %d %v", ok, n, err)
	}
	if ok, n, err := stores[0].Admit(ctx, "2026030111", "op-new", limit); err != nil || !ok || n != 1 {
		t.Fatalf("the next window: %v %d %v", ok, n, err)
	}
}

func TestApprovalRecordRoundTrips(t *testing.T) {
	ctx := context.Background()
	j, _ := newJournal(t)
	rec := deprovision.StepRecord{OperationID: "op-a", Index: deprovision.ApprovalIndex, Kind: deprovision.StepApproval,
		Target: "alice (header)", Outcome: deprovision.StepDone, Error: "approved: ok", Time: t0}
	if err := j.RecordStep(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := j.RecordStep(ctx, deprovision.StepRecord{OperationID: "op-a", Index: 0, Kind: deprovision.StepDisableGroup, Outcome: deprovision.StepDone, Time: t0}); err != nil {
		t.Fatal(err)
	}
	steps, err := j.Steps(ctx, "op-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || steps[0].Index != deprovision.ApprovalIndex || steps[0].Kind != deprovision.StepApproval || steps[0].Target != rec.Target || steps[1].Index != 0 {
		t.Fatalf("steps read back: %+v", steps)
	}
}

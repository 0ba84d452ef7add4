package scenario_test

import (
	"context"
	"iter"
	"sync"
	"time"

	"dpsdeprov/deprovision"
)

// countingJournal counts the calls made to a journal, and calls before (when set) ahead of
// each with the call's number, so that a test can take Table Storage away at a chosen call.
type countingJournal struct {
	deprovision.Journal
	before func(n int)
	mu     sync.Mutex
	n      int
}

func (j *countingJournal) tick() {
	j.mu.Lock()
	j.n++
	n := j.n
	j.mu.Unlock()
	if j.before != nil {
		j.before(n)
	}
}

func (j *countingJournal) calls() int { j.mu.Lock(); defer j.mu.Unlock(); return j.n }

func (j *countingJournal) CreateOperation(ctx context.Context, op *deprovision.Operation) (*deprovision.Operation, bool, error) {
	j.tick()
	return j.Journal.CreateOperation(ctx, op)
}

func (j *countingJournal) GetOperation(ctx context.Context, id string) (*deprovision.Operation, error) {
	j.tick()
	return j.Journal.GetOperation(ctx, id)
}

func (j *countingJournal) UpdateOperation(ctx context.Context, op *deprovision.Operation) error {
	j.tick()
	return j.Journal.UpdateOperation(ctx, op)
}

func (j *countingJournal) RecordStep(ctx context.Context, rec deprovision.StepRecord) error {
	j.tick()
	return j.Journal.RecordStep(ctx, rec)
}

func (j *countingJournal) Steps(ctx context.Context, id string) ([]deprovision.StepRecord, error) {
	j.tick()
	return j.Journal.Steps(ctx, id)
}

func (j *countingJournal) GetDevice(ctx context.Context, rid string) (*deprovision.DeviceState, error) {
	j.tick()
	return j.Journal.GetDevice(ctx, rid)
}

func (j *countingJournal) PutDevice(ctx context.Context, ds *deprovision.DeviceState) error {
	j.tick()
	return j.Journal.PutDevice(ctx, ds)
}

func (j *countingJournal) DeviceHistory(ctx context.Context, rid string) ([]deprovision.OperationSummary, error) {
	j.tick()
	return j.Journal.DeviceHistory(ctx, rid)
}

func (j *countingJournal) OpenOperations(ctx context.Context, olderThan time.Time) iter.Seq2[*deprovision.Operation, error] {
	j.tick()
	return j.Journal.OpenOperations(ctx, olderThan)
}

package fake

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"sort"
	"strconv"
	"sync"
	"time"

	"dpsdeprov/deprovision"
)

// Journal is an in-memory deprovision.Journal with the ETag rules of the Table journal.
// Values are stored as JSON copies, so a caller's later change never leaks into the store.
type Journal struct {
	mu      sync.Mutex
	seq     int
	ops     map[string][]byte
	steps   map[string]map[int]deprovision.StepRecord
	devices map[string][]byte
}

// NewJournal returns an empty journal.
func NewJournal() *Journal {
	return &Journal{ops: map[string][]byte{}, steps: map[string]map[int]deprovision.StepRecord{}, devices: map[string][]byte{}}
}

var _ deprovision.Journal = (*Journal)(nil)

func (j *Journal) etag() string { j.seq++; return "W/" + strconv.Itoa(j.seq) }

func clone[T any](b []byte) *T {
	v := new(T)
	if err := json.Unmarshal(b, v); err != nil {
		panic(err)
	}
	return v
}

// CreateOperation implements deprovision.Journal.
func (j *Journal) CreateOperation(_ context.Context, op *deprovision.Operation) (*deprovision.Operation, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if b, ok := j.ops[op.ID]; ok {
		return clone[deprovision.Operation](b), false, nil
	}
	op.ETag = j.etag()
	b, _ := json.Marshal(op)
	j.ops[op.ID] = b
	return clone[deprovision.Operation](b), true, nil
}

// GetOperation implements deprovision.Journal.
func (j *Journal) GetOperation(_ context.Context, id string) (*deprovision.Operation, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, ok := j.ops[id]
	if !ok {
		return nil, fmt.Errorf("operation %s: %w", id, deprovision.ErrNotFound)
	}
	return clone[deprovision.Operation](b), nil
}

// UpdateOperation implements deprovision.Journal.
func (j *Journal) UpdateOperation(_ context.Context, op *deprovision.Operation) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, ok := j.ops[op.ID]
	if !ok {
		return fmt.Errorf("operation %s: %w", op.ID, deprovision.ErrNotFound)
	}
	if clone[deprovision.Operation](b).ETag != op.ETag {
		return fmt.Errorf("operation %s: %w", op.ID, deprovision.ErrPreconditionFailed)
	}
	op.ETag = j.etag()
	j.ops[op.ID], _ = json.Marshal(op)
	return nil
}

// RecordStep implements deprovision.Journal.
func (j *Journal) RecordStep(_ context.Context, rec deprovision.StepRecord) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.steps[rec.OperationID] == nil {
		j.steps[rec.OperationID] = map[int]deprovision.StepRecord{}
	}
	j.steps[rec.OperationID][rec.Index] = rec
	return nil
}

// Steps implements deprovision.Journal.
func (j *Journal) Steps(_ context.Context, id string) ([]deprovision.StepRecord, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []deprovision.StepRecord
	for _, r := range j.steps[id] {
		out = append(out, r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Index < out[b].Index })
	return out, nil
}

// GetDevice implements deprovision.Journal.
func (j *Journal) GetDevice(_ context.Context, rid string) (*deprovision.DeviceState, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, ok := j.devices[rid]
	if !ok {
		return nil, fmt.Errorf("device row %s: %w", rid, deprovision.ErrNotFound)
	}
	return clone[deprovision.DeviceState](b), nil
}

// PutDevice implements deprovision.Journal.
func (j *Journal) PutDevice(_ context.Context, ds *deprovision.DeviceState) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, ok := j.devices[ds.RegistrationID]
	switch {
	case ds.ETag == "" && ok:
		return fmt.Errorf("device row %s: %w", ds.RegistrationID, deprovision.ErrConflict)
	case ds.ETag != "" && !ok:
		return fmt.Errorf("device row %s: %w", ds.RegistrationID, deprovision.ErrPreconditionFailed)
	case ok && clone[deprovision.DeviceState](b).ETag != ds.ETag:
		return fmt.Errorf("device row %s: %w", ds.RegistrationID, deprovision.ErrPreconditionFailed)
	}
	ds.ETag = j.etag()
	j.devices[ds.RegistrationID], _ = json.Marshal(ds)
	return nil
}

// DeviceHistory implements deprovision.Journal.
func (j *Journal) DeviceHistory(_ context.Context, rid string) ([]deprovision.OperationSummary, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []deprovision.OperationSummary
	for _, b := range j.ops {
		op := clone[deprovision.Operation](b)
		if op.Request.Intent.GroupWide() || !equalFold(op.Request.RegistrationID, rid) {
			continue
		}
		out = append(out, deprovision.OperationSummary{OperationID: op.ID, Intent: op.Request.Intent,
			Status: op.Status, Reason: op.Reason, EventTime: op.Request.EventTime, Updated: op.Updated})
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].Updated.Equal(out[b].Updated) {
			return out[a].Updated.After(out[b].Updated)
		}
		return out[a].OperationID < out[b].OperationID
	})
	return out, nil
}

// OpenOperations implements deprovision.Journal.
func (j *Journal) OpenOperations(_ context.Context, olderThan time.Time) iter.Seq2[*deprovision.Operation, error] {
	return j.listOps(func(op *deprovision.Operation) bool { return !op.Status.Terminal() && op.Updated.Before(olderThan) })
}

// UnannouncedOperations implements deprovision.Journal.
func (j *Journal) UnannouncedOperations(_ context.Context, olderThan time.Time) iter.Seq2[*deprovision.Operation, error] {
	return j.listOps(func(op *deprovision.Operation) bool { return op.Unannounced() && op.Updated.Before(olderThan) })
}

// listOps lists the operations keep selects, in id order, as the Table journal does.
func (j *Journal) listOps(keep func(*deprovision.Operation) bool) iter.Seq2[*deprovision.Operation, error] {
	j.mu.Lock()
	var open []*deprovision.Operation
	for _, b := range j.ops {
		op := clone[deprovision.Operation](b)
		if keep(op) {
			open = append(open, op)
		}
	}
	j.mu.Unlock()
	sort.Slice(open, func(a, b int) bool { return open[a].ID < open[b].ID })
	return func(yield func(*deprovision.Operation, error) bool) {
		for _, op := range open {
			if !yield(op, nil) {
				return
			}
		}
	}
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 32
		}
		if 'A' <= y && y <= 'Z' {
			y += 32
		}
		if x != y {
			return false
		}
	}
	return true
}

package fake

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"dpsdeprov/deprovision"
)

// Queue is an in-memory deprovision.WorkQueue, with the GroupWork function's delivery
// (DeliverAll). The Storage queue is tested in azure/workqueue, and the scenario tests run the
// fan-out through it on Azurite. FailAfter, when > 0, fails every enqueue after that many, as a queue outage in the middle of a fan-out
// would.
type Queue struct {
	mu        sync.Mutex
	batches   []deprovision.WorkBatch
	delivered []int // how many times each queued batch was delivered (DeliverAll)
	FailAfter int
}

// Enqueue queues a copy of b.
func (q *Queue) Enqueue(_ context.Context, b *deprovision.WorkBatch) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.FailAfter > 0 && len(q.batches) >= q.FailAfter {
		return deprovision.Transient(errors.New("queue unavailable"))
	}
	c := *b
	c.Members = append([]deprovision.WorkMember(nil), b.Members...)
	q.batches = append(q.batches, c)
	q.delivered = append(q.delivered, 0)
	return nil
}

// Take removes and returns the queued batches, lowest number first.
func (q *Queue) Take() []deprovision.WorkBatch {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.batches
	q.batches, q.delivered = nil, nil
	// The fan-out enqueues a page's batches concurrently: order them by number.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// DeliverAll plays the GroupWork function over the queue: it delivers the queued batches to
// e one at a time, lowest number first, as the queue trigger would, and removes each once
// ApplyBatch succeeds. A batch whose delivery fails, or dies (a fake.Crash), stays queued and
// is marked redelivered for the next delivery, as the Storage queue's DequeueCount says. The
// first error stops it.
func (q *Queue) DeliverAll(ctx context.Context, e *deprovision.Engine) error {
	for {
		q.mu.Lock()
		if len(q.batches) == 0 {
			q.mu.Unlock()
			return nil
		}
		first := 0
		for i, b := range q.batches {
			if b.Seq < q.batches[first].Seq {
				first = i
			}
		}
		b := q.batches[first]
		redelivered := q.delivered[first] > 0
		q.delivered[first]++
		q.mu.Unlock()
		if _, err := e.ApplyBatch(ctx, &b, deprovision.BatchOptions{Redelivered: redelivered}); err != nil {
			return fmt.Errorf("batch %d of %s: %w", b.Seq, b.OperationID, err)
		}
		q.mu.Lock()
		q.batches = append(q.batches[:first], q.batches[first+1:]...)
		q.delivered = append(q.delivered[:first], q.delivered[first+1:]...)
		q.mu.Unlock()
	}
}

package workqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"dpsdeprov/deprovision"
)

// maxBatchJSON bounds a message's JSON so that its base64 text fits (64 KiB).
const maxBatchJSON = 45 * 1024

// BatchOptions tune a [RequestBatcher].
type BatchOptions struct {
	// Wait is how long the first request of a message waits for others to join it. Default
	// 500ms: a burst's invocations defer dozens of requests a second an instance.
	Wait time.Duration
	// Max is the most requests a message carries. Default 10.
	Max int
}

// RequestBatcher hands the revocations a burst defers to the burst queue, several to a
// message: the requests deferred within Wait of each other (up to Max, and what a message
// holds) go in one. A burst of thousands then costs the queue a message per ten requests,
// each sent, received and deleted once, instead of one each. Each caller returns once the
// message holding its request is on the queue (or failed).
type RequestBatcher struct {
	q       *Queue
	o       BatchOptions
	mu      sync.Mutex
	pending *pendingBatch
}

type pendingBatch struct {
	reqs [][]byte // each request's JSON, encoded once
	size int
	full chan struct{} // closed when no more requests join
	done chan struct{} // closed once sent; err says how
	err  error
}

// NewRequestBatcher returns a RequestBatcher over the burst queue q.
func NewRequestBatcher(q *Queue, o *BatchOptions) *RequestBatcher {
	var opts BatchOptions
	if o != nil {
		opts = *o
	}
	if opts.Wait <= 0 {
		opts.Wait = 500 * time.Millisecond
	}
	if opts.Max <= 0 {
		opts.Max = 10
	}
	return &RequestBatcher{q: q, o: opts}
}

// Defer implements coalesce.Options.Defer: it adds req to the message being gathered and
// returns once that message is enqueued. A failure worth retrying is marked
// deprovision.Transient, as Queue.Enqueue marks it.
func (b *RequestBatcher) Defer(ctx context.Context, req deprovision.Request) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding event %s: %w", req.EventID, err)
	}
	b.mu.Lock()
	if p := b.pending; p != nil && p.size+len(body)+1 > maxBatchJSON {
		b.sealLocked() // it would not fit: this request starts the next message
	}
	if b.pending == nil {
		b.pending = &pendingBatch{full: make(chan struct{}), done: make(chan struct{})}
		go b.send(b.pending)
	}
	p := b.pending
	p.reqs = append(p.reqs, body)
	p.size += len(body) + 1
	if len(p.reqs) >= b.o.Max {
		b.sealLocked()
	}
	b.mu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err() // the message may still be sent: the operation then runs from the queue too, once
	}
}

func (b *RequestBatcher) sealLocked() {
	close(b.pending.full)
	b.pending = nil
}

// send enqueues p once it is full or its first request has waited Wait.
func (b *RequestBatcher) send(p *pendingBatch) {
	t := time.NewTimer(b.o.Wait)
	select {
	case <-t.C:
	case <-p.full:
	}
	t.Stop()
	b.mu.Lock()
	if b.pending == p {
		b.pending = nil
	}
	reqs := p.reqs
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// deprovision.DeferredRequests, written from the requests' JSON.
	msg := append([]byte(`{"requests":[`), bytes.Join(reqs, []byte(","))...)
	msg = append(msg, "]}"...)
	p.err = b.q.putJSON(ctx, msg, fmt.Sprintf("a message of %d deferred requests", len(reqs)))
	close(p.done)
}

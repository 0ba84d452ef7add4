package ratelimit

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"
)

const (
	// claimTimeout bounds one claim's Table round trips.
	claimTimeout = 10 * time.Second
	// failAfter consecutive failed claims fail the waiters of the class that was claiming.
	failAfter = 3
)

// waiter is one queued Wait call.
type waiter struct {
	n, got int
	prio   Priority
	done   chan struct{} // closed when served or failed
	err    error
	elem   *list.Element
}

// hubLimiter queues one hub's callers and claims tokens for them. One goroutine per hub runs
// while callers wait, so hubs proceed in parallel and one hub's Table latency or pause never
// holds up another.
type hubLimiter struct {
	l         *Limiter
	name      string
	perMinute int
	store     *store

	mu      sync.Mutex    // never held while sleeping or calling Table Storage
	queues  [2]*list.List // by Priority
	pool    int           // tokens claimed but not yet handed out
	poolEnd time.Time     // the pool's tokens lapse with their window
	running bool
	wake    chan struct{}
	// notBefore is the end of the latest pause this process knows of.
	notBefore time.Time
}

func newHubLimiter(l *Limiter, name, pk string) *hubLimiter {
	h := &hubLimiter{
		l: l, name: name, perMinute: l.PerMinute(name),
		queues: [2]*list.List{list.New(), list.New()},
		wake:   make(chan struct{}, 1),
	}
	h.store = &store{c: l.table, pk: pk, l: l, stat: &l.stat}
	return h
}

func (h *hubLimiter) lock()   { h.mu.Lock() }
func (h *hubLimiter) unlock() { h.mu.Unlock() }

func (h *hubLimiter) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *hubLimiter) wait(ctx context.Context, n int, p Priority) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &waiter{n: n, prio: p, done: make(chan struct{})}
	h.lock()
	w.elem = h.queues[p].PushBack(w)
	h.serveLocked()
	if w.elem == nil { // served from tokens already claimed
		h.unlock()
		return w.err
	}
	if !h.running {
		h.running = true
		go h.run()
	} else if p == PriorityHigh {
		h.signal() // the scheduler may be sleeping on a full bulk window
	}
	h.unlock()
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
	}
	h.lock()
	defer h.unlock()
	if w.elem != nil {
		h.queues[p].Remove(w.elem)
		w.elem = nil
		h.signal()
	} else if w.err != nil {
		return ctx.Err()
	}
	// Tokens gathered for a caller who left go to the next caller; they lapse with the current
	// window like any claimed token.
	if w.got > 0 && h.l.now().Before(h.l.win.end(h.l.win.index(h.l.now()))) {
		h.addPoolLocked(w.got, h.l.win.end(h.l.win.index(h.l.now())))
		w.got = 0
		h.serveLocked()
	} else if w.got > 0 {
		h.l.stat.lapsed.Add(int64(w.got))
		w.got = 0
	}
	return ctx.Err()
}

func (h *hubLimiter) addPoolLocked(n int, end time.Time) {
	if h.pool == 0 || end.After(h.poolEnd) {
		h.poolEnd = end
	}
	h.pool += n
}

// serveLocked hands pooled tokens to waiters, high priority first, in arrival order.
func (h *hubLimiter) serveLocked() {
	if h.pool > 0 && !h.l.now().Before(h.poolEnd) {
		h.l.stat.lapsed.Add(int64(h.pool))
		h.pool = 0
	}
	for _, q := range []*list.List{h.queues[PriorityHigh], h.queues[PriorityBulk]} {
		for h.pool > 0 && q.Len() > 0 {
			w := q.Front().Value.(*waiter)
			take := min(h.pool, w.n-w.got)
			w.got += take
			h.pool -= take
			if w.got < w.n {
				return
			}
			q.Remove(w.elem)
			w.elem = nil
			close(w.done)
		}
	}
}

// failLocked fails every waiter of class p with err.
func (h *hubLimiter) failLocked(p Priority, err error) {
	q := h.queues[p]
	for q.Len() > 0 {
		w := q.Remove(q.Front()).(*waiter)
		w.elem = nil
		w.err = err
		close(w.done)
	}
}

// pauseLocal pauses the hub in this process and wakes the scheduler to notice.
func (h *hubLimiter) pauseLocal(until time.Time) {
	h.lock()
	if until.After(h.notBefore) {
		h.notBefore = until
	}
	h.unlock()
	h.signal()
}

// demandLocked is what one claim for class p should ask: the sum of its queued needs,
// capped at MaxClaim.
func (h *hubLimiter) demandLocked(p Priority) int {
	n := 0
	for e := h.queues[p].Front(); e != nil && n < h.l.opts.MaxClaim; e = e.Next() {
		w := e.Value.(*waiter)
		n += w.n - w.got
	}
	return min(n, h.l.opts.MaxClaim)
}

// run claims tokens from the shared windows while callers wait, and exits when none do.
func (h *hubLimiter) run() {
	l, win := h.l, h.l.win
	failures := 0
	for {
		h.lock()
		h.serveLocked()
		p := PriorityHigh
		if h.queues[PriorityHigh].Len() == 0 {
			p = PriorityBulk
		}
		if h.queues[p].Len() == 0 {
			h.running = false
			h.unlock()
			return
		}
		need := h.demandLocked(p)
		now := l.now()
		notBefore := h.notBefore
		h.unlock()
		if now.Before(notBefore) {
			h.sleep(notBefore.Sub(now))
			continue
		}

		k := win.index(now)
		ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
		res, err := h.store.claim(ctx, k, need, p, h)
		if err == nil && res.granted == 0 && p == PriorityHigh && l.opts.HighBorrowsAhead && !now.Before(res.notBefore) {
			k++
			res, err = h.store.claim(ctx, k, need, p, h)
		}
		cancel()
		if err != nil {
			failures++
			l.log.Warn("rate limit claim failed", "hub", h.name, "priority", p.String(), "attempt", failures, "error", err)
			if failures >= failAfter {
				h.lock()
				h.failLocked(p, fmt.Errorf("rate limit for hub %s: %w", h.name, err))
				h.unlock()
				failures = 0
			}
			h.sleep(time.Duration(50<<failures) * time.Millisecond)
			continue
		}
		failures = 0
		h.lock()
		if res.notBefore.After(h.notBefore) {
			h.notBefore = res.notBefore
		}
		if res.granted > 0 {
			l.stat.claims.Add(1)
			l.stat.granted[p].Add(int64(res.granted))
			// Claims never exceed what callers wait for, so the pool only holds tokens
			// between a claim and the next serve; a window's grace keeps a claim that
			// returns just after its window from being wasted.
			h.addPoolLocked(res.granted, win.end(k+1))
			h.unlock()
			if l.opts.OnGrant != nil {
				l.opts.OnGrant(Grant{Hub: h.name, Window: k, Tokens: res.granted, Capacity: res.capacity, Priority: p})
			}
			if res.granted == need || p == PriorityHigh {
				continue
			}
			// A partial grant means the window has nothing more for this class.
			h.lock()
			h.serveLocked()
			h.unlock()
		} else {
			h.unlock()
		}
		// Nothing left for this class: sleep until the pause ends, the reserve is released
		// to bulk work, or the next window opens; a high-priority arrival wakes us earlier.
		now = l.now()
		next := win.end(k)
		switch {
		case now.Before(res.notBefore):
			next = res.notBefore
		case res.total < res.capacity:
			if p == PriorityBulk && now.Before(win.releaseAt(k)) {
				next = win.releaseAt(k)
			}
			if s := win.nextStep(k, now); s.Before(next) {
				next = s // the next pacing step hands out more of this window
			}
		}
		h.sleep(next.Sub(now))
	}
}

// sleep waits for d or a wake-up signal.
func (h *hubLimiter) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-h.wake:
	}
}

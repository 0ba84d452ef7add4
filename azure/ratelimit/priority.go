package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"

	"dpsdeprov/azure/iothub"
)

// Priority orders the requests that share a hub's budget.
type Priority int

const (
	// PriorityBulk is group-wide work: it may claim only (1 − Reserve) of a window's capacity
	// until the window's release point, and it is served after every queued high request.
	PriorityBulk Priority = iota
	// PriorityHigh is single-device compromise and theft response: it is served ahead of bulk
	// work in the process and may use the whole window, including the reserve.
	PriorityHigh
)

// String returns "bulk" or "high".
func (p Priority) String() string {
	switch p {
	case PriorityBulk:
		return "bulk"
	case PriorityHigh:
		return "high"
	}
	return fmt.Sprintf("Priority(%d)", int(p))
}

type priorityKey struct{}

// WithPriority returns a context carrying p, which [LimitedDevices] reads to pick the priority of the
// calls made with it. The handler sets it per request: PriorityHigh for a single compromised,
// stolen or lost device, PriorityBulk for group work.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityFrom returns the priority [WithPriority] put in ctx, and whether there was one.
func PriorityFrom(ctx context.Context) (Priority, bool) {
	p, ok := ctx.Value(priorityKey{}).(Priority)
	return p, ok
}

type prepaidKey struct{}

// prepaid is operations already waited for with [Limiter.Wait], for the first try of a
// request that goes through [NewPolicy]'s policy.
type prepaid struct {
	key  string
	n    int
	used atomic.Bool
}

// WithPrepaid returns a context whose next request priced on key, for at most n operations,
// goes without waiting: its caller has waited for them already (a bulk call that waits for its
// budget before it takes the items it carries). Retries, and any request after that one, wait
// as usual.
func WithPrepaid(ctx context.Context, key string, n int) context.Context {
	return context.WithValue(ctx, prepaidKey{}, &prepaid{key: iothub.CanonicalHost(key), n: n})
}

// usePrepaid reports whether ctx prepaid ch, and spends it.
func usePrepaid(ctx context.Context, ch Charge) bool {
	p, ok := ctx.Value(prepaidKey{}).(*prepaid)
	return ok && p.key == iothub.CanonicalHost(ch.Key) && ch.N <= p.n && p.used.CompareAndSwap(false, true)
}

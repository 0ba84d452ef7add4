// Package ratelimit keeps each IoT hub's identity-registry traffic within its
// operations-per-minute budget when several handler instances share the hub, adapts to the
// hub's 429 answers, and serves single-device compromise response ahead of group-wide bulk
// work.
//
// The budget is shared through Azure Table Storage: time is cut into short windows (1 s by
// default), and one entity per (hub, window) counts the operations granted in it, updated
// with ETag optimistic concurrency. An instance claims only what its queued callers need
// (several queued callers are served by one claim), so no token is claimed and lost. A 429
// recorded with [Limiter.Observe429] pauses the hub for every instance; repeated 429s also
// lower its rate a little, which recovers slowly. See docs/ratelimit.md.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"dpsdeprov/azure/internal/tables"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/journal"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// errInvalid marks a bad argument: waiting again cannot help.
var errInvalid = errors.New("invalid argument")

// Options configure a [Limiter]. Every instance sharing a table must use the same Window and
// should use the same budgets: the first instance to open a window fixes its capacity.
type Options struct {
	// PerMinute is each hub's identity-registry budget in operations per minute (every device
	// of a bulk call counts). Default 100, an S1 unit's.
	PerMinute int
	// HubPerMinute overrides PerMinute per hub, keyed by host name ("hub1.azure-devices.net")
	// or bare name ("hub1").
	HubPerMinute map[string]int
	// Window is the length of the windows the budget is counted in. Default 1s. Shorter
	// windows smooth the traffic but cost more Table transactions.
	Window time.Duration
	// Reserve is the share of each window that bulk work leaves to high-priority requests
	// until the release point. Default 0.1. Negative means none.
	Reserve float64
	// Release is the fraction of a window after which bulk work may claim the reserve that
	// high-priority requests left unused, so the reserve costs bulk work no throughput.
	// Default 0.8: a high-priority request waits at most the last 20% of a window.
	Release float64
	// Pace cuts each window into this many steps and lets bulk work claim only the share of
	// the window's capacity of the steps begun so far (high-priority work that share plus the
	// reserve, so that it does not wait for a step). A service that refills its budget
	// continuously (a token bucket) sees at most a step's share and the reserve ahead of its
	// refill, instead of a whole window's at the window's start, which after an idle or drained
	// budget is answered 429 (and a second 429 right after the pause cuts the rate). Each step
	// can cost a Table claim per instance. Default 0: none.
	Pace int
	// HighBorrowsAhead lets a high-priority request that finds the current window full take
	// its tokens from the next window at once instead of waiting for it. The long-run rate is
	// unchanged, but the hub sees a burst of up to two windows' worth, which risks a 429 when
	// the hub has no headroom left (see docs/ratelimit.md). Default false.
	HighBorrowsAhead bool
	// MaxClaim caps the tokens one Table claim takes. Default 100, one bulk call.
	MaxClaim int
	// DefaultRetryAfter is the pause after a 429 that names none. Default 1s.
	DefaultRetryAfter time.Duration
	// MaxPause caps the pause one 429 can impose. Default 60s.
	MaxPause time.Duration
	// Decrease multiplies a hub's rate on a 429 that starts a new pause within RepeatWithin
	// of the end of the previous one. Default 0.9.
	Decrease float64
	// RepeatWithin is how soon after a pause a new 429 counts as a repeat and cuts the rate;
	// a lone 429 only pauses the hub. Default 2m.
	RepeatWithin time.Duration
	// MinFactor is the lowest share of the budget 429s can bring a hub's rate to. Default 0.5.
	MinFactor float64
	// RecoverPerMinute is how much of the budget the rate regains a minute after a cut.
	// Default 0.05 (from 0.9 back to full in 2m): slow enough that a budget set too high
	// settles with few 429s.
	RecoverPerMinute float64
	// Logger receives warnings (Table failures, clock skew). Default slog.Default().
	Logger *slog.Logger
	// OnGrant, if set, is called after every successful Table claim (for metrics and tests).
	// It must not block.
	OnGrant func(Grant)
}

// Grant describes one successful claim of tokens from a window's shared counter.
type Grant struct {
	Hub      string // normalized host name
	Window   int64  // window index: Unix time / Window
	Tokens   int
	Capacity int // the window's capacity
	Priority Priority
}

// Stats counts a limiter's work since it was created.
type Stats struct {
	TableCalls   int64 // Table Storage requests
	Conflicts    int64 // of which lost an optimistic-concurrency race (409/412)
	Claims       int64 // claims that were granted tokens
	GrantedHigh  int64 // tokens granted to high-priority requests
	GrantedBulk  int64 // tokens granted to bulk requests
	Observed429s int64 // calls to Observe429
	// Lapsed counts granted tokens no caller used before their window (and its grace)
	// ended: a claim answered that late, or a caller that left. They were never sent.
	Lapsed int64
}

type counters struct {
	tableCalls, conflicts, claims, observed, lapsed atomic.Int64
	granted                                         [2]atomic.Int64
}

// Limiter keeps hubs within their budgets, shared by every Limiter on the same table.
// It is safe for concurrent use. Hubs are independent: each has its own queue and its own
// Table partition, and no lock is held across hubs.
type Limiter struct {
	table *aztables.Client
	opts  Options
	win   windows
	log   *slog.Logger
	now   func() time.Time // the wall clock; windows are aligned on it across instances
	stat  counters

	mu   sync.Mutex
	hubs map[string]*hubLimiter
}

// New returns a limiter over table, which must exist (see [CreateTable]). o may be nil.
func New(table *aztables.Client, o *Options) (*Limiter, error) {
	if table == nil {
		return nil, errors.New("rate limiter: no table client")
	}
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.PerMinute == 0 {
		opts.PerMinute = 100
	}
	if opts.PerMinute < 0 {
		return nil, fmt.Errorf("rate limiter: PerMinute %d is negative", opts.PerMinute)
	}
	hubs := make(map[string]int, len(opts.HubPerMinute))
	for h, n := range opts.HubPerMinute {
		if n <= 0 {
			return nil, fmt.Errorf("rate limiter: budget %d for hub %q must be positive", n, h)
		}
		k := iothub.CanonicalHost(h)
		if k == "" {
			return nil, errors.New("rate limiter: a hub budget names no hub")
		}
		hubs[k] = n
	}
	opts.HubPerMinute = hubs
	if opts.Window == 0 {
		opts.Window = time.Second
	}
	if opts.Window < 10*time.Millisecond || opts.Window > time.Minute || opts.Window%time.Millisecond != 0 {
		return nil, fmt.Errorf("rate limiter: Window %v must be whole milliseconds between 10ms and 1m", opts.Window)
	}
	switch {
	case opts.Reserve == 0:
		opts.Reserve = 0.1
	case opts.Reserve < 0:
		opts.Reserve = 0
	case opts.Reserve >= 1:
		return nil, fmt.Errorf("rate limiter: Reserve %v must be below 1", opts.Reserve)
	}
	if opts.Release == 0 {
		opts.Release = 0.8
	}
	if opts.Release < 0 || opts.Release > 1 {
		return nil, fmt.Errorf("rate limiter: Release %v must be between 0 and 1", opts.Release)
	}
	if opts.MaxClaim == 0 {
		opts.MaxClaim = 100
	}
	if opts.MaxClaim < 0 {
		return nil, fmt.Errorf("rate limiter: MaxClaim %d is negative", opts.MaxClaim)
	}
	if opts.DefaultRetryAfter <= 0 {
		opts.DefaultRetryAfter = time.Second
	}
	if opts.MaxPause <= 0 {
		opts.MaxPause = time.Minute
	}
	if opts.Decrease == 0 {
		opts.Decrease = 0.9
	}
	if opts.Decrease <= 0 || opts.Decrease > 1 {
		return nil, fmt.Errorf("rate limiter: Decrease %v must be in (0, 1]", opts.Decrease)
	}
	if opts.RepeatWithin == 0 {
		opts.RepeatWithin = 2 * time.Minute
	}
	if opts.RepeatWithin < 0 {
		return nil, fmt.Errorf("rate limiter: RepeatWithin %v is negative", opts.RepeatWithin)
	}
	if opts.MinFactor == 0 {
		opts.MinFactor = 0.5
	}
	if opts.MinFactor <= 0 || opts.MinFactor > 1 {
		return nil, fmt.Errorf("rate limiter: MinFactor %v must be in (0, 1]", opts.MinFactor)
	}
	if opts.RecoverPerMinute == 0 {
		opts.RecoverPerMinute = 0.05
	}
	if opts.RecoverPerMinute < 0 {
		return nil, fmt.Errorf("rate limiter: RecoverPerMinute %v is negative", opts.RecoverPerMinute)
	}
	if opts.Pace < 0 || opts.Pace > 100 {
		return nil, fmt.Errorf("rate limiter: Pace %d must be between 0 and 100", opts.Pace)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Limiter{
		table: table, opts: opts, log: opts.Logger, now: time.Now,
		win:  windows{size: opts.Window, reserve: opts.Reserve, release: opts.Release, pace: opts.Pace},
		hubs: map[string]*hubLimiter{},
	}, nil
}

// CreateTable creates the limiter's table in svc if it is missing and returns its client.
// name must be a valid table name (letters and digits, starting with a letter, 3-63).
func CreateTable(ctx context.Context, svc *aztables.ServiceClient, name string) (*aztables.Client, error) {
	c, err := tables.Create(ctx, svc, name)
	if err != nil {
		return nil, fmt.Errorf("the rate limiter's table: %w", err)
	}
	return c, nil
}

// Wait blocks until n operations on hub may be sent, or ctx ends (it then returns ctx.Err()).
// High-priority callers are served before every queued bulk caller of the process; n larger
// than a window's capacity is gathered over several windows.
func (l *Limiter) Wait(ctx context.Context, hub string, n int, p Priority) error {
	if n < 0 {
		return fmt.Errorf("rate limit for hub %q: %d operations is negative: %w", hub, n, errInvalid)
	}
	if p != PriorityBulk && p != PriorityHigh {
		return fmt.Errorf("rate limit for hub %q: unknown priority %d: %w", hub, int(p), errInvalid)
	}
	h, err := l.hub(hub)
	if err != nil {
		return err
	}
	if n == 0 {
		return ctx.Err()
	}
	return h.wait(ctx, n, p)
}

// Observe429 records that hub answered 429 with retryAfter (0 when it named none): every
// instance sharing the table pauses the hub until then (at most MaxPause); a 429 that repeats
// a recent one also lowers the hub's rate a little, which recovers slowly. The pause takes effect in this process even when recording it
// in the table fails; the error says so.
func (l *Limiter) Observe429(ctx context.Context, hub string, retryAfter time.Duration) error {
	h, err := l.hub(hub)
	if err != nil {
		return err
	}
	l.stat.observed.Add(1)
	if retryAfter <= 0 {
		retryAfter = l.opts.DefaultRetryAfter
	}
	retryAfter = min(retryAfter, l.opts.MaxPause)
	until := l.now().Add(retryAfter)
	h.pauseLocal(until)
	if _, err := h.store.pause(ctx, until, h); err != nil {
		return fmt.Errorf("recording the 429 pause of hub %s: %w", h.name, err)
	}
	return nil
}

// Stats returns the limiter's counters.
func (l *Limiter) Stats() Stats {
	return Stats{
		TableCalls:   l.stat.tableCalls.Load(),
		Conflicts:    l.stat.conflicts.Load(),
		Claims:       l.stat.claims.Load(),
		GrantedBulk:  l.stat.granted[PriorityBulk].Load(),
		GrantedHigh:  l.stat.granted[PriorityHigh].Load(),
		Observed429s: l.stat.observed.Load(),
		Lapsed:       l.stat.lapsed.Load(),
	}
}

// PerMinute returns the budget the limiter applies to key: a host name, or a hub's query
// budget ([QueryKey], a fifth of the hub's unless HubPerMinute names it).
func (l *Limiter) PerMinute(key string) int {
	k := iothub.CanonicalHost(key)
	if n, ok := l.opts.HubPerMinute[k]; ok {
		return n
	}
	if host, ok := strings.CutSuffix(k, querySuffix); ok {
		return max(1, l.PerMinute(host)/5)
	}
	return l.opts.PerMinute
}

func (l *Limiter) newShared() hubShared {
	return hubShared{recoverPerSec: l.opts.RecoverPerMinute / 60}
}

// hub returns the hub's limiter, creating it on first use.
func (l *Limiter) hub(name string) (*hubLimiter, error) {
	k := iothub.CanonicalHost(name)
	if k == "" {
		return nil, fmt.Errorf("rate limit: no hub named: %w", errInvalid)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.hubs[k]; ok {
		return h, nil
	}
	pk, err := journal.EncodeKey(k)
	if err != nil {
		return nil, fmt.Errorf("rate limit for hub %q: %w: %w", name, err, errInvalid)
	}
	h := newHubLimiter(l, k, pk)
	l.hubs[k] = h
	return h, nil
}

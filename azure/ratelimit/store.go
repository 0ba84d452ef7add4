package ratelimit

import (
	"context"
	"dpsdeprov/azure/internal/tables"
	"fmt"
	"math"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Table layout: one partition per hub (PartitionKey = the encoded hub host name), so hubs
// never contend for a partition. In it:
//   - RowKey "state": the hub's shared pause and rate factor (written after a 429);
//   - RowKey "wNN": a ring of ringSlots window counters; slot k mod ringSlots counts the
//     tokens granted in window k and is reset in place when a later window reuses it, so the
//     table never grows and needs no cleanup.
const (
	ringSlots   = 60
	stateRowKey = "state"
	edmInt64    = "Edm.Int64"
	// maxAttempts bounds the optimistic-concurrency retries of one claim (409/412 races).
	maxAttempts = 16
)

// slotEntity is one window counter.
type slotEntity struct {
	PartitionKey  string `json:"PartitionKey"`
	RowKey        string `json:"RowKey"`
	WindowType    string `json:"Window@odata.type"`
	Window        int64  `json:"Window,string"`
	WindowMsType  string `json:"WindowMs@odata.type"`
	WindowMs      int64  `json:"WindowMs,string"`
	Cap           int32  `json:"Cap"`
	Granted       int32  `json:"Granted"`
	NotBeforeType string `json:"NotBefore@odata.type"`
	NotBefore     int64  `json:"NotBefore,string"` // Unix milliseconds; 0 = none
}

// stateEntity is a hub's shared adaptation state.
type stateEntity struct {
	PartitionKey    string `json:"PartitionKey"`
	RowKey          string `json:"RowKey"`
	PausedUntilType string `json:"PausedUntil@odata.type"`
	PausedUntil     int64  `json:"PausedUntil,string"` // Unix milliseconds
	FactorPPM       int32  `json:"FactorPPM"`          // rate factor in millionths; 0 = full rate
	FactorSinceType string `json:"FactorSince@odata.type"`
	FactorSince     int64  `json:"FactorSince,string"` // Unix milliseconds
}

func slotRowKey(k int64) string {
	m := k % ringSlots
	if m < 0 {
		m += ringSlots
	}
	return fmt.Sprintf("w%02d", m)
}

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeOfMs(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// store is the table side of one hub.
type store struct {
	c    *aztables.Client
	pk   string
	l    *Limiter
	stat *counters
}

func (s *store) get(ctx context.Context, rk string, v any) (azcore.ETag, bool, error) {
	s.stat.tableCalls.Add(1)
	return tables.Get(ctx, s.c, s.pk, rk, v)
}

// put adds v when etag is nil, or replaces it if it still has etag. It reports false, with
// no error, when another instance won the race (409 or 412).
func (s *store) put(ctx context.Context, v any, etag *azcore.ETag) (bool, error) {
	s.stat.tableCalls.Add(1)
	won, err := tables.Put(ctx, s.c, v, etag)
	if err == nil && !won {
		s.stat.conflicts.Add(1)
	}
	return won, err
}

// shared reads the hub's shared state.
func (s *store) shared(ctx context.Context) (hubShared, azcore.ETag, bool, error) {
	var e stateEntity
	etag, ok, err := s.get(ctx, stateRowKey, &e)
	if err != nil || !ok {
		return s.l.newShared(), etag, ok, err
	}
	sh := s.l.newShared()
	sh.pausedUntil = timeOfMs(e.PausedUntil)
	sh.factor = float64(e.FactorPPM) / 1e6
	sh.factorSince = timeOfMs(e.FactorSince)
	return sh, etag, true, nil
}

// claimResult is what one claim on a window got.
type claimResult struct {
	granted   int
	capacity  int       // the window's capacity
	total     int       // granted in the window so far, this claim included
	notBefore time.Time // the hub is paused until then
}

// claim takes up to n tokens of window k for class p. It never takes more than the class's
// limit, and it reports what is left so the caller knows when to try again.
func (s *store) claim(ctx context.Context, k int64, n int, p Priority, hub *hubLimiter) (claimResult, error) {
	w := s.l.win
	rk := slotRowKey(k)
	for range maxAttempts {
		var e slotEntity
		etag, ok, err := s.get(ctx, rk, &e)
		if err != nil {
			return claimResult{}, fmt.Errorf("reading window counter %s/%s: %w", s.pk, rk, err)
		}
		now := s.l.now()
		if ok && e.Window == k && e.WindowMs != w.size.Milliseconds() {
			return claimResult{}, fmt.Errorf("window counter %s/%s was written with %d ms windows, this instance uses %v: every instance sharing the table must use the same Window", s.pk, rk, e.WindowMs, w.size)
		}
		if ok && e.Window > k {
			// Another instance's clock is a whole ring of windows ahead of ours: we cannot
			// tell what window k was granted, so take nothing from it.
			s.l.log.Warn("rate limit window counter is ahead of this instance's clock", "hub", hub.name, "window", k, "stored", e.Window)
			return claimResult{capacity: int(e.Cap), total: int(e.Cap)}, nil
		}
		fresh := !ok || e.Window < k
		if fresh {
			sh, _, _, err := s.shared(ctx)
			if err != nil {
				return claimResult{}, fmt.Errorf("reading shared state of %s: %w", s.pk, err)
			}
			e = slotEntity{PartitionKey: s.pk, RowKey: rk, Window: k, WindowMs: w.size.Milliseconds(),
				Cap: int32(w.capacity(k, hub.perMinute, sh, w.start(k))), NotBefore: msOf(sh.pausedUntil)}
		}
		res := claimResult{capacity: int(e.Cap), notBefore: timeOfMs(e.NotBefore)}
		avail := w.limit(k, int(e.Cap), p, now) - int(e.Granted)
		if now.Before(res.notBefore) {
			avail = 0
		}
		res.granted = max(0, min(n, avail))
		res.total = int(e.Granted) + res.granted
		if res.granted == 0 && !fresh {
			return res, nil
		}
		e.Granted += int32(res.granted)
		e.WindowType, e.WindowMsType, e.NotBeforeType = edmInt64, edmInt64, edmInt64
		var match *azcore.ETag
		if ok {
			match = &etag
		}
		won, err := s.put(ctx, &e, match)
		if err != nil {
			return claimResult{}, fmt.Errorf("updating window counter %s/%s: %w", s.pk, rk, err)
		}
		if won {
			return res, nil
		}
	}
	return claimResult{}, fmt.Errorf("window counter %s/%s: still contended after %d attempts", s.pk, rk, maxAttempts)
}

// pause records a pause until `until` in the shared state, lowering the rate factor if the
// hub was not paused already, and closes the windows it covers that are already open.
func (s *store) pause(ctx context.Context, until time.Time, hub *hubLimiter) (hubShared, error) {
	var sh hubShared
	for i := 0; ; i++ {
		if i == maxAttempts {
			return sh, fmt.Errorf("shared state of %s: still contended after %d attempts", s.pk, maxAttempts)
		}
		cur, etag, ok, err := s.shared(ctx)
		if err != nil {
			return sh, fmt.Errorf("reading shared state of %s: %w", s.pk, err)
		}
		now := s.l.now()
		sh = cur
		// Only a new episode cuts the rate, and only if it repeats a recent one: a lone 429,
		// such as from a hub that was busy when the work started, just pauses. Calls issued
		// before the pause that come back 429 during it are the same episode, and so is a 429
		// within the window after it: Retry-After says when a call may succeed, not that the
		// service refilled a whole window's budget by then (a token bucket drained by others
		// holds only what it regained during the pause).
		if after := now.Sub(cur.pausedUntil); !cur.pausedUntil.IsZero() && after >= s.l.win.size && after <= s.l.opts.RepeatWithin {
			sh.factor = math.Max(s.l.opts.MinFactor, cur.factorAt(now)*s.l.opts.Decrease)
			sh.factorSince = now
		}
		if until.After(sh.pausedUntil) {
			sh.pausedUntil = until
		}
		e := stateEntity{PartitionKey: s.pk, RowKey: stateRowKey,
			PausedUntilType: edmInt64, PausedUntil: msOf(sh.pausedUntil),
			FactorPPM:       int32(math.Round(sh.factor * 1e6)),
			FactorSinceType: edmInt64, FactorSince: msOf(sh.factorSince)}
		var match *azcore.ETag
		if ok {
			match = &etag
		}
		won, err := s.put(ctx, &e, match)
		if err != nil {
			return sh, fmt.Errorf("writing shared state of %s: %w", s.pk, err)
		}
		if won {
			break
		}
	}
	// Close the open windows the pause covers, so instances that already read them stop
	// claiming; later windows read the state when they open.
	w := s.l.win
	k := w.index(s.l.now())
	for j := k; j <= k+1 && w.start(j).Before(sh.pausedUntil); j++ {
		if err := s.closeWindow(ctx, j, sh, hub, j == k); err != nil {
			return sh, err
		}
	}
	return sh, nil
}

// closeWindow applies sh's pause to window j's counter; when the counter is not open for j, it
// opens it paused only if create is set.
func (s *store) closeWindow(ctx context.Context, j int64, sh hubShared, hub *hubLimiter, create bool) error {
	w := s.l.win
	rk := slotRowKey(j)
	for range maxAttempts {
		var e slotEntity
		etag, ok, err := s.get(ctx, rk, &e)
		if err != nil {
			return fmt.Errorf("reading window counter %s/%s: %w", s.pk, rk, err)
		}
		capAfter := w.capacity(j, hub.perMinute, sh, w.start(j))
		var match *azcore.ETag
		switch {
		case ok && e.Window == j:
			e.Cap = int32(max(int(e.Granted), min(int(e.Cap), capAfter)))
			e.NotBefore = max(e.NotBefore, msOf(sh.pausedUntil))
			match = &etag
		case ok && e.Window > j, !create:
			return nil
		default:
			if ok {
				match = &etag
			}
			e = slotEntity{PartitionKey: s.pk, RowKey: rk, Window: j, WindowMs: w.size.Milliseconds(), Cap: int32(capAfter), NotBefore: msOf(sh.pausedUntil)}
		}
		e.WindowType, e.WindowMsType, e.NotBeforeType = edmInt64, edmInt64, edmInt64
		won, err := s.put(ctx, &e, match)
		if err != nil {
			return fmt.Errorf("closing window counter %s/%s: %w", s.pk, rk, err)
		}
		if won {
			return nil
		}
	}
	return fmt.Errorf("window counter %s/%s: still contended after %d attempts", s.pk, rk, maxAttempts)
}

package ratelimit

import (
	"math"
	"time"
)

// windows holds the arithmetic of the time windows a hub's budget is cut into. It is pure so
// that every instance, given the same options, computes the same capacities.
type windows struct {
	size    time.Duration
	reserve float64 // share of a window bulk work may not claim before release
	release float64 // fraction of a window after which bulk work may claim the reserve
	pace    int     // steps a window's capacity is handed to bulk work in (0, 1: all at its start)
}

// index is the window holding t. Windows are aligned on the Unix epoch, so instances agree on
// them up to their clock skew.
func (w windows) index(t time.Time) int64 { return t.UnixNano() / int64(w.size) }

func (w windows) start(k int64) time.Time { return time.Unix(0, k*int64(w.size)) }

func (w windows) end(k int64) time.Time { return w.start(k + 1) }

// releaseAt is when bulk work may start claiming window k's reserve.
func (w windows) releaseAt(k int64) time.Time {
	return w.start(k).Add(time.Duration(float64(w.size) * w.release))
}

// base is window k's share of perMinute×factor operations a minute. Consecutive windows get
// floor(R·(k+1)) − floor(R·k) with R the (fractional) rate per window, so a budget such as
// S1's 100 a minute in 1 s windows (1.67 a window) is met exactly over any run of windows.
func (w windows) base(k int64, perMinute int, factor float64) int {
	r := float64(perMinute) * factor * w.size.Seconds() / 60
	if r <= 0 {
		return 0
	}
	return int(math.Floor(r*float64(k+1)) - math.Floor(r*float64(k)))
}

// capacity is window k's capacity given the hub's shared state: its base, cut down in
// proportion when a pause (after a 429) covers part of the window, zero when it covers all.
func (w windows) capacity(k int64, perMinute int, s hubShared, now time.Time) int {
	c := w.base(k, perMinute, s.factorAt(now))
	end := w.end(k)
	switch {
	case !s.pausedUntil.After(w.start(k)):
		return c
	case !s.pausedUntil.Before(end):
		return 0
	}
	left := end.Sub(s.pausedUntil)
	return int(float64(c) * float64(left) / float64(w.size))
}

// limit is how many of a window's cap tokens a class may have been granted in total at now:
// bulk work leaves the reserve to high-priority requests until the release point.
// With pace steps, bulk work may have been granted only the steps begun by now, and
// high-priority work that share plus the reserve (so that it still finds tokens at once): a
// service that refills its budget continuously (a token bucket, as DPS's is modelled) then
// never sees a whole window's capacity at the window's start, ahead of its refill.
func (w windows) limit(k int64, capacity int, p Priority, now time.Time) int {
	n := capacity
	if p == PriorityBulk && now.Before(w.releaseAt(k)) {
		n = int(math.Floor(float64(capacity) * (1 - w.reserve)))
	}
	if w.pace > 1 {
		paced := int(math.Ceil(float64(capacity) * float64(w.step(k, now)) / float64(w.pace)))
		if p == PriorityHigh {
			paced += int(math.Ceil(float64(capacity) * w.reserve))
		}
		n = min(n, paced)
	}
	return n
}

// step is the pacing step of window k begun at now: 1 … pace.
func (w windows) step(k int64, now time.Time) int {
	f := float64(now.Sub(w.start(k))) / float64(w.size)
	return min(w.pace, max(1, int(math.Floor(f*float64(w.pace)))+1))
}

// nextStep is when window k's next pacing step begins after now (the window's end after
// the last step).
func (w windows) nextStep(k int64, now time.Time) time.Time {
	if w.pace <= 1 {
		return w.end(k)
	}
	return w.start(k).Add(time.Duration(float64(w.size) * float64(w.step(k, now)) / float64(w.pace)))
}

// hubShared is the state every instance shares about one hub: the pause a 429 asked for and
// the rate factor that adapts to 429s.
type hubShared struct {
	pausedUntil time.Time
	// factor is the share of the budget in use right after factorSince (1 = all of it); it
	// recovers linearly at recoverPerSec towards 1.
	factor        float64
	factorSince   time.Time
	recoverPerSec float64
}

// factorAt is the rate factor in effect at t.
func (s hubShared) factorAt(t time.Time) float64 {
	if s.factor <= 0 || s.factor >= 1 {
		return 1
	}
	f := s.factor + s.recoverPerSec*t.Sub(s.factorSince).Seconds()
	return math.Min(1, math.Max(s.factor, f))
}

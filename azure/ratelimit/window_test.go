package ratelimit

import (
	"testing"
	"time"
)

// Over any minute of windows, the capacities add up to the budget exactly, also when a window
// holds a fraction of an operation (S1: 100 a minute in 1 s windows).
func TestWindowCapacitiesAddUpToTheBudget(t *testing.T) {
	for _, c := range []struct {
		perMinute int
		window    time.Duration
	}{{100, time.Second}, {6000, time.Second}, {5000, 250 * time.Millisecond}, {7, 2 * time.Second}} {
		w := windows{size: c.window, reserve: 0.1, release: 0.8}
		perMinuteWindows := int64(time.Minute / c.window)
		for _, start := range []int64{0, 1_780_000_000 * int64(time.Second/c.window), 12345} {
			sum, most := 0, 0
			for k := start; k < start+perMinuteWindows; k++ {
				n := w.base(k, c.perMinute, 1)
				sum += n
				most = max(most, n)
			}
			if sum != c.perMinute {
				t.Errorf("%d/min in %v windows from %d: a minute of windows holds %d", c.perMinute, c.window, start, sum)
			}
			if exact := float64(c.perMinute) * c.window.Seconds() / 60; float64(most) > exact+1 {
				t.Errorf("%d/min in %v windows: a window holds %d, more than %.2f+1", c.perMinute, c.window, most, exact)
			}
		}
	}
}

func TestWindowLimitKeepsTheReserveUntilRelease(t *testing.T) {
	w := windows{size: time.Second, reserve: 0.1, release: 0.8}
	k := int64(1_780_000_000)
	early, late := w.start(k).Add(100*time.Millisecond), w.start(k).Add(850*time.Millisecond)
	if got := w.limit(k, 100, PriorityBulk, early); got != 90 {
		t.Errorf("bulk before release: limit %d, want 90", got)
	}
	if got := w.limit(k, 100, PriorityHigh, early); got != 100 {
		t.Errorf("high before release: limit %d, want 100", got)
	}
	if got := w.limit(k, 100, PriorityBulk, late); got != 100 {
		t.Errorf("bulk after release: limit %d, want 100", got)
	}
}

func TestWindowCapacityUnderPauseAndFactor(t *testing.T) {
	w := windows{size: time.Second, reserve: 0.1, release: 0.8}
	k := int64(1_780_000_000)
	s := hubShared{recoverPerSec: 0.01}
	if got := w.capacity(k, 6000, s, w.start(k)); got != 100 {
		t.Fatalf("no pause: %d, want 100", got)
	}
	s.pausedUntil = w.start(k).Add(250 * time.Millisecond)
	if got := w.capacity(k, 6000, s, w.start(k)); got != 75 {
		t.Errorf("paused for a quarter of the window: %d, want 75", got)
	}
	s.pausedUntil = w.end(k)
	if got := w.capacity(k, 6000, s, w.start(k)); got != 0 {
		t.Errorf("paused for the whole window: %d, want 0", got)
	}
	s = hubShared{factor: 0.9, factorSince: w.start(k), recoverPerSec: 0.01}
	if got := w.capacity(k, 6000, s, w.start(k)); got != 90 {
		t.Errorf("factor 0.9: %d, want 90", got)
	}
	if f := s.factorAt(w.start(k).Add(5 * time.Second)); f < 0.949 || f > 0.951 {
		t.Errorf("factor after 5s of recovery: %v, want 0.95", f)
	}
	if f := s.factorAt(w.start(k).Add(time.Minute)); f != 1 {
		t.Errorf("factor after a minute: %v, want 1", f)
	}
}

// With Pace, bulk work is handed a window's capacity step by step, and high-priority work the
// same steps plus the reserve.
func TestWindowLimitPacesBulkWork(t *testing.T) {
	w := windows{size: time.Second, reserve: 0.1, release: 0.8, pace: 4}
	k := int64(1_780_000_000)
	at := func(ms int) time.Time { return w.start(k).Add(time.Duration(ms) * time.Millisecond) }
	for _, c := range []struct {
		capacity, ms, want int
	}{
		{100, 0, 25}, {100, 249, 25}, {100, 250, 50}, {100, 600, 75}, {100, 790, 90}, {100, 800, 100}, {100, 999, 100},
		{4, 0, 1}, {4, 300, 2}, {4, 500, 3}, {4, 760, 3}, {4, 850, 4},
		{5, 0, 2}, {5, 260, 3}, {5, 900, 5},
	} {
		if got := w.limit(k, c.capacity, PriorityBulk, at(c.ms)); got != c.want {
			t.Errorf("capacity %d at %d ms: bulk limit %d, want %d", c.capacity, c.ms, got, c.want)
		}
	}
	// High priority is paced too, but ahead of bulk work by the reserve.
	for _, c := range []struct{ capacity, ms, want int }{{100, 0, 35}, {100, 800, 100}, {4, 0, 2}, {4, 800, 4}} {
		if got := w.limit(k, c.capacity, PriorityHigh, at(c.ms)); got != c.want {
			t.Errorf("capacity %d at %d ms: high-priority limit %d, want %d", c.capacity, c.ms, got, c.want)
		}
	}
	for _, c := range []struct{ ms, next int }{{0, 250}, {249, 250}, {250, 500}, {900, 1000}} {
		if got := w.nextStep(k, at(c.ms)); !got.Equal(at(c.next)) {
			t.Errorf("next step after %d ms: %v, want %d ms", c.ms, got.Sub(w.start(k)), c.next)
		}
	}
	unpaced := windows{size: time.Second, reserve: 0.1, release: 0.8}
	if got := unpaced.limit(k, 100, PriorityBulk, at(0)); got != 90 {
		t.Errorf("without pace: bulk limit %d at the window's start, want 90", got)
	}
}

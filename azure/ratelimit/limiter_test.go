package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// newTable creates a fresh limiter table in the package's Azurite.
func newTable(tb testing.TB) *aztables.Client {
	tb.Helper()
	a := testenv.SharedAzurite(tb)
	svc, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := CreateTable(context.Background(), svc, testenv.UniqueName("rl"))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func newLimiter(tb testing.TB, table *aztables.Client, o Options) *Limiter {
	tb.Helper()
	l, err := New(table, &o)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// grantLog sums the grants of several limiters per window.
type grantLog struct {
	mu     sync.Mutex
	byWin  map[int64]int
	capWin map[int64]int
	total  int
}

func (g *grantLog) record(x Grant) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byWin == nil {
		g.byWin, g.capWin = map[int64]int{}, map[int64]int{}
	}
	g.byWin[x.Window] += x.Tokens
	g.capWin[x.Window] = x.Capacity
	g.total += x.Tokens
}

// Two instances sharing a hub, each with several callers of both priorities, are never
// granted more than a window's capacity between them, and every token asked for is granted;
// a granted token is either used or counted as lapsed (a claim answered after its window, as
// a slow machine makes some).
func TestTwoInstancesNeverExceedTheWindowCapacity(t *testing.T) {
	table := newTable(t)
	const perMinute, window = 2400, 250 * time.Millisecond // 10 operations a window
	var log grantLog
	o := Options{PerMinute: 50, HubPerMinute: map[string]int{"hub1": perMinute}, Window: window, OnGrant: log.record}
	ls := []*Limiter{newLimiter(t, table, o), newLimiter(t, table, o)}
	ctx := context.Background()
	var asked atomic.Int64
	var wg sync.WaitGroup
	for _, l := range ls {
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 6 {
					n, p := 3, PriorityBulk
					if (i+j)%4 == 0 {
						n, p = 1, PriorityHigh
					}
					// The hub is named both ways on purpose: it is one budget.
					hub := "HUB1.azure-devices.net"
					if j%2 == 0 {
						hub = "hub1"
					}
					if err := l.Wait(ctx, hub, n, p); err != nil {
						t.Error(err)
						return
					}
					asked.Add(int64(n))
				}
			}()
		}
	}
	wg.Wait()
	w := windows{size: window}
	log.mu.Lock()
	defer log.mu.Unlock()
	// Every token asked for was granted; a claim that came back after its window (a slow
	// Table on a loaded machine) lapses, and its tokens are claimed again.
	var lapsed int64
	for _, l := range ls {
		lapsed += l.Stats().Lapsed
	}
	if int64(log.total) != asked.Load()+lapsed {
		t.Errorf("granted %d tokens for %d asked and %d lapsed", log.total, asked.Load(), lapsed)
	}
	if len(log.byWin) < 2 {
		t.Errorf("the grants fit in %d window(s); the test needs contention", len(log.byWin))
	}
	for k, n := range log.byWin {
		want := w.base(k, perMinute, 1)
		if log.capWin[k] != want {
			t.Errorf("window %d: capacity %d, want %d", k, log.capWin[k], want)
		}
		if n > want {
			t.Errorf("window %d: %d tokens granted across instances, capacity %d", k, n, want)
		}
	}
	// The counters in the table agree.
	pk := ls[0].hubs["hub1.azure-devices.net"].store.pk
	for pg := table.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: ptr("PartitionKey eq '" + pk + "'")}); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range page.Entities {
			var e slotEntity
			if err := jsonUnmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			if e.RowKey == stateRowKey {
				continue
			}
			if e.Granted > e.Cap {
				t.Errorf("counter %s (window %d): granted %d over capacity %d", e.RowKey, e.Window, e.Granted, e.Cap)
			}
			if got := log.byWin[e.Window]; got != int(e.Granted) {
				t.Errorf("counter %s (window %d) holds %d, the instances were granted %d", e.RowKey, e.Window, e.Granted, got)
			}
		}
	}
}

// With Pace, two instances' bulk callers are granted each window's capacity step by step,
// never more than the steps begun when the grant is made, and every token they ask for.
func TestPacedBulkWorkAcrossInstances(t *testing.T) {
	table := newTable(t)
	const perMinute, pace = 1200, 4 // 20 operations a 1 s window, 5 a step
	type grantAt struct {
		Grant
		at time.Time
	}
	var mu sync.Mutex
	var grants []grantAt
	o := Options{PerMinute: perMinute, Pace: pace, OnGrant: func(g Grant) {
		mu.Lock()
		grants = append(grants, grantAt{g, time.Now()})
		mu.Unlock()
	}}
	ls := []*Limiter{newLimiter(t, table, o), newLimiter(t, table, o)}
	const callers, each = 4, 6
	var wg sync.WaitGroup
	for _, l := range ls {
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := l.Wait(context.Background(), "hub1", 1, PriorityBulk); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	w := windows{size: time.Second, reserve: 0.1, release: 0.8, pace: pace}
	mu.Lock()
	defer mu.Unlock()
	byWin, total := map[int64]int{}, 0
	for _, g := range grants {
		byWin[g.Window] += g.Tokens
		total += g.Tokens
		if most := w.limit(g.Window, g.Capacity, PriorityBulk, g.at); byWin[g.Window] > most {
			t.Errorf("window %d: %d tokens granted by %v into it, more than the %d of the steps begun", g.Window, byWin[g.Window], g.at.Sub(w.start(g.Window)), most)
		}
	}
	var lapsed int64
	for _, l := range ls {
		lapsed += l.Stats().Lapsed
	}
	if want := int64(2*callers*each) + lapsed; int64(total) != want {
		t.Errorf("granted %d tokens, want %d asked and %d lapsed", total, 2*callers*each, lapsed)
	}
}

// bulkLoad queues count bulk callers of n tokens each on hub and reports how many finished.
// It returns once every caller is queued or served and the bulk work has been granted its
// first tokens: the load is on.
func bulkLoad(t *testing.T, l *Limiter, hub string, count, n int) (done *atomic.Int64, wait func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done = &atomic.Int64{}
	var wg sync.WaitGroup
	for range count {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Wait(ctx, hub, n, PriorityBulk); err == nil {
				done.Add(1)
			} else if !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
		}()
	}
	h, _ := l.hub(hub)
	testenv.Eventually(t, "every bulk caller to be queued or served, and the first bulk grant", func() bool {
		h.lock()
		queued := h.queues[PriorityBulk].Len()
		h.unlock()
		return int64(queued)+done.Load() == int64(count) && l.Stats().GrantedBulk > 0
	})
	return done, func() { cancel(); wg.Wait() }
}

// In one process, a high-priority caller is served before the bulk callers queued ahead of it.
func TestHighPriorityOvertakesQueuedBulkInProcess(t *testing.T) {
	l := newLimiter(t, newTable(t), Options{PerMinute: 1200}) // 20 a window, 18 for bulk until release
	const callers = 30                                        // 15 s of bulk work: the hub stays saturated however slow the machine is
	done, stop := bulkLoad(t, l, "hub1", callers, 10)
	defer stop()
	before := done.Load()
	if err := l.Wait(context.Background(), "hub1", 1, PriorityHigh); err != nil {
		t.Fatal(err)
	}
	after := done.Load()
	// Only a claim already in flight could have finished a bulk caller meanwhile.
	if after-before > 2 {
		t.Errorf("%d bulk callers were served while the high-priority caller waited", after-before)
	}
	if pending := callers - after; pending < 4 {
		t.Errorf("only %d bulk callers were still queued when the high-priority caller was served; the bulk load did not saturate the hub", pending)
	}
}

// Across instances, a high-priority caller takes the reserve that bulk work on another
// instance may not claim, so it is served while that instance's bulk queue is still long.
func TestHighPriorityUsesTheReserveAcrossInstances(t *testing.T) {
	table := newTable(t)
	var granted []Grant
	var mu sync.Mutex
	bulk := newLimiter(t, table, Options{PerMinute: 1200})
	high := newLimiter(t, table, Options{PerMinute: 1200, OnGrant: func(g Grant) { mu.Lock(); granted = append(granted, g); mu.Unlock() }})
	const callers = 30 // 15 s of bulk work: the hub stays saturated however slow the machine is
	done, stop := bulkLoad(t, bulk, "hub1", callers, 10)
	defer stop()
	if err := high.Wait(context.Background(), "hub1", 1, PriorityHigh); err != nil {
		t.Fatal(err)
	}
	if pending := callers - done.Load(); pending < 4 {
		t.Errorf("only %d bulk callers of the other instance were still queued when the high-priority caller was served", pending)
	}
	if s := bulk.Stats(); s.GrantedHigh != 0 || s.GrantedBulk == 0 {
		t.Errorf("bulk instance stats %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(granted) != 1 || granted[0].Priority != PriorityHigh || granted[0].Tokens != 1 {
		t.Errorf("high instance grants %+v, want one high grant of 1", granted)
	}
}

// A 429 observed by one instance pauses the hub for another that never saw it. A lone 429
// only pauses; one that repeats soon after the pause also lowers the shared rate factor, once
// per pause.
func TestObserve429PausesEveryInstance(t *testing.T) {
	table := newTable(t)
	a := newLimiter(t, table, Options{PerMinute: 6000})
	b := newLimiter(t, table, Options{PerMinute: 6000})
	var skew atomic.Int64 // b's clock, moved on below
	b.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	ctx := context.Background()
	if err := b.Wait(ctx, "hub1", 5, PriorityBulk); err != nil { // b has used the hub before
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Observe429(ctx, "hub1", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	until := start.Add(2 * time.Second)
	if err := b.Wait(ctx, "hub1", 1, PriorityHigh); err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(until) {
		t.Errorf("b was admitted %v before the pause a recorded ended", until.Sub(now))
	}
	if err := b.Wait(ctx, "otherhub", 1, PriorityHigh); err != nil {
		t.Fatal(err)
	}
	h, _ := b.hub("hub1")
	factor := func() float64 {
		sh, _, ok, err := h.store.shared(ctx)
		if err != nil || !ok {
			t.Fatalf("shared state: %v, found %v", err, ok)
		}
		return sh.factorAt(sh.factorSince)
	}
	if f := factor(); f != 1 {
		t.Errorf("rate factor after a lone 429: %v, want 1", f)
	}
	// A 429 in the window right after the pause is the same episode: the service had
	// regained only what the pause gave it.
	if err := b.Observe429(ctx, "hub1", 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if f := factor(); f != 1 {
		t.Errorf("rate factor after a 429 right after the pause: %v, want 1", f)
	}
	// Two windows later by b's clock, the pause is over by more than a window: the next 429
	// is a repeat.
	skew.Store(int64(2 * b.opts.Window))
	if err := b.Observe429(ctx, "hub1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if f := factor(); f < 0.899 || f > 0.901 {
		t.Errorf("rate factor after a repeated 429: %v, want 0.9", f)
	}
	// A 429 during that pause (a call sent before it) does not cut the rate again.
	if err := a.Observe429(ctx, "hub1", time.Second); err != nil {
		t.Fatal(err)
	}
	if f := factor(); f < 0.899 || f > 0.901 {
		t.Errorf("rate factor after a 429 within the pause: %v, want 0.9 still", f)
	}
}

// A caller whose context ends while the hub is paused gets ctx.Err() at once and leaves the
// queue; the pause is untouched.
func TestWaitReturnsWhenTheContextEnds(t *testing.T) {
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000})
	ctx := context.Background()
	if err := l.Observe429(ctx, "hub1", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(30 * time.Second)
	for _, p := range []Priority{PriorityBulk, PriorityHigh} {
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- l.Wait(cctx, "hub1", 1, p) }()
		h, _ := l.hub("hub1")
		testenv.Eventually(t, "the caller to queue behind the pause", func() bool {
			h.lock()
			defer h.unlock()
			return h.queues[p].Len() == 1
		})
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("%v: Wait returned %v, want context.Canceled", p, err)
		}
		if time.Now().After(until) {
			t.Fatalf("%v: Wait returned only after the pause", p)
		}
		dctx, dcancel := context.WithTimeout(ctx, 20*time.Millisecond)
		if err := l.Wait(dctx, "hub1", 3, p); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v: Wait returned %v, want context.DeadlineExceeded", p, err)
		}
		dcancel()
	}
	h, _ := l.hub("hub1")
	h.lock()
	defer h.unlock()
	if n := h.queues[PriorityBulk].Len() + h.queues[PriorityHigh].Len(); n != 0 {
		t.Errorf("%d callers left in the queue", n)
	}
}

func TestOptionsAndArgumentsAreChecked(t *testing.T) {
	table := newTable(t)
	for _, o := range []Options{
		{PerMinute: -1}, {HubPerMinute: map[string]int{"hub1": 0}}, {Window: time.Millisecond},
		{Window: 1500 * time.Microsecond}, {Reserve: 1}, {Release: 2}, {Decrease: 1.5}, {MinFactor: -1}, {RepeatWithin: -time.Second},
	} {
		if _, err := New(table, &o); err == nil {
			t.Errorf("New(%+v) accepted bad options", o)
		}
	}
	if _, err := New(nil, nil); err == nil {
		t.Error("New accepted no table")
	}
	l := newLimiter(t, table, Options{HubPerMinute: map[string]int{"Hub2": 5000}})
	if l.PerMinute("hub2.azure-devices.net") != 5000 || l.PerMinute("hub1") != 100 {
		t.Errorf("budgets: hub2 %d, hub1 %d", l.PerMinute("hub2.azure-devices.net"), l.PerMinute("hub1"))
	}
	ctx := context.Background()
	if err := l.Wait(ctx, "", 1, PriorityBulk); err == nil {
		t.Error("Wait accepted no hub")
	}
	if err := l.Wait(ctx, "hub1", -1, PriorityBulk); err == nil {
		t.Error("Wait accepted a negative count")
	}
	if err := l.Wait(ctx, "hub1", 1, Priority(7)); err == nil {
		t.Error("Wait accepted an unknown priority")
	}
	if err := l.Wait(ctx, "hub1", 0, PriorityBulk); err != nil {
		t.Errorf("Wait for nothing: %v", err)
	}
	// A bad argument is permanent for the engine: delivering the event again cannot help.
	req := newRequest(t, "GET", "https://hub1.azure-devices.net/devices/d1", "")
	if _, err := NewPolicy(l, &PolicyOptions{Charge: func(*policy.Request) (Charge, error) { return Charge{N: 1}, nil }}).Do(req); err == nil || deprovision.IsTransient(err) {
		t.Errorf("a request priced on no budget: %v, want a permanent error", err)
	}
}

// With HighBorrowsAhead, a high-priority caller that finds the window full takes the next
// window's tokens at once, which then has that much less for everyone.
func TestHighBorrowsAheadTakesTheNextWindow(t *testing.T) {
	var mu sync.Mutex
	var grants []Grant
	l := newLimiter(t, newTable(t), Options{PerMinute: 60, HighBorrowsAhead: true, // 1 a window
		OnGrant: func(g Grant) { mu.Lock(); grants = append(grants, g); mu.Unlock() }})
	ctx := context.Background()
	for try := 0; ; try++ {
		mu.Lock()
		grants = nil
		mu.Unlock()
		if err := l.Wait(ctx, "hub1", 1, PriorityHigh); err != nil {
			t.Fatal(err)
		}
		if err := l.Wait(ctx, "hub1", 1, PriorityHigh); err != nil {
			t.Fatal(err)
		}
		now := l.win.index(time.Now())
		mu.Lock()
		g := grants
		mu.Unlock()
		if len(g) != 2 {
			t.Fatalf("grants %+v, want 2", g)
		}
		if now != g[0].Window {
			// The first grant was at the end of its window; the second is not a borrow.
			if try < 3 {
				continue
			}
			t.Skip("could not make both calls within one window")
		}
		if g[1].Window != g[0].Window+1 {
			t.Errorf("second high-priority grant in window %d while window %d was full and current; want the next one", g[1].Window, g[0].Window)
		}
		return
	}
}

package coalesce_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/coalesce"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/internal/testenv"
)

// dps counts the DPS calls the coalescer makes over the fake DPS; gate, when set, holds every
// bulk call until it is closed.
type dps struct {
	*fake.DPS
	gets, bulks atomic.Int64
	mu          sync.Mutex
	calls       [][]string // registration ids of each bulk call
	gate        chan struct{}
}

func (s *dps) GetRegistration(ctx context.Context, id string) (*d.Registration, error) {
	s.gets.Add(1)
	return s.DPS.GetRegistration(ctx, id)
}

func (s *dps) CreateEnrollments(ctx context.Context, es []*d.Enrollment) ([]error, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.bulks.Add(1)
	ids := make([]string, len(es))
	errs := make([]error, len(es))
	for i, e := range es {
		ids[i] = e.RegistrationID
		_, errs[i] = s.DPS.PutEnrollment(ctx, e, "")
	}
	s.mu.Lock()
	s.calls = append(s.calls, ids)
	s.mu.Unlock()
	return errs, nil
}

func newDPS(members int) *dps {
	f := fake.NewDPS()
	for i := range members {
		id := fmt.Sprintf("m-%04d", i)
		f.AddRegistration(d.Registration{RegistrationID: id, DeviceID: id, AssignedHub: "hub1.azure-devices.net"}, "g1")
	}
	return &dps{DPS: f}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func compromised(id, group string) d.Request {
	return d.Request{Intent: d.IntentCompromised, RegistrationID: id, EnrollmentGroupID: group}
}

// A lone request, or two, take the single-device path; from the third request of one flow in
// flight on, they are coalesced, in the lane Options.Lane gives; another flow counts apart.
func TestJoinCountsFlows(t *testing.T) {
	type laneKey struct{}
	c := coalesce.New(newDPS(0), newDPS(0), &coalesce.Options{Logger: quiet(),
		Lane: func(ctx context.Context) context.Context { return context.WithValue(ctx, laneKey{}, "bulk") }})
	ctx := context.Background()
	var leaves []func()
	for i := range 4 {
		cctx, mode, leave, _ := c.Join(ctx, compromised(fmt.Sprintf("m-%d", i), "g1"))
		leaves = append(leaves, leave)
		co := mode == d.BurstCoalesce
		if want := i >= 2; co != want {
			t.Errorf("request %d of one group: coalesced %v, want %v", i+1, co, want)
		}
		if lane, _ := cctx.Value(laneKey{}).(string); (lane == "bulk") != co {
			t.Errorf("request %d: lane %q, coalesced %v", i+1, lane, co)
		}
	}
	if _, mode, leave, _ := c.Join(ctx, compromised("x-1", "g2")); mode != d.BurstSingle {
		t.Error("the first request of another group was coalesced with a burst of g1")
	} else {
		leave()
	}
	for _, l := range leaves {
		l()
		l() // leave is idempotent
	}
	if _, mode, leave, _ := c.Join(ctx, compromised("m-9", "g1")); mode != d.BurstSingle {
		t.Error("a request after the burst left was coalesced")
	} else {
		leave()
	}
}

// Blocking enrollments of concurrent callers share bulk calls of at most 10, each caller
// gets its own item's answer (a registration id that is taken: ErrConflict), and under load
// (calls held, as by the DPS budget) the calls fill up.
func TestBlockSharesBulkCalls(t *testing.T) {
	s := newDPS(0)
	s.AddEnrollment(d.Enrollment{RegistrationID: "m-0007", Attestation: d.AttestationTPM, Enabled: true})
	s.gate = make(chan struct{})
	c := coalesce.New(s, s, &coalesce.Options{Logger: quiet()})
	const n = 95
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Block(context.Background(), &d.Enrollment{RegistrationID: fmt.Sprintf("m-%04d", i), Attestation: d.AttestationSymmetricKey,
				PrimaryKey: "a2V5LTE=", SecondaryKey: "a2V5LTI="})
		}()
	}
	// Let every caller queue behind the two calls held at the gate, then open it.
	testenv.Eventually(t, "the coalescer to reach: "+`st := c.Stats(); st.BulkItems+st.Waiting == n`, func() bool { st := c.Stats(); return st.BulkItems+st.Waiting == n })
	close(s.gate)
	wg.Wait()
	for i, err := range errs {
		if want := i == 7; (err != nil) != want || want && !strings.Contains(err.Error(), d.ErrConflict.Error()) {
			t.Errorf("m-%04d: %v", i, err)
		}
	}
	st := c.Stats()
	if st.BulkItems != n {
		t.Fatalf("%d items sent for %d callers", st.BulkItems, n)
	}
	for _, call := range s.calls {
		if len(call) > 10 {
			t.Fatalf("a bulk call of %d items", len(call))
		}
	}
	// Two calls left at once with what had arrived; the other items filled calls of 10.
	if st.BulkCalls > 2+10 {
		t.Errorf("%d bulk calls for %d items: under load they should carry 10 each", st.BulkCalls, n)
	}
}

// A burst of one group does not hold up another flow's item: calls take one item of each
// flow in turn.
func TestBlockServesFlowsInTurn(t *testing.T) {
	s := newDPS(0)
	s.gate = make(chan struct{})
	c := coalesce.New(s, s, &coalesce.Options{Logger: quiet(), Calls: 1})
	ctx := context.Background()
	var leaves []func()
	var big context.Context
	for i := range 3 {
		cctx, _, leave, _ := c.Join(ctx, compromised(fmt.Sprint("big-", i), "big"))
		leaves, big = append(leaves, leave), cctx
	}
	var wg sync.WaitGroup
	block := func(ctx context.Context, id string) { blockAsync(ctx, t, c, &wg, id) }
	block(big, "big-first") // its call is held at the gate: the rest queue behind it
	testenv.Eventually(t, "the coalescer to reach: "+`c.Stats().BulkCalls == 1`, func() bool { return c.Stats().BulkCalls == 1 })
	for i := range 30 {
		block(big, fmt.Sprintf("big-%02d", i))
	}
	testenv.Eventually(t, "the coalescer to reach: "+`c.Stats().Waiting == 30`, func() bool { return c.Stats().Waiting == 30 })
	block(ctx, "lone-1") // another flow, arriving last
	testenv.Eventually(t, "the coalescer to reach: "+`c.Stats().Waiting == 31`, func() bool { return c.Stats().Waiting == 31 })
	close(s.gate)
	wg.Wait()
	for _, l := range leaves {
		l()
	}
	if len(s.calls) < 2 || !contains(s.calls[1], "lone-1") {
		t.Errorf("the other flow's item was not in the call after the one in flight: %v", s.calls)
	}
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// A burst of lookups of a group's devices lists the group (one DPS call a page) from the first
// lookup on, and the listing answers them all: the devices it holds, and the ones it does
// not (read on their own).
func TestLookupListsABusyGroup(t *testing.T) {
	s := newDPS(2500)
	c := coalesce.New(s, s, &coalesce.Options{Logger: quiet(), PageSize: 1000})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 2000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Lookup(ctx, "G1", fmt.Sprintf("M-%04d", i)) // ids and groups are case-insensitive
			if err != nil || r.DeviceID != fmt.Sprintf("m-%04d", i) || r.AssignedHub != "hub1.azure-devices.net" {
				t.Errorf("lookup %d: %+v %v", i, r, err)
			}
		}()
	}
	wg.Wait()
	if got := s.gets.Load(); got != 0 {
		t.Errorf("%d single reads for 2,000 lookups of a group of 2,500, want none", got)
	}
	// Only the pages the lookups asked for: m-0000 … m-1999 are on the first two.
	if got := s.DPS.Pages.Load(); got < 2 || got > 3 {
		t.Errorf("%d pages read for a group of 2,500, want 2 or 3", got)
	}
	if _, err := c.Lookup(ctx, "g1", "stranger"); err == nil {
		t.Error("a device in no group was found")
	}
	if got, pages := s.gets.Load(), s.DPS.Pages.Load(); got != 1 || pages != 3 {
		t.Errorf("%d single reads and %d pages after a lookup of a stranger, want 1 read (after the last page) and 3 pages", got, pages)
	}
	if st := c.Stats(); st.ListedHits != 2000 || st.Listings != 1 {
		t.Errorf("stats %+v, want 2,000 lookups answered by one listing", st)
	}
	// Without its group, a device is read on its own.
	if _, err := c.Lookup(ctx, "", "m-0001"); err != nil || s.gets.Load() != 2 {
		t.Errorf("lookup without a group: %v, %d reads", err, s.gets.Load())
	}
}

// A few lookups of a large group never cost more than twice their single reads: each reads at
// most one page of the listing, and, when its device is not on the pages read, its own
// registration state. Lookups of devices on pages already read cost nothing.
func TestLookupOfAFewDevicesOfALargeGroup(t *testing.T) {
	for _, concurrent := range []bool{false, true} {
		t.Run(fmt.Sprintf("concurrent=%v", concurrent), func(t *testing.T) {
			s := newDPS(10000) // 10 pages
			c := coalesce.New(s, s, &coalesce.Options{Logger: quiet(), PageSize: 1000})
			ctx := context.Background()
			ids := []string{"m-9997", "m-9998", "m-9999"} // on the last page
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Add(1)
				look := func() {
					defer wg.Done()
					if r, err := c.Lookup(ctx, "g1", id); err != nil || r.DeviceID != id {
						t.Errorf("lookup %s: %+v %v", id, r, err)
					}
				}
				if concurrent {
					go look()
				} else {
					look()
				}
			}
			wg.Wait()
			if pages, gets := s.DPS.Pages.Load(), s.gets.Load(); pages > 3 || gets != 3 || pages+gets > 2*int64(len(ids)) {
				t.Errorf("%d pages and %d single reads for %d lookups of devices on the last page, want at most one page each and their own reads", pages, gets, len(ids))
			}
			// Devices on the pages read are answered from them.
			before := s.DPS.Pages.Load() + s.gets.Load()
			if r, err := c.Lookup(ctx, "g1", "m-0005"); err != nil || r.DeviceID != "m-0005" {
				t.Fatalf("lookup on the first page: %+v %v", r, err)
			}
			if after := s.DPS.Pages.Load() + s.gets.Load(); after != before {
				t.Errorf("a lookup of a device on a page already read cost %d DPS calls", after-before)
			}
		})
	}
}

// With Reserve (the DPS budget waited for before a call takes its items), a call carries
// whatever queued while it waited.
func TestReserveFillsTheCall(t *testing.T) {
	s := newDPS(0)
	release := make(chan struct{})
	var reserves atomic.Int64
	c := coalesce.New(s, s, &coalesce.Options{Logger: quiet(), Calls: 1, Reserve: func(ctx context.Context) (context.Context, error) {
		if reserves.Add(1) == 1 {
			<-release
		}
		return ctx, nil
	}})
	var wg sync.WaitGroup
	for i := range 25 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Block(context.Background(), &d.Enrollment{RegistrationID: fmt.Sprintf("m-%02d", i), Attestation: d.AttestationSymmetricKey}); err != nil {
				t.Error(err)
			}
		}()
	}
	testenv.Eventually(t, "the coalescer to reach: "+`c.Stats().Waiting == 25`, func() bool { return c.Stats().Waiting == 25 })
	close(release)
	wg.Wait()
	if len(s.calls) != 3 || len(s.calls[0]) != 10 || len(s.calls[1]) != 10 || len(s.calls[2]) != 5 {
		t.Errorf("bulk calls %v, want 10, 10 and 5 items", s.calls)
	}
}

// A bulk call waits for its items to fill (Options.Gather): it goes when 10 wait, or when
// every admitted request has asked for its block or left, not before.
func TestCallGathersItsItems(t *testing.T) {
	s := newDPS(0)
	c := coalesce.New(s, s, &coalesce.Options{Logger: quiet(), At: 1, MaxInFlight: 100, Calls: 1, Gather: time.Hour})
	ctx := context.Background()
	join := func(n int, prefix string) ([]context.Context, []func()) {
		var ctxs []context.Context
		var leaves []func()
		for i := range n {
			cctx, mode, leave, err := c.Join(ctx, compromised(fmt.Sprintf("%s-%02d", prefix, i), "g"))
			if mode != d.BurstCoalesce || err != nil {
				t.Fatalf("join: %v %v", mode, err)
			}
			ctxs, leaves = append(ctxs, cctx), append(leaves, leave)
		}
		return ctxs, leaves
	}
	var wg sync.WaitGroup
	block := func(ctx context.Context, id string) { blockAsync(ctx, t, c, &wg, id) }

	// Three admitted, two blocks asked for: the call waits for the third.
	ctxs, leaves := join(3, "a")
	block(ctxs[0], "a-00")
	block(ctxs[1], "a-01")
	testenv.Eventually(t, "two items to wait", func() bool { return c.Stats().Waiting == 2 })
	if st := c.Stats(); st.BulkCalls != 0 {
		t.Fatalf("a call left with 2 items while a third request was coming: %+v", st)
	}
	leaves[2]() // it left without a block: nothing more is coming
	wg.Wait()
	if len(s.calls) != 1 || len(s.calls[0]) != 2 {
		t.Fatalf("bulk calls %v, want one of the 2 items", s.calls)
	}
	leaves[0]()
	leaves[1]()

	// Twelve admitted: ten blocks fill a call at once, however many are still coming.
	ctxs, leaves = join(12, "b")
	for i := range 10 {
		block(ctxs[i], fmt.Sprintf("b-%02d", i))
	}
	wg.Wait()
	if len(s.calls) != 2 || len(s.calls[1]) != 10 {
		t.Fatalf("bulk calls %v, want a second one of 10 items", s.calls)
	}

	// The other two ask for their blocks while the ten, past theirs, still hold their slots
	// (their hub steps): a burst's next requests will take those slots, so the two wait.
	block(ctxs[10], "b-10")
	block(ctxs[11], "b-11")
	testenv.Eventually(t, "two items to wait", func() bool { return c.Stats().Waiting == 2 })
	for _, l := range leaves[:9] {
		l()
	}
	if st := c.Stats(); st.BulkCalls != 2 {
		t.Fatalf("a call left with 2 items while a request past its block held its slot: %+v", st)
	}
	leaves[9]() // the last of them ends and no request comes: every admitted one waits here
	wg.Wait()
	if len(s.calls) != 3 || len(s.calls[2]) != 2 {
		t.Fatalf("bulk calls %v, want a third one of the 2 items", s.calls)
	}
	for _, l := range leaves {
		l()
	}
}

// Coalesced requests beyond MaxInFlight wait in Join until one leaves (or their context
// ends), before they do any work; past AdmitWithin they are answered busy. With a burst
// queue, they are deferred at once instead, except those the queue delivers, which wait.
func TestJoinAdmitsAtMostMaxInFlight(t *testing.T) {
	c := coalesce.New(newDPS(0), newDPS(0), &coalesce.Options{Logger: quiet(), At: 1, MaxInFlight: 2, AdmitWithin: time.Minute})
	ctx := context.Background()
	_, _, leave1, _ := c.Join(ctx, compromised("a", "g"))
	_, _, leave2, _ := c.Join(ctx, compromised("b", "g"))
	admitted := make(chan func(), 1)
	go func() {
		_, mode, leave, err := c.Join(ctx, compromised("c", "g"))
		if mode != d.BurstCoalesce || err != nil {
			t.Errorf("the third request: %v, %v", mode, err)
		}
		admitted <- leave
	}()
	testenv.Eventually(t, "the third request to wait for a slot", func() bool { return c.Stats().Admitting == 1 })
	select {
	case <-admitted:
		t.Fatal("a third request was admitted while two were in flight")
	default:
	}
	leave1()
	leave3 := <-admitted
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, mode, leave, _ := c.Join(short, compromised("d", "g")); mode == d.BurstCoalesce {
		t.Error("a request whose context ended was admitted")
	} else {
		leave()
	}
	leave2()
	leave3()

	impatient := coalesce.New(newDPS(0), newDPS(0), &coalesce.Options{Logger: quiet(), At: 1, MaxInFlight: 1, AdmitWithin: 10 * time.Millisecond})
	_, _, hold, _ := impatient.Join(ctx, compromised("e", "g"))
	if _, mode, leave, err := impatient.Join(ctx, compromised("f", "g")); mode == d.BurstCoalesce || !errors.Is(err, d.ErrBusy) {
		t.Errorf("a request that waited past AdmitWithin: %v, %v; want ErrBusy", mode, err)
	} else {
		leave()
	}
	hold()

	var deferred []string
	queued := coalesce.New(newDPS(0), newDPS(0), &coalesce.Options{Logger: quiet(), At: 1, MaxInFlight: 1,
		Defer: func(_ context.Context, r d.Request) error { deferred = append(deferred, r.RegistrationID); return nil }})
	_, _, hold, _ = queued.Join(ctx, compromised("g", "g"))
	_, mode, leave, err := queued.Join(ctx, compromised("h", "g"))
	if mode != d.BurstDefer || err != nil {
		t.Fatalf("a request finding no slot with a burst queue: %v, %v; want BurstDefer", mode, err)
	}
	leave()
	if err := queued.Defer(ctx, compromised("h", "g")); err != nil || len(deferred) != 1 {
		t.Fatalf("Defer: %v, %v", err, deferred)
	}
	done := make(chan d.BurstMode, 1)
	go func() {
		_, mode, leave, _ := queued.Join(d.Deferred(ctx), compromised("h", "g"))
		done <- mode
		leave()
	}()
	testenv.Eventually(t, "the queue's request to wait for a slot", func() bool { return queued.Stats().Admitting == 1 })
	select {
	case <-done:
		t.Fatal("a request the queue delivered was not made to wait for its turn")
	default:
	}
	hold()
	if mode := <-done; mode != d.BurstCoalesce {
		t.Errorf("the queue's request: %v, want BurstCoalesce", mode)
	}
}

// blockAsync asks c for id's blocking enrollment in a goroutine that wg counts; an error fails
// the test.
func blockAsync(ctx context.Context, t *testing.T, c *coalesce.Coalescer, wg *sync.WaitGroup, id string) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Block(ctx, &d.Enrollment{RegistrationID: id, Attestation: d.AttestationSymmetricKey}); err != nil {
			t.Error(err)
		}
	}()
}

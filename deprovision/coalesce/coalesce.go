// Package coalesce is the engine's [deprovision.Burst]: it coalesces the DPS work of
// single-device revocations that arrive together (a fleet-wide compromise reported one event
// per device) across the concurrent invocations of one handler instance. Each event stays
// its own operation; what they share is DPS calls:
//
//   - registration lookups of devices named with their enrollment group are answered from a
//     listing of the group's registration states (up to 1,000 a DPS call) once enough of
//     them ask within a short time, instead of one read each;
//   - blocking enrollments are created in bulk calls of up to 10 (DPS's limit), each item
//     answered on its own;
//   - requests of one flow (the same group, or the same issuing CA) count as a burst only
//     when several are in flight at once: a lone event takes the single-device path as it
//     always did, and the calls of a burst can be put in the budgets' bulk lane (Options.Lane)
//     so that a compromise elsewhere still finds the high-priority lane free.
//
// docs/scale.md derives the DPS operations this saves and measures them.
package coalesce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"dpsdeprov/deprovision"
)

// Options tune a [Coalescer]. The zero value is usable.
type Options struct {
	// At is how many revocations of one flow must be in flight in the instance, this one
	// included, for them to be coalesced. Default 3: a lone event, or two, take the
	// single-device path.
	At int
	// MaxInFlight bounds the coalesced requests an instance works on at once in the
	// invocations that received them; the others are deferred (or wait in Join), before they
	// touch any service, so that a burst of thousands holds memory and storage traffic to what
	// the budgets can use and every invocation answers Event Grid well within its 30 s.
	// Default 32: twice the queue trigger's batch, so that while a bulk call waits for the DPS
	// budget enough blocking enrollments gather to fill the next one.
	MaxInFlight int
	// Defer, when set, hands a request to the burst queue (the app: the deprovision-burst
	// Storage queue, read by the BurstWork function). A coalesced request that finds every
	// MaxInFlight slot taken is then deferred at once: its invocation answers Event Grid
	// within its 30 s however long the burst, and the queue's workers carry it out.
	Defer func(context.Context, deprovision.Request) error
	// AdmitWithin is how long a coalesced request waits in Join for its turn when there is
	// no Defer. Past it, Join answers busy and the event is delivered again later (Event
	// Grid retries, from 10 s on). Default 15s.
	AdmitWithin time.Duration
	// Calls bounds the bulk enrollment calls in flight at once. While they wait for the DPS
	// budget the next items gather, so that under load every call carries 10. Default 1: the
	// instance's one call waits for the budget while the items gather behind it.
	Calls int
	// ListAfter is how many lookups of one group within ListFor start a listing of the
	// group's registration states. Default 10: a group of 10,000 lists in 10 calls.
	ListAfter int
	// ListFor is how long a listing answers lookups, and the window ListAfter counts in. A
	// device that provisions again meanwhile is found where the listing saw it (the engine
	// reads its registration again when its identity is not in that hub). Default 5m: a
	// burst is worked through at the DPS budget's pace, and each listing costs a call per
	// 1,000 members.
	ListFor time.Duration
	// PageSize is the registration states asked for per DPS call. Default 1000.
	PageSize int
	// MaxListed caps the registration states one listing keeps (memory). Default 200,000.
	MaxListed int
	// Lane prepares the context of coalesced work (the app puts it in the budgets' bulk
	// lane). Default: the context as it is.
	Lane func(context.Context) context.Context
	// Reserve, when set, is called before a bulk call takes its items: it returns once the
	// call may be sent, with the context to send it with. When DPS counts a bulk call once
	// whatever its items, the app waits for that one operation of the DPS budget here, so that
	// every item queued by the time the budget allows the call rides in it.
	Reserve func(context.Context) (context.Context, error)
	// Gather is how long a bulk call may wait, before it asks for its budget (Reserve), for
	// its items to fill: it goes at once when 10 wait, or when every coalesced request the
	// instance admitted waits for its blocking enrollment (no more can come soon), and at
	// the latest when its oldest item has waited Gather. A call that leaves half empty spends a
	// DPS operation for a few items, and under a burst DPS's budget is the bottleneck.
	// Default 1s; negative: never wait.
	Gather time.Duration
	// Logger receives a line per listing. Default slog.Default().
	Logger *slog.Logger
}

// Coalescer implements deprovision.Burst over DPS's registration states and bulk enrollment
// operations. It is safe for concurrent use.
type Coalescer struct {
	regs deprovision.Registrations
	bulk deprovision.BulkEnrollments
	o    Options
	now  func() time.Time

	slots chan struct{} // admission of coalesced requests (MaxInFlight)

	mu     sync.Mutex
	flows  map[string]int
	groups map[string]*group

	bmu      sync.Mutex
	queues   map[string][]*item // by flow
	order    []string           // flows with items, served in turn
	inflight int
	// coming counts the admitted coalesced requests that have not yet asked for their
	// blocking enrollment (nor left): items that may still join a call (Options.Gather).
	coming int
	// admitted counts the coalesced requests holding a MaxInFlight slot: those past their
	// blocking enrollment free theirs soon, and a burst's next requests take them.
	admitted int
	kick     chan struct{} // a new item, one fewer coming, or a slot freed
	stats    Stats
}

var _ deprovision.Burst = (*Coalescer)(nil)

// Stats counts what a Coalescer did.
type Stats struct {
	Coalesced   int64 // requests joined as part of a burst
	BulkCalls   int64 // bulk enrollment calls made
	BulkItems   int64 // items they carried
	Listings    int64 // listing passes started
	Pages       int64 // pages of registration states read
	ListedHits  int64 // lookups answered from a listing
	SingleReads int64 // lookups answered by a read of their own
	Waiting     int64 // blocking enrollments waiting for a bulk call now
	Deferred    int64 // requests handed to the burst queue
	Busy        int64 // requests answered busy after AdmitWithin, to be delivered again
	Admitting   int64 // requests waiting for one of the MaxInFlight slots now
}

// New returns a Coalescer over DPS's registration states and bulk enrollment operations.
func New(regs deprovision.Registrations, bulk deprovision.BulkEnrollments, o *Options) *Coalescer {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.At <= 0 {
		opts.At = 3
	}
	if opts.Calls <= 0 {
		opts.Calls = 1
	}
	if opts.ListAfter <= 0 {
		opts.ListAfter = 10
	}
	if opts.ListFor <= 0 {
		opts.ListFor = 5 * time.Minute
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 32
	}
	if opts.AdmitWithin <= 0 {
		opts.AdmitWithin = 15 * time.Second
	}
	if opts.Gather == 0 {
		opts.Gather = time.Second
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 1000
	}
	if opts.MaxListed <= 0 {
		opts.MaxListed = 200000
	}
	if opts.Lane == nil {
		opts.Lane = func(ctx context.Context) context.Context { return ctx }
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Coalescer{regs: regs, bulk: bulk, o: opts, now: time.Now, slots: make(chan struct{}, opts.MaxInFlight),
		flows: map[string]int{}, groups: map[string]*group{}, queues: map[string][]*item{}, kick: make(chan struct{}, 1)}
}

// Stats returns the coalescer's counters.
func (c *Coalescer) Stats() Stats {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	st := c.stats
	for _, q := range c.queues {
		st.Waiting += int64(len(q))
	}
	return st
}

type flowKey struct{}

// flowOf names the flow of a request: its enrollment group when it names one, else the
// issuer of its certificate (members of one X.509 group share it), else "".
func flowOf(req deprovision.Request) string {
	if req.EnrollmentGroupID != "" {
		return "group:" + strings.ToLower(req.EnrollmentGroupID)
	}
	if req.CertificatePEM != "" {
		if certs, err := deprovision.ParseCertificates(req.CertificatePEM); err == nil {
			return "issuer:" + certs[0].Issuer.String()
		}
	}
	return ""
}

// Join implements deprovision.Burst.
func (c *Coalescer) Join(ctx context.Context, req deprovision.Request) (context.Context, deprovision.BurstMode, func(), error) {
	key := flowOf(req)
	c.mu.Lock()
	c.flows[key]++
	n := c.flows[key]
	c.mu.Unlock()
	var once sync.Once
	leave := func() {
		once.Do(func() {
			c.mu.Lock()
			if c.flows[key]--; c.flows[key] <= 0 {
				delete(c.flows, key)
			}
			c.mu.Unlock()
		})
	}
	if n < c.o.At && !deprovision.IsDeferred(ctx) {
		return ctx, deprovision.BurstSingle, leave, nil
	}
	if err := c.admit(ctx); err != nil {
		if errors.Is(err, errDefer) {
			c.count(&c.stats.Deferred)
			return ctx, deprovision.BurstDefer, leave, nil
		}
		if errors.Is(err, deprovision.ErrBusy) {
			c.count(&c.stats.Busy)
			return ctx, deprovision.BurstSingle, leave, err
		}
		return ctx, deprovision.BurstSingle, leave, nil // the engine meets the ended context at its first call
	}
	m := &member{}
	c.bmu.Lock()
	c.stats.Coalesced++
	c.coming++
	c.admitted++
	c.bmu.Unlock()
	var freed sync.Once
	ctx = context.WithValue(context.WithValue(c.o.Lane(ctx), flowKey{}, key), memberKey{}, m)
	return ctx, deprovision.BurstCoalesce, func() {
		freed.Do(func() {
			c.bmu.Lock()
			c.arrivedLocked(m)
			c.admitted--
			c.kickLocked() // a call that waits for the items a freed slot may bring looks again
			c.bmu.Unlock()
			<-c.slots
		})
		leave()
	}, nil
}

// member is one admitted coalesced request, in its context.
type member struct{ arrived bool }

type memberKey struct{}

// arrivedLocked counts m as no longer coming: it asked for its blocking enrollment, or left
// without one. Callers hold bmu.
func (c *Coalescer) arrivedLocked(m *member) {
	if m == nil || m.arrived {
		return
	}
	m.arrived = true
	c.coming--
	c.kickLocked()
}

func (c *Coalescer) kickLocked() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// errDefer says a coalesced request found no free slot and is to be deferred.
var errDefer = errors.New("defer")

// admit takes one of the MaxInFlight slots: at once or errDefer when requests can be
// deferred (a request the burst queue delivers waits for its turn); otherwise within
// AdmitWithin, or ErrBusy.
func (c *Coalescer) admit(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	var limit <-chan time.Time
	switch {
	case deprovision.IsDeferred(ctx):
	case c.o.Defer != nil:
		return errDefer
	default:
		t := time.NewTimer(c.o.AdmitWithin)
		defer t.Stop()
		limit = t.C
	}
	c.bmu.Lock()
	c.stats.Admitting++
	c.bmu.Unlock()
	defer func() {
		c.bmu.Lock()
		c.stats.Admitting--
		c.bmu.Unlock()
	}()
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-limit:
		return fmt.Errorf("%d revocations of this burst are in progress in this instance and more wait: %w", c.o.MaxInFlight, deprovision.ErrBusy)
	}
}

func (c *Coalescer) count(n *int64) {
	c.bmu.Lock()
	*n++
	c.bmu.Unlock()
}

// Defer implements deprovision.Burst.
func (c *Coalescer) Defer(ctx context.Context, req deprovision.Request) error {
	if c.o.Defer == nil {
		return errors.New("no burst queue is configured")
	}
	return c.o.Defer(ctx, req)
}

// --- blocking enrollments, in bulk ---

// item is one enrollment waiting for a bulk call.
type item struct {
	e    *deprovision.Enrollment
	ctx  context.Context
	done chan error
	at   time.Time // when it was queued
}

// maxBulk is DPS's limit of items per bulk enrollment operation.
const maxBulk = 10

// Block implements deprovision.Burst: e waits for a bulk call, which starts at once when
// fewer than Options.Calls are in flight and otherwise takes up to 10 waiting items, one
// flow after another, so that a burst from one group does not hold up another flow's item.
func (c *Coalescer) Block(ctx context.Context, e *deprovision.Enrollment) error {
	flow, _ := ctx.Value(flowKey{}).(string)
	it := &item{e: e, ctx: ctx, done: make(chan error, 1), at: c.now()}
	m, _ := ctx.Value(memberKey{}).(*member)
	c.bmu.Lock()
	c.arrivedLocked(m)
	c.kickLocked()
	if len(c.queues[flow]) == 0 {
		c.order = append(c.order, flow)
	}
	c.queues[flow] = append(c.queues[flow], it)
	if c.inflight < c.o.Calls {
		c.inflight++
		go c.send(context.WithoutCancel(ctx))
	}
	c.bmu.Unlock()
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // still queued: take skips it; already sent: its result is dropped
	}
}

// take removes up to maxBulk live items from the queues, one from each flow in turn.
func (c *Coalescer) take() []*item {
	var out []*item
	for len(out) < maxBulk && len(c.order) > 0 {
		flow := c.order[0]
		c.order = c.order[1:]
		q := c.queues[flow]
		for len(q) > 0 && q[0].ctx.Err() != nil {
			q = q[1:] // its caller left
		}
		if len(q) == 0 {
			delete(c.queues, flow)
			continue
		}
		out = append(out, q[0])
		if q = q[1:]; len(q) > 0 {
			c.queues[flow] = q
			c.order = append(c.order, flow)
		} else {
			delete(c.queues, flow)
		}
	}
	return out
}

// send makes bulk calls while items wait. ctx carries the lane of the burst that started
// it, not its cancellation: the items belong to many invocations.
func (c *Coalescer) send(ctx context.Context) {
	for {
		c.bmu.Lock()
		if len(c.order) == 0 {
			c.inflight--
			c.bmu.Unlock()
			return
		}
		wait := c.gatherLocked()
		c.bmu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-c.kick:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		var err error
		if c.o.Reserve != nil {
			cctx, err = c.o.Reserve(cctx)
		}
		c.bmu.Lock()
		batch := c.take()
		if len(batch) > 0 {
			c.stats.BulkCalls++
			c.stats.BulkItems += int64(len(batch))
		}
		c.bmu.Unlock()
		es := make([]*deprovision.Enrollment, len(batch))
		for i, it := range batch {
			es[i] = it.e
		}
		var errs []error
		if err == nil && len(batch) > 0 {
			errs, err = c.bulk.CreateEnrollments(cctx, es)
		}
		cancel()
		for i, it := range batch {
			switch {
			case err != nil:
				it.done <- err
			case i < len(errs):
				it.done <- errs[i]
			default:
				it.done <- fmt.Errorf("bulk enrollment call answered %d items for %d", len(errs), len(batch))
			}
		}
	}
}

// gatherLocked returns how long the next call should wait for more items (Options.Gather), or
// 0 when it should go now. Callers hold bmu.
func (c *Coalescer) gatherLocked() time.Duration {
	if c.o.Gather < 0 {
		return 0
	}
	n, oldest := 0, time.Time{}
	for _, q := range c.queues {
		for _, it := range q {
			if it.ctx.Err() != nil {
				continue
			}
			n++
			if oldest.IsZero() || it.at.Before(oldest) {
				oldest = it.at
			}
		}
	}
	if n >= maxBulk || n == 0 {
		return 0
	}
	// Nothing more can come soon only when every admitted request waits here: one that
	// has not asked for its block yet will, and one past its block (its hub steps, its
	// journal writes) frees its slot for the burst's next request. Going with fewer than
	// 10 then would spend a DPS operation on a part of a call while DPS is the burst's limit
	// (a benchmark sent 582 calls for 5,000 items, 8.6 a call, before this rule).
	if c.coming <= 0 && c.admitted <= n {
		return 0
	}
	return max(0, oldest.Add(c.o.Gather).Sub(c.now()))
}

// --- registration lookups ---

// group is what the coalescer knows of one group's registration states.
type group struct {
	id string
	// recent are the times of recent lookups, for ListAfter.
	recent []time.Time
	// listed holds a listing's states by lower-case registration id; complete when every page
	// was read, at listedAt.
	listed   map[string]deprovision.Registration
	complete bool
	listedAt time.Time
	// listing is closed when the listing in progress ends; nil when none runs.
	listing chan struct{}
}

// Lookup implements deprovision.Burst. A device named without its group is read on its own
// (one DPS operation). A device of a group whose listing is fresh is answered from it (a
// device the listing does not hold is read on its own: it may have registered since); while
// a listing runs, lookups wait for it; and when ListAfter lookups of the group came within
// ListFor, a listing starts. A listing costs one DPS operation per PageSize states, so it is
// cheaper than single reads as soon as more lookups than pages come while it is fresh.
func (c *Coalescer) Lookup(ctx context.Context, groupID, registrationID string) (*deprovision.Registration, error) {
	if groupID != "" {
		if r, ok, err := c.fromListing(ctx, groupID, registrationID); ok || err != nil {
			return r, err
		}
	}
	c.bmu.Lock()
	c.stats.SingleReads++
	c.bmu.Unlock()
	return c.regs.GetRegistration(ctx, registrationID)
}

// fromListing answers a lookup from the group's listing, starting one or waiting for the one
// in progress; ok is false when the caller must read the device on its own.
func (c *Coalescer) fromListing(ctx context.Context, groupID, rid string) (*deprovision.Registration, bool, error) {
	key := strings.ToLower(rid)
	c.mu.Lock()
	g := c.groups[strings.ToLower(groupID)]
	if g == nil {
		g = &group{id: groupID}
		c.groups[strings.ToLower(groupID)] = g
	}
	now := c.now()
	fresh := g.listed != nil && now.Sub(g.listedAt) < c.o.ListFor
	if fresh && g.complete {
		r, ok := g.listed[key]
		c.mu.Unlock()
		if ok {
			c.hit()
		}
		return &r, ok, nil
	}
	wait := g.listing
	if wait == nil {
		cut := 0
		for cut < len(g.recent) && now.Sub(g.recent[cut]) >= c.o.ListFor {
			cut++
		}
		g.recent = append(g.recent[cut:], now)
		if len(g.recent) >= c.o.ListAfter {
			g.recent = nil
			g.listing = make(chan struct{})
			wait = g.listing
			go c.list(context.WithoutCancel(ctx), g)
		}
	}
	c.mu.Unlock()
	if wait == nil {
		return nil, false, nil
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	c.mu.Lock()
	r, ok := g.listed[key]
	c.mu.Unlock()
	if ok {
		c.hit()
	}
	return &r, ok, nil
}

func (c *Coalescer) hit() {
	c.bmu.Lock()
	c.stats.ListedHits++
	c.bmu.Unlock()
}

// list reads every page of g's registration states into a new listing. A failure leaves the
// listing incomplete: its waiters read their devices on their own.
func (c *Coalescer) list(ctx context.Context, g *group) {
	c.bmu.Lock()
	c.stats.Listings++
	c.bmu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := c.now()
	listed := map[string]deprovision.Registration{}
	hubs := map[string]string{} // one string per hub name
	complete, pages := false, 0
	var failure error
	for page, err := range c.regs.GroupRegistrations(ctx, g.id, "", c.o.PageSize) {
		if err != nil {
			failure = err
			break
		}
		pages++
		for _, r := range page.Items {
			h, ok := hubs[r.AssignedHub]
			if !ok {
				hubs[r.AssignedHub], h = r.AssignedHub, r.AssignedHub
			}
			r.AssignedHub, r.ETag = h, ""
			if strings.EqualFold(r.DeviceID, r.RegistrationID) {
				r.DeviceID = r.RegistrationID
			}
			listed[strings.ToLower(r.RegistrationID)] = r
		}
		if len(listed) > c.o.MaxListed {
			failure = fmt.Errorf("group %s has more than %d registration states; listing stopped", g.id, c.o.MaxListed)
			break
		}
		if page.Next == "" {
			complete = true
		}
	}
	c.bmu.Lock()
	c.stats.Pages += int64(pages)
	c.bmu.Unlock()
	c.mu.Lock()
	g.listed, g.complete, g.listedAt = listed, complete, start
	close(g.listing)
	g.listing = nil
	c.mu.Unlock()
	if failure != nil && !errors.Is(failure, context.Canceled) {
		c.o.Logger.Warn("listing a group's registration states for a burst of revocations", "group", g.id, "pages", pages, "error", failure)
		return
	}
	c.o.Logger.Info("listed a group's registration states for a burst of revocations", "group", g.id, "states", len(listed), "pages", pages)
}

// Package coalesce is the engine's [deprovision.Burst]: it coalesces the DPS work of
// single-device revocations that arrive together (a fleet-wide compromise reported one event
// per device) across the concurrent invocations of one handler instance. Each event stays
// its own operation; what they share is DPS calls:
//
//   - registration lookups of devices named with their enrollment group are answered from a
//     listing of the group's registration states (up to 1,000 a DPS call), read page by page
//     while the lookups ask for more, instead of one read each;
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
	// ListFor is how long a listing of a group's registration states answers lookups. A
	// device that provisions again meanwhile is found where the listing saw it (the engine
	// reads its registration again when its identity is not in that hub). Default 5m: a
	// burst is worked through at the DPS budget's pace, and each listing costs a call per
	// 1,000 members.
	ListFor time.Duration
	// Pages, when set, shares the pages of group listings between the app's instances (the
	// app: a Table), so that a burst several instances receive together lists each group
	// once: an instance takes a page another one read, and reads from DPS only the pages no
	// other instance has (claiming each first). Without it, each instance lists on its own.
	Pages Pages
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
	// Default 3s (the benchmark filled its calls better than with 1s when the journal was
	// slow to bring requests to their block); negative: never wait.
	Gather time.Duration
	// Logger receives a line per listing. Default slog.Default().
	Logger *slog.Logger
}

// Pages shares group listings between instances. A listing is named by its id; its pages are
// numbered from 0, each read from DPS by the one instance that claimed it.
type Pages interface {
	// Listing returns the listing of group to use: the one an instance started within
	// maxAge, or a new one started now.
	Listing(ctx context.Context, group string, maxAge time.Duration) (id string, started time.Time, err error)
	// Page returns page n of listing id; ok is false while no instance has put it.
	Page(ctx context.Context, id string, n int) (page deprovision.RegistrationPage, ok bool, err error)
	// Claim claims the reading of page n from DPS. It reports false while another instance
	// holds a claim younger than stale.
	Claim(ctx context.Context, id string, n int, stale time.Duration) (bool, error)
	// Put publishes page n.
	Put(ctx context.Context, id string, n int, page deprovision.RegistrationPage) error
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
	Listings    int64 // listings of a group started
	Pages       int64 // pages of registration states read from DPS
	SharedPages int64 // pages another instance read, taken from Options.Pages
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
		opts.Gather = 3 * time.Second
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

// group is what the coalescer knows of one group's registration states: a listing read page
// by page while lookups ask for it.
type group struct {
	id string
	// gen numbers the listing; a page read for an older one is dropped.
	gen int
	// listed holds the pages read so far by lower-case registration id, since started.
	listed  map[string]deprovision.Registration
	started time.Time
	// next is the continuation of the next page; complete is set when the last page was read,
	// stopped when a page failed (or the listing grew past MaxListed): lookups the pages read
	// do not answer then read their devices on their own.
	next              string
	pages             int
	complete, stopped bool
	// asked counts the lookups that needed a page not yet read: the listing reads a page only
	// while more of them came than pages were read, so that it never costs more than the
	// lookups themselves.
	asked   int
	reading bool
	// changed is closed (and replaced) whenever a page is read or the listing ends.
	changed chan struct{}
	// shared is the id of the listing shared through Options.Pages, once sharing asked for
	// it ("" without Pages, or when the shared store failed: the instance lists alone).
	shared  string
	sharing bool
}

// Lookup implements deprovision.Burst. A device named without its group is read on its own
// (one DPS operation). A device named with its group is looked for in a listing of the
// group's registration states (PageSize a DPS call), read page by page from the first such
// lookup on while the lookups ask for more: a page is read only while more lookups needed one
// than pages were read, so a burst of thousands lists its group once and a few lookups of a
// large group cost at most twice their single reads (each a page and its own read). A lookup
// the pages read do not answer once the listing stops (complete, or no more demand) reads
// its device on its own: it may have registered since. A listing answers for ListFor.
func (c *Coalescer) Lookup(ctx context.Context, groupID, registrationID string) (*deprovision.Registration, error) {
	if groupID != "" {
		if r, ok, err := c.fromListing(ctx, groupID, registrationID); ok || err != nil {
			return r, err
		}
	}
	c.count(&c.stats.SingleReads)
	return c.regs.GetRegistration(ctx, registrationID)
}

// fromListing answers a lookup from the group's listing, reading pages while the lookups pay
// for them; ok is false when the caller must read the device on its own.
func (c *Coalescer) fromListing(ctx context.Context, groupID, rid string) (*deprovision.Registration, bool, error) {
	key := strings.ToLower(rid)
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[strings.ToLower(groupID)]
	if g == nil {
		g = &group{id: groupID}
		c.groups[strings.ToLower(groupID)] = g
	}
	gen, counted := 0, false
	for {
		if now := c.now(); g.listed == nil || now.Sub(g.started) >= c.o.ListFor {
			c.count(&c.stats.Listings)
			if g.changed != nil {
				close(g.changed) // the lapsed listing's waiters look again, at this one
			}
			*g = group{id: groupID, gen: g.gen + 1, listed: map[string]deprovision.Registration{}, started: now, changed: make(chan struct{})}
		}
		if r, ok := g.listed[key]; ok {
			c.count(&c.stats.ListedHits)
			return &r, true, nil
		}
		if g.complete || g.stopped {
			return nil, false, nil
		}
		if !counted || gen != g.gen {
			gen, counted = g.gen, true
			g.asked++
		}
		if !g.reading {
			if g.asked <= g.pages {
				return nil, false, nil // the pages this lookup paid for are read, and it is not in them
			}
			g.reading = true
			go c.list(context.WithoutCancel(ctx), g, g.gen, g.next)
		}
		changed := g.changed
		c.mu.Unlock()
		select {
		case <-changed:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			return nil, false, ctx.Err()
		}
	}
}

// list reads g's pages from the continuation next, one DPS call each, while more lookups asked
// than pages were read. A failure stops the listing: the lookups it leaves read their devices on
// their own until it lapses (ListFor).
func (c *Coalescer) list(ctx context.Context, g *group, gen int, next string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	hubs := map[string]string{} // one string per hub name
	c.mu.Lock()
	shared, sharing, n := g.shared, g.sharing, g.pages
	c.mu.Unlock()
	if c.o.Pages != nil && !sharing {
		id, started, err := c.o.Pages.Listing(ctx, g.id, c.o.ListFor)
		if err != nil {
			c.o.Logger.Warn("sharing a group's listing with the other instances; listing it alone", "group", g.id, "error", err)
			id = ""
		}
		c.mu.Lock()
		if g.gen == gen {
			g.shared, g.sharing = id, true
			if err == nil && started.Before(g.started) {
				g.started = started // the shared listing answers for ListFor from its start
			}
		}
		shared = g.shared
		c.mu.Unlock()
	}
	for {
		page, failure := c.page(ctx, g, shared, n, next)
		n++
		c.mu.Lock()
		if g.gen != gen {
			c.mu.Unlock()
			return // a newer listing replaced this one
		}
		g.reading = false
		if failure == nil {
			g.pages++
			for _, r := range page.Items {
				h, ok := hubs[r.AssignedHub]
				if !ok {
					hubs[r.AssignedHub], h = r.AssignedHub, r.AssignedHub
				}
				r.AssignedHub, r.ETag = h, ""
				if strings.EqualFold(r.DeviceID, r.RegistrationID) {
					r.DeviceID = r.RegistrationID
				}
				g.listed[strings.ToLower(r.RegistrationID)] = r
			}
			g.next = page.Next
			g.complete = page.Next == ""
			if len(g.listed) > c.o.MaxListed && !g.complete {
				failure = fmt.Errorf("group %s has more than %d registration states; listing stopped", g.id, c.o.MaxListed)
			}
		}
		g.stopped = failure != nil
		more := !g.complete && !g.stopped && g.asked > g.pages
		g.reading = more
		next = g.next
		states, pages, complete := len(g.listed), g.pages, g.complete
		close(g.changed)
		g.changed = make(chan struct{})
		c.mu.Unlock()
		switch {
		case failure != nil && !errors.Is(failure, context.Canceled):
			c.o.Logger.Warn("listing a group's registration states for a burst of revocations", "group", g.id, "pages", pages, "error", failure)
		case complete:
			c.o.Logger.Info("listed a group's registration states for a burst of revocations", "group", g.id, "states", states, "pages", pages)
		}
		if !more {
			return
		}
	}
}

// sharedStale is how long a claim on a shared page holds off the other instances: past it,
// the instance that claimed it is taken to have died and another reads the page.
const sharedStale = 30 * time.Second

// page returns page n of g's listing, whose continuation is next: from the listing shared
// between instances when there is one (shared): the page another instance put, or read from
// DPS under a claim and put for the others. A failure of the shared store reads the page
// from DPS, as does a claim gone stale.
func (c *Coalescer) page(ctx context.Context, g *group, shared string, n int, next string) (deprovision.RegistrationPage, error) {
	if shared == "" {
		return c.readPage(ctx, g.id, next)
	}
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		page, ok, err := c.o.Pages.Page(ctx, shared, n)
		if err == nil && ok {
			c.count(&c.stats.SharedPages)
			return page, nil
		}
		won := true
		if err == nil {
			won, err = c.o.Pages.Claim(ctx, shared, n, sharedStale)
		}
		if err != nil {
			c.o.Logger.Warn("reading a shared listing page; reading it from DPS", "group", g.id, "page", n, "error", err)
			return c.readPage(ctx, g.id, next)
		}
		if won {
			page, err := c.readPage(ctx, g.id, next)
			if err == nil {
				if perr := c.o.Pages.Put(ctx, shared, n, page); perr != nil {
					c.o.Logger.Warn("sharing a listing page with the other instances", "group", g.id, "page", n, "error", perr)
				}
			}
			return page, err
		}
		// Another instance is reading it: look again shortly.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return deprovision.RegistrationPage{}, ctx.Err()
		}
	}
}

// readPage reads one page of group's registration states from DPS.
func (c *Coalescer) readPage(ctx context.Context, group, next string) (deprovision.RegistrationPage, error) {
	for p, err := range c.regs.GroupRegistrations(ctx, group, next, c.o.PageSize) {
		if err == nil {
			c.count(&c.stats.Pages)
		}
		return p, err
	}
	return deprovision.RegistrationPage{}, errors.New("the listing ended without a page")
}

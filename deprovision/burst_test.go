package deprovision_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/coalesce"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/internal/testenv"
)

// countedDPS counts the DPS calls of the single-device path that a burst saves.
type countedDPS struct {
	*fake.DPS
	getEnrollment atomic.Int64
}

func (c *countedDPS) GetEnrollment(ctx context.Context, rid string) (*d.Enrollment, error) {
	c.getEnrollment.Add(1)
	return c.DPS.GetEnrollment(ctx, rid)
}

// bulkOverFake is deprovision.BulkEnrollments over the fake DPS, holding each call until
// release is closed (as the DPS budget would), so that the burst's requests pile up.
type bulkOverFake struct {
	w       *world
	release chan struct{}
	items   atomic.Int64
	held    atomic.Int64 // items of the calls that arrived
}

func (b *bulkOverFake) CreateEnrollments(ctx context.Context, es []*d.Enrollment) ([]error, error) {
	b.held.Add(int64(len(es)))
	<-b.release
	errs := make([]error, len(es))
	for i, e := range es {
		_, errs[i] = b.w.dps.PutEnrollment(ctx, e, "")
	}
	b.items.Add(int64(len(es)))
	return errs, nil
}

// A burst of compromises of one group's members: every event is its own operation, ends
// succeeded and is announced, and the coalesced ones read no individual enrollment and
// create their blocks in bulk. In the same burst, an individual device is found out by its
// block's conflict and planned again as an individual (its enrollment disabled, not taken
// for a block), and a member already blocked by hand is recorded as the single-device path
// records it, whichever path it took.
func TestBurstOfCompromisesIsCoalesced(t *testing.T) {
	ctx := context.Background()
	const n = 60
	w := newWorld()
	setupGroup(n)(w)
	// An individual device, registered through its own enrollment, reported with the group.
	w.dps.AddEnrollment(d.Enrollment{RegistrationID: "indiv-1", Attestation: d.AttestationTPM, Enabled: true})
	w.dps.AddRegistration(d.Registration{RegistrationID: "indiv-1", DeviceID: "indiv-1", AssignedHub: hub1}, "")
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: "indiv-1", Enabled: true, AuthType: "sas"})
	// A member an operator blocked by hand (a disabled symmetric-key enrollment).
	w.dps.AddEnrollment(d.Enrollment{RegistrationID: "m-0003", Attestation: d.AttestationSymmetricKey, Enabled: false})

	dps := &countedDPS{DPS: w.dps}
	bulk := &bulkOverFake{w: w, release: make(chan struct{})}
	deps := w.deps()
	deps.Enrollments = dps
	burst := coalesce.New(w.dps, bulk, &coalesce.Options{MaxInFlight: 100, Logger: slog.New(slog.DiscardHandler)})
	deps.Burst = burst
	e := w.engine(deps)

	ids := []string{"indiv-1"}
	for i := range n {
		ids = append(ids, fmt.Sprintf("m-%04d", i))
	}
	ops := make([]*d.Operation, len(ids))
	var wg sync.WaitGroup
	var finished atomic.Int64
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer finished.Add(1)
			req := d.Request{EventID: "burst-" + id, Source: "/security", Intent: d.IntentCompromised, RegistrationID: id,
				EnrollmentGroupID: "g-x509", EventTime: t0.Add(time.Hour)}
			op, err := e.Submit(ctx, req)
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
			ops[i] = op
		}()
	}
	// Release the bulk calls once the burst has piled up behind them: every request has
	// finished (the single-device path) or waits for a bulk call, or is in the call held.
	testenv.Eventually(t, "every request to finish or wait for a bulk call", func() bool {
		return finished.Load()+burst.Stats().Waiting+bulk.held.Load() == int64(len(ids))
	})
	close(bulk.release)
	wg.Wait()

	for i, op := range ops {
		if op == nil || op.Status != d.StatusSucceeded {
			t.Fatalf("%s: %+v", ids[i], op)
		}
	}
	if got := len(w.note.ops); got != len(ids) {
		t.Errorf("%d outcomes announced for %d events", got, len(ids))
	}
	st := burst.Stats()
	t.Logf("burst: %+v; %d bulk items; %d individual enrollments read", st, bulk.items.Load(), dps.getEnrollment.Load())
	if st.Coalesced < int64(n)/2 || bulk.items.Load() < int64(n)/2 || st.BulkCalls > st.BulkItems/2 {
		t.Errorf("the burst was not coalesced: %+v, %d bulk items", st, bulk.items.Load())
	}
	// Single-path requests read the enrollment; coalesced ones only when their create conflicts.
	if singles := int64(len(ids)) - st.Coalesced; dps.getEnrollment.Load() > singles+4 {
		t.Errorf("%d individual enrollments read for %d requests on the single path", dps.getEnrollment.Load(), singles)
	}
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		en, ok := w.dps.Enrollment(id)
		if !ok || en.Enabled {
			t.Fatalf("%s: no disabled blocking enrollment: %+v", id, en)
		}
		if dev, _ := w.hubs.Device([]string{hub1, hub2}[i%2], id); dev.Enabled {
			t.Fatalf("%s: hub identity still enabled", id)
		}
	}
	// The individual: planned again, its own enrollment disabled, recorded as an individual.
	if en, _ := w.dps.Enrollment("indiv-1"); en.Enabled || en.Attestation != d.AttestationTPM {
		t.Errorf("the individual's enrollment: %+v, want its TPM enrollment disabled", en)
	}
	ds, _, err := e.DeviceHistory(ctx, "indiv-1")
	// Its enrollment stands in front of the enabled group the event named (GroupMember), as
	// the single-device path records it.
	if err != nil || ds.BlockingEnrollment || !ds.GroupMember || ds.EnrollmentAction != "disabled" {
		t.Errorf("the individual's device row: %+v %v", ds, err)
	}
	if ds, _, _ := e.DeviceHistory(ctx, "m-0003"); ds.BlockingEnrollment || ds.EnrollmentAction != "disabled" {
		t.Errorf("the member blocked by hand: device row %+v, want its enrollment recorded as disabled (not as this system's block)", ds)
	}
	if en, _ := w.dps.Enrollment("m-0003"); en.Enabled || en.Attestation != d.AttestationSymmetricKey {
		t.Errorf("the hand-made block: %+v", en)
	}
}

// deferringBurst defers every request it is given (but those the queue delivers), and keeps
// what it was handed.
type deferringBurst struct {
	*coalesce.Coalescer
	queue []d.Request
}

func (b *deferringBurst) Join(ctx context.Context, req d.Request) (context.Context, d.BurstMode, func(), error) {
	if d.IsDeferred(ctx) {
		return b.Coalescer.Join(ctx, req)
	}
	return ctx, d.BurstDefer, func() {}, nil
}

func (b *deferringBurst) Defer(_ context.Context, req d.Request) error {
	b.queue = append(b.queue, req)
	return nil
}

// journalCalls counts the journal calls a path makes (each is a Table transaction in the app).
type journalCalls struct {
	d.Journal
	mu    sync.Mutex
	calls map[string]int
}

func (j *journalCalls) count(name string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.calls == nil {
		j.calls = map[string]int{}
	}
	j.calls[name]++
}

// take returns the counts so far and starts again.
func (j *journalCalls) take() map[string]int {
	j.mu.Lock()
	defer j.mu.Unlock()
	c := j.calls
	j.calls = nil
	return c
}

func (j *journalCalls) CreateOperation(ctx context.Context, op *d.Operation) (*d.Operation, bool, error) {
	j.count("CreateOperation")
	return j.Journal.CreateOperation(ctx, op)
}

func (j *journalCalls) GetOperation(ctx context.Context, id string) (*d.Operation, error) {
	j.count("GetOperation")
	return j.Journal.GetOperation(ctx, id)
}

func (j *journalCalls) UpdateOperation(ctx context.Context, op *d.Operation) error {
	j.count("UpdateOperation")
	return j.Journal.UpdateOperation(ctx, op)
}

func (j *journalCalls) RecordStep(ctx context.Context, rec d.StepRecord) error {
	j.count("RecordStep")
	return j.Journal.RecordStep(ctx, rec)
}

func (j *journalCalls) Steps(ctx context.Context, id string) ([]d.StepRecord, error) {
	j.count("Steps")
	return j.Journal.Steps(ctx, id)
}

func (j *journalCalls) GetDevice(ctx context.Context, rid string) (*d.DeviceState, error) {
	j.count("GetDevice")
	return j.Journal.GetDevice(ctx, rid)
}

func (j *journalCalls) PutDevice(ctx context.Context, ds *d.DeviceState) error {
	j.count("PutDevice")
	return j.Journal.PutDevice(ctx, ds)
}

// A revocation deferred to the burst queue is journaled at once (running, with no lease,
// nothing changed yet) in one journal write, and carried out when the queue delivers it
// again, reading the operation rather than creating it again, its step records (there are
// none yet) not read, and its device row read once.
func TestDeferredRevocationIsJournaledThenCarriedOut(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	setupGroup(3)(w)
	b := &deferringBurst{Coalescer: coalesce.New(w.dps, &bulkOverFake{w: w, release: closed()}, &coalesce.Options{At: 1, Logger: slog.New(slog.DiscardHandler)})}
	deps := w.deps()
	deps.Burst = b
	calls := &journalCalls{Journal: deps.Journal}
	deps.Journal = calls
	e := w.engine(deps)
	req := d.Request{EventID: "deferred-1", Source: "/security", Intent: d.IntentCompromised, RegistrationID: "m-0001", EnrollmentGroupID: "g-x509", EventTime: t0.Add(time.Hour)}
	op := submit(t, e, req)
	if op.Status != d.StatusRunning || op.LeaseOwner != "" || op.Plan != nil || len(b.queue) != 1 {
		t.Fatalf("after deferring: %s, lease %q, plan %v, %d queued", op.Status, op.LeaseOwner, op.Plan, len(b.queue))
	}
	if got := calls.take(); got["CreateOperation"] != 1 || len(got) != 1 {
		t.Errorf("deferring made the journal calls %v, want one CreateOperation", got)
	}
	if _, ok := w.dps.Enrollment("m-0001"); ok {
		t.Fatal("a deferred revocation changed DPS before the queue delivered it")
	}
	got, err := e.Submit(d.Deferred(ctx), b.queue[0])
	if err != nil || got.Status != d.StatusSucceeded || got.ID != op.ID {
		t.Fatalf("the queue's delivery: %+v %v", got, err)
	}
	if en, ok := w.dps.Enrollment("m-0001"); !ok || en.Enabled {
		t.Errorf("no blocking enrollment after the queue's delivery: %+v", en)
	}
	made := calls.take()
	total := 0
	for _, n := range made {
		total += n
	}
	// The operation read, its lease, the device row read and locked, the plan, each of the two
	// steps begun and ended, the device row, the end, the announcement.
	if made["CreateOperation"] != 0 || made["Steps"] != 0 || made["GetDevice"] != 1 || total != 12 {
		t.Errorf("the queue's delivery made the journal calls %v, want 12: no CreateOperation, no Steps and one GetDevice", made)
	}
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// A device that provisioned again after its group was listed is not looked for in the hub the
// listing saw: its identity is not there, its registration state is read again, and it is
// resolved in full where it is now.
func TestCoalescedDeviceThatMovedSinceTheListing(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	setupGroup(4)(w) // m-0000 … m-0003, m-0001 in hub2
	c := coalesce.New(w.dps, &bulkOverFake{w: w, release: closed()}, &coalesce.Options{At: 1, Logger: slog.New(slog.DiscardHandler)})
	if r, err := c.Lookup(ctx, "g-x509", "m-0001"); err != nil || r.AssignedHub != hub2 {
		t.Fatalf("the listing: %+v %v", r, err)
	}
	// m-0001 provisions again, into hub1, after the listing.
	w.dps.AddRegistration(d.Registration{RegistrationID: "m-0001", DeviceID: "m-0001", AssignedHub: hub1}, "g-x509")
	if err := w.hubs.DeleteDevice(ctx, hub2, "m-0001", "*"); err != nil {
		t.Fatal(err)
	}
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: "m-0001", Enabled: true, AuthType: "certificateAuthority"})
	deps := w.deps()
	deps.Burst = c
	e := w.engine(deps)
	req := d.Request{EventID: "moved-1", Source: "/security", Intent: d.IntentCompromised, RegistrationID: "m-0001", EnrollmentGroupID: "g-x509", EventTime: t0.Add(time.Hour)}
	if op := submit(t, e, req); op.Status != d.StatusSucceeded {
		t.Fatalf("%s %q", op.Status, op.Reason)
	}
	if dev, ok := w.hubs.Device(hub1, "m-0001"); !ok || dev.Enabled {
		t.Errorf("the identity where the device is now: %+v (present %v), want disabled", dev, ok)
	}
}

package deprovision_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// clock is a settable clock, so lease expiry needs no sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time           { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(dt time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(dt) }

type notifier struct {
	mu  sync.Mutex
	ops []string
	// held records ApprovalRequired announcements, apart from the outcomes in ops.
	held []string
}

func (n *notifier) ApprovalRequired(_ context.Context, op *d.Operation) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.held = append(n.held, op.ID+" "+string(op.Status))
}

func (n *notifier) OperationEnded(_ context.Context, op *d.Operation) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ops = append(n.ops, op.ID+" "+string(op.Status))
}

type world struct {
	dps   *fake.DPS
	hubs  *fake.HubDevices
	j     *fake.Journal
	clock *clock
	note  *notifier
	// q is the GroupWork queue: group-wide operations fan out into it (see run).
	q *fake.Queue
}

func newWorld() *world {
	return &world{dps: fake.NewDPS(), hubs: fake.NewHubDevices(hub1, hub2), j: fake.NewJournal(),
		clock: &clock{t: t0.Add(2 * time.Hour)}, note: &notifier{}, q: &fake.Queue{}}
}

func (w *world) deps() d.Deps {
	return d.Deps{Enrollments: w.dps, Registrations: w.dps, Devices: w.hubs, Journal: w.j, Clock: w.clock, Notifier: w.note,
		Logger: slog.New(slog.DiscardHandler), Work: w.q}
}

func (w *world) engine(deps d.Deps) *d.Engine {
	return d.NewEngine(deps, d.Config{LeaseDuration: time.Minute, GroupPageSize: 100})
}

const groupKey = "c2VjcmV0LWdyb3VwLWtleS1mb3ItdGVzdHMtb25seS0xMjM0NQ=="

// Setups: one device (or group) per enrollment kind.
func setupTPM(w *world) {
	w.dps.AddEnrollment(d.Enrollment{RegistrationID: "sensor-042", Attestation: d.AttestationTPM, Enabled: true})
	w.dps.AddRegistration(d.Registration{RegistrationID: "sensor-042", DeviceID: "sensor-042", AssignedHub: hub1}, "")
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: "sensor-042", Enabled: true, AuthType: "sas"})
}

func setupX509Member(w *world) {
	w.dps.AddGroup(d.Group{ID: "g-x509", Attestation: d.AttestationX509, Enabled: true, SigningCerts: []d.CertInfo{root.Info()}}, "")
	w.dps.AddRegistration(d.Registration{RegistrationID: "sensor-042", DeviceID: "sensor-042", AssignedHub: hub1}, "g-x509")
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: "sensor-042", Enabled: true, AuthType: "certificateAuthority"})
}

func setupSKMember(w *world) {
	w.dps.AddGroup(d.Group{ID: "sk-group", Attestation: d.AttestationSymmetricKey, Enabled: true}, groupKey)
	w.dps.AddRegistration(d.Registration{RegistrationID: "sensor-042", DeviceID: "sensor-042", AssignedHub: hub1}, "sk-group")
	// DPS gave the member's identity the keys derived from the group's.
	keys, err := d.DerivedKeys(d.SymmetricKeys{Primary: groupKey, Secondary: groupKey}, "sensor-042")
	if err != nil {
		panic(err)
	}
	w.hubs.AddDevice(d.Device{Hub: hub1, DeviceID: "sensor-042", Enabled: true, AuthType: "sas", Keys: keys})
}

func setupGroup(n int) func(w *world) {
	return func(w *world) {
		w.dps.AddGroup(d.Group{ID: "g-x509", Attestation: d.AttestationX509, Enabled: true, SigningCerts: []d.CertInfo{root.Info()}}, "")
		for i := range n {
			id := fmt.Sprintf("m-%04d", i)
			h := []string{hub1, hub2}[i%2]
			w.dps.AddRegistration(d.Registration{RegistrationID: id, DeviceID: id, AssignedHub: h}, "g-x509")
			w.hubs.AddDevice(d.Device{Hub: h, DeviceID: id, Enabled: true, AuthType: "certificateAuthority"})
		}
	}
}

func devReq(id string, i d.Intent) d.Request {
	return d.Request{EventID: id, Source: "/asset-system", Intent: i, RegistrationID: "sensor-042", EventTime: t0.Add(time.Hour)}
}

func submit(t *testing.T, e *d.Engine, r d.Request) *d.Operation {
	t.Helper()
	op, err := e.Submit(context.Background(), r)
	if err != nil {
		t.Fatalf("Submit %s %s: %v", r.Intent, r.EventID, err)
	}
	return op
}

func TestEngineAppliesEachPath(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(*world)
		req     d.Request
		dps     func(*testing.T, *world)
		hub     string // "enabled", "disabled", "missing"
		provise bool   // can the device provision afterwards
		group   string
	}{
		{"tpm compromised", setupTPM, devReq("e1", d.IntentCompromised), nil, "disabled", false, ""},
		{"tpm sold", setupTPM, devReq("e1", d.IntentSold), func(t *testing.T, w *world) {
			if _, ok := w.dps.Enrollment("sensor-042"); ok || w.dps.HasRegistration("sensor-042") {
				t.Error("enrollment or registration record left after sold")
			}
		}, "missing", false, ""},
		{"x509 member lost, with cert", setupX509Member, func() d.Request {
			r := devReq("e1", d.IntentLost)
			r.CertificatePEM = leaf.ChainPEM
			return r
		}(), func(t *testing.T, w *world) {
			e, ok := w.dps.Enrollment("sensor-042")
			if !ok || e.Enabled || e.Attestation != d.AttestationX509 || len(e.ClientCerts) != 1 || e.ClientCerts[0].SHA1Thumbprint != leaf.Info().SHA1Thumbprint {
				t.Errorf("blocking enrollment %+v, want a disabled X.509 enrollment for the leaf only", e)
			}
		}, "disabled", false, "g-x509"},
		{"sk member retired", setupSKMember, devReq("e1", d.IntentRetired), func(t *testing.T, w *world) {
			e, ok := w.dps.Enrollment("sensor-042")
			if !ok || e.Enabled || e.Attestation != d.AttestationSymmetricKey {
				t.Errorf("blocking enrollment %+v", e)
			}
			if g, _ := w.dps.GroupState("sk-group"); !g.Enabled {
				t.Error("the group was disabled for one member")
			}
		}, "missing", false, "sk-group"},
		{"sk member moved", setupSKMember, func() d.Request {
			r := devReq("e1", d.IntentMoved)
			r.TargetHub, r.EnrollmentGroupID = hub2, "sk-group"
			return r
		}(), func(t *testing.T, w *world) {
			e, ok := w.dps.Enrollment("sensor-042")
			if !ok || !e.Enabled || !slices.Equal(e.IoTHubs, []string{hub2}) || e.AllocationPolicy != "static" {
				t.Errorf("move enrollment %+v", e)
			}
		}, "enabled", true, "sk-group"}, // the old identity waits for the device to move (move.go)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld()
			c.setup(w)
			op := submit(t, w.engine(w.deps()), c.req)
			if op.Status != d.StatusSucceeded {
				t.Fatalf("status %s (%s)\n%s", op.Status, op.Reason, op.Plan)
			}
			if c.dps != nil {
				c.dps(t, w)
			}
			dev, ok := w.hubs.Device(hub1, "sensor-042")
			switch {
			case c.hub == "missing" && ok, c.hub == "disabled" && (!ok || dev.Enabled):
				t.Errorf("hub identity %+v (present %v), want %s", dev, ok, c.hub)
			}
			if c.hub == "disabled" && !strings.Contains(dev.StatusReason, string(c.req.Intent)) {
				t.Errorf("statusReason %q", dev.StatusReason)
			}
			if got := w.dps.CanProvision("sensor-042", c.group); got != c.provise {
				t.Errorf("can provision = %v, want %v", got, c.provise)
			}
			if len(w.note.ops) != 1 {
				t.Errorf("notified %d times, want once: %v", len(w.note.ops), w.note.ops)
			}
			// A redelivery returns the terminal operation and changes nothing.
			writes := len(w.dps.Writes) + len(w.hubs.Writes)
			again := submit(t, w.engine(w.deps()), c.req)
			if again.Status != op.Status || len(w.dps.Writes)+len(w.hubs.Writes) != writes {
				t.Errorf("redelivery changed something: %s, writes %d -> %d", again.Status, writes, len(w.dps.Writes)+len(w.hubs.Writes))
			}
		})
	}
}

func TestEngineRecoveredUndoesOnlyItsOwnRevocation(t *testing.T) {
	for _, setup := range []func(*world){setupTPM, setupSKMember} {
		w := newWorld()
		setup(w)
		e := w.engine(w.deps())
		group := ""
		if _, ok := w.dps.Enrollment("sensor-042"); !ok {
			group = "sk-group"
		}
		submit(t, e, devReq("lost", d.IntentLost))
		if w.dps.CanProvision("sensor-042", group) {
			t.Fatal("device can provision after lost")
		}
		r := devReq("found", d.IntentRecovered)
		r.EventTime = r.EventTime.Add(time.Minute)
		if op := submit(t, e, r); op.Status != d.StatusSucceeded {
			t.Fatalf("recovered: %s %s", op.Status, op.Reason)
		}
		if !w.dps.CanProvision("sensor-042", group) {
			t.Fatal("device cannot provision after recovered")
		}
		if dev, _ := w.hubs.Device(hub1, "sensor-042"); !dev.Enabled {
			t.Fatal("hub identity still disabled after recovered")
		}
		ds, hist, err := e.DeviceHistory(context.Background(), "SENSOR-042")
		if err != nil || ds.Intent != d.IntentRecovered || ds.BlockingEnrollment || len(hist) != 2 {
			t.Fatalf("device row %+v, history %v, err %v", ds, hist, err)
		}
	}
}

func TestEnginePrecedence(t *testing.T) {
	t.Run("compromised then recovered", func(t *testing.T) {
		w := newWorld()
		setupTPM(w)
		e := w.engine(w.deps())
		submit(t, e, devReq("c", d.IntentCompromised))
		r := devReq("r", d.IntentRecovered)
		r.EventTime = r.EventTime.Add(time.Hour)
		op := submit(t, e, r)
		if op.Status != d.StatusRejected || !strings.Contains(op.Reason, "never undoes") {
			t.Fatalf("recovered after compromised: %s %q", op.Status, op.Reason)
		}
		if w.dps.CanProvision("sensor-042", "") {
			t.Fatal("compromised device re-admitted")
		}
	})
	t.Run("sold while lost", func(t *testing.T) {
		w := newWorld()
		setupSKMember(w)
		e := w.engine(w.deps())
		submit(t, e, devReq("l", d.IntentLost))
		s := devReq("s", d.IntentSold)
		s.EventTime = s.EventTime.Add(time.Minute)
		if op := submit(t, e, s); op.Status != d.StatusSucceeded {
			t.Fatalf("sold: %s %s", op.Status, op.Reason)
		}
		// The blocking enrollment survives sold: deleting it would re-admit the device.
		if en, ok := w.dps.Enrollment("sensor-042"); !ok || en.Enabled {
			t.Fatalf("blocking enrollment after sold: %+v %v", en, ok)
		}
		r := devReq("r", d.IntentRecovered)
		r.EventTime = r.EventTime.Add(time.Hour)
		if op := submit(t, e, r); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "final") {
			t.Fatalf("recovered after sold: %s %q", op.Status, op.Reason)
		}
		if w.dps.CanProvision("sensor-042", "sk-group") {
			t.Fatal("sold device can provision")
		}
	})
	t.Run("sold after a group member moved", func(t *testing.T) {
		w := newWorld()
		setupSKMember(w)
		e := w.engine(w.deps())
		m := devReq("m", d.IntentMoved)
		m.TargetHub, m.EnrollmentGroupID = hub2, "sk-group"
		if op := submit(t, e, m); op.Status != d.StatusSucceeded {
			t.Fatalf("moved: %s %s", op.Status, op.Reason)
		}
		s := devReq("s", d.IntentSold)
		s.EventTime = s.EventTime.Add(time.Minute)
		op := submit(t, e, s)
		if op.Status != d.StatusSucceeded || op.Plan.Steps[0].Kind != d.StepDisableEnrollment {
			t.Fatalf("sold after move: %s\n%s", op.Status, op.Plan)
		}
		// Deleting the move enrollment would let the (enabled) group admit the device again.
		if w.dps.CanProvision("sensor-042", "sk-group") {
			t.Fatal("the sold device can provision through its group")
		}
	})
	t.Run("compromised after sold", func(t *testing.T) {
		w := newWorld()
		setupTPM(w)
		e := w.engine(w.deps())
		submit(t, e, devReq("s", d.IntentSold))
		c := devReq("c", d.IntentCompromised)
		c.EventTime = c.EventTime.Add(time.Minute)
		op := submit(t, e, c)
		if op.Status != d.StatusSucceeded || len(op.Plan.Steps) != 0 || !strings.Contains(strings.Join(op.Plan.Notes, " "), "nothing is left") {
			t.Fatalf("compromised after sold: %s %v", op.Status, op.Plan)
		}
		ds, _ := w.j.GetDevice(context.Background(), "sensor-042")
		if ds.Intent != d.IntentSold || ds.PendingOperation != "" {
			t.Fatalf("device row %+v: sold must stay on record", ds)
		}
	})
	t.Run("stale event", func(t *testing.T) {
		w := newWorld()
		setupTPM(w)
		e := w.engine(w.deps())
		submit(t, e, devReq("l", d.IntentLost))
		r := devReq("r", d.IntentRecovered)
		r.EventTime = r.EventTime.Add(time.Minute)
		submit(t, e, r)
		old := devReq("l-old", d.IntentLost)
		old.EventTime = t0 // older than both
		op := submit(t, e, old)
		if op.Status != d.StatusRejected || !strings.Contains(op.Reason, "stale") {
			t.Fatalf("stale lost: %s %q", op.Status, op.Reason)
		}
	})
}

// blockingDevices holds the first hub write until released, to line up concurrent deliveries.
type blockingDevices struct {
	*fake.HubDevices
	entered, release chan struct{}
	once             sync.Once
}

func (b *blockingDevices) PutDevice(ctx context.Context, dev *d.Device, etag string) (*d.Device, error) {
	b.once.Do(func() { close(b.entered); <-b.release })
	return b.HubDevices.PutDevice(ctx, dev, etag)
}

func TestEngineConcurrentDeliveries(t *testing.T) {
	t.Run("same event twice", func(t *testing.T) {
		w := newWorld()
		setupTPM(w)
		bd := &blockingDevices{HubDevices: w.hubs, entered: make(chan struct{}), release: make(chan struct{})}
		deps := w.deps()
		deps.Devices = bd
		r := devReq("e1", d.IntentCompromised)
		var first *d.Operation
		var firstErr error
		done := make(chan struct{})
		go func() { first, firstErr = w.engine(deps).Submit(context.Background(), r); close(done) }()
		<-bd.entered
		_, err := w.engine(deps).Submit(context.Background(), r)
		if !d.IsTransient(err) || !errors.Is(err, d.ErrBusy) {
			t.Fatalf("second delivery during the first: err %v, want transient ErrBusy", err)
		}
		close(bd.release)
		<-done
		if firstErr != nil || first.Status != d.StatusSucceeded {
			t.Fatalf("first delivery: %v %v", first, firstErr)
		}
		if n := strings.Count(strings.Join(w.hubs.Writes, "\n"), "sensor-042"); n != 1 {
			t.Fatalf("hub written %d times: %v", n, w.hubs.Writes)
		}
	})
	t.Run("lost in flight, recovered arrives", func(t *testing.T) {
		w := newWorld()
		setupTPM(w)
		bd := &blockingDevices{HubDevices: w.hubs, entered: make(chan struct{}), release: make(chan struct{})}
		deps := w.deps()
		deps.Devices = bd
		done := make(chan struct{})
		go func() { _, _ = w.engine(deps).Submit(context.Background(), devReq("l", d.IntentLost)); close(done) }()
		<-bd.entered
		r := devReq("r", d.IntentRecovered)
		r.EventTime = r.EventTime.Add(time.Minute)
		_, err := w.engine(deps).Submit(context.Background(), r)
		if !d.IsTransient(err) || !errors.Is(err, d.ErrBusy) {
			t.Fatalf("recovered while lost runs: err %v, want transient ErrBusy", err)
		}
		close(bd.release)
		<-done
		// Event Grid redelivers; by then lost is done and recovered applies.
		if op := submit(t, w.engine(deps), r); op.Status != d.StatusSucceeded {
			t.Fatalf("redelivered recovered: %s %s", op.Status, op.Reason)
		}
		if !w.dps.CanProvision("sensor-042", "") {
			t.Fatal("not recovered")
		}
	})
}

func TestEngineDryRun(t *testing.T) {
	w := newWorld()
	setupTPM(w)
	r := devReq("e1", d.IntentSold)
	r.DryRun = true
	op := submit(t, w.engine(w.deps()), r)
	if op.Status != d.StatusPlanned || op.Plan == nil || len(op.Plan.Steps) != 3 {
		t.Fatalf("dry run: %s %v", op.Status, op.Plan)
	}
	if len(w.dps.Writes)+len(w.hubs.Writes) != 0 {
		t.Fatalf("dry run changed things: %v %v", w.dps.Writes, w.hubs.Writes)
	}
	if _, err := w.j.GetDevice(context.Background(), "sensor-042"); !errors.Is(err, d.ErrNotFound) {
		t.Fatalf("dry run wrote a device row: %v", err)
	}
}

func TestEngineRejects(t *testing.T) {
	w := newWorld()
	e := w.engine(w.deps())
	op := submit(t, e, devReq("e1", d.IntentLost)) // nothing in DPS
	if op.Status != d.StatusRejected || !strings.Contains(op.Reason, "unknown device") {
		t.Fatalf("unknown device: %s %q", op.Status, op.Reason)
	}
	bad := devReq("e2", "explode")
	if op := submit(t, e, bad); op.Status != d.StatusRejected || !strings.Contains(op.Reason, "intent") {
		t.Fatalf("bad intent: %s %q", op.Status, op.Reason)
	}
	op, err := e.Reject(context.Background(), devReq("e3", d.IntentLost), "source not allowed")
	if err != nil || op.Status != d.StatusRejected {
		t.Fatal(op, err)
	}
	got, _, err := e.Operation(context.Background(), d.OperationID("/asset-system", "e3"))
	if err != nil || got.Reason != "source not allowed" {
		t.Fatalf("journaled rejection: %+v %v", got, err)
	}
}

func TestEngineGroupRetired(t *testing.T) {
	w := newWorld()
	setupGroup(250)(w)
	op := w.run(t, w.engine(w.deps()), d.Request{EventID: "g1", Source: "s", Intent: d.IntentGroupRetired, EnrollmentGroupID: "g-x509"})
	if op.Status != d.StatusSucceeded {
		t.Fatalf("%s %s", op.Status, op.Reason)
	}
	if op.Progress.Total != 250 || op.Progress.Done != 250 || op.Progress.Pages != 3 {
		t.Fatalf("progress %+v", op.Progress)
	}
	if s := w.hubs.Snapshot(); s != "" {
		t.Fatalf("devices left: %s", s)
	}
	if s := w.dps.Snapshot(); s != "" {
		t.Fatalf("DPS left: %s", s)
	}
	for _, n := range w.hubs.BulkCalls {
		if n > 100 {
			t.Fatalf("bulk call of %d", n)
		}
	}
}

// streamCheck verifies that a group is streamed: each page is enqueued for the GroupWork
// workers before the next is read, so the fan-out holds one page, whatever the group's size.
type streamCheck struct {
	*fake.DPS
	yielded, maxAhead int
	enqueued          *int
}

func (s *streamCheck) GroupRegistrations(ctx context.Context, g, cont string, n int) iter.Seq2[d.RegistrationPage, error] {
	return func(yield func(d.RegistrationPage, error) bool) {
		for p, err := range s.DPS.GroupRegistrations(ctx, g, cont, n) {
			if ahead := s.yielded - *s.enqueued; ahead > s.maxAhead {
				s.maxAhead = ahead
			}
			s.yielded += len(p.Items)
			if !yield(p, err) {
				return
			}
		}
	}
}

// countingQueue counts the members enqueued.
type countingQueue struct {
	*fake.Queue
	mu       sync.Mutex
	enqueued int
}

func (q *countingQueue) Enqueue(ctx context.Context, b *d.WorkBatch) error {
	q.mu.Lock()
	q.enqueued += len(b.Members)
	q.mu.Unlock()
	return q.Queue.Enqueue(ctx, b)
}

func TestGroupIsStreamed(t *testing.T) {
	w := newWorld()
	setupGroup(1000)(w)
	cq := &countingQueue{Queue: w.q}
	sc := &streamCheck{DPS: w.dps, enqueued: &cq.enqueued}
	deps := w.deps()
	deps.Registrations, deps.Work = sc, cq
	op := w.run(t, d.NewEngine(deps, d.Config{GroupPageSize: 50, LeaseDuration: time.Minute}),
		d.Request{EventID: "g", Source: "s", Intent: d.IntentGroupCompromised, EnrollmentGroupID: "g-x509"})
	if op.Status != d.StatusSucceeded || op.Progress.Pages != 20 || op.Progress.Done != 1000 {
		t.Fatalf("%s %+v", op.Status, op.Progress)
	}
	if sc.maxAhead != 0 {
		t.Fatalf("a page was read while %d members of the previous one were not enqueued", sc.maxAhead)
	}
}

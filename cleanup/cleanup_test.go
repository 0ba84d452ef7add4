package cleanup_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/azure/journal"
	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const hub1, hub2 = "hub1.azure-devices.net", "hub2.azure-devices.net"

// clock is a settable clock, so that grace periods and stale periods pass without waiting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// reporter keeps the drift findings announced.
type reporter struct {
	mu sync.Mutex
	fs []deprovision.Finding
}

func (r *reporter) DriftDetected(_ context.Context, f deprovision.Finding) {
	r.mu.Lock()
	r.fs = append(r.fs, f)
	r.mu.Unlock()
}

func (r *reporter) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, f := range r.fs {
		out = append(out, f.RegistrationID+":"+f.Kind+":"+f.Action)
	}
	return out
}

// flakyHubs fails the next PutDevice calls transiently, as a throttled or unavailable hub
// does, or for good (hard), as a hub that refuses the write does.
type flakyHubs struct {
	*fake.HubDevices
	mu   sync.Mutex
	fail int
	hard int
	// lanes records the lane{} value of each PutDevice's context.
	lanes []any
}

type lane struct{}

func (f *flakyHubs) PutDevice(ctx context.Context, d *deprovision.Device, etag string) (*deprovision.Device, error) {
	f.mu.Lock()
	f.lanes = append(f.lanes, ctx.Value(lane{}))
	if f.fail > 0 {
		f.fail--
		f.mu.Unlock()
		return nil, deprovision.Transient(fmt.Errorf("hub answered 503"))
	}
	if f.hard > 0 {
		f.hard--
		f.mu.Unlock()
		return nil, fmt.Errorf("hub answered 400: the update is not allowed")
	}
	f.mu.Unlock()
	return f.HubDevices.PutDevice(ctx, d, etag)
}

// liveness is what the hubs report of each device's life, over the fake hubs (an identity
// they do not hold is not found). The hook, when set, runs before each answer.
type liveness struct {
	hubs *flakyHubs
	mu   sync.Mutex
	act  map[string]cleanup.Activity // by host/device
	hook func(hub, id string)
	n    int
}

func (l *liveness) set(hub, id string, a cleanup.Activity) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.act == nil {
		l.act = map[string]cleanup.Activity{}
	}
	l.act[hub+"/"+id] = a
}

func (l *liveness) Activity(ctx context.Context, hub, id string) (cleanup.Activity, error) {
	l.mu.Lock()
	hook := l.hook
	l.n++
	l.mu.Unlock()
	if hook != nil {
		hook(hub, id)
	}
	if _, err := l.hubs.GetDevice(ctx, hub, id); err != nil {
		return cleanup.Activity{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.act[hub+"/"+id], nil
}

// world is the real engine over fake DPS and hubs, with the journal, the cleanup's tables and
// the guardrail budget in Azurite, wired as the app wires them: the engine's journal tracks
// the groups it disables, and the timer's guard owns the cleanup's operations.
type world struct {
	t      *testing.T
	dps    *fake.DPS
	hubs   *flakyHubs
	j      *journal.Journal
	hk     *journal.Housekeeping
	budget *journal.Budget
	clock  *clock
	engine *deprovision.Engine
	rep    *reporter
	live   *liveness
	// guard is the timer's guard the engine asks; guardrails the event path's limits.
	guard      *cleanup.Guard
	guardrails deprovision.Guardrails
	notifier   deprovision.Notifier
}

func newWorld(t *testing.T) *world {
	t.Helper()
	a := testenv.SharedAzurite(t)
	svc, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o := journal.Options{TablePrefix: testenv.UniqueName("c")}
	j, err := journal.New(ctx, svc, o)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := journal.NewHousekeeping(ctx, svc, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := journal.NewBudget(ctx, svc, o)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, dps: fake.NewDPS(), hubs: &flakyHubs{HubDevices: fake.NewHubDevices(hub1, hub2)}, j: j, hk: hk, budget: b,
		clock: &clock{t: time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)}, rep: &reporter{}}
	w.live = &liveness{hubs: w.hubs}
	w.guard = &cleanup.Guard{Budget: b, Fleet: hk, Clock: w.clock}
	w.rebuild()
	return w
}

// rebuild makes the engine again after w.guard, w.guardrails or w.notifier changed.
func (w *world) rebuild() {
	w.engine = deprovision.NewEngine(deprovision.Deps{Enrollments: w.dps, Registrations: w.dps, Devices: w.hubs,
		Journal: cleanup.TrackGroups(w.j, w.hk), Clock: w.clock, Logger: slog.New(slog.DiscardHandler), Budget: w.budget,
		Holder: w.guard, Notifier: w.notifier, Work: promptWork{w}}, deprovision.Config{Guard: w.guardrails})
}

// promptWork is the GroupWork queue with a worker that keeps up: the engine applies each
// batch (ApplyBatch, as the GroupWork function does) as soon as the fan-out enqueues it, so
// a group-wide operation ends within its own delivery.
type promptWork struct{ w *world }

func (q promptWork) Enqueue(ctx context.Context, b *deprovision.WorkBatch) error {
	_, err := q.w.engine.ApplyBatch(ctx, b, deprovision.BatchOptions{})
	return err
}

func (w *world) cleanupDeps() cleanup.Deps {
	return cleanup.Deps{Engine: w.engine, Operations: w.j, DeviceJournal: w.j, Journal: w.hk, Ledger: w.hk, Seen: w.hk,
		Liveness: w.live, Enrollments: w.dps, Registrations: w.dps, Devices: w.hubs, Reporter: w.rep, Clock: w.clock}
}

func (w *world) runner(o cleanup.Options) *cleanup.Runner {
	w.t.Helper()
	if o.Hubs == nil {
		o.Hubs = []string{hub1, hub2}
	}
	r, err := cleanup.New(w.cleanupDeps(), o)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// lifecycle is the recorder of lifecycle events, as the app wires it.
func (w *world) lifecycle() *cleanup.Lifecycle {
	return &cleanup.Lifecycle{Seen: w.hk, Journal: w.j, Beats: w.hk, Hubs: []string{hub1, hub2}}
}

// event records one lifecycle event of device id in hub (a hub name: "hub1").
func (w *world) event(hub, id string, kind cleanup.LifecycleKind, at time.Time) {
	w.t.Helper()
	if err := w.lifecycle().Record(context.Background(), cleanup.LifecycleEvent{EventID: string(kind) + "-" + id + "-" + at.String(), Type: eventTypes[kind], Kind: kind,
		Hub: hub, DeviceID: id, Time: at}); err != nil {
		w.t.Fatal(err)
	}
}

// device adds a symmetric-key individual enrollment, its registration and its hub identity.
func (w *world) device(id string) {
	w.dps.AddEnrollment(deprovision.Enrollment{RegistrationID: id, DeviceID: id, Attestation: deprovision.AttestationSymmetricKey, Enabled: true})
	w.dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1, Status: "assigned"}, "")
	w.hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"})
}

func (w *world) submit(id string, in deprovision.Intent) *deprovision.Operation {
	w.t.Helper()
	op, err := w.engine.Submit(context.Background(), deprovision.Request{EventID: "ev-" + id + "-" + string(in), Source: "urn:test",
		Intent: in, RegistrationID: id, EventTime: w.clock.Now()})
	if err != nil {
		w.t.Fatalf("submitting %s for %s: %v", in, id, err)
	}
	return op
}

// reEnable enables a device's enrollment and hub identity behind the system's back.
func (w *world) reEnable(id string, enrollment bool) {
	w.t.Helper()
	ctx := context.Background()
	if enrollment {
		e, err := w.dps.GetEnrollment(ctx, id)
		if err != nil {
			w.t.Fatal(err)
		}
		e.Enabled = true
		if _, err := w.dps.PutEnrollment(ctx, e, "*"); err != nil {
			w.t.Fatal(err)
		}
	}
	d, err := w.hubs.GetDevice(ctx, hub1, id)
	if err != nil {
		w.t.Fatal(err)
	}
	d.Enabled = true
	if _, err := w.hubs.HubDevices.PutDevice(ctx, d, "*"); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) enabled(id string) (enrollment, device bool) {
	e, _ := w.dps.Enrollment(id)
	d, _ := w.hubs.Device(hub1, id)
	return e.Enabled, d.Enabled
}

func (w *world) findings(runID string) []deprovision.Finding {
	w.t.Helper()
	var out []deprovision.Finding
	for f, err := range w.hk.Findings(context.Background(), runID) {
		if err != nil {
			w.t.Fatal(err)
		}
		out = append(out, *f)
	}
	return out
}

func passReport(t *testing.T, rep cleanup.Report, name string) cleanup.PassReport {
	t.Helper()
	for _, p := range rep.Passes {
		if p.Pass == name {
			return p
		}
	}
	t.Fatalf("run %s has no report of pass %s: %+v", rep.RunID, name, rep)
	return cleanup.PassReport{}
}

func TestDriftRevokesCompromisedAgainAndReportsTheRest(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("cam-1")
	w.device("cam-2")
	w.device("cam-3")
	if op := w.submit("cam-1", deprovision.IntentCompromised); op.Status != deprovision.StatusSucceeded {
		t.Fatalf("compromised: %s %s", op.Status, op.Reason)
	}
	if op := w.submit("cam-2", deprovision.IntentLost); op.Status != deprovision.StatusSucceeded {
		t.Fatalf("lost: %s %s", op.Status, op.Reason)
	}
	// cam-3 was never touched by this system: enabled, and none of the cleanup's business.
	w.reEnable("cam-1", true)
	w.reEnable("cam-2", false)

	r := w.runner(cleanup.Options{})
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e, d := w.enabled("cam-1"); e || d {
		t.Fatalf("cam-1 after cleanup: enrollment enabled %t, device enabled %t; want both disabled again", e, d)
	}
	if _, d := w.enabled("cam-2"); !d {
		t.Fatal("cam-2 (lost) was changed; drift of a device that is not compromised is only reported")
	}
	if _, d := w.enabled("cam-3"); !d {
		t.Fatal("cam-3 was changed, though this system never revoked it")
	}
	p := passReport(t, rep, cleanup.PassDrift)
	if p.Submitted != 1 || p.Findings != 3 || !p.Complete {
		t.Fatalf("drift pass: %+v; want 1 re-revocation, 3 findings, complete", p)
	}
	got := strings.Join(w.rep.kinds(), " ")
	for _, want := range []string{"cam-1:enrollment-enabled:re-revoked", "cam-1:device-enabled:re-revoked", "cam-2:device-enabled:reported"} {
		if !strings.Contains(got, want) {
			t.Errorf("announced drift %q lacks %q", got, want)
		}
	}
	var reop string
	for _, f := range w.findings(rep.RunID) {
		if f.RegistrationID == "cam-1" {
			reop = f.OperationID
			if f.OperationStatus != deprovision.StatusSucceeded || f.Intent != deprovision.IntentCompromised {
				t.Errorf("finding %+v: want the re-revocation succeeded, intent compromised", f)
			}
		}
	}
	op, steps, err := w.engine.Operation(ctx, reop)
	if err != nil || op.Request.Source != cleanup.Source || len(steps) == 0 {
		t.Fatalf("re-revocation operation %s: %+v, %d steps, %v", reop, op, len(steps), err)
	}

	// The next run finds cam-1 as it left it: nothing to redo. cam-2 is still drifted.
	rep2, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p2 := passReport(t, rep2, cleanup.PassDrift)
	if p2.Submitted != 0 || p2.Findings != 1 {
		t.Fatalf("second drift pass: %+v; want no request and cam-2's finding only", p2)
	}
}

func TestBudgetStopsAPassHalfWayAndTheNextRunFinishesIt(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	ids := []string{"m-1", "m-2", "m-3", "m-4", "m-5"}
	for _, id := range ids {
		w.device(id)
		w.submit(id, deprovision.IntentCompromised)
		w.reEnable(id, false)
	}
	// Each drifted device costs one check and one request. Of a budget of 4, drift's reserve
	// is half (one device); drift-groups and orphans share the rest and use none of it, which
	// drift then takes for one more device: two devices a run.
	r := w.runner(cleanup.Options{Budget: 4})
	revoked := func() int {
		n := 0
		for _, id := range ids {
			if _, d := w.enabled(id); !d {
				n++
			}
		}
		return n
	}
	for run, want := range []int{2, 4, 5} {
		rep, err := r.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := passReport(t, rep, cleanup.PassDrift)
		if got := revoked(); got != want {
			t.Fatalf("after run %d: %d devices revoked again, want %d (%+v)", run+1, got, want, p)
		}
		if p.Spent > 4 || rep.Spent > 4 {
			t.Fatalf("run %d: drift spent %d, the run %d of 4", run+1, p.Spent, rep.Spent)
		}
		if p.Complete != (run == 2) {
			t.Fatalf("run %d: drift complete=%t cursor %q", run+1, p.Complete, p.Cursor)
		}
		// A long drift sweep does not starve the passes after it.
		if o := passReport(t, rep, cleanup.PassOrphans); !o.Ran {
			t.Fatalf("run %d: orphans did not run: %s", run+1, o.Skipped)
		}
	}
	cur, err := w.hk.GetCursor(ctx, cleanup.PassDrift)
	if err != nil || cur.Sweeps != 1 || cur.After != "" {
		t.Fatalf("drift cursor after a full sweep: %+v %v", cur, err)
	}
}

func TestResumeFinishesOperationsLeftHalfDone(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("v-1")
	w.hubs.fail = 1
	op, err := w.engine.Submit(ctx, deprovision.Request{EventID: "ev-v1", Source: "urn:test", Intent: deprovision.IntentStolen, RegistrationID: "v-1"})
	if !deprovision.IsTransient(err) || op.Status.Terminal() {
		t.Fatalf("want the hub failure to leave the operation open: %v %+v", err, op)
	}
	if e, d := w.enabled("v-1"); e || !d {
		t.Fatalf("after the interruption: enrollment enabled %t, device enabled %t; want DPS done, hub not", e, d)
	}
	r := w.runner(cleanup.Options{ResumeAfter: 10 * time.Minute})
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := passReport(t, rep, cleanup.PassResume); p.Submitted != 0 {
		t.Fatalf("an operation younger than ResumeAfter was resumed: %+v", p)
	}
	w.clock.add(11 * time.Minute)
	rep, err = r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := passReport(t, rep, cleanup.PassResume); p.Submitted != 1 || !p.Complete {
		t.Fatalf("resume pass: %+v", p)
	}
	got, steps, err := w.engine.Operation(ctx, op.ID)
	if err != nil || got.Status != deprovision.StatusSucceeded {
		t.Fatalf("resumed operation: %+v %v", got, err)
	}
	if _, d := w.enabled("v-1"); d {
		t.Fatal("the resumed operation did not disable the hub identity")
	}
	if steps[0].Outcome != deprovision.StepDone {
		t.Fatalf("the DPS step was redone or lost: %+v", steps[0])
	}
}

func TestGraceEscalatesLostDevicesDryRunFirst(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("bike-1")
	w.device("bike-2")
	w.submit("bike-1", deprovision.IntentLost)
	w.clock.add(20 * 24 * time.Hour)
	w.submit("bike-2", deprovision.IntentStolen)
	w.clock.add(15 * 24 * time.Hour) // bike-1 lost 35 days ago, bike-2 stolen 15 days ago

	r := w.runner(cleanup.Options{GraceAfter: 30 * 24 * time.Hour, GraceIntent: deprovision.IntentRetired})
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := passReport(t, rep, cleanup.PassGrace)
	if p.Submitted != 1 || !p.DryRun {
		t.Fatalf("grace pass (dry run): %+v", p)
	}
	if _, ok := w.dps.Enrollment("bike-1"); !ok {
		t.Fatal("a dry run deleted bike-1's enrollment")
	}
	fs := w.findings(rep.RunID)
	if len(fs) != 1 || fs[0].RegistrationID != "bike-1" || fs[0].OperationStatus != deprovision.StatusPlanned {
		t.Fatalf("grace findings: %+v", fs)
	}

	live := w.runner(cleanup.Options{GraceAfter: 30 * 24 * time.Hour, GraceIntent: deprovision.IntentRetired, ApplyGrace: true})
	if _, err := live.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.dps.Enrollment("bike-1"); ok {
		t.Fatal("bike-1 was not retired after its grace period")
	}
	if _, ok := w.hubs.Device(hub1, "bike-1"); ok {
		t.Fatal("bike-1's hub identity is still there")
	}
	if _, ok := w.dps.Enrollment("bike-2"); !ok {
		t.Fatal("bike-2 was retired inside its grace period")
	}
	ds, _, err := w.engine.DeviceHistory(ctx, "bike-1")
	if err != nil || ds.Intent != deprovision.IntentRetired {
		t.Fatalf("bike-1's row: %+v %v", ds, err)
	}
}

func TestStaleRetiresUnseenDevicesCappedAndAllowListed(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, id := range []string{"s-1", "s-2", "s-3", "s-4", "gw-1"} {
		w.device(id)
		w.event("hub1", id, cleanup.LifecycleConnected, w.clock.Now())
		if id == "s-4" {
			continue // s-4 stays connected: no later event, and still alive
		}
		w.event("hub1", id, cleanup.LifecycleDisconnected, w.clock.Now().Add(time.Minute))
	}
	w.clock.add(60 * 24 * time.Hour)
	// s-3 keeps talking; an older event arriving late does not move its time back.
	for _, at := range []time.Time{w.clock.Now(), w.clock.Now().Add(-59 * 24 * time.Hour)} {
		w.event("hub1", "s-3", cleanup.LifecycleTelemetry, at)
	}
	w.clock.add(31 * 24 * time.Hour)
	w.event("hub1", "s-3", cleanup.LifecycleTelemetry, w.clock.Now()) // the feed is alive
	r := w.runner(cleanup.Options{StaleAfter: 90 * 24 * time.Hour, StaleMax: 1, StaleRunShare: 1, StaleAllow: []string{"hub1/gw-*"}})
	// The first run requests s-1 and stops at its cap; the second requests s-2 and finishes
	// the sweep.
	var requested []string
	for run := 0; run < 2; run++ {
		rep, err := r.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := passReport(t, rep, cleanup.PassStale)
		if p.Submitted > 1 {
			t.Fatalf("run %d requested %d retirements; the cap is 1", run+1, p.Submitted)
		}
		for _, f := range w.findings(rep.RunID) {
			if f.Pass == cleanup.PassStale {
				requested = append(requested, f.RegistrationID)
				if f.OperationStatus != deprovision.StatusPlanned {
					t.Errorf("stale finding %+v: the default dry run must only plan", f)
				}
			}
		}
	}
	if strings.Join(requested, ",") != "s-1,s-2" {
		t.Fatalf("stale retirements requested over two runs: %v; want s-1 and s-2 only (s-3 seen lately, s-4 still connected, gw-1 allowed)", requested)
	}
	if _, ok := w.dps.Enrollment("s-1"); !ok {
		t.Fatal("a dry run retired s-1")
	}
}

// Issue 19, case 10: orphaned registration records are deleted only through the engine, and
// only when their hub identity is gone; a record whose identity exists is kept, so that after
// the group is recreated under the same id a compromise of that device still finds it.
func TestOrphansDeletesRecordsOfDeletedGroupsOnly(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.dps.AddGroup(deprovision.Group{ID: "old-line", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	w.dps.AddGroup(deprovision.Group{ID: "new-line", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	for i := range 5 {
		id := fmt.Sprintf("old-%d", i)
		w.dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "old-line")
		if i >= 3 {
			w.hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"}) // still provisioned
		}
	}
	w.dps.AddRegistration(deprovision.Registration{RegistrationID: "new-0", DeviceID: "new-0", AssignedHub: hub1}, "new-line")
	r := w.runner(cleanup.Options{Budget: 3, PageSize: 2})
	rep, err := r.RunPass(ctx, cleanup.PassOrphans, cleanup.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if p := rep.Passes[0]; p.Checked != 0 || !p.Complete {
		t.Fatalf("with every group present nothing is an orphan: %+v", p)
	}
	if err := w.dps.DeleteGroup(ctx, "old-line", ""); err != nil {
		t.Fatal(err)
	}
	// Dry run by default: the records are reported, not deleted.
	rep, err = r.RunPass(ctx, cleanup.PassOrphans, cleanup.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if p := rep.Passes[0]; p.Checked != 3 || p.Complete || !p.DryRun || !w.dps.HasRegistration("old-0") {
		t.Fatalf("dry run: %+v", p)
	}
	// Live (by hand, as the Operations endpoint does with "dryRun": false): a check and a
	// request each, so a budget of 4 deletes two records a run.
	f, four := false, 4
	for run := 0; run < 4; run++ {
		if _, err := r.RunPass(ctx, cleanup.PassOrphans, cleanup.Overrides{DryRun: &f, Budget: &four}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		id := fmt.Sprintf("old-%d", i)
		if gone := !w.dps.HasRegistration(id); gone != (i < 3) {
			t.Errorf("orphan %s: deleted %t; want the records without a hub identity deleted, the others kept", id, gone)
		}
	}
	if !w.dps.HasRegistration("new-0") {
		t.Fatal("a record of a group that exists was deleted")
	}
	var kept, deleted int
	for fd, err := range w.hk.Findings(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fd.Kind == "orphan-kept" && strings.Contains(fd.Action, "hub identity"):
			kept++
		case fd.Action == "deleted":
			deleted++
			op, _, err := w.engine.Operation(ctx, fd.OperationID)
			if err != nil || op.Request.Source != cleanup.Source || op.Request.Intent != deprovision.IntentOrphaned || op.Status != deprovision.StatusSucceeded {
				t.Errorf("the deletion of %s is not an engine operation: %+v %v", fd.RegistrationID, op, err)
			}
		}
	}
	if deleted != 3 || kept == 0 {
		t.Fatalf("findings: %d deleted, %d kept", deleted, kept)
	}
	// The group comes back under the same id: its devices are not orphans, and a compromise of
	// a kept one is found through its record.
	w.dps.AddGroup(deprovision.Group{ID: "old-line", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	op, err := w.engine.Submit(ctx, deprovision.Request{EventID: "c-old-3", Source: "urn:test", Intent: deprovision.IntentCompromised,
		RegistrationID: "old-3", EventTime: w.clock.Now()})
	if err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("compromise of a kept member after its group returned: %v %+v", err, op)
	}
	if d, _ := w.hubs.Device(hub1, "old-3"); d.Enabled {
		t.Fatal("the compromised member's identity is still enabled")
	}
}

func TestLifecycleConfirmsTheHubDelete(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("k-1")
	op := w.submit("k-1", deprovision.IntentRetired)
	if op.Status != deprovision.StatusSucceeded {
		t.Fatalf("retired: %s %s", op.Status, op.Reason)
	}
	lc := &cleanup.Lifecycle{Seen: w.hk, Journal: w.j}
	if err := lc.Record(ctx, cleanup.LifecycleEvent{EventID: "del-1", Type: "Microsoft.Devices.DeviceDeleted", Kind: cleanup.LifecycleDeleted,
		Hub: "hub1", DeviceID: "k-1", Time: w.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	_, steps, err := w.engine.Operation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	var requested, confirmed bool
	for _, s := range steps {
		requested = requested || s.Kind == deprovision.StepDeleteDevice && s.Outcome == deprovision.StepDone
		confirmed = confirmed || s.Kind == cleanup.StepConfirmDelete && s.Outcome == deprovision.StepDone && strings.Contains(s.Error, "del-1")
	}
	if !requested || !confirmed {
		t.Fatalf("journal of %s: requested %t, confirmed %t: %+v", op.ID, requested, confirmed, steps)
	}
	s, err := w.hk.GetSighting(ctx, "hub1", "k-1")
	if err != nil || s.Deleted.IsZero() {
		t.Fatalf("sighting after the delete: %+v %v", s, err)
	}
}

func TestDriftFindsEnabledMembersOfDisabledGroups(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.dps.AddGroup(deprovision.Group{ID: "line-a", Attestation: deprovision.AttestationSymmetricKey, Enabled: false}, "a2V5")
	w.dps.AddGroup(deprovision.Group{ID: "line-b", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	for i := range 4 {
		id := fmt.Sprintf("a-%d", i)
		w.dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "line-a")
		w.hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: id, Enabled: i%2 == 0})
	}
	w.dps.AddRegistration(deprovision.Registration{RegistrationID: "b-0", DeviceID: "b-0", AssignedHub: hub1}, "line-b")
	w.hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: "b-0", Enabled: true})

	// A budget of 3 with pages of 2 stops inside the second page; the next run finishes.
	r := w.runner(cleanup.Options{Budget: 3, PageSize: 2})
	var found []string
	for run := 0; run < 2; run++ {
		rep, err := r.RunPass(ctx, cleanup.PassDriftGroups, cleanup.Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		if p := rep.Passes[0]; p.Complete != (run == 1) {
			t.Fatalf("run %d: %+v", run+1, p)
		}
		for _, f := range w.findings(rep.RunID) {
			found = append(found, f.RegistrationID+"@"+f.GroupID)
		}
	}
	if got := strings.Join(found, ","); got != "a-0@line-a,a-2@line-a" {
		t.Fatalf("group drift findings: %s; want the enabled members of the disabled group only, each once", got)
	}
	if got := strings.Join(w.rep.kinds(), ","); got != "a-0:group-member-enabled:reported,a-2:group-member-enabled:reported" {
		t.Fatalf("announced: %s", got)
	}
	// While a group-wide operation on the group is still running, its members are being
	// disabled: that is not drift.
	now := w.clock.Now()
	if _, _, err := w.j.CreateOperation(ctx, &deprovision.Operation{ID: "op-fanout", Status: deprovision.StatusRunning, Created: now, Updated: now,
		Request: deprovision.Request{EventID: "g", Source: "urn:test", Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: "LINE-A"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := r.RunPass(ctx, cleanup.PassDriftGroups, cleanup.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if fs := w.findings(rep.RunID); len(fs) != 0 {
		t.Fatalf("drift reported during the group's own fan-out: %+v", fs)
	}
}

// poisonQueue is a poison queue below the cleanup's own port: each message settles (true) or
// is kept for an operator (false); both leave the visible queue, as Hold hides a kept one.
type poisonQueue struct {
	mu   sync.Mutex
	msgs []bool
	asks []int
}

func (q *poisonQueue) Sweep(_ context.Context, max int) (cleanup.PoisonSweep, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.asks = append(q.asks, max)
	var res cleanup.PoisonSweep
	for len(q.msgs) > 0 && res.Settled+res.Kept < max {
		if q.msgs[0] {
			res.Settled++
		} else {
			res.Kept++
		}
		q.msgs = q.msgs[1:]
	}
	return res, nil
}

// The poison pass comes right after resume, takes its even share of the budget like the
// passes after it, counts settled and kept messages, and only a live run touches the queue.
func TestPoisonPassSettlesWithinItsShareOfTheBudget(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	q := &poisonQueue{msgs: []bool{true, false, true, true, true}}
	r, err := cleanup.New(cleanup.Deps{Engine: w.engine, Operations: w.j, Journal: w.hk, Poison: q,
		Enrollments: w.dps, Registrations: w.dps, Devices: w.hubs, Clock: w.clock}, cleanup.Options{Budget: 8, Hubs: []string{hub1}})
	if err != nil {
		t.Fatal(err)
	}
	if cleanup.Passes[1] != cleanup.PassPoison {
		t.Fatalf("passes run in the order %v; poison must follow resume", cleanup.Passes)
	}
	// A hand-run dry run (the endpoint's default) leaves the queue alone.
	dry := true
	rep, err := r.RunPass(ctx, cleanup.PassPoison, cleanup.Overrides{DryRun: &dry})
	if err != nil || rep.Passes[0].Ran || len(q.asks) != 0 {
		t.Fatalf("dry run: %+v %v, sweeper asked %v", rep, err, q.asks)
	}
	// Budget 8, nothing to resume, grace and stale off: poison, drift, drift-groups and
	// orphans share it, 2 units each.
	rep, err = r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := passReport(t, rep, cleanup.PassPoison)
	if !p.Ran || p.Submitted != 1 || p.Failed != 1 || p.Spent != 2 || p.Complete || len(p.Errors) != 1 {
		t.Fatalf("first run's poison pass: %+v", p)
	}
	if len(q.asks) != 1 || q.asks[0] != 2 {
		t.Fatalf("the sweeper was asked for %v messages, want [2] (its share of the budget)", q.asks)
	}
	if !strings.Contains(rep.String(), "poison: checked 2 poisoned messages, settled 1, kept 1") {
		t.Errorf("summary %q does not say what the poison pass did", rep.String())
	}
	for range 2 {
		if rep, err = r.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	p = passReport(t, rep, cleanup.PassPoison)
	if p.Submitted != 1 || p.Checked != 1 || !p.Complete || len(q.msgs) != 0 {
		t.Fatalf("third run's poison pass: %+v, %d messages left", p, len(q.msgs))
	}
	cur, err := w.hk.GetCursor(ctx, cleanup.PassPoison)
	if err != nil || cur.Sweeps != 1 {
		t.Fatalf("poison cursor after the queue was emptied: %+v %v", cur, err)
	}
	// Without a poison queue the pass is off, and its share goes to the others.
	r2 := w.runner(cleanup.Options{Budget: 8})
	rep, err = r2.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := passReport(t, rep, cleanup.PassPoison); p.Ran || !strings.Contains(p.Skipped, "no poison queue") {
		t.Fatalf("poison pass without a sweeper: %+v", p)
	}
}

// Resume is bounded by the run's budget (the bound the timer's old resumer had as its Max):
// what it does not reach waits behind its cursor for the next run, and every operation is
// resumed once.
func TestResumeIsBoundedByTheBudgetAndCarriesOn(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	ids := []string{"r-1", "r-2", "r-3"}
	var ops []*deprovision.Operation
	for _, id := range ids {
		w.device(id)
		w.hubs.fail = 1
		op, err := w.engine.Submit(ctx, deprovision.Request{EventID: "ev-" + id, Source: "urn:test", Intent: deprovision.IntentStolen, RegistrationID: id})
		if !deprovision.IsTransient(err) || op.Status.Terminal() {
			t.Fatalf("want the hub failure to leave %s open: %v %+v", id, err, op)
		}
		ops = append(ops, op)
	}
	w.clock.add(11 * time.Minute)
	// Of a budget of 4, resume may take all but drift's reserve of 2.
	r := w.runner(cleanup.Options{Budget: 4})
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := passReport(t, rep, cleanup.PassResume)
	if p.Submitted != 2 || p.Spent != 2 || p.Complete || p.Cursor == "" || rep.Spent > 4 {
		t.Fatalf("first run: resume %+v, run spent %d of 4", p, rep.Spent)
	}
	rep, err = r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := passReport(t, rep, cleanup.PassResume); p.Submitted != 1 || !p.Complete {
		t.Fatalf("second run: resume %+v", p)
	}
	for _, op := range ops {
		got, _, err := w.engine.Operation(ctx, op.ID)
		if err != nil || got.Status != deprovision.StatusSucceeded {
			t.Fatalf("operation %s after two runs: %+v %v", op.ID, got, err)
		}
	}
}

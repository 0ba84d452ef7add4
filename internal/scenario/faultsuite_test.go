package scenario_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// The fault suite (docs/reliability.md, "Fault-injection suite"): every deprovisioning path
// is run once without faults (the reference), then again and again in a fresh environment
// with one fault injected at a chosen point: an emulator fault on each DPS and hub operation
// the path calls (500, 503, 429, a dropped connection, a slow answer, a long outage), the
// process dying right after each durable effect (every DPS, hub and Table write), and Table
// Storage going away before each journal call (suite_storage_test.go). Each run is redelivered
// the way Event Grid does until its operation is terminal, and must then match the reference:
// the same DPS, hub and journal state, the same terminal status, no open operation, and the
// same number of successful writes per DPS and hub operation, so nothing was applied twice.
//
// `go test` runs a sample (a few faults per path); FAULTS=full runs every point (make faults).

// fullFaults reports whether the whole suite is asked for.
func fullFaults() bool { return os.Getenv("FAULTS") == "full" }

// faultPath is one deprovisioning path and the setup that puts a fresh environment in front
// of it. Ids are fixed, so that the state of two environments compares line by line.
type faultPath struct {
	name  string
	setup func(e *env) (req deprovision.Request, ids map[string]string, groups []string)
}

func faultPaths() []faultPath {
	return []faultPath{
		{"individual symmetric key stolen", func(e *env) (deprovision.Request, map[string]string, []string) {
			key := randomKey()
			e.individualSK("fs-sk", key)
			hub := e.mustProvision("fs-sk", skCred(key))
			return request("stolen", deprovision.IntentStolen, "fs-sk", 0), map[string]string{"fs-sk": hub}, nil
		}},
		{"individual symmetric key sold", func(e *env) (deprovision.Request, map[string]string, []string) {
			key := randomKey()
			e.individualSK("fs-sold", key)
			hub := e.mustProvision("fs-sold", skCred(key))
			return request("sold", deprovision.IntentSold, "fs-sold", 0), map[string]string{"fs-sold": hub}, nil
		}},
		{"individual TPM compromised", func(e *env) (deprovision.Request, map[string]string, []string) {
			e.individualTPM("fs-tpm")
			e.hubDevice(hub1, "fs-tpm")
			r := request("compromised", deprovision.IntentCompromised, "fs-tpm", 0)
			r.Hub = hub1
			return r, map[string]string{"fs-tpm": hub1}, nil
		}},
		{"individual X.509 retired", func(e *env) (deprovision.Request, map[string]string, []string) {
			ca := fake.NewCA("fs-x-root")
			c := ca.Issue("fs-x509", false)
			e.individualX509("fs-x509", c)
			hub := e.mustProvision("fs-x509", x509Cred(c, ca))
			return request("retired", deprovision.IntentRetired, "fs-x509", 0), map[string]string{"fs-x509": hub}, nil
		}},
		{"symmetric-key group member compromised", func(e *env) (deprovision.Request, map[string]string, []string) {
			gkey := randomKey()
			e.groupSK("fs-skg", gkey)
			k, _ := deprovision.DeriveDeviceKey(gkey, "fs-skm")
			hub := e.mustProvision("fs-skm", skCred(k))
			return request("compromised", deprovision.IntentCompromised, "fs-skm", 0), map[string]string{"fs-skm": hub}, []string{"fs-skg"}
		}},
		{"X.509 group member sold", func(e *env) (deprovision.Request, map[string]string, []string) {
			root := fake.NewCA("fs-xg-root")
			e.groupX509("fs-xg", root)
			c := root.Issue("fs-xm", false)
			hub := e.mustProvision("fs-xm", x509Cred(c))
			r := request("sold", deprovision.IntentSold, "fs-xm", 0)
			r.CertificatePEM = c.PEM
			return r, map[string]string{"fs-xm": hub}, []string{"fs-xg"}
		}},
		{"individual moved", func(e *env) (deprovision.Request, map[string]string, []string) {
			key := randomKey()
			e.individualSK("fs-mv", key)
			from := e.mustProvision("fs-mv", skCred(key))
			r := request("moved", deprovision.IntentMoved, "fs-mv", 0)
			r.TargetHub = hub2
			if from == hub2 {
				r.TargetHub = hub1
			}
			return r, map[string]string{"fs-mv": from}, nil
		}},
		{"group member recovered", func(e *env) (deprovision.Request, map[string]string, []string) {
			gkey := randomKey()
			e.groupSK("fs-rg", gkey)
			k, _ := deprovision.DeriveDeviceKey(gkey, "fs-rm")
			hub := e.mustProvision("fs-rm", skCred(k))
			succeeded(e.t, e.submit(request("lost", deprovision.IntentLost, "fs-rm", 0)))
			return request("found", deprovision.IntentRecovered, "fs-rm", time.Minute), map[string]string{"fs-rm": hub}, []string{"fs-rg"}
		}},
		{"group compromised", func(e *env) (deprovision.Request, map[string]string, []string) {
			key := randomKey()
			e.groupSK("fs-gc", key)
			ids := e.skMembers("fs-gc", key, 5)
			return deprovision.Request{EventID: "gc", Source: "/scenario", Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: "fs-gc", Reason: "CA key leaked"}, ids, []string{"fs-gc"}
		}},
		{"group retired", func(e *env) (deprovision.Request, map[string]string, []string) {
			root := fake.NewCA("fs-gr-root")
			e.groupX509("fs-gr", root)
			ids := map[string]string{}
			for i := range 3 {
				id := fmt.Sprintf("fs-gr-m%d", i)
				ids[id] = e.mustProvision(id, x509Cred(root.Issue(id, false)))
			}
			return deprovision.Request{EventID: "gr", Source: "/scenario", Intent: deprovision.IntentGroupRetired, EnrollmentGroupID: "fs-gr"}, ids, []string{"fs-gr"}
		}},
	}
}

// newFaultEnv is an environment whose clients retry quickly, and give a Retry-After they
// will not wait for straight back to the engine (as a transient failure), so that a run with
// a 429 or 503 takes milliseconds and also exercises the redelivery path.
func newFaultEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	tr := testenv.LoopbackTransport(t, e.em)
	t.Cleanup(tr.CloseIdleConnections)
	co := azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 5 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond}}
	var err error
	if e.dps, err = dps.NewClientFromConnectionString(e.info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: co}); err != nil {
		t.Fatal(err)
	}
	for _, h := range e.info.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: co})
		if err != nil {
			t.Fatal(err)
		}
		e.hubs[h.Host] = c
	}
	da := adapter.NewDPS(e.dps)
	e.ports.Enrollments, e.ports.Registrations, e.ports.Devices = da, da, adapter.NewHubDevices(e.hubs)
	return e
}

// writesByOp counts the successful (2xx) state-changing calls per DPS and hub operation.
func (e *env) writesByOp() map[string]int64 {
	out := map[string]int64{}
	for op, s := range e.em.Stats().Operations {
		if !strings.HasSuffix(op, ".put") && !strings.HasSuffix(op, ".delete") && !strings.HasSuffix(op, ".bulk") {
			continue
		}
		for st, c := range s.Statuses {
			if strings.HasPrefix(st, "2") {
				out[op] += c
			}
		}
	}
	return out
}

// firedFaults counts the emulator faults that fired since the last stats reset.
func (e *env) firedFaults() int {
	n := 0
	for _, s := range e.em.Stats().Operations {
		n += int(s.Faults)
	}
	return n
}

// calledOps lists the DPS and hub operations called since the last stats reset.
func (e *env) calledOps() []string {
	var out []string
	for op, s := range e.em.Stats().Operations {
		if s.Calls > 0 {
			out = append(out, op)
		}
	}
	slices.Sort(out)
	return out
}

// redeliver submits req the way Event Grid delivers: a transient failure is delivered again;
// a delivery that finds a dead delivery's lease waits it out (the clock moves on). A group
// fanned out to the GroupWork queue is then applied by the GroupWork function (groupWork). It
// returns the terminal operation and the number of deliveries it took.
func (e *env) redeliver(req deprovision.Request) (*deprovision.Operation, int, error) {
	for n := 1; n <= 100; n++ {
		op, err := e.engine(nil).Submit(context.Background(), req)
		if err == nil && op.Progress.FannedOut && !op.Status.Terminal() {
			e.groupWork(nil)
			if op, err = e.ports.Journal.GetOperation(context.Background(), op.ID); err != nil {
				return op, n, err
			}
		}
		if err == nil {
			if !op.Status.Terminal() {
				return op, n, fmt.Errorf("delivery %d: operation %s answered %s without an error", n, op.ID, op.Status)
			}
			return op, n, nil
		}
		if !deprovision.IsTransient(err) {
			return op, n, fmt.Errorf("delivery %d: permanent error: %w", n, err)
		}
		if errors.Is(err, deprovision.ErrBusy) {
			e.clock.Advance(2 * time.Minute) // longer than the engine's lease
		}
	}
	return nil, 100, errors.New("still not terminal after 100 deliveries")
}

// faultRef is what an uninterrupted run of a path leaves.
type faultRef struct {
	status  deprovision.Status
	state   string
	writes  map[string]int64
	ops     []string // DPS and hub operations the path calls
	effects int      // durable effects (DPS, hub and journal writes)
	journal int      // journal calls
}

func referenceRun(t *testing.T, p faultPath) faultRef {
	t.Helper()
	e := newFaultEnv(t)
	req, ids, groups := p.setup(e)
	e.em.ResetStats()
	cr := &fake.Crasher{At: -1}
	cj := &countingJournal{Journal: e.ports.Journal}
	op := e.submitTo(deprovision.NewEngine(cr.Wrap(withJournal(e.ports, cj)), deprovision.Config{LeaseDuration: time.Minute, GroupPageSize: 2}), req)
	succeeded(t, op)
	return faultRef{status: op.Status, state: e.state(t, op.ID, req.RegistrationID, ids, groups), writes: e.writesByOp(),
		ops: e.calledOps(), effects: cr.Count(), journal: cj.calls()}
}

func withJournal(d deprovision.Deps, j deprovision.Journal) deprovision.Deps { d.Journal = j; return d }

// checkAgainst compares a faulted run's end with the reference, and returns how many hub
// bulk calls were sent again. Nothing may be applied twice: every single-target write (an
// enrollment, group, registration record or device PUT or DELETE) must succeed exactly as
// often as in the uninterrupted run. A bulk call is the one exception, and only when the
// process died right after the hub answered it, before its outcome was journaled
// (bulkResends is 1 for such a run, else 0): the resume cannot know the call landed without
// reading every device back, which costs as much as sending it again. The re-sent items are
// already in the wanted state (disable and delete only go one way), so no device changes
// twice; the end state check below proves it, and the suite reports how many calls were
// re-sent.
func (e *env) checkAgainst(t *testing.T, ref faultRef, op *deprovision.Operation, req deprovision.Request, ids map[string]string, groups []string, what string, bulkResends int) (resent int) {
	t.Helper()
	if op.Status != ref.status {
		t.Fatalf("%s: operation ended %s (%q), the uninterrupted run %s", what, op.Status, op.Reason, ref.status)
	}
	for o, err := range e.ports.Journal.OpenOperations(context.Background(), e.clock.Now().Add(24*time.Hour)) {
		if err != nil {
			t.Fatal(err)
		}
		t.Fatalf("%s: operation %s left open (%s)", what, o.ID, o.Status)
	}
	if got := e.state(t, op.ID, req.RegistrationID, ids, groups); got != ref.state {
		t.Fatalf("%s: end state differs from the uninterrupted run\n%s\nwant\n%s", what, got, ref.state)
	}
	got := e.writesByOp()
	names := maps.Clone(got)
	maps.Copy(names, ref.writes)
	for _, name := range slices.Sorted(maps.Keys(names)) {
		g, w := got[name], ref.writes[name]
		switch {
		case strings.HasSuffix(name, ".bulk") && g >= w && g <= w+int64(bulkResends):
			resent += int(g - w)
		case g != w:
			t.Fatalf("%s: %d successful %s calls, the uninterrupted run makes %d (a write applied twice, or one missing); all: %v, want %v", what, g, name, w, got, ref.writes)
		}
	}
	return resent
}

// bulkEffects notes which of a fake.Crasher's effects were hub bulk calls: it sits below the
// crasher, so it sees a call answered before the crasher counts (and maybe dies of) it.
type bulkEffects struct {
	deprovision.Devices
	cr *fake.Crasher
	at map[int]bool
}

func (b *bulkEffects) wrap(d deprovision.Deps) deprovision.Deps {
	b.Devices, d.Devices = d.Devices, b
	return b.cr.Wrap(d)
}

func (b *bulkEffects) Bulk(ctx context.Context, hub string, mode deprovision.BulkMode, items []deprovision.BulkItem) ([]deprovision.BulkItemResult, error) {
	out, err := b.Devices.Bulk(ctx, hub, mode, items)
	if err == nil {
		b.at[b.cr.Count()+1] = true // the GroupWork messages are applied one at a time
	}
	return out, err
}

// dieAfter runs req as the app does (the delivery, then the GroupWork messages) in a process
// that dies right after its at-th durable effect. It reports whether the run got that far, and
// whether that effect was a hub bulk call (whose re-sending the resume cannot avoid).
func (e *env) dieAfter(at int, req deprovision.Request) (died, afterBulk bool) {
	cr := &fake.Crasher{At: at}
	bulks := &bulkEffects{cr: cr, at: map[int]bool{}}
	dead := func() bool { return cr.Count() >= at }
	fake.Run(func() {
		eng := e.engine(bulks.wrap)
		_, _ = eng.Submit(context.Background(), req)
		e.groupWorkUntil(eng, dead)
	})
	return dead(), bulks.at[at]
}

// faultKinds are the emulator faults injected on each operation a path calls.
var faultKinds = []struct {
	name string
	f    emulator.Fault
}{
	{"500 once", emulator.Fault{Status: 500, Count: 1}},
	{"503 x3", emulator.Fault{Status: 503, Count: 3}},
	{"429 x3", emulator.Fault{Status: 429, Count: 3}},
	{"drop x3", emulator.Fault{Action: "drop", Count: 3}},
	{"slow x2", emulator.Fault{Action: "slow", Delay: emulator.Duration(30 * time.Millisecond), Count: 2}},
	{"500 x10", emulator.Fault{Status: 500, Count: 10}},
}

// tally counts what the suite injected, for the figures in docs/reliability.md.
type tally struct {
	mu                               sync.Mutex
	runs, faults, deliveries         int
	emulatorFaults, crashes, outages int
	resentPages                      int
	byPath                           map[string]int
}

func (c *tally) add(path string, runs, emu, crashes, outages, deliveries, resent int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byPath == nil {
		c.byPath = map[string]int{}
	}
	c.runs += runs
	c.emulatorFaults += emu
	c.crashes += crashes
	c.outages += outages
	c.faults += emu + crashes + outages
	c.deliveries += deliveries
	c.resentPages += resent
	c.byPath[path] += emu + crashes + outages
}

func (c *tally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	paths := slices.Sorted(maps.Keys(c.byPath))
	var per []string
	for _, p := range paths {
		per = append(per, fmt.Sprintf("%s %d", p, c.byPath[p]))
	}
	return fmt.Sprintf("%d runs, %d faults injected (%d emulator faults fired, %d process deaths, %d storage outages), %d deliveries, 0 lost events, 0 single-target writes applied twice, 0 end states differing, %d bulk calls re-sent, each after a death between the hub's answer and the journal write (already applied: no device changed twice); per path: %s",
		c.runs, c.faults, c.emulatorFaults, c.crashes, c.outages, c.deliveries, c.resentPages, strings.Join(per, ", "))
}

// sample picks which of n points a CI run visits: every point with FAULTS=full, else about k
// spread over them (seeded by the path, so different paths visit different points).
func sample(n, k, seed int) []int {
	var out []int
	if fullFaults() || n <= k {
		for i := range n {
			out = append(out, i)
		}
		return out
	}
	for i := range k {
		out = append(out, (seed+i*n/k)%n)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestFaultSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite starts hundreds of environments")
	}
	var total tally
	visited := 0
	for pi, p := range faultPaths() {
		t.Run(p.name, func(t *testing.T) {
			visited++
			ref := referenceRun(t, p)

			// Emulator faults: each kind on each DPS and hub operation the path calls.
			type point struct {
				op   string
				kind int
			}
			var points []point
			for _, op := range ref.ops {
				for k := range faultKinds {
					points = append(points, point{op, k})
				}
			}
			for _, i := range sample(len(points), 3, pi*7) {
				pt := points[i]
				what := fmt.Sprintf("%s on %s", faultKinds[pt.kind].name, pt.op)
				t.Run(what, func(t *testing.T) {
					e := newFaultEnv(t)
					req, ids, groups := p.setup(e)
					e.em.ResetStats()
					f := faultKinds[pt.kind].f
					f.Op = pt.op
					if err := e.em.AddFault(f); err != nil {
						t.Fatal(err)
					}
					op, n, err := e.redeliver(req)
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					fired := e.firedFaults()
					e.em.ClearFaults()
					e.checkAgainst(t, ref, op, req, ids, groups, what, 0)
					total.add(p.name, 1, fired, 0, 0, n, 0)
				})
			}

			// Process deaths: right after each durable effect in turn.
			for _, i := range sample(ref.effects, 2, pi) {
				at := i + 1
				what := fmt.Sprintf("death after effect %d of %d", at, ref.effects)
				t.Run(what, func(t *testing.T) {
					e := newFaultEnv(t)
					req, ids, groups := p.setup(e)
					e.em.ResetStats()
					died, afterBulk := e.dieAfter(at, req)
					if !died {
						t.Fatalf("%s: the run did not reach effect %d", what, at)
					}
					bulkResends := 0
					if afterBulk {
						bulkResends = 1 // died between the hub's answer and the journal write
					}
					e.reopenJournal() // a new process
					op, n, err := e.redeliver(req)
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					resent := e.checkAgainst(t, ref, op, req, ids, groups, what, bulkResends)
					total.add(p.name, 1, 0, 1, 0, n+1, resent)
				})
			}
		})
	}
	t.Logf("fault suite: %s", &total)
	if fullFaults() && visited == len(faultPaths()) && !t.Failed() && total.faults < 200 {
		t.Errorf("the full suite injected %d faults, fewer than the 200 it promises", total.faults)
	}
}

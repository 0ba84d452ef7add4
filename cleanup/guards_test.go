package cleanup_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

const day = 24 * time.Hour

// staleOptions are the settings the stale tests share: live retirements after 90 days, every
// share of the fleet allowed unless a test says otherwise.
func staleOptions() cleanup.Options {
	return cleanup.Options{StaleAfter: 90 * day, StaleMax: 10, StaleRunShare: 1, StaleDayShare: 1, ApplyStale: true}
}

// silent gives each device a disconnect 100 days ago, and the feed a connect of a beacon
// now (a connected device is never a candidate): the feed is alive.
func (w *world) silent(hub string, ids ...string) {
	w.t.Helper()
	for _, id := range ids {
		w.event(hub, id, cleanup.LifecycleDisconnected, w.clock.Now().Add(-100*day))
	}
	w.event(hub, "beacon", cleanup.LifecycleConnected, w.clock.Now())
}

func (w *world) staleFindings(runID string) map[string]deprovision.Finding {
	out := map[string]deprovision.Finding{}
	for _, f := range w.findings(runID) {
		if f.Pass == cleanup.PassStale {
			out[f.DeviceID] = f
		}
	}
	return out
}

// Issue 19, case 1: the stale pass retires only what it saw, where it saw it. A device DPS
// assigns to another hub than the sighting's is refused before any request; one whose
// registration moves between the check and the engine's plan is refused by the timer's guard
// at the engine; and events of a hub this app does not manage are not recorded at all.
func TestStaleRetiresOnlyWhatItSawWhereItSawIt(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("a-1")
	// m-1 moved to hub2: DPS assigns it there; its old sighting is hub1's.
	w.dps.AddEnrollment(deprovision.Enrollment{RegistrationID: "m-1", DeviceID: "m-1", Attestation: deprovision.AttestationSymmetricKey, Enabled: true})
	w.dps.AddRegistration(deprovision.Registration{RegistrationID: "m-1", DeviceID: "m-1", AssignedHub: hub2, Status: "assigned"}, "")
	w.hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: "m-1", Enabled: true, AuthType: "sas"})
	w.hubs.AddDevice(deprovision.Device{Hub: hub2, DeviceID: "m-1", Enabled: true, AuthType: "sas"})
	// r-1 moves while the pass looks at it.
	w.device("r-1")
	w.live.hook = func(hub, id string) {
		if id == "r-1" {
			w.dps.AddRegistration(deprovision.Registration{RegistrationID: "r-1", DeviceID: "r-1", AssignedHub: hub2, Status: "assigned"}, "")
			w.hubs.AddDevice(deprovision.Device{Hub: hub2, DeviceID: "r-1", Enabled: true, AuthType: "sas"})
		}
	}
	w.silent("hub1", "a-1", "m-1", "r-1")
	err := w.lifecycle().Record(ctx, cleanup.LifecycleEvent{EventID: "x", Type: "Microsoft.Devices.DeviceDisconnected", Kind: cleanup.LifecycleDisconnected,
		Hub: "hub9", DeviceID: "x-1", Time: w.clock.Now().Add(-100 * day)})
	if !errors.Is(err, cleanup.ErrUnmanagedHub) {
		t.Fatalf("an event of an unmanaged hub: %v, want ErrUnmanagedHub", err)
	}
	if _, err := w.hk.GetSighting(ctx, "hub9", "x-1"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("an unmanaged hub's device was recorded: %v", err)
	}

	rep, err := w.runner(staleOptions()).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := w.staleFindings(rep.RunID)
	if f := fs["a-1"]; f.OperationStatus != deprovision.StatusSucceeded {
		t.Fatalf("a-1, silent where DPS assigns it: %+v", f)
	}
	if f := fs["m-1"]; f.Kind != "stale-elsewhere" || f.OperationID != "" || !strings.Contains(f.Action, hub2) {
		t.Fatalf("m-1, assigned to hub2 and seen in hub1: %+v; want refused before any request", f)
	}
	if f := fs["r-1"]; f.OperationStatus != deprovision.StatusRejected || !strings.Contains(f.Action, "retires only what it saw") {
		t.Fatalf("r-1, moved during the check: %+v; want the guard's refusal", f)
	}
	for _, c := range []struct{ hub, id string }{{hub2, "m-1"}, {hub2, "r-1"}} {
		if d, ok := w.hubs.Device(c.hub, c.id); !ok || !d.Enabled {
			t.Errorf("%s in %s was changed", c.id, c.hub)
		}
	}
	for _, id := range []string{"m-1", "r-1"} {
		if _, ok := w.dps.Enrollment(id); !ok {
			t.Errorf("the live enrollment of %s was deleted", id)
		}
	}
}

// Issue 19, case 2: before it retires anything the stale pass asks the hub, and any evidence
// of life keeps the device: connected (a lost connect event), recent activity of the identity
// (an HTTPS-only device, which raises no connection events), of its twin, or a recent
// connection change. The hub's answer moves the device's last-seen time, so the next sweeps
// do not ask again.
func TestStaleTakesAnyEvidenceOfLifeFromTheHub(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	now := w.clock.Now()
	ids := []string{"e-connected", "e-https", "e-twin", "e-state", "e-dead"}
	for _, id := range ids {
		w.device(id)
	}
	w.live.set(hub1, "e-connected", cleanup.Activity{Connected: true, ConnectionStateUpdated: now.Add(-200 * day)})
	w.live.set(hub1, "e-https", cleanup.Activity{LastActivity: now.Add(-time.Hour)})
	w.live.set(hub1, "e-twin", cleanup.Activity{TwinLastActivity: now.Add(-2 * day)})
	w.live.set(hub1, "e-state", cleanup.Activity{ConnectionStateUpdated: now.Add(-3 * day)})
	w.live.set(hub1, "e-dead", cleanup.Activity{LastActivity: now.Add(-120 * day), ConnectionStateUpdated: now.Add(-120 * day)})
	w.silent("hub1", ids...)
	r := w.runner(staleOptions())
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := w.staleFindings(rep.RunID)
	for _, id := range ids[:4] {
		if f := fs[id]; f.Kind != "stale-alive" || f.OperationID != "" {
			t.Errorf("%s: %+v; want kept for the hub's evidence of life", id, f)
		}
		if _, ok := w.hubs.Device(hub1, id); !ok {
			t.Errorf("%s was retired", id)
		}
	}
	if f := fs["e-dead"]; f.OperationStatus != deprovision.StatusSucceeded {
		t.Fatalf("e-dead, no evidence of life: %+v", f)
	}
	asked := w.live.n
	rep, err = r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w.live.n != asked || len(w.staleFindings(rep.RunID)) != 0 {
		t.Fatalf("the next sweep asked the hub %d more times and found %v; the evidence moved their last-seen times", w.live.n-asked, w.staleFindings(rep.RunID))
	}
}

// Issue 19, case 3: how much the stale pass may retire is bounded. A stale period under a
// week is refused; a hub whose lifecycle feed is silent retires nothing (a broken Event Grid
// subscription makes every device look stale); a run retires at most its share of the fleet;
// beyond the day's share retirements wait for a person's approval, and the pass starts no
// more while StaleMax of them wait.
func TestStaleIsBoundedByTheFleetAndTheFeed(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := cleanup.New(w.cleanupDeps(), cleanup.Options{StaleAfter: time.Second}); err == nil {
		t.Fatal("a stale period of one second was accepted")
	}
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("f-%02d", i)
		ids = append(ids, id)
		w.device(id)
		w.event("hub1", id, cleanup.LifecycleDisconnected, w.clock.Now().Add(-100*day))
	}
	o := staleOptions()
	o.StaleMax, o.StaleRunShare, o.StaleDayShare = 4, 0.1, 0.25
	w.guard.StaleDayShare = o.StaleDayShare
	r := w.runner(o)
	// The newest event is 100 days old: the feed is silent.
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := passReport(t, rep, cleanup.PassStale)
	fs := w.findings(rep.RunID)
	if p.Submitted != 0 || p.Refused != 1 || len(fs) != 1 || fs[0].Kind != "stale-feed-silent" {
		t.Fatalf("silent feed: %+v, findings %+v; want one refusal for the hub, nothing requested", p, fs)
	}
	// The feed is alive. The silent run's sweep counted the fleet, 20 devices: 10% a run
	// is 2, 25% a day is 5.
	w.event("hub1", "beacon", cleanup.LifecycleConnected, w.clock.Now())
	var retired, held int
	for run := range 5 {
		rep, err := r.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := passReport(t, rep, cleanup.PassStale)
		if p.Submitted > 2 {
			t.Fatalf("run %d submitted %d retirements; 10%% of 20 is 2", run+1, p.Submitted)
		}
		for _, f := range w.staleFindings(rep.RunID) {
			switch f.OperationStatus {
			case deprovision.StatusSucceeded:
				retired++
			case deprovision.StatusAwaitingApproval:
				held++
				if !strings.Contains(f.Action, cleanup.HoldStalePerDay) {
					t.Errorf("held %s: %q; want the day's share named", f.DeviceID, f.Action)
				}
			}
		}
	}
	if retired != 5 || held != 4 {
		t.Fatalf("over five runs %d retired, %d held; want the day's share (5) retired and StaleMax (4) waiting for approval", retired, held)
	}
	left := 0
	for _, id := range ids {
		if _, ok := w.hubs.Device(hub1, id); ok {
			left++
		}
	}
	if left != 15 {
		t.Fatalf("%d identities left, want 15", left)
	}
}

// Issue 19, case 4: the stale pass never retires a device the journal holds in a revoking
// state (a compromised device's identity is evidence; a lost one belongs to the grace pass,
// even when its escalation only reports) nor one with an operation awaiting approval.
func TestStaleNeverRetiresARevokingOrHeldDevice(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, id := range []string{"c-1", "l-1", "h-0", "h-1", "o-1"} {
		w.device(id)
	}
	w.clock.add(-100 * day)
	w.submit("c-1", deprovision.IntentCompromised)
	w.submit("l-1", deprovision.IntentLost)
	w.clock.add(100 * day)
	// The event path's hourly limit of one holds h-1's retirement for approval.
	w.guardrails = deprovision.Guardrails{MaxDestructivePerHour: 1}
	w.rebuild()
	w.submit("h-0", deprovision.IntentRetired)
	if op := w.submit("h-1", deprovision.IntentRetired); op.Status != deprovision.StatusAwaitingApproval {
		t.Fatalf("h-1's retirement: %s, want held", op.Status)
	}
	w.silent("hub1", "c-1", "l-1", "h-1", "o-1")
	o := staleOptions()
	o.GraceAfter, o.GraceIntent = 30*day, "" // grace reports only
	rep, err := w.runner(o).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := w.staleFindings(rep.RunID)
	for _, id := range []string{"c-1", "l-1", "h-1"} {
		if f := fs[id]; f.Kind != "stale-refused" || f.OperationID != "" {
			t.Errorf("%s: %+v; want refused", id, f)
		}
		if _, ok := w.hubs.Device(hub1, id); !ok {
			t.Errorf("%s's identity was deleted", id)
		}
	}
	if !strings.Contains(fs["c-1"].Action, "compromised") || !strings.Contains(fs["h-1"].Action, "awaiting-approval") {
		t.Errorf("refusals say %q and %q", fs["c-1"].Action, fs["h-1"].Action)
	}
	if f := fs["o-1"]; f.OperationStatus != deprovision.StatusSucceeded {
		t.Fatalf("o-1: %+v", f)
	}
}

// Issue 19, case 5: DRY_RUN reaches every pass: nothing in DPS or the hubs changes, the
// poison queue is left alone, resume only counts, every change is planned; the cursors move,
// so that a dry-run timer sweeps the fleet as a live one would.
func TestDryRunReachesEveryPass(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, id := range []string{"d-comp", "d-lost", "d-open", "d-stale"} {
		w.device(id)
	}
	w.clock.add(-40 * day)
	w.submit("d-lost", deprovision.IntentLost)
	w.clock.add(40 * day)
	w.submit("d-comp", deprovision.IntentCompromised)
	w.reEnable("d-comp", true)
	w.hubs.fail = 1
	open, err := w.engine.Submit(ctx, deprovision.Request{EventID: "ev-open", Source: "urn:test", Intent: deprovision.IntentStolen, RegistrationID: "d-open"})
	if !deprovision.IsTransient(err) {
		t.Fatalf("want d-open left open: %v %+v", err, open)
	}
	w.dps.AddGroup(deprovision.Group{ID: "gone", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	w.dps.AddRegistration(deprovision.Registration{RegistrationID: "orph-1", DeviceID: "orph-1", AssignedHub: hub1}, "gone")
	w.silent("hub1", "d-stale")
	w.clock.add(11 * time.Minute)
	q := &poisonQueue{msgs: []bool{true}}
	d := w.cleanupDeps()
	d.Poison = q
	r, err := cleanup.New(d, cleanup.Options{DryRun: true, GraceAfter: 30 * day, GraceIntent: deprovision.IntentRetired, ApplyGrace: true,
		StaleAfter: 90 * day, ApplyStale: true, StaleRunShare: 1, DeleteOrphans: true, RedisableGroups: true, Hubs: []string{hub1, hub2}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.RunPass(ctx, cleanup.PassOrphans, cleanup.Overrides{}); err != nil { // remembers the group
		t.Fatal(err)
	}
	if err := w.dps.DeleteGroup(ctx, "gone", ""); err != nil {
		t.Fatal(err)
	}
	before := w.dps.Snapshot() + w.hubs.Snapshot()
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after := w.dps.Snapshot() + w.hubs.Snapshot(); after != before {
		t.Fatalf("a dry run changed DPS or a hub:\nbefore %s\nafter  %s", before, after)
	}
	if !rep.DryRun || len(q.asks) != 0 {
		t.Fatalf("report dry run %t, poison queue asked %v", rep.DryRun, q.asks)
	}
	if p := passReport(t, rep, cleanup.PassResume); p.Checked != 1 || p.Submitted != 0 {
		t.Fatalf("resume in a dry run: %+v", p)
	}
	if got, _, _ := w.engine.Operation(ctx, open.ID); got.Status.Terminal() {
		t.Fatalf("a dry run resumed %s: %s", open.ID, got.Status)
	}
	planned := map[string]bool{}
	for _, f := range w.findings(rep.RunID) {
		if !strings.HasPrefix(f.Action, "planned (dry run)") {
			t.Errorf("finding %s %s: action %q, want planned", f.Pass, f.Kind, f.Action)
		}
		planned[f.Pass] = true
	}
	for _, pass := range []string{cleanup.PassGrace, cleanup.PassDrift, cleanup.PassStale, cleanup.PassOrphans} {
		if !planned[pass] {
			t.Errorf("no planned finding of %s", pass)
		}
		if cur, err := w.hk.GetCursor(ctx, pass); err != nil || cur.RunID != rep.RunID {
			t.Errorf("the cursor of %s did not move in a dry-run timer run: %+v %v", pass, cur, err)
		}
	}
}

// Issue 19, case 6: the timer's destructive operations count against its own hourly budget,
// which is smaller than the event path's; beyond it they wait for approval, and the event
// path's allowance stays whole for real reports.
func TestTheTimerHasItsOwnDestructiveBudget(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.guardrails = deprovision.Guardrails{MaxDestructivePerHour: 4}
	w.guard.MaxPerHour = 2
	w.rebuild()
	lost := []string{"g-1", "g-2", "g-3", "g-4"}
	stolen := []string{"s-1", "s-2", "s-3", "s-4"}
	for _, id := range append(append([]string{}, lost...), stolen...) {
		w.device(id)
	}
	w.clock.add(-40 * day)
	for _, id := range lost {
		w.submit(id, deprovision.IntentLost)
	}
	w.clock.add(40 * day)
	rep, err := w.runner(cleanup.Options{GraceAfter: 30 * day, GraceIntent: deprovision.IntentRetired, ApplyGrace: true}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := passReport(t, rep, cleanup.PassGrace)
	if p.Submitted != 4 || p.Held != 2 {
		t.Fatalf("grace: %+v; want 4 escalations, 2 held by the timer's budget of 2", p)
	}
	for _, f := range w.findings(rep.RunID) {
		if f.OperationStatus == deprovision.StatusAwaitingApproval {
			op, _, _ := w.engine.Operation(ctx, f.OperationID)
			if op.Hold == nil || op.Hold.Limit != cleanup.HoldTimerPerHour {
				t.Errorf("held escalation %s: %+v", f.OperationID, op.Hold)
			}
		}
	}
	// Four real reports in the same hour: the event path's four are all there.
	for _, id := range stolen {
		if op := w.submit(id, deprovision.IntentStolen); op.Status != deprovision.StatusSucceeded {
			t.Fatalf("stolen %s after the timer's run: %s %q", id, op.Status, op.Reason)
		}
	}
	hour := w.clock.Now().UTC().Format("2006010215")
	for window, want := range map[string]int{hour: 4, "cleanup-" + hour: 2} {
		if _, n, err := w.budget.Admit(ctx, window, "probe", 0); err != nil || n != want {
			t.Errorf("window %s counts %d, want %d (%v)", window, n, want, err)
		}
	}
}

// Issue 19, case 7: a re-revocation that fails is a failed operation of its sweep; the next
// sweep makes a new operation and tries again, until the revocation holds.
func TestAFailedReRevocationIsTriedAgainNextSweep(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("k-1")
	w.submit("k-1", deprovision.IntentCompromised)
	w.reEnable("k-1", false)
	w.hubs.hard = 1
	r := w.runner(cleanup.Options{})
	var ops []string
	for run := range 2 {
		rep, err := r.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fs := w.findings(rep.RunID)
		if len(fs) != 1 {
			t.Fatalf("run %d: findings %+v", run+1, fs)
		}
		ops = append(ops, fs[0].OperationID)
		want := map[int]deprovision.Status{0: deprovision.StatusFailed, 1: deprovision.StatusSucceeded}[run]
		if fs[0].OperationStatus != want {
			t.Fatalf("run %d: re-revocation %s (%s), want %s", run+1, fs[0].OperationStatus, fs[0].Action, want)
		}
	}
	if ops[0] == ops[1] {
		t.Fatalf("the retry reused operation %s", ops[0])
	}
	if _, d := w.enabled("k-1"); d {
		t.Fatal("k-1 is still enabled after the retry")
	}
}

// Issue 19, case 8: a group this system disabled is tracked when its group step starts; when
// someone enables it again the drift-groups pass reports it (finding and outcome event) and,
// with RedisableGroups, revokes it again through the engine.
func TestAReEnabledCompromisedGroupIsFoundAndRevokedAgain(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.dps.AddGroup(deprovision.Group{ID: "Line-7", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	for i := range 3 {
		id := fmt.Sprintf("l7-%d", i)
		w.dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "Line-7")
		w.hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	op, err := w.engine.Submit(ctx, deprovision.Request{EventID: "gc", Source: "urn:test", Intent: deprovision.IntentGroupCompromised,
		EnrollmentGroupID: "Line-7", EventTime: w.clock.Now()})
	if err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("group-compromised: %v %+v", err, op)
	}
	var tracked []string
	for g, err := range w.hk.TrackedGroups(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		tracked = append(tracked, g.GroupID+":"+string(g.Intent)+":"+g.Action+":"+g.OperationID)
	}
	if len(tracked) != 1 || tracked[0] != "Line-7:group-compromised:disabled:"+op.ID {
		t.Fatalf("tracked groups %v", tracked)
	}
	g, _ := w.dps.GetGroup(ctx, "Line-7")
	g.Enabled = true
	if _, err := w.dps.PutGroup(ctx, g, "*"); err != nil {
		t.Fatal(err)
	}
	rep, err := w.runner(cleanup.Options{}).RunPass(ctx, cleanup.PassDriftGroups, cleanup.Overrides{DryRun: new(bool)})
	if err != nil {
		t.Fatal(err)
	}
	fs := w.findings(rep.RunID)
	if len(fs) != 1 || fs[0].Kind != "group-enabled" || fs[0].GroupID != "Line-7" || fs[0].Action != "reported" {
		t.Fatalf("findings %+v; want the enabled group reported", fs)
	}
	if got := strings.Join(w.rep.kinds(), " "); !strings.Contains(got, ":group-enabled:reported") {
		t.Fatalf("announced %q", got)
	}
	if g, _ := w.dps.GroupState("Line-7"); !g.Enabled {
		t.Fatal("a report-only pass disabled the group")
	}
	rep, err = w.runner(cleanup.Options{RedisableGroups: true}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range w.findings(rep.RunID) {
		if f.Kind == "group-enabled" && (f.Action != "revoked again" || f.OperationStatus != deprovision.StatusSucceeded) {
			t.Fatalf("finding %+v; want revoked again", f)
		}
	}
	if g, _ := w.dps.GroupState("Line-7"); g.Enabled {
		t.Fatal("the group is still enabled")
	}
}

// Issue 19, case 9: the way out the plan names. A compromised device the operator re-enrolled
// and asked `re-enrolled` for is reported, not revoked again, while the request waits for a
// person; once approved, the device is no longer the drift pass's.
func TestDriftLeavesAReEnrolledDeviceAlone(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("re-1")
	w.submit("re-1", deprovision.IntentCompromised)
	w.clock.add(time.Hour)
	w.reEnable("re-1", true) // new keys in a re-created enrollment, as far as DPS shows
	held, err := w.engine.Submit(ctx, deprovision.Request{EventID: "re", Source: "urn:ops", Intent: deprovision.IntentReEnrolled,
		RegistrationID: "re-1", EventTime: w.clock.Now(), Reason: "new symmetric keys issued, ticket 881"})
	if err != nil || held.Status != deprovision.StatusAwaitingApproval {
		t.Fatalf("re-enrolled: %v %+v", err, held)
	}
	r := w.runner(cleanup.Options{})
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := w.findings(rep.RunID)
	if len(fs) == 0 || !strings.Contains(fs[0].Action, "re-enrollment awaiting approval") || fs[0].OperationID != held.ID {
		t.Fatalf("findings while re-enrolled waits: %+v", fs)
	}
	if e, _ := w.enabled("re-1"); !e {
		t.Fatal("drift revoked the re-enrolled device again")
	}
	if op, err := w.engine.Approve(ctx, held.ID, deprovision.Approval{By: "alice", Reason: "ticket 881 checked"}); err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("approval: %v %+v", err, op)
	}
	rep, err = r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := passReport(t, rep, cleanup.PassDrift); p.Checked != 0 || p.Findings != 0 {
		t.Fatalf("drift after the approval: %+v", p)
	}
}

// Issue 19, case 11: a resumed operation runs at its intent's priority (the app gives a
// compromised, stolen or lost device the hub rate limiter's high lane), not the run's bulk one.
func TestResumeRunsEachOperationAtItsIntentsPriority(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("p-1")
	w.hubs.fail = 1
	if _, err := w.engine.Submit(ctx, deprovision.Request{EventID: "ev-p1", Source: "urn:test", Intent: deprovision.IntentCompromised, RegistrationID: "p-1"}); !deprovision.IsTransient(err) {
		t.Fatalf("want p-1 left open: %v", err)
	}
	w.clock.add(11 * time.Minute)
	var asked []deprovision.Intent
	d := w.cleanupDeps()
	d.ResumeContext = func(ctx context.Context, in deprovision.Intent) context.Context {
		asked = append(asked, in)
		return context.WithValue(ctx, lane{}, "high")
	}
	w.hubs.lanes = nil
	r, err := cleanup.New(d, cleanup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.WithValue(ctx, lane{}, "bulk")); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0] != deprovision.IntentCompromised {
		t.Fatalf("ResumeContext asked for %v", asked)
	}
	if len(w.hubs.lanes) == 0 || w.hubs.lanes[0] != "high" {
		t.Fatalf("the resumed hub write ran in lane %v, want high", w.hubs.lanes)
	}
}

// Cost: drift drops the rows with nothing left to check (a retired individual device whose
// enrollment and identity are deleted) and keeps checking those a re-enable could reverse.
func TestDriftSkipsRowsWithNothingLeftToCheck(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("gone-1")
	w.submit("gone-1", deprovision.IntentRetired)
	w.dps.AddGroup(deprovision.Group{ID: "grp", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	w.dps.AddRegistration(deprovision.Registration{RegistrationID: "mem-1", DeviceID: "mem-1", AssignedHub: hub1}, "grp")
	w.hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: "mem-1", Enabled: true, AuthType: "sas"})
	w.submit("mem-1", deprovision.IntentRetired) // a blocking enrollment stands in front of the group
	rep, err := w.runner(cleanup.Options{}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := passReport(t, rep, cleanup.PassDrift); p.Checked != 1 || p.Spent != 1 {
		t.Fatalf("drift: %+v; want the group member's block checked and the retired individual device dropped", p)
	}
}

// Cost: the prune pass deletes findings older than KeepFindings, the last-seen rows of
// devices deleted longer than KeepDeletedSightings ago, and those of hubs not managed.
func TestPruneDeletesOldRows(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("old")
	w.submit("old", deprovision.IntentCompromised)
	w.reEnable("old", false)
	w.hubs.hard = 1 // the drift finding stays until the next run
	w.clock.add(-100 * day)
	oldRun, err := w.runner(cleanup.Options{}).RunPass(ctx, cleanup.PassDrift, cleanup.Overrides{})
	if err != nil || len(w.findings(oldRun.RunID)) == 0 {
		t.Fatalf("an old run with findings: %v %+v", err, oldRun)
	}
	w.event("hub1", "del-old", cleanup.LifecycleDeleted, w.clock.Now())
	w.clock.add(100 * day)
	w.event("hub1", "del-new", cleanup.LifecycleDeleted, w.clock.Now().Add(-day))
	w.event("hub1", "alive", cleanup.LifecycleConnected, w.clock.Now())
	if _, err := w.hk.RecordSighting(ctx, deprovision.Sighting{Hub: "hub9", DeviceID: "elsewhere", LastSeen: w.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	rep, err := w.runner(cleanup.Options{}).RunPass(ctx, cleanup.PassPrune, cleanup.Overrides{DryRun: new(bool)})
	if err != nil {
		t.Fatal(err)
	}
	if p := rep.Passes[0]; p.Checked < 3 || p.Spent != 0 {
		t.Fatalf("prune: %+v", p)
	}
	if fs := w.findings(oldRun.RunID); len(fs) != 0 {
		t.Fatalf("findings of a run 100 days ago are still there: %+v", fs)
	}
	for _, c := range []struct {
		hub, id string
		kept    bool
	}{{"hub1", "del-old", false}, {"hub9", "elsewhere", false}, {"hub1", "del-new", true}, {"hub1", "alive", true}} {
		_, err := w.hk.GetSighting(ctx, c.hub, c.id)
		if kept := err == nil; kept != c.kept {
			t.Errorf("sighting %s/%s kept %t, want %t (%v)", c.hub, c.id, kept, c.kept, err)
		}
	}
}

// The findings of many runs are counted fleet-wide: a condition found by every sweep is many
// findings of one device.
func TestFindingsReportCountsTheFleet(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, id := range []string{"fr-1", "fr-2"} {
		w.device(id)
		w.submit(id, deprovision.IntentLost)
		w.reEnable(id, false) // lost: reported, never revoked again
	}
	r := w.runner(cleanup.Options{})
	for range 3 {
		w.clock.add(time.Minute)
		if _, err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.FindingsReport(ctx, cleanup.FindingsQuery{Since: w.clock.Now().Add(-time.Hour), Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Runs != 3 || rep.Total != 6 || len(rep.Counts) != 1 || rep.Counts[0].Findings != 6 || rep.Counts[0].Subjects != 2 || len(rep.Findings) != 4 || !rep.More {
		t.Fatalf("report %+v", rep)
	}
	if !rep.Findings[0].Time.After(rep.Findings[3].Time) {
		t.Fatalf("findings not newest first: %v, %v", rep.Findings[0].Time, rep.Findings[3].Time)
	}
	one, err := r.FindingsReport(ctx, cleanup.FindingsQuery{Since: w.clock.Now().Add(-time.Hour), Subject: "FR-1"})
	if err != nil || one.Total != 3 || one.Counts[0].Subjects != 1 {
		t.Fatalf("one device's findings: %+v %v", one, err)
	}
}

// The orphans pass's deletions count against the timer's hourly budget too; beyond it a
// record waits for a later run instead of piling up operations awaiting approval.
func TestOrphanDeletionsArePacedByTheTimersBudget(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.guard.MaxPerHour = 1
	w.dps.AddGroup(deprovision.Group{ID: "paced", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	for i := range 3 {
		w.dps.AddRegistration(deprovision.Registration{RegistrationID: fmt.Sprintf("p-%d", i), DeviceID: fmt.Sprintf("p-%d", i), AssignedHub: hub1}, "paced")
	}
	r := w.runner(cleanup.Options{DeleteOrphans: true})
	if _, err := r.RunPass(ctx, cleanup.PassOrphans, cleanup.Overrides{DryRun: new(bool)}); err != nil {
		t.Fatal(err)
	}
	if err := w.dps.DeleteGroup(ctx, "paced", ""); err != nil {
		t.Fatal(err)
	}
	left := func() int {
		n := 0
		for i := range 3 {
			if w.dps.HasRegistration(fmt.Sprintf("p-%d", i)) {
				n++
			}
		}
		return n
	}
	for hour, want := range []int{2, 1, 0} {
		rep, err := r.RunPass(ctx, cleanup.PassOrphans, cleanup.Overrides{DryRun: new(bool)})
		if err != nil {
			t.Fatal(err)
		}
		if got := left(); got != want {
			t.Fatalf("hour %d: %d records left, want %d (%+v)", hour, got, want, rep.Passes[0])
		}
		if p := rep.Passes[0]; p.Held != 0 {
			t.Fatalf("hour %d: %d deletions held for approval", hour, p.Held)
		}
		w.clock.add(time.Hour)
	}
	for op, err := range w.j.OpenOperations(ctx, w.clock.Now().Add(time.Hour)) {
		if err != nil {
			t.Fatal(err)
		}
		t.Fatalf("an operation is left open: %s %s", op.ID, op.Status)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/journal"
	"dpsdeprov/cleanup"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/devhost"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// cleanupRig is the real handler binary run by devhost (in process, so the test sees each
// invocation end), over the emulator and Azurite, with the journal's tables opened beside it.
type cleanupRig struct {
	t       *testing.T
	host    *devhost.Host
	emu     *emulator.Emulator
	hk      *journal.Housekeeping
	jr      *journal.Journal
	dps     *adapter.DPS
	hubs    *adapter.HubDevices
	results chan invocationResult
}

type invocationResult struct {
	function string
	err      error
}

// syncBuffer is a bytes.Buffer safe for the handler's output and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func newCleanupRig(t *testing.T, extra map[string]string) *cleanupRig {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	az, err := testenv.StartAzurite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(az.Stop)
	emu := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if err := stageApp(root, app, filepath.Join(binDir, "handler")); err != nil {
		t.Fatal(err)
	}
	egPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString([]byte("cleanup-e2e-topic-key-0123456789"))
	info := emu.Info()
	prefix := testenv.UniqueName("cl")
	settings := map[string]string{
		config.SettingStorage:         az.ConnectionString(),
		config.SettingJournalPrefix:   prefix,
		config.SettingDPSConnection:   info.DPS.ConnectionString,
		config.SettingCleanupSchedule: "0 0 0 1 1 *", // fired by hand below
		config.SettingEmulatorAddress: info.Addr,
		config.SettingEmulatorCAFile:  info.CAFile,
		config.SettingOutcomeEndpoint: fmt.Sprintf("https://127.0.0.1:%d/topics/outcomes/api/events", egPort),
		config.SettingOutcomeKey:      key,
		config.SettingOutcomeCAFile:   filepath.Join(dir, "eventgrid-ca.pem"),
		config.SettingDryRun:          "false",
		config.SettingLogLevel:        "info",
		"ALLOWED_SOURCES_COMPROMISED": sourceSecurity,
	}
	for i, h := range info.Hubs {
		settings[config.SettingHubConnection+strconv.Itoa(i)] = h.ConnectionString
	}
	for k, v := range extra {
		settings[k] = v
	}
	loaded, err := devhost.LoadApp(app)
	if err != nil {
		t.Fatal(err)
	}
	r := &cleanupRig{t: t, emu: emu, results: make(chan invocationResult, 64)}
	out := &syncBuffer{}
	h, err := devhost.Start(ctx, loaded, devhost.Options{
		Settings: settings, Addr: "127.0.0.1:0", HandlerOutput: out,
		EventGrid: &devhost.EventGridOptions{Addr: "127.0.0.1:" + strconv.Itoa(egPort), Key: key, CAFile: settings[config.SettingOutcomeCAFile],
			Topics: []devhost.TopicOptions{{Name: "outcomes"}}},
		OnResult: func(inv *devhost.Invocation, err error) { r.results <- invocationResult{inv.Function, err} },
	})
	if err != nil {
		t.Fatal(err)
	}
	r.host = h
	t.Cleanup(func() {
		_ = h.Close()
		if t.Failed() {
			out.mu.Lock()
			t.Logf("handler output:\n%s", tail(out.String(), 6000))
			out.mu.Unlock()
		}
	})

	svc, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.jr, err = journal.New(ctx, svc, journal.Options{TablePrefix: prefix}); err != nil {
		t.Fatal(err)
	}
	if r.hk, err = journal.NewHousekeeping(ctx, svc, journal.Options{TablePrefix: prefix}); err != nil {
		t.Fatal(err)
	}
	opts := azcore.ClientOptions{Transport: testenv.EmulatorHTTPClient(emu)}
	dc, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	r.dps = adapter.NewDPS(dc)
	clients := map[string]*iothub.Client{}
	for _, hi := range info.Hubs {
		c, err := iothub.NewClientFromConnectionString(hi.ConnectionString, &iothub.ClientOptions{ClientOptions: opts})
		if err != nil {
			t.Fatal(err)
		}
		clients[hi.Host] = c
	}
	r.hubs = adapter.NewHubDevices(clients)
	return r
}

// invoke runs a function through devhost's admin endpoint, as `POST /admin/functions/<name>`
// does on the real host, waits for the invocation to end and fails the test if it failed.
func (r *cleanupRig) invoke(function, input string) {
	r.t.Helper()
	if err := r.try(function, input); err != nil {
		r.t.Fatalf("invocation of %s failed: %v", function, err)
	}
}

// try runs a function through devhost's admin endpoint and returns how its invocation ended.
func (r *cleanupRig) try(function, input string) error {
	r.t.Helper()
	body, _ := json.Marshal(map[string]string{"input": input})
	resp, err := http.Post(r.host.URL()+"/admin/functions/"+function, "application/json", bytes.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("POST /admin/functions/%s: %d", function, resp.StatusCode)
	}
	select {
	case res := <-r.results:
		if res.function != function {
			r.t.Fatalf("waiting for %s, %s ended", function, res.function)
		}
		return res.err
	case <-time.After(2 * time.Minute):
		r.t.Fatalf("the %s invocation did not end", function)
	}
	return nil
}

// cleanupRun fires the Cleanup timer and returns the run's id from the cursors it moved.
func (r *cleanupRig) cleanupRun() string {
	r.t.Helper()
	r.invoke(handlerCleanup, "")
	cur, err := r.hk.GetCursor(context.Background(), cleanup.PassResume)
	if err != nil {
		r.t.Fatal(err)
	}
	return cur.RunID
}

const handlerCleanup = "Cleanup"

func (r *cleanupRig) event(ev map[string]any) {
	r.t.Helper()
	b, _ := json.Marshal(ev)
	r.invoke("DeviceEvents", string(b))
}

func (r *cleanupRig) tryEvent(ev map[string]any) error {
	r.t.Helper()
	b, _ := json.Marshal(ev)
	return r.try("DeviceEvents", string(b))
}

// device returns the hub identity of a seeded device (device id = registration id) in
// whichever hub holds it, or nil when no hub does.
func (r *cleanupRig) device(rid string) *deprovision.Device {
	r.t.Helper()
	for _, hi := range r.emu.Info().Hubs {
		d, err := r.hubs.GetDevice(context.Background(), hi.Host, rid)
		if err == nil {
			return d
		}
		if !errors.Is(err, deprovision.ErrNotFound) {
			r.t.Fatal(err)
		}
	}
	return nil
}

// runPass runs one cleanup pass through the Operations endpoint (devhost's HTTP trigger).
func (r *cleanupRig) runPass(pass, body string) struct {
	cleanup.Report
	Findings []deprovision.Finding `json:"findings"`
	Error    string                `json:"error"`
} {
	r.t.Helper()
	resp, err := http.Post(r.host.URL()+"/api/deprovision/cleanup/"+pass, "application/json", strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		cleanup.Report
		Findings []deprovision.Finding `json:"findings"`
		Error    string                `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusOK {
		r.t.Fatalf("POST deprovision/cleanup/%s: %d %v %+v", pass, resp.StatusCode, err, v)
	}
	<-r.results // the Operations invocation
	return v
}

func (r *cleanupRig) findings(runID, pass string) []deprovision.Finding {
	r.t.Helper()
	var out []deprovision.Finding
	for f, err := range r.hk.Findings(context.Background(), runID) {
		if err != nil {
			r.t.Fatal(err)
		}
		if f.Pass == pass {
			out = append(out, *f)
		}
	}
	return out
}

// driftEvents waits for n Deprovisioning.DriftDetected events on the outcome topic (they are
// published in the background) and returns their subjects.
func (r *cleanupRig) driftEvents(n int) []string {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var subjects []string
		for _, raw := range r.host.Received("outcomes") {
			var ev struct {
				Type    string `json:"type"`
				Subject string `json:"subject"`
			}
			if json.Unmarshal(raw, &ev) == nil && ev.Type == "Deprovisioning.DriftDetected" {
				subjects = append(subjects, ev.Subject)
			}
		}
		if len(subjects) >= n || time.Now().After(deadline) {
			return subjects
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The drift test, through devhost's timer: devices this system disabled as
// compromised are re-enabled behind its back; the next cleanup runs disable them again and
// report them. With a budget that covers two devices a run, the first run stops half way
// and the second finishes.
func TestCleanupTimerRevokesDriftedDevicesAgainWithinItsBudget(t *testing.T) {
	r := newCleanupRig(t, map[string]string{config.SettingCleanupBudget: "16"})
	ctx := context.Background()
	if _, err := r.emu.Seed(emulator.SeedSpec{Prefix: "cln", Registrations: 4}); err != nil {
		t.Fatal(err)
	}
	ids := []string{"cln-g0-d0", "cln-g0-d1", "cln-g0-d2"}
	for _, id := range ids {
		r.event(map[string]any{"specversion": "1.0", "id": "sec-" + id, "source": sourceSecurity, "type": "device-compromised",
			"subject": "devices/" + id, "data": map[string]any{"registrationId": id, "reason": "EDR alert"}})
		if d := r.device(id); d == nil || d.Enabled {
			t.Fatalf("%s after device-compromised: %+v; want disabled", id, d)
		}
	}
	// Someone re-enables them in the hub, and re-enables the blocking enrollment of the first.
	for _, id := range ids {
		d := r.device(id)
		d.Enabled = true
		if _, err := r.hubs.PutDevice(ctx, d, "*"); err != nil {
			t.Fatal(err)
		}
	}
	e, err := r.dps.GetEnrollment(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	e.Enabled = true
	if _, err := r.dps.PutEnrollment(ctx, e, "*"); err != nil {
		t.Fatal(err)
	}

	enabled := func() (n int) {
		for _, id := range ids {
			if d := r.device(id); d != nil && d.Enabled {
				n++
			}
		}
		return n
	}
	// Of 16 units, the four passes after resume get 4 each: two compromised devices a run
	// (a check and a re-revocation each).
	run1 := r.cleanupRun()
	if n := enabled(); n != 1 {
		t.Fatalf("after the first cleanup run %d devices are enabled; the budget allows two re-revocations a run", n)
	}
	cur, err := r.hk.GetCursor(ctx, cleanup.PassDrift)
	if err != nil || cur.After == "" || cur.RunID != run1 {
		t.Fatalf("drift cursor after a run that stopped half way: %+v %v", cur, err)
	}
	run2 := r.cleanupRun()
	if n := enabled(); n != 0 {
		t.Fatalf("after the second run %d devices are still enabled", n)
	}
	if cur, err = r.hk.GetCursor(ctx, cleanup.PassDrift); err != nil || cur.After != "" || cur.Sweeps != 1 {
		t.Fatalf("drift cursor after the sweep finished: %+v %v", cur, err)
	}
	if e, err := r.dps.GetEnrollment(ctx, ids[0]); err != nil || e.Enabled {
		t.Fatalf("the blocking enrollment of %s: %+v %v; want disabled again", ids[0], e, err)
	}
	var kinds []string
	for _, run := range []string{run1, run2} {
		for _, f := range r.findings(run, cleanup.PassDrift) {
			kinds = append(kinds, f.RegistrationID+":"+f.Kind)
			if f.Action != "re-revoked" || f.OperationStatus != deprovision.StatusSucceeded {
				t.Errorf("finding %+v: want re-revoked by a succeeded operation", f)
			}
			op, err := r.jr.GetOperation(ctx, f.OperationID)
			if err != nil || op.Request.Source != cleanup.Source || op.Request.Intent != deprovision.IntentCompromised {
				t.Errorf("re-revocation %s: %+v %v", f.OperationID, op, err)
			}
		}
	}
	got := strings.Join(kinds, " ")
	for _, want := range []string{ids[0] + ":enrollment-enabled", ids[0] + ":device-enabled", ids[1] + ":device-enabled", ids[2] + ":device-enabled"} {
		if !strings.Contains(got, want) {
			t.Errorf("findings %q lack %q", got, want)
		}
	}
	if subjects := r.driftEvents(4); len(subjects) != 4 {
		t.Fatalf("outcome topic got %d DriftDetected events (%v), want 4", len(subjects), subjects)
	}
	// A third run finds nothing drifted and changes nothing.
	run3 := r.cleanupRun()
	if fs := r.findings(run3, cleanup.PassDrift); len(fs) != 0 {
		t.Fatalf("third run found %+v", fs)
	}
}

// Lifecycle events through the DeviceEvents function keep last-seen times; a device not seen
// for longer than the stale period is retired by the timer (dry run off here), an allowed or
// recently seen one is not, and the hub's DeviceDeleted confirms the delete in the journal.
func TestCleanupTimerRetiresStaleDevicesAndConfirmsTheDelete(t *testing.T) {
	r := newCleanupRig(t, map[string]string{config.SettingCleanupStaleDryRun: "false", config.SettingCleanupStaleAllow: "cls-g0-d2"})
	ctx := context.Background()
	if _, err := r.emu.Seed(emulator.SeedSpec{Prefix: "cls", Registrations: 3}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	hubOf := func(id string) string {
		reg, err := r.dps.GetRegistration(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(reg.AssignedHub, ".")
		return name
	}
	seen := map[string]time.Time{"cls-g0-d0": now.Add(-100 * 24 * time.Hour), "cls-g0-d1": now.Add(-time.Hour), "cls-g0-d2": now.Add(-200 * 24 * time.Hour)}
	for id, at := range seen {
		hub := hubOf(id)
		// A disconnect: a device whose last event is a connect counts as still online.
		r.event(map[string]any{"id": "disc-" + id, "topic": "/SUBSCRIPTIONS/x/RESOURCEGROUPS/rg/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/" + hub,
			"subject": "devices/" + id, "eventType": "Microsoft.Devices.DeviceDisconnected", "eventTime": at.Format(time.RFC3339Nano),
			"data":        map[string]any{"deviceConnectionStateEventInfo": map[string]any{"sequenceNumber": "1"}, "hubName": hub, "deviceId": id},
			"dataVersion": "", "metadataVersion": "1"})
	}
	run := r.cleanupRun()
	stale := r.findings(run, cleanup.PassStale)
	if len(stale) != 1 || stale[0].RegistrationID != "cls-g0-d0" || stale[0].OperationStatus != deprovision.StatusSucceeded {
		t.Fatalf("stale findings: %+v; want cls-g0-d0 retired only", stale)
	}
	if d := r.device("cls-g0-d1"); d == nil {
		t.Fatal("cls-g0-d1, seen an hour ago, was retired")
	}
	if d := r.device("cls-g0-d2"); d == nil {
		t.Fatal("cls-g0-d2 is on the allow-list and was retired")
	}
	op, err := r.jr.GetOperation(ctx, stale[0].OperationID)
	if err != nil || op.Request.Intent != deprovision.IntentRetired || op.Request.Source != cleanup.Source {
		t.Fatalf("stale retirement %s: %+v %v", stale[0].OperationID, op, err)
	}
	// The hub says the device is gone: the delete is confirmed in the operation's journal.
	name, _, _ := strings.Cut(stale[0].Hub, ".")
	r.event(map[string]any{"specversion": "1.0", "id": "del-cls-g0-d0", "source": "/SUBSCRIPTIONS/x/RESOURCEGROUPS/rg/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/" + name,
		"type": "Microsoft.Devices.DeviceDeleted", "subject": "devices/cls-g0-d0", "time": time.Now().UTC().Format(time.RFC3339Nano),
		"data": map[string]any{"twin": map[string]any{"deviceId": "cls-g0-d0"}, "hubName": name, "deviceId": "cls-g0-d0"}})
	recs, err := r.jr.Steps(ctx, stale[0].OperationID)
	if err != nil {
		t.Fatal(err)
	}
	var requested, confirmed bool
	for _, s := range recs {
		requested = requested || s.Kind == deprovision.StepDeleteDevice && s.Outcome == deprovision.StepDone
		confirmed = confirmed || s.Kind == cleanup.StepConfirmDelete && s.Outcome == deprovision.StepDone
	}
	if !requested || !confirmed {
		t.Fatalf("journal of the retirement: delete requested %t, confirmed %t: %+v", requested, confirmed, recs)
	}
	// The group goes away; its registration records stay behind. An operator runs the orphans
	// pass by hand through the Operations endpoint: a dry run first, then for real.
	if err := r.dps.DeleteGroup(ctx, "cls-g0", ""); err != nil {
		t.Fatal(err)
	}
	for _, dry := range []bool{true, false} {
		v := r.runPass(cleanup.PassOrphans, fmt.Sprintf(`{"dryRun":%t}`, dry))
		if len(v.Passes) != 1 || v.Passes[0].Checked != 2 || len(v.Findings) != 2 || !v.Passes[0].Complete {
			t.Fatalf("orphans by hand (dry run %t): %+v", dry, v)
		}
		for _, id := range []string{"cls-g0-d1", "cls-g0-d2"} {
			_, err := r.dps.GetRegistration(ctx, id)
			if gone := errors.Is(err, deprovision.ErrNotFound); gone == dry {
				t.Fatalf("registration %s after a hand run with dry run %t: %v", id, dry, err)
			}
		}
	}

	// A malformed lifecycle event is journaled as rejected, never taken for a request.
	r.event(map[string]any{"specversion": "1.0", "id": "bad-lifecycle", "source": "/iothubs/hub1", "type": "Microsoft.Devices.DeviceConnected",
		"time": time.Now().UTC().Format(time.RFC3339Nano), "data": map[string]any{"hubName": "hub1"}})
	bad, err := r.jr.GetOperation(ctx, deprovision.OperationID("/iothubs/hub1", "bad-lifecycle"))
	if err != nil || bad.Status != deprovision.StatusRejected || !strings.Contains(bad.Reason, "deviceId") {
		t.Fatalf("malformed lifecycle event: %+v %v", bad, err)
	}
}

// The other passes on the timer: resume finishes an operation a hub outage left half done,
// grace retires a device lost longer than the grace period, drift-groups reports an enabled
// member of a disabled group, and orphans deletes the records of a deleted group.
func TestCleanupTimerResumesEscalatesAndClearsOrphans(t *testing.T) {
	r := newCleanupRig(t, map[string]string{config.SettingCleanupAge: "1ns", config.SettingMaxEventAge: "0",
		config.SettingCleanupGraceDryRun: "false", config.SettingCleanupOrphansDryRun: "false"})
	ctx := context.Background()
	if _, err := r.emu.Seed(emulator.SeedSpec{Prefix: "clr", Registrations: 3}); err != nil {
		t.Fatal(err)
	}
	lost := func(id string, at time.Time) map[string]any {
		return map[string]any{"specversion": "1.0", "id": "lost-" + id, "source": "urn:contoso:assets", "type": "device-lost",
			"time": at.Format(time.RFC3339Nano), "data": map[string]any{"registrationId": id}}
	}
	if err := r.emu.AddFault(emulator.Fault{Op: "hub.devices.put", Status: 503, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := r.tryEvent(lost("clr-g0-d0", time.Now().UTC())); err == nil {
		t.Fatal("the event succeeded while the hub failed")
	}
	r.emu.ClearFaults()
	if d := r.device("clr-g0-d0"); !d.Enabled {
		t.Fatal("the hub step ran during the outage")
	}
	r.event(lost("clr-g0-d1", time.Now().UTC().Add(-40*24*time.Hour)))

	run := r.cleanupRun()
	if d := r.device("clr-g0-d0"); d == nil || d.Enabled {
		t.Fatalf("clr-g0-d0 after the resume pass: %+v; want disabled", d)
	}
	op, err := r.jr.GetOperation(ctx, deprovision.OperationID("urn:contoso:assets", "lost-clr-g0-d0"))
	if err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("resumed operation: %+v %v", op, err)
	}
	grace := r.findings(run, cleanup.PassGrace)
	if len(grace) != 1 || grace[0].RegistrationID != "clr-g0-d1" || grace[0].OperationStatus != deprovision.StatusSucceeded {
		t.Fatalf("grace findings: %+v", grace)
	}
	if d := r.device("clr-g0-d1"); d != nil {
		t.Fatalf("clr-g0-d1, lost 40 days, still has a hub identity: %+v", d)
	}

	// Someone disables the group in DPS and leaves its last member enabled in the hub.
	g, err := r.dps.GetGroup(ctx, "clr-g0")
	if err != nil {
		t.Fatal(err)
	}
	g.Enabled = false
	if _, err := r.dps.PutGroup(ctx, g, "*"); err != nil {
		t.Fatal(err)
	}
	run = r.cleanupRun()
	members := r.findings(run, cleanup.PassDriftGroups)
	if len(members) != 1 || members[0].RegistrationID != "clr-g0-d2" || members[0].Kind != "group-member-enabled" {
		t.Fatalf("group drift findings: %+v", members)
	}
	if subjects := r.driftEvents(1); len(subjects) != 1 || subjects[0] != "devices/clr-g0-d2" {
		t.Fatalf("DriftDetected events: %v", subjects)
	}

	// The group is deleted; the timer deletes the registration records it left behind.
	if err := r.dps.DeleteGroup(ctx, "clr-g0", ""); err != nil {
		t.Fatal(err)
	}
	run = r.cleanupRun()
	orphans := r.findings(run, cleanup.PassOrphans)
	if len(orphans) != 2 {
		t.Fatalf("orphan findings: %+v", orphans)
	}
	for _, f := range orphans {
		if f.Action != "deleted" {
			t.Errorf("orphan %+v not deleted", f)
		}
		if _, err := r.dps.GetRegistration(ctx, f.RegistrationID); !errors.Is(err, deprovision.ErrNotFound) {
			t.Errorf("registration %s after the orphans pass: %v", f.RegistrationID, err)
		}
	}
}

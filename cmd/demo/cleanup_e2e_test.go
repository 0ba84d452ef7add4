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
	t        *testing.T
	host     *devhost.Host
	app      string
	settings map[string]string
	egPort   int
	key      string
	out      *testenv.Output
	svc      *aztables.ServiceClient
	emu      *emulator.Emulator
	hk       *journal.Housekeeping
	jr       *journal.Journal
	dps      *adapter.DPS
	hubs     *adapter.HubDevices
	results  chan invocationResult
}

type invocationResult struct {
	function string
	err      error
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
	r := &cleanupRig{t: t, emu: emu, results: make(chan invocationResult, 64), app: app, settings: settings, egPort: egPort, key: key}
	r.start()
	t.Cleanup(func() {
		if r.host != nil {
			_ = r.host.Close()
		}
		if t.Failed() {
			t.Logf("handler output:\n%s", tail(r.out.String(), 6000))
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
	r.svc = svc
	return r
}

// tables is the Table service of the rig's Azurite.
func (r *cleanupRig) tables() *aztables.ServiceClient { return r.svc }

// start runs the handler under devhost with the rig's settings.
func (r *cleanupRig) start() {
	r.t.Helper()
	loaded, err := devhost.LoadApp(r.app)
	if err != nil {
		r.t.Fatal(err)
	}
	if r.out == nil {
		r.out = &testenv.Output{}
	}
	h, err := devhost.Start(context.Background(), loaded, devhost.Options{
		Settings: r.settings, Addr: "127.0.0.1:0", HandlerOutput: r.out,
		EventGrid: &devhost.EventGridOptions{Addr: "127.0.0.1:" + strconv.Itoa(r.egPort), Key: r.key, CAFile: r.settings[config.SettingOutcomeCAFile],
			Topics: []devhost.TopicOptions{{Name: "outcomes"}}},
		OnResult: func(inv *devhost.Invocation, err error) { r.results <- invocationResult{inv.Function, err} },
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.host = h
}

// restart runs the handler again with changed settings, over the same emulator and journal.
func (r *cleanupRig) restart(changed map[string]string) {
	r.t.Helper()
	if err := r.host.Close(); err != nil {
		r.t.Fatal(err)
	}
	for k, v := range changed {
		r.settings[k] = v
	}
	r.start()
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
	return r.await(function)
}

// await returns how the next invocation of function ended. GroupWork invocations, which the
// queue makes in the background of a group-wide operation, are passed over.
func (r *cleanupRig) await(function string) error {
	r.t.Helper()
	for {
		select {
		case res := <-r.results:
			if res.function == "GroupWork" && function != "GroupWork" {
				continue
			}
			if res.function != function {
				r.t.Fatalf("waiting for %s, %s ended", function, res.function)
			}
			return res.err
		case <-time.After(testenv.HungAfter):
			r.t.Fatalf("the %s invocation did not end", function)
		}
	}
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

// lifecycle delivers an IoT Hub lifecycle event (Event Grid schema, as a hub's system topic
// sends it) of device id in hub (a hub name) to the DeviceEvents function.
func (r *cleanupRig) lifecycle(eventType, hub, id string, at time.Time) {
	r.t.Helper()
	data := map[string]any{"hubName": hub, "deviceId": id}
	if strings.Contains(eventType, "onnected") {
		data["deviceConnectionStateEventInfo"] = map[string]any{"sequenceNumber": "1"}
	}
	r.event(map[string]any{"id": eventType + "-" + hub + "-" + id + "-" + at.Format(time.RFC3339Nano), "topic": "/SUBSCRIPTIONS/x/RESOURCEGROUPS/rg/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/" + hub,
		"subject": "devices/" + id, "eventType": "Microsoft.Devices." + eventType, "eventTime": at.Format(time.RFC3339Nano),
		"data": data, "dataVersion": "", "metadataVersion": "1"})
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
	var subjects []string
	_ = testenv.WaitFor(testenv.Context(r.t), func() bool {
		subjects = nil
		for _, raw := range r.host.Received("outcomes") {
			var ev struct {
				Type    string `json:"type"`
				Subject string `json:"subject"`
			}
			if json.Unmarshal(raw, &ev) == nil && ev.Type == "Deprovisioning.DriftDetected" {
				subjects = append(subjects, ev.Subject)
			}
		}
		return len(subjects) >= n
	})
	return subjects // the caller says what it expected
}

// The drift test, through devhost's timer: devices this system disabled as
// compromised are re-enabled behind its back; the next cleanup runs disable them again and
// report them. With a budget that covers two devices a run, the first run stops half way
// and the second finishes.
func TestCleanupTimerRevokesDriftedDevicesAgainWithinItsBudget(t *testing.T) {
	r := newCleanupRig(t, map[string]string{config.SettingCleanupBudget: "4"})
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
	// Of 4 units, drift keeps half (one compromised device: a check and a re-revocation)
	// and takes what the other passes leave (one more): two devices a run.
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
		// A disconnect: a device whose last event is a connect counts as still online.
		r.lifecycle("DeviceDisconnected", hubOf(id), id, at)
	}
	// The feed of each hub is alive: a device connected a minute ago.
	for _, hub := range []string{"hub1", "hub2"} {
		r.lifecycle("DeviceConnected", hub, "beacon", now.Add(-time.Minute))
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
	// pass by hand through the Operations endpoint. Issue 19, case 10: while a record's hub
	// identity exists the record is kept, live run or not; once the identity is gone, a live
	// run deletes it through the engine.
	if err := r.dps.DeleteGroup(ctx, "cls-g0", ""); err != nil {
		t.Fatal(err)
	}
	v := r.runPass(cleanup.PassOrphans, `{"dryRun":false}`)
	if len(v.Passes) != 1 || v.Passes[0].Checked != 2 || v.Passes[0].Refused != 2 || len(v.Findings) != 2 || !v.Passes[0].Complete {
		t.Fatalf("orphans by hand while the identities exist: %+v", v)
	}
	for _, f := range v.Findings {
		if f.Kind != "orphan-kept" {
			t.Errorf("finding %+v; want kept", f)
		}
		if _, err := r.dps.GetRegistration(ctx, f.RegistrationID); err != nil {
			t.Errorf("registration %s of a device whose identity exists: %v", f.RegistrationID, err)
		}
	}
	for _, id := range []string{"cls-g0-d1", "cls-g0-d2"} {
		if err := r.hubs.DeleteDevice(ctx, r.device(id).Hub, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, dry := range []bool{true, false} {
		v := r.runPass(cleanup.PassOrphans, fmt.Sprintf(`{"dryRun":%t}`, dry))
		if len(v.Passes) != 1 || v.Passes[0].Checked != 2 || len(v.Findings) != 2 || !v.Passes[0].Complete {
			t.Fatalf("orphans by hand (dry run %t): %+v", dry, v)
		}
		for _, f := range v.Findings {
			_, err := r.dps.GetRegistration(ctx, f.RegistrationID)
			if gone := errors.Is(err, deprovision.ErrNotFound); gone == dry {
				t.Fatalf("registration %s after a hand run with dry run %t: %v", f.RegistrationID, dry, err)
			}
			if !dry {
				op, err := r.jr.GetOperation(ctx, f.OperationID)
				if err != nil || op.Request.Intent != deprovision.IntentOrphaned || op.Request.Source != cleanup.Source || op.Status != deprovision.StatusSucceeded {
					t.Fatalf("the deletion of %s: %+v %v; want an engine operation", f.RegistrationID, op, err)
				}
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

	// The group is deleted. Its two records left point at identities that exist (clr-g0-d0
	// disabled as lost, clr-g0-d2 enabled): the timer keeps them. Once clr-g0-d2's identity
	// is gone its record goes, through the engine.
	if err := r.dps.DeleteGroup(ctx, "clr-g0", ""); err != nil {
		t.Fatal(err)
	}
	run = r.cleanupRun()
	orphans := r.findings(run, cleanup.PassOrphans)
	if len(orphans) != 2 {
		t.Fatalf("orphan findings: %+v", orphans)
	}
	for _, f := range orphans {
		if f.Kind != "orphan-kept" {
			t.Errorf("orphan %+v: want kept while its identity exists", f)
		}
	}
	if err := r.hubs.DeleteDevice(ctx, r.device("clr-g0-d2").Hub, "clr-g0-d2", ""); err != nil {
		t.Fatal(err)
	}
	run = r.cleanupRun()
	for _, f := range r.findings(run, cleanup.PassOrphans) {
		_, err := r.dps.GetRegistration(ctx, f.RegistrationID)
		switch f.RegistrationID {
		case "clr-g0-d2":
			if f.Action != "deleted" || !errors.Is(err, deprovision.ErrNotFound) {
				t.Errorf("orphan %+v: %v; want deleted", f, err)
			}
		default:
			if f.Kind != "orphan-kept" || err != nil {
				t.Errorf("orphan %+v: %v; want kept", f, err)
			}
		}
	}
}

// api calls the Operations endpoint through devhost's HTTP trigger and decodes the answer.
func (r *cleanupRig) api(method, path, body string, v any) int {
	r.t.Helper()
	req, err := http.NewRequest(method, r.host.URL()+"/api/deprovision/"+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		r.t.Fatalf("%s deprovision/%s: %d, answer unreadable: %v", method, path, resp.StatusCode, err)
	}
	_ = r.await("Operations")
	return resp.StatusCode
}

// awaitGroupWork takes the GroupWork invocations of a group-wide operation until it ends, and
// returns it.
func (r *cleanupRig) awaitGroupWork(id string) *deprovision.Operation {
	r.t.Helper()
	for {
		op, err := r.jr.GetOperation(context.Background(), id)
		if err != nil {
			r.t.Fatal(err)
		}
		if op.Status.Terminal() {
			return op
		}
		select {
		case res := <-r.results:
			if res.function != "GroupWork" {
				r.t.Fatalf("waiting for the group work of %s, %s ended", id, res.function)
			}
		case <-time.After(2 * time.Minute):
			r.t.Fatalf("operation %s did not end: %s", id, op.Status)
		}
	}
}

// stale returns the stale findings of a run by device id (the feed's by hub).
func (r *cleanupRig) stale(run string) map[string]deprovision.Finding {
	out := map[string]deprovision.Finding{}
	for _, f := range r.findings(run, cleanup.PassStale) {
		k := f.DeviceID
		if k == "" {
			k = f.Hub
		}
		out[k] = f
	}
	return out
}

// hubOf is the hub name DPS assigned a seeded device to.
func (r *cleanupRig) hubOf(id string) string {
	r.t.Helper()
	reg, err := r.dps.GetRegistration(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	name, _, _ := strings.Cut(reg.AssignedHub, ".")
	return name
}

// Issue 19, cases 1 to 4, through devhost's timer, the emulator and Azurite: the stale pass
// refuses while a hub's lifecycle feed is silent; then it retires only a device that is silent
// in the hub DPS assigns it to, shows no life in the hub (the emulator reports an HTTPS-only
// device's activity and a connected device whose connect event was lost), and is in no
// revoking state; events of an unmanaged hub are not recorded; and each run writes one
// structured summary line.
func TestCleanupTimerGuardsStaleRetirements(t *testing.T) {
	r := newCleanupRig(t, map[string]string{config.SettingCleanupStaleDryRun: "false", config.SettingCleanupStaleRunPercent: "100",
		config.SettingCleanupStaleDayPercent: "100", config.SettingMaxEventAge: "0"})
	ctx := context.Background()
	if _, err := r.emu.Seed(emulator.SeedSpec{Prefix: "gs", Registrations: 6}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	ids := []string{"gs-g0-d0", "gs-g0-d1", "gs-g0-d2", "gs-g0-d3", "gs-g0-d4", "gs-g0-d5"}
	dead, https, connected, compromised, elsewhere, lost := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]
	r.event(map[string]any{"specversion": "1.0", "id": "sec-" + compromised, "source": sourceSecurity, "type": "device-compromised",
		"subject": "devices/" + compromised, "data": map[string]any{"registrationId": compromised}})
	r.event(map[string]any{"specversion": "1.0", "id": "lost-" + lost, "source": "urn:contoso:assets", "type": "device-lost",
		"time": now.Add(-100 * 24 * time.Hour).Format(time.RFC3339Nano), "data": map[string]any{"registrationId": lost}})
	other := map[string]string{"hub1": "hub2", "hub2": "hub1"}
	for _, id := range ids {
		hub := r.hubOf(id)
		if id == elsewhere {
			hub = other[hub] // seen in the hub DPS did not assign it to
		}
		r.lifecycle("DeviceDisconnected", hub, id, now.Add(-100*24*time.Hour))
	}
	if err := r.emu.SetActivity(r.hubOf(https), https, emulator.Activity{LastActivityTime: now.Add(-time.Hour), HTTPOnly: true}); err != nil {
		t.Fatal(err)
	}
	if err := r.emu.SetActivity(r.hubOf(connected), connected, emulator.Activity{ConnectionState: "Connected", ConnectionStateUpdatedTime: now.Add(-120 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r.lifecycle("DeviceConnected", "hub9", "stranger", now)
	if _, err := r.hk.GetSighting(ctx, "hub9", "stranger"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("an unmanaged hub's event was recorded: %v", err)
	}

	// Every event is 100 days old: the feed is silent, nothing is retired.
	run := r.cleanupRun()
	fs := r.stale(run)
	if len(fs) == 0 {
		t.Fatal("no finding while the feed is silent")
	}
	for k, f := range fs {
		if f.Kind != "stale-feed-silent" {
			t.Errorf("silent feed: %s %+v", k, f)
		}
	}
	for _, id := range ids {
		if r.device(id) == nil {
			t.Fatalf("%s was retired while the feed was silent", id)
		}
	}

	for _, hub := range []string{"hub1", "hub2"} {
		r.lifecycle("DeviceConnected", hub, "beacon", now)
	}
	run = r.cleanupRun()
	fs = r.stale(run)
	for id, want := range map[string]string{https: "stale-alive", connected: "stale-alive", compromised: "stale-refused", lost: "stale-refused", elsewhere: "stale-elsewhere"} {
		if f := fs[id]; f.Kind != want || f.OperationID != "" {
			t.Errorf("%s: %+v; want %s, nothing requested", id, f, want)
		}
		if r.device(id) == nil {
			t.Errorf("%s's identity is gone", id)
		}
	}
	if f := fs[dead]; f.OperationStatus != deprovision.StatusSucceeded || r.device(dead) != nil {
		t.Fatalf("%s, silent with no evidence of life: %+v", dead, f)
	}
	if !strings.Contains(fs[compromised].Action, "compromised") || !strings.Contains(fs[https].Action, "last activity") ||
		!strings.Contains(fs[connected].Action, "connected") {
		t.Errorf("refusals say: %q, %q, %q", fs[compromised].Action, fs[https].Action, fs[connected].Action)
	}
	// One structured line per run, with each pass's counts.
	logs := r.out.String()
	var summaries int
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			Msg   string         `json:"msg"`
			Run   string         `json:"run"`
			Stale map[string]any `json:"stale"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "cleanup run" {
			summaries++
			if l.Run == run && (l.Stale["refused"] != float64(5) || l.Stale["submitted"] != float64(1)) {
				t.Errorf("summary of run %s: stale %v", run, l.Stale)
			}
		}
	}
	if summaries != 2 {
		t.Fatalf("%d structured summary lines for 2 runs", summaries)
	}
}

// Issue 19, cases 5 and 6, through devhost's timer: with DRY_RUN=true no pass changes
// anything (drift, grace and the poison queue included); live, the timer's destructive
// operations count against its own hourly budget (CLEANUP_MAX_DESTRUCTIVE_PER_HOUR), never
// against the event path's, and beyond it wait for approval.
func TestCleanupTimerDryRunAndItsOwnBudget(t *testing.T) {
	r := newCleanupRig(t, map[string]string{config.SettingMaxDestructivePerHour: "4", config.SettingCleanupMaxDestructivePerHour: "1",
		config.SettingCleanupGraceDryRun: "false", config.SettingMaxEventAge: "0"})
	ctx := context.Background()
	if _, err := r.emu.Seed(emulator.SeedSpec{Prefix: "gb", Registrations: 4}); err != nil {
		t.Fatal(err)
	}
	comp, lost1, lost2, stolen := "gb-g0-d0", "gb-g0-d1", "gb-g0-d2", "gb-g0-d3"
	r.event(map[string]any{"specversion": "1.0", "id": "sec-" + comp, "source": sourceSecurity, "type": "device-compromised",
		"subject": "devices/" + comp, "data": map[string]any{"registrationId": comp}})
	for _, id := range []string{lost1, lost2} {
		r.event(map[string]any{"specversion": "1.0", "id": "lost-" + id, "source": "urn:contoso:assets", "type": "device-lost",
			"time": time.Now().UTC().Add(-40 * 24 * time.Hour).Format(time.RFC3339Nano), "data": map[string]any{"registrationId": id}})
	}
	d := r.device(comp)
	d.Enabled = true
	if _, err := r.hubs.PutDevice(ctx, d, "*"); err != nil {
		t.Fatal(err)
	}

	r.restart(map[string]string{config.SettingDryRun: "true"})
	run := r.cleanupRun()
	if d := r.device(comp); d == nil || !d.Enabled {
		t.Fatal("a DRY_RUN timer revoked the drifted device again")
	}
	for _, id := range []string{lost1, lost2} {
		if r.device(id) == nil {
			t.Fatalf("a DRY_RUN timer retired %s", id)
		}
	}
	var planned []string
	for _, pass := range []string{cleanup.PassDrift, cleanup.PassGrace} {
		for _, f := range r.findings(run, pass) {
			if !strings.HasPrefix(f.Action, "planned (dry run)") {
				t.Errorf("DRY_RUN finding %+v", f)
			}
			planned = append(planned, f.Pass+":"+f.RegistrationID)
		}
	}
	if len(planned) != 3 {
		t.Fatalf("planned findings %v; want the drift and both escalations", planned)
	}

	r.restart(map[string]string{config.SettingDryRun: "false"})
	run = r.cleanupRun()
	if d := r.device(comp); d == nil || d.Enabled {
		t.Fatalf("%s after the live run: %+v; want disabled again", comp, d)
	}
	var done, held []deprovision.Finding
	for _, f := range r.findings(run, cleanup.PassGrace) {
		switch f.OperationStatus {
		case deprovision.StatusSucceeded:
			done = append(done, f)
		case deprovision.StatusAwaitingApproval:
			held = append(held, f)
		}
	}
	if len(done) != 1 || len(held) != 1 {
		t.Fatalf("grace: %d escalated, %d held; want the timer's budget of 1 used and the second held", len(done), len(held))
	}
	op, err := r.jr.GetOperation(ctx, held[0].OperationID)
	if err != nil || op.Hold == nil || op.Hold.Limit != cleanup.HoldTimerPerHour {
		t.Fatalf("held escalation: %+v %v", op, err)
	}
	// The timer's escalation is not counted in the event path's hour.
	budget, err := journal.NewBudget(ctx, r.tables(), journal.Options{TablePrefix: r.settings[config.SettingJournalPrefix]})
	if err != nil {
		t.Fatal(err)
	}
	esc, err := r.jr.GetOperation(ctx, done[0].OperationID)
	if err != nil {
		t.Fatal(err)
	}
	hour := esc.Created.UTC().Format("2006010215")
	if counted, _, err := budget.Admit(ctx, hour, esc.ID, 0); err != nil || counted {
		t.Fatalf("the timer's escalation %s counts in the event path's hour %s (%v)", esc.ID, hour, err)
	}
	if counted, _, err := budget.Admit(ctx, "cleanup-"+hour, esc.ID, 0); err != nil || !counted {
		t.Fatalf("the timer's escalation %s is not counted in the timer's own hour (%v)", esc.ID, err)
	}
	r.event(map[string]any{"specversion": "1.0", "id": "stolen-" + stolen, "source": "urn:contoso:assets", "type": "device-stolen",
		"data": map[string]any{"registrationId": stolen}})
	if d := r.device(stolen); d == nil || d.Enabled {
		t.Fatalf("a stolen report after the timer's run: %+v; want disabled", d)
	}
}

// Issue 19, cases 7 to 9, through devhost's timer: a re-revocation the hub refuses is tried
// again by the next sweep as a new operation; a compromised group someone enables again is
// found and (CLEANUP_DRIFT_GROUPS_REDISABLE) revoked again; a re-enrolled device waiting for
// approval is left alone, and after the approval no longer drifts. The findings of the runs
// are read back through GET deprovision/findings, counted fleet-wide.
func TestCleanupTimerRestoresRevocations(t *testing.T) {
	r := newCleanupRig(t, map[string]string{config.SettingCleanupGroupsRedisable: "true"})
	ctx := context.Background()
	if _, err := r.emu.Seed(emulator.SeedSpec{Prefix: "gc", Groups: 2, Registrations: 6}); err != nil {
		t.Fatal(err)
	}
	refused, reenrolled := "gc-g0-d0", "gc-g0-d1"
	for _, id := range []string{refused, reenrolled} {
		r.event(map[string]any{"specversion": "1.0", "id": "sec-" + id, "source": sourceSecurity, "type": "device-compromised",
			"subject": "devices/" + id, "data": map[string]any{"registrationId": id}})
	}
	r.event(map[string]any{"specversion": "1.0", "id": "sec-gc-g1", "source": sourceSecurity, "type": "enrollment-group-compromised",
		"subject": "enrollmentGroups/gc-g1", "data": map[string]any{"enrollmentGroupId": "gc-g1"}})
	r.awaitGroupWork(deprovision.OperationID(sourceSecurity, "sec-gc-g1"))
	if g, err := r.dps.GetGroup(ctx, "gc-g1"); err != nil || g.Enabled {
		t.Fatalf("group gc-g1 after its compromise: %+v %v", g, err)
	}

	// Case 7: re-enabled, and the hub refuses the first re-revocation.
	d := r.device(refused)
	d.Enabled = true
	if _, err := r.hubs.PutDevice(ctx, d, "*"); err != nil {
		t.Fatal(err)
	}
	// Case 8: the group is enabled again.
	g, err := r.dps.GetGroup(ctx, "gc-g1")
	if err != nil {
		t.Fatal(err)
	}
	g.Enabled = true
	if _, err := r.dps.PutGroup(ctx, g, "*"); err != nil {
		t.Fatal(err)
	}
	// Case 9: the operator re-enrolls a compromised device and asks for re-enrolled.
	e, err := r.dps.GetEnrollment(ctx, reenrolled)
	if err != nil {
		t.Fatal(err)
	}
	e.Enabled = true
	if _, err := r.dps.PutEnrollment(ctx, e, "*"); err != nil {
		t.Fatal(err)
	}
	var held struct {
		OperationID string `json:"operationId"`
		Status      string `json:"status"`
	}
	if code := r.api("POST", "requests", `{"intent":"re-enrolled","registrationId":"`+reenrolled+`","reason":"new symmetric keys issued, ticket 77","dryRun":false}`, &held); code != http.StatusAccepted || held.Status != string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("re-enrolled: %d %+v; want held for approval", code, held)
	}

	if err := r.emu.AddFault(emulator.Fault{Op: "hub.devices.put", Status: 400, Count: 1}); err != nil {
		t.Fatal(err)
	}
	run1 := r.cleanupRun()
	r.emu.ClearFaults()
	var first string
	for _, f := range r.findings(run1, cleanup.PassDrift) {
		switch f.RegistrationID {
		case refused:
			first = f.OperationID
			if f.OperationStatus != deprovision.StatusFailed {
				t.Errorf("the refused re-revocation: %+v", f)
			}
		case reenrolled:
			if !strings.Contains(f.Action, "re-enrollment awaiting approval") {
				t.Errorf("the re-enrolled device: %+v; want left alone", f)
			}
		}
	}
	if first == "" {
		t.Fatal("no drift finding of the refused re-revocation")
	}
	if e, err := r.dps.GetEnrollment(ctx, reenrolled); err != nil || !e.Enabled {
		t.Fatalf("the re-enrolled device's enrollment: %+v %v; want left enabled", e, err)
	}
	groups := r.findings(run1, cleanup.PassDriftGroups)
	if len(groups) == 0 || groups[0].Kind != "group-enabled" || groups[0].Action != "revoked again" || groups[0].OperationID == "" {
		t.Fatalf("group drift: %+v", groups)
	}
	if op := r.awaitGroupWork(groups[0].OperationID); op.Request.Source != cleanup.Source || op.Request.Intent != deprovision.IntentGroupCompromised || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("the group's revocation again: %+v", op)
	}
	if g, _ := r.dps.GetGroup(ctx, "gc-g1"); g.Enabled {
		t.Fatal("the re-enabled group was not disabled again")
	}
	if subjects := strings.Join(r.driftEvents(3), " "); !strings.Contains(subjects, "enrollmentGroups/gc-g1") {
		t.Fatalf("DriftDetected subjects %q lack the group", subjects)
	}

	var approved struct {
		Status string `json:"status"`
	}
	if code := r.api("POST", "approvals/"+held.OperationID, `{"approvedBy":"alice","reason":"ticket 77 checked"}`, &approved); code != http.StatusOK || approved.Status != string(deprovision.StatusSucceeded) {
		t.Fatalf("approval: %d %+v", code, approved)
	}
	run2 := r.cleanupRun()
	for _, f := range r.findings(run2, cleanup.PassDrift) {
		if f.RegistrationID == reenrolled {
			t.Errorf("the approved re-enrolled device still drifts: %+v", f)
		}
		if f.RegistrationID == refused && (f.OperationStatus != deprovision.StatusSucceeded || f.OperationID == first) {
			t.Errorf("the second sweep's re-revocation: %+v; want a new, succeeded operation", f)
		}
	}
	if d := r.device(refused); d == nil || d.Enabled {
		t.Fatalf("%s after the second sweep: %+v", refused, d)
	}

	var report cleanup.FindingsReport
	if code := r.api("GET", "findings?pass=drift&since=1h", "", &report); code != http.StatusOK {
		t.Fatalf("GET findings: %d", code)
	}
	if report.Runs != 2 || len(report.Counts) == 0 || report.Total < 3 {
		t.Fatalf("findings report %+v", report)
	}
	for _, c := range report.Counts {
		if c.Pass != cleanup.PassDrift || c.Subjects > c.Findings {
			t.Errorf("count %+v", c)
		}
	}
}

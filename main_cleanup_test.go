package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/azure/journal"
	"dpsdeprov/azure/ratelimit"
	"dpsdeprov/azure/workqueue"
	"dpsdeprov/cleanup"
	"dpsdeprov/config"
	"dpsdeprov/config/configtest"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
	"dpsdeprov/handler"
	"dpsdeprov/internal/testenv"
)

// priorityHubs records the rate-limit priority every hub call carries in its context, and
// fails bulk calls as an unavailable hub does while down is set.
type priorityHubs struct {
	*fake.HubDevices
	mu    sync.Mutex
	calls []string
	down  bool
	// failPuts fails the next single-device writes, as a hub that answers 503 does.
	failPuts int
}

func (h *priorityHubs) record(ctx context.Context, call string) {
	p, ok := ratelimit.PriorityFrom(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !ok {
		h.calls = append(h.calls, call+":none")
		return
	}
	h.calls = append(h.calls, call+":"+p.String())
}

func (h *priorityHubs) taken() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.calls
	h.calls = nil
	return out
}

func (h *priorityHubs) GetDevice(ctx context.Context, hub, id string) (*deprovision.Device, error) {
	h.record(ctx, "get")
	return h.HubDevices.GetDevice(ctx, hub, id)
}

func (h *priorityHubs) PutDevice(ctx context.Context, d *deprovision.Device, etag string) (*deprovision.Device, error) {
	h.record(ctx, "put")
	h.mu.Lock()
	fail := h.failPuts > 0
	if fail {
		h.failPuts--
	}
	h.mu.Unlock()
	if fail {
		return nil, deprovision.Transient(fmt.Errorf("hub answered 503"))
	}
	return h.HubDevices.PutDevice(ctx, d, etag)
}

func (h *priorityHubs) DeleteDevice(ctx context.Context, hub, id, etag string) error {
	h.record(ctx, "delete")
	return h.HubDevices.DeleteDevice(ctx, hub, id, etag)
}

func (h *priorityHubs) Bulk(ctx context.Context, hub string, m deprovision.BulkMode, items []deprovision.BulkItem) ([]deprovision.BulkItemResult, error) {
	h.record(ctx, "bulk")
	h.mu.Lock()
	down := h.down
	h.mu.Unlock()
	if down {
		return nil, deprovision.Transient(fmt.Errorf("hub answered 503"))
	}
	return h.HubDevices.Bulk(ctx, hub, m, items)
}

// One Cleanup run, wired as the app wires it (the poison sweeper over the real queue, the
// engine's SettlePoisoned, the bulk-priority context), against Azurite: group-work batches
// moved to the poison queue unjournaled end as failed members in their operation's progress,
// and a second run finds nothing more to do. Every hub call a cleanup run makes, single-device
// ones included, carries the rate limiter's bulk priority.
func TestCleanupSettlesPoisonedBatchesAtBulkPriority(t *testing.T) {
	ctx := context.Background()
	a := sharedAzurite(t)
	j, hk := openJournals(t, a, "mc")
	queues, err := azqueue.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ToLower(testenv.UniqueName("work"))
	q, err := workqueue.Create(ctx, queues, name)
	if err != nil {
		t.Fatal(err)
	}

	const hub1, n = "hub1.azure-devices.net", 150
	dps := fake.NewDPS()
	hubs := &priorityHubs{HubDevices: fake.NewHubDevices(hub1)}
	dps.AddGroup(deprovision.Group{ID: "g1", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "a2V5")
	for i := range n {
		id := fmt.Sprintf("m-%04d", i)
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1}, "g1")
		hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	dps.AddEnrollment(deprovision.Enrollment{RegistrationID: "cam-1", DeviceID: "cam-1", Attestation: deprovision.AttestationSymmetricKey, Enabled: true})
	dps.AddRegistration(deprovision.Registration{RegistrationID: "cam-1", DeviceID: "cam-1", AssignedHub: hub1, Status: "assigned"}, "")
	hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: "cam-1", Enabled: true, AuthType: "sas"})
	engine := deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j,
		Logger: slog.New(slog.DiscardHandler), Work: q}, deprovision.Config{GroupPageSize: 1000})

	// A compromised device, then re-enabled behind the system's back: the drift pass will
	// check and revoke it again with single-device calls.
	if op, err := engine.Submit(ctx, deprovision.Request{EventID: "e-cam", Source: "/security", Intent: deprovision.IntentCompromised,
		RegistrationID: "cam-1", EventTime: time.Now()}); err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("compromised device: %v %+v", err, op)
	}
	d, err := hubs.HubDevices.GetDevice(ctx, hub1, "cam-1")
	if err != nil {
		t.Fatal(err)
	}
	d.Enabled = true
	if _, err := hubs.HubDevices.PutDevice(ctx, d, "*"); err != nil {
		t.Fatal(err)
	}

	// The group's batches go to the work queue; the host moves both to the poison queue, as
	// after a handler that died during their last delivery: nothing journaled.
	op, err := engine.Submit(ctx, deprovision.Request{EventID: "e-g1", Source: "/security", Intent: deprovision.IntentGroupCompromised,
		EnrollmentGroupID: "g1", EventTime: time.Now()})
	if err != nil || op.Progress.Batches != 2 {
		t.Fatalf("fan-out: %v %+v", err, op)
	}
	raw, pq := queues.NewQueueClient(name), queues.NewQueueClient(name+workqueue.PoisonSuffix)
	if _, err := pq.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := raw.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(2))})
	if err != nil || len(resp.Messages) != 2 {
		t.Fatalf("dequeue: %v %+v", err, resp)
	}
	for _, m := range resp.Messages {
		if _, err := pq.EnqueueMessage(ctx, *m.MessageText, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := raw.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil); err != nil {
			t.Fatal(err)
		}
	}
	stepsBefore, err := j.Steps(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}

	poison := workqueue.NewPoison(queues, name)
	// The app's default leaves messages younger than 10 minutes alone: these are an hour old.
	poison.Now = func() time.Time { return time.Now().Add(time.Hour) }
	runner, err := cleanup.New(cleanup.Deps{Engine: engine, Operations: j, Journal: hk, Seen: hk,
		Poison: newPoisonSweeper(poison, engine), Enrollments: dps, Registrations: dps, Devices: hubs,
		Logger: slog.New(slog.DiscardHandler)}, cleanup.Options{Hubs: []string{hub1}})
	if err != nil {
		t.Fatal(err)
	}
	cleaner := newCleaner(runner)

	// The hub is still down when the sweep settles the batches: their members end failed.
	hubs.taken()
	hubs.mu.Lock()
	hubs.down = true
	hubs.mu.Unlock()
	summary, err := cleaner.Run(ctx, handler.TimerInfo{})
	if err != nil {
		t.Fatalf("first cleanup run: %v (%s)", err, summary)
	}
	if !strings.Contains(summary, "poison: checked 2 poisoned messages, settled 2, kept 0") {
		t.Errorf("first run: %s", summary)
	}
	got, err := j.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != deprovision.StatusFailed || got.Progress.Failed != n || got.Progress.Done != 0 || got.Progress.BatchesDone != 2 {
		t.Fatalf("after the first run the group operation is %s %+v; want failed with %d failed members", got.Status, got.Progress, n)
	}
	stepsAfter, err := j.Steps(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	var failedBatches int
	for _, s := range stepsAfter {
		if s.Kind == deprovision.StepGroupBatch && s.Outcome == deprovision.StepFailed {
			failedBatches++
		}
	}
	if failedBatches != 2 || len(stepsAfter) != len(stepsBefore)+2 {
		t.Fatalf("%d failed batch records, %d steps (%d before); want the 2 batches journaled as failed", failedBatches, len(stepsAfter), len(stepsBefore))
	}
	if d, _ := hubs.Device(hub1, "cam-1"); d.Enabled {
		t.Fatal("the drift pass did not revoke the re-enabled compromised device again")
	}
	calls := hubs.taken()
	var single, bulk int
	for _, c := range calls {
		kind, prio, _ := strings.Cut(c, ":")
		if prio != ratelimit.PriorityBulk.String() {
			t.Errorf("cleanup hub call %s carried priority %s, want bulk", kind, prio)
		}
		if kind == "bulk" {
			bulk++
		} else {
			single++
		}
	}
	if single == 0 || bulk != 2 {
		t.Fatalf("cleanup made %d single-device and %d bulk hub calls (%v); the test needs both kinds", single, bulk, calls)
	}

	// A second run: the poison queue is empty and the operation stays as it ended.
	hubs.mu.Lock()
	hubs.down = false
	hubs.mu.Unlock()
	summary, err = cleaner.Run(ctx, handler.TimerInfo{})
	if err != nil {
		t.Fatalf("second cleanup run: %v (%s)", err, summary)
	}
	if !strings.Contains(summary, "poison: checked 0 poisoned messages, settled 0, kept 0") {
		t.Errorf("second run: %s", summary)
	}
	again, err := j.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Status != got.Status || fmt.Sprint(again.Progress) != fmt.Sprint(got.Progress) {
		t.Fatalf("the second run changed the operation: %s %+v, was %s %+v", again.Status, again.Progress, got.Status, got.Progress)
	}
	if steps, err := j.Steps(ctx, op.ID); err != nil || len(steps) != len(stepsAfter) {
		t.Fatalf("the second run journaled more steps: %d, was %d (%v)", len(steps), len(stepsAfter), err)
	}
	for _, c := range hubs.taken() {
		if strings.HasPrefix(c, "bulk:") {
			t.Fatalf("the second run made a bulk hub call: nothing was left to settle")
		}
	}
}

// Issue 19, case 11, as the app wires it: the timer's run is bulk work, but an operation it
// resumes runs at its intent's priority, so a compromised device left half done by a hub
// outage is revoked in the rate limiter's high lane, not behind group work.
func TestResumedCompromisedOperationsRunAtTheirIntentsPriority(t *testing.T) {
	ctx := context.Background()
	a := sharedAzurite(t)
	j, hk := openJournals(t, a, "mp")
	const hub1 = "hub1.azure-devices.net"
	dps := fake.NewDPS()
	hubs := &priorityHubs{HubDevices: fake.NewHubDevices(hub1)}
	for _, id := range []string{"cam-1", "box-1"} {
		dps.AddEnrollment(deprovision.Enrollment{RegistrationID: id, DeviceID: id, Attestation: deprovision.AttestationSymmetricKey, Enabled: true})
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: hub1, Status: "assigned"}, "")
		hubs.AddDevice(deprovision.Device{Hub: hub1, DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	engine := deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j,
		Logger: slog.New(slog.DiscardHandler)}, deprovision.Config{})
	hubs.failPuts = 2
	for id, in := range map[string]deprovision.Intent{"cam-1": deprovision.IntentCompromised, "box-1": deprovision.IntentSold} {
		req := deprovision.Request{EventID: "e-" + id, Source: "/security", Intent: in, RegistrationID: id, EventTime: time.Now()}
		if in == deprovision.IntentSold {
			req.Action = deprovision.ActionDisable
		}
		if op, err := engine.Submit(ctx, req); !deprovision.IsTransient(err) || op.Status.Terminal() {
			t.Fatalf("%s: want the hub outage to leave it open: %v %+v", id, err, op)
		}
	}
	runner, err := cleanup.New(cleanup.Deps{Engine: engine, Operations: j, DeviceJournal: j, Journal: hk, Ledger: hk, Seen: hk,
		Enrollments: dps, Registrations: dps, Devices: hubs, ResumeContext: intentPriority, Logger: slog.New(slog.DiscardHandler)},
		cleanup.Options{ResumeAfter: time.Nanosecond, Hubs: []string{hub1}})
	if err != nil {
		t.Fatal(err)
	}
	hubs.taken()
	if _, err := newCleaner(runner).Run(ctx, handler.TimerInfo{}); err != nil {
		t.Fatal(err)
	}
	puts := map[string]bool{}
	for _, c := range hubs.taken() {
		if strings.HasPrefix(c, "put:") {
			puts[c] = true
		}
	}
	if !puts["put:high"] || !puts["put:bulk"] || len(puts) != 2 {
		t.Fatalf("resumed writes ran at %v; want the compromised device's high and the sold one's bulk", puts)
	}
	for _, id := range []string{"cam-1", "box-1"} {
		if d, _ := hubs.Device(hub1, id); d.Enabled {
			t.Fatalf("%s was not finished by the resume", id)
		}
	}
}

// config is a leaf and names the cleanup's passes itself (for their on/off settings): the
// names must be the cleanup's, and the settings must reach the cleanup's options.
func TestCleanupSettingsReachTheCleanup(t *testing.T) {
	if !slices.Equal(config.CleanupPasses, cleanup.Passes) {
		t.Fatalf("config names the passes %v, the cleanup runs %v", config.CleanupPasses, cleanup.Passes)
	}
	if config.MinCleanupStaleAfter != cleanup.MinStaleAfter {
		t.Fatalf("minimum stale period: config %s, cleanup %s", config.MinCleanupStaleAfter, cleanup.MinStaleAfter)
	}
	env := configtest.Valid()
	env[config.SettingDryRun] = "true"
	env[config.SettingCleanupPass(cleanup.PassOrphans)] = "false"
	env[config.SettingCleanupStaleDayPercent] = "2"
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	s, err := loadSettings(environ)
	if err != nil {
		t.Fatal(err)
	}
	o := s.cleanup
	if !o.DryRun || !o.Off[cleanup.PassOrphans] || o.Off[cleanup.PassDrift] || o.StaleDayShare != 0.02 || o.MaxDestructivePerHour != 50 || len(o.Hubs) != 2 {
		t.Fatalf("cleanup options %+v", o)
	}
}

// openJournals opens the journal and the Cleanup's housekeeping tables on a, under a fresh
// table prefix starting with prefix.
func openJournals(t *testing.T, a *testenv.Azurite, prefix string) (*journal.Journal, *journal.Housekeeping) {
	t.Helper()
	tables, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	o := journal.Options{TablePrefix: testenv.UniqueName(prefix)}
	j, err := journal.New(context.Background(), tables, o)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := journal.NewHousekeeping(context.Background(), tables, o)
	if err != nil {
		t.Fatal(err)
	}
	return j, hk
}

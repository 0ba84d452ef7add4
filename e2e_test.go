package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/apptest"
	"dpsdeprov/internal/testenv"
)

// topic stands in for the Event Grid topic that receives outcome events: Event Grid cannot run
// here, so a TLS server checks what the topic checks (key, content type) and keeps the events.
type topic struct {
	key    string
	srv    *httptest.Server
	caFile string
	mu     sync.Mutex
	events []map[string]any
}

func newTopic(t *testing.T) *topic {
	tp := &topic{key: "outcome-topic-key"}
	tp.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("aeg-sas-key") != tp.key || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/cloudevents-batch+json") {
			http.Error(w, "unauthorized or wrong content type", http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var batch []map[string]any
		if err := json.Unmarshal(b, &batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tp.mu.Lock()
		tp.events = append(tp.events, batch...)
		tp.mu.Unlock()
	}))
	t.Cleanup(tp.srv.Close)
	tp.caFile = writePEM(t, tp.srv.Certificate().Raw)
	return tp
}

// waitFor returns the outcome event about operation opID, waiting for the background publish.
func (tp *topic) waitFor(t *testing.T, opID string) map[string]any {
	t.Helper()
	var found map[string]any
	testenv.Eventually(t, "the outcome event of operation "+opID, func() bool {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		for _, ev := range tp.events {
			if d, ok := ev["data"].(map[string]any); ok && d["operationId"] == opID {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// rig is the handler binary over the real engine, a journal in Azurite and an emulated DPS
// with two hubs whose devices were seeded as members of a symmetric-key group.
type rig struct {
	app     *proc
	emu     *emulator.Emulator
	topic   *topic
	journal deprovision.Journal
	dps     *dps.Client
	hubs    map[string]*iothub.Client
	prefix  string
}

func newRig(t *testing.T, devices int, extra map[string]string) *rig {
	t.Helper()
	az := sharedAzurite(t)
	emu := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	r := &rig{emu: emu, topic: newTopic(t), prefix: testenv.UniqueName("dev"), hubs: map[string]*iothub.Client{}}
	if _, err := emu.Seed(emulator.SeedSpec{Prefix: r.prefix, Registrations: devices}); err != nil {
		t.Fatal(err)
	}
	table := testenv.UniqueName("journal")
	info := emu.Info()
	settings := apptest.Settings(az, info, table)
	maps.Copy(settings, map[string]string{
		"CLEANUP_SCHEDULE":       "0 */5 * * * *",
		"OUTCOME_TOPIC_ENDPOINT": r.topic.srv.URL + "/api/events",
		"OUTCOME_TOPIC_KEY":      "outcome-topic-key",
		"OUTCOME_TOPIC_CA_FILE":  r.topic.caFile,
		"OUTCOME_SOURCE":         "/test/dpsdeprov",
		"LOG_LEVEL":              "debug",
	})
	for k, v := range extra {
		settings[k] = v
	}
	r.app = startHandler(t, settings)

	opts := azcore.ClientOptions{Transport: testenv.EmulatorHTTPClient(emu)}
	var err error
	if r.dps, err = dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: opts}); err != nil {
		t.Fatal(err)
	}
	for _, h := range info.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: opts})
		if err != nil {
			t.Fatal(err)
		}
		r.hubs[strings.ToLower(h.Host)] = c
	}
	svc, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.journal, err = journal.New(context.Background(), svc, journal.Options{TablePrefix: table}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) device(i int) string { return fmt.Sprintf("%s-g0-d%d", r.prefix, i) }

// hubDevice reads a device's identity from the hub DPS assigned it to.
func (r *rig) hubDevice(t *testing.T, rid string) (hub string, d iothub.Device) {
	t.Helper()
	ctx := context.Background()
	reg, err := r.dps.GetRegistrationState(ctx, rid, nil)
	if err != nil {
		t.Fatalf("registration %s: %v", rid, err)
	}
	hub = strings.ToLower(reg.AssignedHub)
	got, err := r.hubs[hub].GetDevice(ctx, reg.DeviceID, nil)
	if err != nil {
		t.Fatalf("device %s in %s: %v", rid, hub, err)
	}
	return hub, got.Device
}

func (r *rig) operation(t *testing.T, source, eventID string) (*deprovision.Operation, []deprovision.StepRecord) {
	t.Helper()
	id := deprovision.OperationID(source, eventID)
	op, err := r.journal.GetOperation(context.Background(), id)
	if err != nil {
		t.Fatalf("journal has no operation %s for %s/%s: %v", id, source, eventID, err)
	}
	steps, err := r.journal.Steps(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return op, steps
}

const egTopic = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventGrid/topics/security"

// egEvent is the reference's Event Grid envelope for one device and event id, timed now.
func egEvent(t *testing.T, rid, eventID string) []byte {
	return fixture(t, "eventgrid.json", "sensor-042", rid, "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", eventID,
		"2024-05-01T12:00:00.1234567Z", time.Now().UTC().Format(time.RFC3339Nano))
}

func TestDeviceEventsEndToEnd(t *testing.T) {
	r := newRig(t, 4, nil)

	t.Run("Event Grid schema", func(t *testing.T) {
		rid := r.device(0)
		status, res := r.app.invoke(t, "DeviceEvents", egEvent(t, rid, "eg-"+rid))
		if status != 200 {
			t.Fatalf("status %d, logs %v", status, res.Logs)
		}
		op, steps := r.operation(t, egTopic, "eg-"+rid)
		if op.Status != deprovision.StatusSucceeded || op.Request.Intent != deprovision.IntentCompromised || len(steps) == 0 {
			t.Fatalf("operation %s %s (%s), %d steps", op.ID, op.Status, op.Reason, len(steps))
		}
		if _, d := r.hubDevice(t, rid); d.Status != "disabled" {
			t.Fatalf("device %s is %s", rid, d.Status)
		}
		if len(res.Logs) == 0 || !strings.Contains(strings.Join(res.Logs, "\n"), op.ID) {
			t.Fatalf("Logs %v do not name the operation", res.Logs)
		}
		ev := r.topic.waitFor(t, op.ID)
		if ev["type"] != "Deprovisioning.Completed" || ev["source"] != "/test/dpsdeprov" || ev["subject"] != "devices/"+rid {
			t.Fatalf("outcome event %v", ev)
		}
	})

	t.Run("CloudEvents", func(t *testing.T) {
		rid := r.device(1)
		body := fixture(t, "cloudevent.json", "sensor-042", rid, "b0e7a1f2-5c3d-4e6f-8a9b-0c1d2e3f4a5b", "ce-"+rid,
			"2024-05-01T12:00:00.1234567Z", time.Now().UTC().Format(time.RFC3339Nano))
		if status, res := r.app.invoke(t, "DeviceEvents", body); status != 200 {
			t.Fatalf("status %d, logs %v", status, res.Logs)
		}
		op, _ := r.operation(t, "/assets/inventory", "ce-"+rid)
		if op.Status != deprovision.StatusSucceeded || op.Request.Intent != deprovision.IntentStolen {
			t.Fatalf("operation %s %s (%s)", op.ID, op.Status, op.Reason)
		}
		if _, d := r.hubDevice(t, rid); d.Status != "disabled" {
			t.Fatalf("device %s is %s", rid, d.Status)
		}
	})

	t.Run("rejected event is journaled and answered 2xx", func(t *testing.T) {
		body := []byte(`{"Data":{"event":{"specversion":"1.0","type":"device-exploded","source":"/assets/inventory","id":"bad-1","data":{"registrationId":"x"}}},"Metadata":{"sys":{"MethodName":"DeviceEvents"}}}`)
		if status, res := r.app.invoke(t, "DeviceEvents", body); status != 200 {
			t.Fatalf("status %d, logs %v", status, res.Logs)
		}
		op, _ := r.operation(t, "/assets/inventory", "bad-1")
		if op.Status != deprovision.StatusRejected || !strings.Contains(op.Reason, "device-exploded") {
			t.Fatalf("operation %s %s (%s)", op.ID, op.Status, op.Reason)
		}
		if ev := r.topic.waitFor(t, op.ID); ev["type"] != "Deprovisioning.Rejected" {
			t.Fatalf("outcome event %v", ev)
		}
	})

	t.Run("queue message, double-encoded", func(t *testing.T) {
		rid := r.device(2)
		hub, _ := r.hubDevice(t, rid)
		msg, _ := json.Marshal(map[string]any{"operationId": "op-queue-test", "hub": hub, "action": "disable", "statusReason": "group work test",
			"members": []map[string]string{{"registrationId": rid, "deviceId": rid}}})
		once, _ := json.Marshal(string(msg))   // the message text as a JSON string
		twice, _ := json.Marshal(string(once)) // and the host's JsonConvert.SerializeObject of it
		body := fmt.Sprintf(`{"Data":{"message":%s},"Metadata":{"DequeueCount":"1","ExpirationTime":"2024-05-08T12:00:00+00:00","Id":"\"a0004923-f050-417a-9742-6d7c7b984134\"","InsertionTime":"2024-05-01T12:00:00+00:00","NextVisibleTime":"2024-05-01T12:10:00+00:00","PopReceipt":"\"AgAAAAMAAAAAAAAA8d5gQex+2AE=\"","operationId":"\"op-queue-test\"","hub":%q,"sys":{"MethodName":"GroupWork","UtcNow":"2024-05-01T12:00:00.1974545Z","RandGuid":"d9ba2785-ee1a-4260-a83b-f57cb54b969e"}}}`, twice, `"`+hub+`"`)
		if status, res := r.app.invoke(t, "GroupWork", []byte(body)); status != 200 {
			t.Fatalf("status %d, logs %v", status, res.Logs)
		}
		if _, d := r.hubDevice(t, rid); d.Status != "disabled" {
			t.Fatalf("device %s is %s", rid, d.Status)
		}
	})

	t.Run("timer", func(t *testing.T) {
		status, res := r.app.invoke(t, "Cleanup", fixture(t, "timer.json"))
		if status != 200 || !strings.Contains(strings.Join(res.Logs, " "), "resumed") {
			t.Fatalf("status %d, logs %v", status, res.Logs)
		}
	})

	t.Run("HTTP", func(t *testing.T) {
		rid := r.device(3)
		status, res := r.app.invoke(t, "Operations", fixture(t, "http-post.json", "sensor-042", rid))
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		code, body := res.res(t)
		if code != 200 || body["status"] != "planned" || body["dryRun"] != true {
			t.Fatalf("POST res %d %v", code, body)
		}
		if _, d := r.hubDevice(t, rid); d.Status != "enabled" {
			t.Fatalf("a dry run changed device %s to %s", rid, d.Status)
		}
		opID := body["operationId"].(string)
		_, res = r.app.invoke(t, "Operations", fixture(t, "http-get.json", "OPID", opID))
		code, body = res.res(t)
		if code != 200 || body["operationId"] != opID || body["plan"] == nil {
			t.Fatalf("GET operation res %d %v", code, body)
		}
		get := fmt.Sprintf(`{"Data":{"req":{"Url":"http://localhost:7071/api/deprovision?device=%s","Method":"GET","Query":{"device":%q},"Headers":{},"Identities":[]}},"Metadata":{}}`, r.device(0), r.device(0))
		_, res = r.app.invoke(t, "Operations", []byte(get))
		code, body = res.res(t)
		if code != 200 || body["state"] == nil || len(body["operations"].([]any)) == 0 {
			t.Fatalf("GET device res %d %v", code, body)
		}
	})
}

// A batch of events for different devices, delivered concurrently as the host delivers a
// batched POST, all end correctly.
func TestConcurrentEventsEndToEnd(t *testing.T) {
	const n = 8
	r := newRig(t, n, nil)
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = r.app.invoke(t, "DeviceEvents", egEvent(t, r.device(i), "batch-"+r.device(i)))
		}()
	}
	wg.Wait()
	for i := range n {
		rid := r.device(i)
		if statuses[i] != 200 {
			t.Errorf("event for %s answered %d", rid, statuses[i])
			continue
		}
		op, _ := r.operation(t, egTopic, "batch-"+rid)
		if op.Status != deprovision.StatusSucceeded {
			t.Errorf("operation for %s: %s (%s)", rid, op.Status, op.Reason)
		}
		if _, d := r.hubDevice(t, rid); d.Status != "disabled" {
			t.Errorf("device %s is %s", rid, d.Status)
		}
	}
}

// A transient fault answers non-2xx (Event Grid redelivers); the redelivery resumes the
// operation without repeating the steps already done.
func TestTransientFaultThenRedelivery(t *testing.T) {
	r := newRig(t, 1, nil)
	rid := r.device(0)
	if err := r.emu.AddFault(emulator.Fault{Op: "hub.devices.put", Status: 503, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	body := egEvent(t, rid, "fault-"+rid)
	status, _ := r.app.invoke(t, "DeviceEvents", body)
	if status < 300 {
		t.Fatalf("answered %d while the hub failed: Event Grid would not redeliver", status)
	}
	op, steps := r.operation(t, egTopic, "fault-"+rid)
	if op.Status.Terminal() {
		t.Fatalf("operation ended %s (%s) on a transient fault", op.Status, op.Reason)
	}
	dpsDone := 0
	for _, s := range steps {
		if s.Kind.DPSStep() && (s.Outcome == deprovision.StepDone || s.Outcome == deprovision.StepNoChange) {
			dpsDone++
		}
	}
	if dpsDone == 0 {
		t.Fatalf("no DPS step done before the hub fault: %+v", steps)
	}
	writes := r.emu.Stats().Operations["dps.enrollments.put"].Statuses
	r.emu.ClearFaults()

	// Event Grid redelivers the same event.
	if status, res := r.app.invoke(t, "DeviceEvents", body); status != 200 {
		t.Fatalf("redelivery answered %d, logs %v", status, res.Logs)
	}
	op, _ = r.operation(t, egTopic, "fault-"+rid)
	if op.Status != deprovision.StatusSucceeded {
		t.Fatalf("after redelivery: %s (%s)", op.Status, op.Reason)
	}
	if _, d := r.hubDevice(t, rid); d.Status != "disabled" {
		t.Fatalf("device %s is %s", rid, d.Status)
	}
	after := r.emu.Stats().Operations["dps.enrollments.put"].Statuses
	if fmt.Sprint(after) != fmt.Sprint(writes) {
		t.Fatalf("the redelivery wrote DPS again: before %v, after %v", writes, after)
	}
}

// An outcome event the topic refuses is journaled on the operation; the operation itself
// still succeeds.
func TestRefusedOutcomeIsJournaled(t *testing.T) {
	r := newRig(t, 1, map[string]string{"OUTCOME_TOPIC_KEY": "a-wrong-key"})
	rid := r.device(0)
	if status, res := r.app.invoke(t, "DeviceEvents", egEvent(t, rid, "outcome-"+rid)); status != 200 {
		t.Fatalf("status %d, logs %v", status, res.Logs)
	}
	id := deprovision.OperationID(egTopic, "outcome-"+rid)
	testenv.Eventually(t, "the journaled publish failure of "+id, func() bool {
		op, steps := r.operation(t, egTopic, "outcome-"+rid)
		if op.Status != deprovision.StatusSucceeded {
			t.Fatalf("operation %s: %s (%s)", id, op.Status, op.Reason)
		}
		for _, s := range steps {
			if s.Kind == "outcome.publish" {
				if s.Outcome != deprovision.StepFailed || s.HTTPStatus != http.StatusUnauthorized || strings.Contains(s.Error, "a-wrong-key") {
					t.Fatalf("publish record %+v", s)
				}
				return true
			}
		}
		return false
	})
}

// The Cleanup timer resumes an operation that a transient fault stopped and that Event Grid
// did not redeliver.
func TestCleanupResumesStoppedOperation(t *testing.T) {
	r := newRig(t, 1, map[string]string{"CLEANUP_RESUME_AFTER": "1ns"})
	rid := r.device(0)
	if err := r.emu.AddFault(emulator.Fault{Op: "hub.devices.put", Status: 503, Count: 1000}); err != nil {
		t.Fatal(err)
	}
	if status, _ := r.app.invoke(t, "DeviceEvents", egEvent(t, rid, "stopped-"+rid)); status < 300 {
		t.Fatalf("answered %d while the hub failed", status)
	}
	r.emu.ClearFaults()
	status, res := r.app.invoke(t, "Cleanup", fixture(t, "timer.json"))
	if status != 200 || !strings.Contains(strings.Join(res.Logs, " "), "resumed 1 ") {
		t.Fatalf("status %d, logs %v", status, res.Logs)
	}
	op, _ := r.operation(t, egTopic, "stopped-"+rid)
	if op.Status != deprovision.StatusSucceeded {
		t.Fatalf("after cleanup: %s (%s)", op.Status, op.Reason)
	}
	if _, d := r.hubDevice(t, rid); d.Status != "disabled" {
		t.Fatalf("device %s is %s", rid, d.Status)
	}
}

package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

type recordingLifecycle struct {
	mu   sync.Mutex
	got  []cleanup.LifecycleEvent
	fail error
}

func (r *recordingLifecycle) Record(_ context.Context, ev cleanup.LifecycleEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, ev)
	return nil
}

func eventInvocation(t *testing.T, ev string) []byte {
	t.Helper()
	if !json.Valid([]byte(ev)) {
		t.Fatalf("test event is not JSON: %s", ev)
	}
	return []byte(`{"Data":{"event":` + ev + `},"Metadata":{"sys":{"MethodName":"DeviceEvents"}}}`)
}

const hubTopic = "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/rg/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/Contoso-Hub"

func TestLifecycleEventsAreRecordedNotSubmitted(t *testing.T) {
	cases := []struct {
		name, event string
		want        cleanup.LifecycleEvent
	}{
		{"connected, Event Grid schema", `{"id":"f6bbf8f4-d365-520d-a878-17bf7238abd8","topic":"` + hubTopic + `","subject":"devices/sensor-042","eventType":"Microsoft.Devices.DeviceConnected","eventTime":"2024-05-01T11:58:00.000Z","data":{"deviceConnectionStateEventInfo":{"sequenceNumber":"000000000000000001D4132452F67CE200000002000000000000000000000001"},"hubName":"Contoso-Hub","deviceId":"sensor-042"},"dataVersion":"","metadataVersion":"1"}`,
			cleanup.LifecycleEvent{Kind: cleanup.LifecycleConnected, Hub: "contoso-hub", DeviceID: "sensor-042"}},
		{"deleted, CloudEvents", `{"specversion":"1.0","id":"d-1","source":"` + hubTopic + `","type":"Microsoft.Devices.DeviceDeleted","subject":"devices/Dev?1","time":"2024-05-01T11:58:00Z","data":{"twin":{"deviceId":"Dev?1"},"hubName":"contoso-hub","deviceId":"Dev?1"}}`,
			cleanup.LifecycleEvent{Kind: cleanup.LifecycleDeleted, Hub: "contoso-hub", DeviceID: "Dev?1"}},
		{"telemetry with a base64 body", `{"specversion":"1.0","id":"t-1","source":"` + hubTopic + `","type":"microsoft.devices.devicetelemetry","time":"2024-05-01T11:58:00Z","data":{"body":"eyJ0IjoxfQ==","properties":{},"systemProperties":{"iothub-connection-device-id":"meter-7","iothub-enqueuedtime":"2024-05-01T11:58:00Z"}}}`,
			cleanup.LifecycleEvent{Kind: cleanup.LifecycleTelemetry, Hub: "contoso-hub", DeviceID: "meter-7"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eng := newFakeEngine()
			lc := &recordingLifecycle{}
			srv := newTestServer(t, eng, Options{Lifecycle: lc})
			status, r := post(t, srv, FunctionDeviceEvents, eventInvocation(t, c.event))
			if status != 200 {
				t.Fatalf("status %d, logs %v", status, r.Logs)
			}
			if len(eng.submitted) != 0 || len(eng.rejected) != 0 {
				t.Fatalf("a lifecycle event reached the engine: submitted %v, rejected %v", eng.submitted, eng.rejected)
			}
			if len(lc.got) != 1 {
				t.Fatalf("recorded %d events", len(lc.got))
			}
			got := lc.got[0]
			if got.Kind != c.want.Kind || got.Hub != c.want.Hub || got.DeviceID != c.want.DeviceID || !got.Time.Equal(time.Date(2024, 5, 1, 11, 58, 0, 0, time.UTC)) {
				t.Fatalf("recorded %+v, want %+v at 11:58", got, c.want)
			}
		})
	}
}

func TestLifecycleEventsMalformedAreRejectedOthersAcknowledged(t *testing.T) {
	eng := newFakeEngine()
	lc := &recordingLifecycle{}
	srv := newTestServer(t, eng, Options{Lifecycle: lc})
	bad := `{"specversion":"1.0","id":"bad-1","source":"` + hubTopic + `","type":"Microsoft.Devices.DeviceCreated","time":"2024-05-01T11:58:00Z","data":{"hubName":"contoso-hub"}}`
	if status, r := post(t, srv, FunctionDeviceEvents, eventInvocation(t, bad)); status != 200 {
		t.Fatalf("malformed: status %d %v", status, r.Logs)
	}
	if reason := eng.rejected["bad-1"]; !strings.Contains(reason, "deviceId") {
		t.Fatalf("malformed lifecycle event: rejected with %q; want the reason to name deviceId", reason)
	}
	other := `{"specversion":"1.0","id":"o-1","source":"` + hubTopic + `","type":"Microsoft.Devices.DeviceTwinChanged","time":"2024-05-01T11:58:00Z","data":{"deviceId":"x"}}`
	if status, _ := post(t, srv, FunctionDeviceEvents, eventInvocation(t, other)); status != 200 {
		t.Fatalf("unused IoT Hub event type: status %d", status)
	}
	if _, ok := eng.rejected["o-1"]; ok || len(eng.submitted) != 0 || len(lc.got) != 0 {
		t.Fatalf("an unused IoT Hub event type was acted on: rejected %v submitted %v recorded %v", eng.rejected, eng.submitted, lc.got)
	}
	lc.fail = deprovision.Transient(errors.New("table unavailable"))
	good := `{"specversion":"1.0","id":"g-1","source":"` + hubTopic + `","type":"Microsoft.Devices.DeviceDisconnected","time":"2024-05-01T11:58:00Z","data":{"hubName":"contoso-hub","deviceId":"x","deviceConnectionStateEventInfo":{"sequenceNumber":"1"}}}`
	if status, _ := post(t, srv, FunctionDeviceEvents, eventInvocation(t, good)); status == 200 {
		t.Fatal("a transient store failure must fail the invocation, so Event Grid delivers again")
	}
}

type fakeRunner struct {
	mu   sync.Mutex
	pass string
	o    cleanup.Overrides
	q    cleanup.FindingsQuery
}

func (f *fakeRunner) Run(context.Context) (cleanup.Report, error) {
	return cleanup.Report{RunID: "r"}, nil
}

func (f *fakeRunner) RunPass(_ context.Context, name string, o cleanup.Overrides) (cleanup.Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name != cleanup.PassDrift {
		return cleanup.Report{}, fmt.Errorf("%w: %q", cleanup.ErrUnknownPass, name)
	}
	f.pass, f.o = name, o
	return cleanup.Report{RunID: "run-1", Budget: 5, Passes: []cleanup.PassReport{{Pass: name, Ran: true, Checked: 2, Findings: 1}}}, nil
}

func (f *fakeRunner) Findings(context.Context, string) iter.Seq2[*deprovision.Finding, error] {
	return func(yield func(*deprovision.Finding, error) bool) {
		yield(&deprovision.Finding{ID: "drift/device-enabled/a", Kind: "device-enabled", RegistrationID: "a"}, nil)
	}
}

func (f *fakeRunner) FindingsReport(_ context.Context, q cleanup.FindingsQuery) (cleanup.FindingsReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.q = q
	return cleanup.FindingsReport{Since: q.Since, Runs: 2, Total: 3, Counts: []cleanup.FindingCount{{Pass: "drift", Kind: "device-enabled", Findings: 3, Subjects: 1}},
		Findings: []deprovision.Finding{{ID: "drift/device-enabled/a", Kind: "device-enabled", RegistrationID: "a"}}}, nil
}

func TestOperationsRunsOneCleanupPassByHand(t *testing.T) {
	fr := &fakeRunner{}
	srv := newTestServer(t, newFakeEngine(), Options{Cleaner: &Cleanup{Runner: fr}})
	req := func(pass, body string) (int, map[string]any) {
		b, _ := json.Marshal(body)
		inv := `{"Data":{"req":{"Url":"http://x/api/deprovision/cleanup/` + pass + `","Method":"POST","Query":{},"Headers":{},"Params":{"kind":"cleanup","id":"` + pass + `"},"Body":` + string(b) + `}},"Metadata":{}}`
		_, r := post(t, srv, FunctionOperations, []byte(inv))
		return httpRes(t, r)
	}
	code, body := req("drift", "")
	if code != 200 || fr.o.DryRun == nil || !*fr.o.DryRun {
		t.Fatalf("by default a pass run by hand is a dry run: %d %v %+v", code, body, fr.o)
	}
	if fs, _ := body["findings"].([]any); len(fs) != 1 || body["runId"] != "run-1" {
		t.Fatalf("answer %v: want the run and its findings", body)
	}
	code, _ = req("drift", `{"dryRun":false,"budget":7}`)
	if code != 200 || *fr.o.DryRun || fr.o.Budget == nil || *fr.o.Budget != 7 {
		t.Fatalf("dryRun false, budget 7: %d %+v", code, fr.o)
	}
	if code, body = req("nope", ""); code != 404 || !strings.Contains(body["error"].(string), "nope") {
		t.Fatalf("unknown pass: %d %v", code, body)
	}
	if code, body = req("drift", `{"budget":-1}`); code != 400 {
		t.Fatalf("negative budget: %d %v", code, body)
	}
}

package handler

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"dpsdeprov/cleanup"
)

// GET deprovision/findings answers the cleanup's findings with their fleet-wide counts; the
// finding kind is read from the query (the route's own {kind} is "findings"), and a bad
// filter is a 400 that names it.
func TestOperationsServesTheCleanupFindings(t *testing.T) {
	fr := &fakeRunner{}
	eng := newFakeEngine()
	srv := newTestServer(t, eng, Options{Cleaner: &Cleanup{Runner: fr}})
	get := func(query map[string]string) (int, map[string]any) {
		q, _ := json.Marshal(query)
		inv := `{"Data":{"req":{"Url":"http://x/api/deprovision/findings","Method":"GET","Query":` + string(q) + `,"Headers":{},"Params":{"kind":"findings"}}},"Metadata":{}}`
		_, r := post(t, srv, FunctionOperations, []byte(inv))
		return httpRes(t, r)
	}
	code, body := get(map[string]string{"pass": "drift", "kind": "device-enabled", "since": "24h", "subject": "a", "limit": "10"})
	if code != 200 {
		t.Fatalf("GET findings: %d %v", code, body)
	}
	counts, _ := body["counts"].([]any)
	if len(counts) != 1 || body["total"] != float64(3) {
		t.Fatalf("answer %v: want the runner's counts", body)
	}
	fr.mu.Lock()
	q := fr.q
	fr.mu.Unlock()
	if q.Pass != "drift" || q.Kind != "device-enabled" || q.Subject != "a" || q.Limit != 10 || q.Since.IsZero() || time.Since(q.Since) < 23*time.Hour {
		t.Fatalf("query passed on: %+v", q)
	}
	for name, query := range map[string]map[string]string{
		"pass":  {"pass": "nope"},
		"since": {"since": "last tuesday"},
		"limit": {"limit": "5000"},
	} {
		if code, body := get(query); code != 400 || !strings.Contains(fmt.Sprint(body["error"]), name) {
			t.Errorf("bad %s: %d %v", name, code, body)
		}
	}
}

// An event of a hub this app does not manage is acknowledged and not recorded.
func TestLifecycleEventsOfAnotherHubAreIgnored(t *testing.T) {
	eng := newFakeEngine()
	lc := &recordingLifecycle{fail: fmt.Errorf("%w: other-hub", cleanup.ErrUnmanagedHub)}
	srv := newTestServer(t, eng, Options{Lifecycle: lc})
	ev := `{"specversion":"1.0","id":"u-1","source":"` + hubTopic + `","type":"Microsoft.Devices.DeviceDisconnected","time":"2024-05-01T11:58:00Z","data":{"hubName":"other-hub","deviceId":"x","deviceConnectionStateEventInfo":{"sequenceNumber":"1"}}}`
	if status, r := post(t, srv, FunctionDeviceEvents, eventInvocation(t, ev)); status != 200 {
		t.Fatalf("an unmanaged hub's event: status %d %v", status, r.Logs)
	}
	if _, ok := eng.rejected["u-1"]; ok || len(eng.submitted) != 0 {
		t.Fatalf("an unmanaged hub's event reached the engine: %v %v", eng.rejected, eng.submitted)
	}
}

package emulator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// TestHubErrorBodiesFollowTheAPIVersion: a 2020-03-13 call gets the legacy body recorded in
// Devices_Lifecycle.json, a 2021-04-12 call the nested one; both carry iothub-errorcode. A
// call without a published api-version is refused.
func TestHubErrorBodiesFollowTheAPIVersion(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	host, tok := sasFor(t, e.Info().Hubs[0].ConnectionString)
	r := c.call("GET", host, "/devices/nope?api-version=2020-03-13", tok, nil)
	wantStatus(t, r, 404)
	var legacy struct{ Message, ExceptionMessage string }
	r.json(t, &legacy)
	if r.header.Get("iothub-errorcode") != "DeviceNotFound" || !strings.HasPrefix(legacy.Message, "ErrorCode:DeviceNotFound;") || !strings.HasPrefix(legacy.ExceptionMessage, "Tracking ID:") {
		t.Fatalf("2020-03-13 error %v %s", r.header, r.body)
	}
	hubErr(t, c.hub(0, "GET", "/devices/nope", nil), 404, "DeviceNotFound") // 2021-04-12: nested
	for _, v := range []string{"", "api-version=latest", "api-version=2021-04"} {
		r := c.call("GET", host, "/devices/nope?"+v, tok, nil)
		hubErr(t, r, 400, "ArgumentInvalid")
	}
	// Every published form is accepted, previews included.
	wantStatus(t, c.call("GET", host, "/devices?api-version=2024-03-31", tok, nil), 200)
	wantStatus(t, c.call("GET", host, "/devices?api-version=2019-07-01-preview", tok, nil), 200)
	dh, dt := sasFor(t, e.Info().DPS.ConnectionString)
	wantStatus(t, c.call("POST", dh, "/enrollments/query?api-version=2019-03-31", dt, map[string]string{"query": "*"}), 200)
	dpsErr(t, c.call("POST", dh, "/enrollments/query", dt, map[string]string{"query": "*"}), 400)
}

// TestHubTwinUpdates: PATCH merges tags and desired properties (null removes, objects merge,
// "$" keys ignored), PUT replaces them, the twin's etag and versions move only on a change,
// and a stale quoted etag is refused.
func TestHubTwinUpdates(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	wantStatus(t, c.hub(0, "PUT", "/devices/tw", map[string]any{}), 200)
	type twin struct {
		Etag       string
		Version    int64
		Tags       map[string]any
		Properties struct{ Desired map[string]any }
	}
	get := func() twin {
		var tw twin
		c.hub(0, "GET", "/twins/tw", nil).json(t, &tw)
		return tw
	}
	t0 := get()
	if t0.Version != 2 || t0.Etag != "AAAAAAAAAAE=" || t0.Properties.Desired["$version"] != float64(1) {
		t.Fatalf("new twin %+v", t0)
	}
	patch := map[string]any{"tags": map[string]any{"site": map[string]any{"city": "Oslo", "floor": 3}},
		"properties": map[string]any{"desired": map[string]any{"interval": 10, "$version": 99, "mode": "eco"}}}
	r := c.hub(0, "PATCH", "/twins/tw", patch, "If-Match", `"`+t0.Etag+`"`)
	wantStatus(t, r, 200)
	if r.header.Get("ETag") != "" {
		t.Fatal("twin answers carry no ETag header")
	}
	var t1 twin
	r.json(t, &t1)
	meta, _ := t1.Properties.Desired["$metadata"].(map[string]any)
	if t1.Version != 3 || t1.Etag == t0.Etag || t1.Properties.Desired["interval"] != float64(10) || t1.Properties.Desired["$version"] != float64(2) ||
		meta["$lastUpdatedVersion"] != float64(2) || meta["interval"] == nil {
		t.Fatalf("patched twin %s", r.body)
	}
	// The old etag is stale now; unquoted it is ignored, as the hub was seen to do.
	hubErr(t, c.hub(0, "PATCH", "/twins/tw", patch, "If-Match", `"`+t0.Etag+`"`), 412, "PreconditionFailed")
	// Merge: a nested key changes, null removes, the rest stays.
	r = c.hub(0, "PATCH", "/twins/tw", map[string]any{"tags": map[string]any{"site": map[string]any{"floor": 4}},
		"properties": map[string]any{"desired": map[string]any{"mode": nil}}}, "If-Match", t0.Etag)
	wantStatus(t, r, 200)
	var t2 twin
	r.json(t, &t2)
	site, _ := t2.Tags["site"].(map[string]any)
	if site["city"] != "Oslo" || site["floor"] != float64(4) || t2.Properties.Desired["mode"] != nil || t2.Properties.Desired["interval"] != float64(10) || t2.Version != 4 {
		t.Fatalf("merged twin %s", r.body)
	}
	// A patch that changes nothing leaves the versions.
	r = c.hub(0, "PATCH", "/twins/tw", map[string]any{"status": "disabled", "properties": map[string]any{"desired": map[string]any{"interval": 10}}}, "If-Match", "*")
	var t3 twin
	r.json(t, &t3)
	if t3.Version != t2.Version || t3.Etag != t2.Etag {
		t.Fatalf("no-op patch moved the twin: %s", r.body)
	}
	// PUT replaces.
	r = c.hub(0, "PUT", "/twins/tw", map[string]any{"tags": map[string]any{"only": true}, "properties": map[string]any{"desired": map[string]any{"x": 1}}}, "If-Match", "*")
	var t4 twin
	r.json(t, &t4)
	if len(t4.Tags) != 1 || t4.Properties.Desired["interval"] != nil || t4.Properties.Desired["x"] != float64(1) {
		t.Fatalf("replaced twin %s", r.body)
	}
	// The device itself did not change.
	var d struct{ Status string }
	c.hub(0, "GET", "/devices/tw", nil).json(t, &d)
	if d.Status != "enabled" {
		t.Fatalf("a twin write changed the device: %+v", d)
	}
	hubErr(t, c.hub(0, "PATCH", "/twins/none", patch, "If-Match", "*"), 404, "DeviceNotFound")
	// Queries see the twin.
	var got []map[string]any
	c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices WHERE tags.only = true"}).json(t, &got)
	if len(got) != 1 {
		t.Fatalf("query by tag %v", got)
	}
}

// TestHubQueryLanguage runs the query forms the official samples and e2e tests send.
func TestHubQueryLanguage(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	for i := range 6 {
		wantStatus(t, c.hub(0, "PUT", fmt.Sprintf("/devices/lang-%d", i), map[string]any{"status": map[bool]string{true: "disabled", false: "enabled"}[i%2 == 0]}), 200)
		wantStatus(t, c.hub(0, "PATCH", fmt.Sprintf("/twins/lang-%d", i), map[string]any{"tags": map[string]any{"n": i, "group": fmt.Sprintf("g%d", i/3)}}, "If-Match", "*"), 200)
	}
	ids := func(q string) ([]string, string) {
		r := c.hub(0, "POST", "/devices/query", map[string]string{"query": q})
		wantStatus(t, r, 200)
		var items []map[string]any
		r.json(t, &items)
		var out []string
		for _, it := range items {
			if id, ok := it["deviceId"].(string); ok {
				out = append(out, id)
			}
		}
		return out, r.header.Get("x-ms-item-type")
	}
	for q, want := range map[string]int{
		"select * from devices": 6,
		"SELECT * FROM devices WHERE deviceId = 'lang-1' OR deviceId = 'lang-2'":       2,
		"SELECT * FROM devices WHERE NOT (status = 'disabled')":                        3,
		"SELECT * FROM devices WHERE tags.n >= 2 AND tags.n < 5":                       3,
		"SELECT * FROM devices WHERE STARTSWITH(deviceId, 'lang-')":                    6,
		"SELECT * FROM devices WHERE ENDSWITH(deviceId, '-5')":                         1,
		"SELECT * FROM devices WHERE is_defined(tags.group) AND tags.group = 'g1'":     3,
		"SELECT * FROM devices WHERE IS_DEFINED(properties.reported.runId)":            0,
		"select * from devices where (tags.n = 0 or tags.n = 5) and status='disabled'": 1,
	} {
		got, typ := ids(q)
		if len(got) != want || typ != "Twin" {
			t.Errorf("%s: %d twins (%s), want %d", q, len(got), typ, want)
		}
	}
	got, typ := ids("SELECT deviceId, tags.group AS g FROM devices WHERE tags.n = 4")
	if len(got) != 1 || typ != "Raw" {
		t.Fatalf("projection %v %s", got, typ)
	}
	r := c.hub(0, "POST", "/devices/query", map[string]string{"query": "select count() AS numberOfDevices from devices where status = 'enabled'"})
	var cnt []map[string]any
	r.json(t, &cnt)
	if len(cnt) != 1 || cnt[0]["numberOfDevices"] != float64(3) || r.header.Get("x-ms-item-type") != "Raw" {
		t.Fatalf("count %s", r.body)
	}
	for _, q := range []string{"SELECT * FROM devices.modules", "SELECT * FROM devices GROUP BY status", "SELECT * FROM devices WHERE LOWER(deviceId) = 'x'", "DELETE FROM devices"} {
		hubErr(t, c.hub(0, "POST", "/devices/query", map[string]string{"query": q}), 400, "ArgumentInvalid")
	}
}

// TestDPSQueryTexts: the query texts official clients send are served; a filter is refused,
// since DPS does not document one.
func TestDPSQueryTexts(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	wantStatus(t, c.dps("PUT", "/enrollmentGroups/qt", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}), 200)
	for _, q := range []string{"*", "SELECT *", "select *", "SELECT * FROM enrollments", "SELECT * FROM enrollmentGroups"} {
		for _, p := range []string{"/enrollments/query", "/enrollmentGroups/query", "/registrations/qt/query"} {
			r := c.dps("POST", p, map[string]string{"query": q})
			wantStatus(t, r, 200)
			if r.header.Get("x-ms-item-type") == "" || r.header.Get("x-ms-max-item-count") != "" {
				t.Fatalf("%s %q: headers %v", p, q, r.header)
			}
		}
	}
	dpsErr(t, c.dps("POST", "/enrollments/query", map[string]string{"query": "SELECT * FROM enrollments WHERE provisioningStatus = 'disabled'"}), 400)
	wantStatus(t, c.dps("POST", "/registrations/qt/query", nil), 200)
}

// TestDPSThrottles: service operations and device registrations have separate per-minute
// budgets; over them the answer is 429 with Retry-After, and nothing is applied.
func TestDPSThrottles(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	wantStatus(t, c.dps("PUT", "/enrollmentGroups/thr", map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}), 200)
	var att struct{ SymmetricKey struct{ PrimaryKey string } }
	c.dps("POST", "/enrollmentGroups/thr/attestationmechanism", nil).json(t, &att)
	// Budgets small enough that no refill comes within the test (one operation per 30 s).
	if err := e.SetDPSThrottle(2, 1); err != nil {
		t.Fatal(err)
	}
	e.ResetStats()
	wantStatus(t, c.dps("GET", "/enrollmentGroups/thr", nil), 200)
	wantStatus(t, c.dps("POST", "/enrollmentGroups/query", map[string]string{"query": "*"}), 200)
	r := c.dps("PUT", "/enrollments/thr-1", symEnrollment("thr-1"))
	dpsErr(t, r, 429)
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Registrations have their own budget: one goes through, the next is refused.
	k1, _ := emulator.DeriveDeviceKey(att.SymmetricKey.PrimaryKey, "thr-dev-1")
	if _, st := registerDevice(t, e, "thr-dev-1", k1, nil); st == nil {
		t.Fatal("the first registration was refused")
	}
	k2, _ := emulator.DeriveDeviceKey(att.SymmetricKey.PrimaryKey, "thr-dev-2")
	r2, st := registerDevice(t, e, "thr-dev-2", k2, nil)
	if st != nil || r2.status != http.StatusTooManyRequests || r2.header.Get("Retry-After") == "" {
		t.Fatalf("the second registration: %d %v %s", r2.status, r2.header, r2.body)
	}
	s := e.Stats().DPS
	if s.Operations != 2 || s.Registrations != 1 || s.Throttled != 2 {
		t.Fatalf("DPS stats %+v", s)
	}
	// Lifted, the refused enrollment was never written.
	if err := e.SetDPSThrottle(0, 0); err != nil {
		t.Fatal(err)
	}
	dpsErr(t, c.dps("GET", "/enrollments/thr-1", nil), 404)
	// A bulk call counts every item.
	if err := e.SetDPSThrottle(5, 0); err != nil {
		t.Fatal(err)
	}
	var items []map[string]any
	for i := range 6 {
		items = append(items, symEnrollment(fmt.Sprintf("thr-b%d", i)))
	}
	wantStatus(t, c.dps("POST", "/enrollments", map[string]any{"mode": "create", "enrollments": items[:5]}), 200)
	dpsErr(t, c.dps("POST", "/enrollments", map[string]any{"mode": "create", "enrollments": items[5:]}), 429)
}

// TestDPSBulkPerCall: with the other reading of the undocumented rule, a bulk call of ten
// items costs one operation.
func TestDPSBulkPerCall(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{DPSBulkPerCall: true})
	c := newClient(t, e)
	if err := e.SetDPSThrottle(2, 0); err != nil {
		t.Fatal(err)
	}
	e.ResetStats()
	for call := range 3 {
		var items []map[string]any
		for i := range 10 {
			items = append(items, symEnrollment(fmt.Sprintf("pc-%d-%d", call, i)))
		}
		r := c.dps("POST", "/enrollments", map[string]any{"mode": "create", "enrollments": items})
		if call < 2 {
			wantStatus(t, r, 200)
		} else {
			dpsErr(t, r, 429)
		}
	}
	if s := e.Stats().DPS; s.Operations != 2 {
		t.Fatalf("two bulk calls of 10 items charged %d operations, want 2", s.Operations)
	}
}

// TestHubThrottleBacklog: with traffic shaping, a call over the budget waits for it and is
// served; one that would wait longer than the backlog holds is answered 429
// ThrottlingBacklogTimeout with Retry-After.
func TestHubThrottleBacklog(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{ThrottlePerMinute: 100, ThrottleBacklog: 5 * time.Second})
	c := newClient(t, e)
	var items []map[string]any
	for i := range 100 {
		items = append(items, map[string]any{"id": fmt.Sprintf("bl-%d", i), "importMode": "create"})
	}
	wantStatus(t, c.hub(0, "POST", "/devices", items), 200) // the whole minute's budget
	// Over the budget by one operation: queued 0.6 s, then served.
	wantStatus(t, c.hub(0, "GET", "/devices/bl-0", nil), 200)
	// Over it by far more than the backlog holds: refused without being applied.
	var more []map[string]any
	for i := range 100 {
		more = append(more, map[string]any{"id": fmt.Sprintf("bl-x%d", i), "importMode": "create"})
	}
	r := c.hub(0, "POST", "/devices", more)
	hubErr(t, r, 429, "ThrottlingBacklogTimeout")
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 5 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Without shaping, the same call is refused at once.
	if err := e.SetThrottleBacklog(0); err != nil {
		t.Fatal(err)
	}
	hubErr(t, c.hub(0, "POST", "/devices", more), 429, "ThrottlingException")
	if err := e.SetThrottle("", 0, 0); err != nil {
		t.Fatal(err)
	}
	hubErr(t, c.hub(0, "GET", "/devices/bl-x0", nil), 404, "DeviceNotFound")
	var st emulator.Stats
	b, _ := json.Marshal(e.Stats())
	_ = json.Unmarshal(b, &st)
	if st.Hubs["hub1"].Throttled != 2 || st.Hubs["hub1"].RegistryOps != 102 {
		t.Fatalf("hub stats %+v", st.Hubs["hub1"])
	}
}

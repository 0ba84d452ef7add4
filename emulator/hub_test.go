package emulator_test

import (
	"fmt"
	"strings"
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func TestHubDeviceETagRules(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	r := c.hub(0, "PUT", "/devices/Dev-1", map[string]any{"deviceId": "Dev-1"})
	wantStatus(t, r, 200)
	var d1 struct {
		Etag, GenerationID, Status string
		Authentication             struct {
			Type         string
			SymmetricKey struct{ PrimaryKey, SecondaryKey string }
		}
	}
	r.json(t, &d1)
	if d1.Etag == "" || strings.HasPrefix(d1.Etag, `"`) || d1.GenerationID == "" || d1.Status != "enabled" || d1.Authentication.Type != "sas" || d1.Authentication.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("created device %s", r.body)
	}
	// Device ids are case-sensitive, and each hub has its own registry.
	hubErr(t, c.hub(0, "GET", "/devices/dev-1", nil), 404, "DeviceNotFound")
	hubErr(t, c.hub(1, "GET", "/devices/Dev-1", nil), 404, "DeviceNotFound")
	wantStatus(t, c.hub(0, "PUT", "/devices/dev-1", map[string]any{"deviceId": "dev-1"}), 200)

	hubErr(t, c.hub(0, "PUT", "/devices/Dev-1", map[string]any{"deviceId": "Dev-1"}), 409, "DeviceAlreadyExists")
	// A real etag must be quoted; unquoted fails like the hub ("Invalid ETag").
	hubErr(t, c.hub(0, "PUT", "/devices/Dev-1", map[string]any{"deviceId": "Dev-1", "status": "disabled"}, "If-Match", d1.Etag), 412, "PreconditionFailed")
	r = c.hub(0, "PUT", "/devices/Dev-1", map[string]any{"deviceId": "Dev-1", "status": "disabled", "statusReason": "lost"}, "If-Match", `"`+d1.Etag+`"`)
	wantStatus(t, r, 200)
	var d2 struct {
		Etag, GenerationID, Status, StatusReason string
		Authentication                           struct{ SymmetricKey struct{ PrimaryKey string } }
	}
	r.json(t, &d2)
	if d2.Etag == d1.Etag || d2.GenerationID != d1.GenerationID || d2.Status != "disabled" || d2.StatusReason != "lost" || d2.Authentication.SymmetricKey.PrimaryKey != d1.Authentication.SymmetricKey.PrimaryKey {
		t.Fatalf("updated device %s", r.body)
	}
	hubErr(t, c.hub(0, "PUT", "/devices/Dev-1", map[string]any{"deviceId": "Dev-1"}, "If-Match", `"`+d1.Etag+`"`), 412, "PreconditionFailed")
	wantStatus(t, c.hub(0, "PUT", "/devices/Dev-1", map[string]any{"deviceId": "Dev-1"}, "If-Match", "*"), 200)
	wantStatus(t, c.hub(0, "PUT", "/devices/Dev-1", map[string]any{"deviceId": "Dev-1"}, "If-Match", `"*"`), 200)
	hubErr(t, c.hub(0, "PUT", "/devices/missing", map[string]any{"deviceId": "missing"}, "If-Match", "*"), 404, "DeviceNotFound")

	// DELETE: stale etag 412, wildcard and quoted wildcard 204, missing 404.
	hubErr(t, c.hub(0, "DELETE", "/devices/Dev-1", nil, "If-Match", `"`+d1.Etag+`"`), 412, "PreconditionFailed")
	wantStatus(t, c.hub(0, "DELETE", "/devices/Dev-1", nil, "If-Match", `"*"`), 204)
	hubErr(t, c.hub(0, "DELETE", "/devices/Dev-1", nil, "If-Match", "*"), 404, "DeviceNotFound")
	wantStatus(t, c.hub(0, "DELETE", "/devices/dev-1", nil, "If-Match", "*"), 204)
	// The twin goes with the device.
	hubErr(t, c.hub(0, "GET", "/twins/dev-1", nil), 404, "DeviceNotFound")
}

func TestHubDeviceValidation(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	for _, tc := range []struct {
		name, id string
		body     map[string]any
	}{
		{"bad char", "a%2Fb", map[string]any{"deviceId": "a/b"}},
		{"too long", strings.Repeat("x", 129), map[string]any{}},
		{"body id differs in case", "abc", map[string]any{"deviceId": "ABC"}},
		{"bad status", "abc", map[string]any{"status": "paused"}},
		{"long reason", "abc", map[string]any{"statusReason": strings.Repeat("r", 129)}},
		{"bad auth type", "abc", map[string]any{"authentication": map[string]any{"type": "password"}}},
		{"selfSigned without thumbprint", "abc", map[string]any{"authentication": map[string]any{"type": "selfSigned"}}},
		{"bad thumbprint", "abc", map[string]any{"authentication": map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": "xyz"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hubErr(t, c.hub(0, "PUT", "/devices/"+tc.id, tc.body), 400, "ArgumentInvalid")
		})
	}
	thumb := strings.Repeat("AB", 20)
	r := c.hub(0, "PUT", "/devices/x509-dev", map[string]any{"authentication": map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": thumb}}})
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), thumb) || !strings.Contains(string(r.body), `"type":"selfSigned"`) {
		t.Fatalf("selfSigned device %s", r.body)
	}
	// Special characters allowed by the hub.
	wantStatus(t, c.hub(0, "PUT", "/devices/a-b:c.d+e_f*g!h(i)j,k=l@m;n$o'p", map[string]any{}), 200)
}

func TestHubBulk(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	var items []map[string]any
	for i := range 100 {
		items = append(items, map[string]any{"id": fmt.Sprintf("b-%03d", i), "importMode": "create"})
	}
	r := c.hub(0, "POST", "/devices", items)
	wantStatus(t, r, 200)
	var res struct {
		IsSuccessful bool
		Errors       []struct{ DeviceID, ErrorCode, ErrorStatus string }
		Warnings     []any
	}
	r.json(t, &res)
	if !res.IsSuccessful || len(res.Errors) != 0 || res.Warnings == nil {
		t.Fatalf("bulk create %s", r.body)
	}
	// Over 100 items, duplicates, unknown modes: the whole call is refused.
	hubErr(t, c.hub(0, "POST", "/devices/", append(items, map[string]any{"id": "b-100", "importMode": "create"})), 400, "TooManyDevices")
	hubErr(t, c.hub(0, "POST", "/devices", []any{map[string]any{"id": "x", "importMode": "create"}, map[string]any{"id": "x", "importMode": "delete"}}), 400, "DeviceDefinedMultipleTimes")
	hubErr(t, c.hub(0, "POST", "/devices", []any{map[string]any{"id": "x", "importMode": "createOrUpdate"}}), 400, "ArgumentInvalid")
	wantStatus(t, c.hub(0, "GET", "/devices/x", nil), 404)

	// Mixed modes, per-item errors, 400 with the result body; good items are applied.
	var dev struct{ Etag string }
	c.hub(0, "GET", "/devices/b-001", nil).json(t, &dev)
	r = c.hub(0, "POST", "/devices", []any{
		map[string]any{"id": "b-000", "importMode": "create"},                                                    // exists
		map[string]any{"id": "b-001", "importMode": "updateIfMatchETag", "eTag": "stale", "status": "disabled"},  // stale
		map[string]any{"id": "b-002", "importMode": "UpdateIfMatchETag", "eTag": dev.Etag, "status": "disabled"}, // wrong etag (b-001's)
		map[string]any{"id": "b-003", "importMode": "Update", "status": "disabled", "statusReason": "bulk"},
		map[string]any{"id": "nope", "importMode": "delete"},
		map[string]any{"id": "b-004", "importMode": "deleteIfMatchETag", "eTag": "stale"},
		map[string]any{"id": "b-005", "importMode": "Delete"},
		map[string]any{"id": "b-006", "importMode": "updateTwin", "tags": map[string]any{"site": "north"}},
		map[string]any{"id": "b-new", "importMode": "create", "status": "disabled"},
	})
	wantStatus(t, r, 400)
	r.json(t, &res)
	codes := map[string]string{}
	for _, er := range res.Errors {
		codes[er.DeviceID] = er.ErrorCode
	}
	want := map[string]string{"b-000": "DeviceAlreadyExists", "b-001": "EtagDoesNotMatch", "b-002": "EtagDoesNotMatch", "nope": "DeviceNotFound", "b-004": "EtagDoesNotMatch"}
	if res.IsSuccessful || fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("errors %v, want %v: %s", codes, want, r.body)
	}
	var d3 struct{ Status, StatusReason string }
	c.hub(0, "GET", "/devices/b-003", nil).json(t, &d3)
	if d3.Status != "disabled" || d3.StatusReason != "bulk" {
		t.Fatalf("b-003 %+v", d3)
	}
	wantStatus(t, c.hub(0, "GET", "/devices/b-005", nil), 404)
	wantStatus(t, c.hub(0, "GET", "/devices/b-004", nil), 200)
	wantStatus(t, c.hub(0, "GET", "/devices/b-new", nil), 200)
	r = c.hub(0, "GET", "/twins/b-006", nil)
	if !strings.Contains(string(r.body), `"site":"north"`) {
		t.Fatalf("twin %s", r.body)
	}
	// The right etag works.
	r = c.hub(0, "POST", "/devices", []any{map[string]any{"id": "b-001", "importMode": "deleteIfMatchETag", "eTag": dev.Etag}})
	wantStatus(t, r, 200)
}

func TestHubQuery(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	for i := range 30 {
		status := "enabled"
		if i%3 == 0 {
			status = "disabled"
		}
		wantStatus(t, c.hub(0, "PUT", fmt.Sprintf("/devices/q-%02d", i), map[string]any{"status": status}), 200)
	}
	query := func(q string, size int) ([]map[string]any, int, string) {
		var all []map[string]any
		token, pages, itemType := "", 0, ""
		for {
			h := []string{"x-ms-max-item-count", fmt.Sprint(size)}
			if token != "" {
				h = append(h, "x-ms-continuation", token)
			}
			r := c.hub(0, "POST", "/devices/query", map[string]string{"query": q}, h...)
			wantStatus(t, r, 200)
			itemType = r.header.Get("x-ms-item-type")
			var items []map[string]any
			r.json(t, &items)
			if len(items) > size {
				t.Fatalf("page of %d > %d", len(items), size)
			}
			all = append(all, items...)
			pages++
			if token = r.header.Get("x-ms-continuation"); token == "" {
				return all, pages, itemType
			}
			if pages > 100 {
				t.Fatal("paging does not end")
			}
		}
	}
	all, pages, typ := query("SELECT * FROM devices", 7)
	if len(all) != 30 || pages != 5 || typ != "Twin" || all[0]["deviceId"] != "q-00" || all[0]["etag"] == nil || all[0]["authenticationType"] != "sas" {
		t.Fatalf("%d items, %d pages, type %s, first %v", len(all), pages, typ, all[0])
	}
	dis, _, _ := query("SELECT * FROM devices WHERE status = 'disabled'", 100)
	if len(dis) != 10 {
		t.Fatalf("%d disabled", len(dis))
	}
	one, _, _ := query(`select * from devices where deviceId = "q-07" and status != 'disabled'`, 100)
	if len(one) != 1 || one[0]["deviceId"] != "q-07" {
		t.Fatalf("%v", one)
	}
	raw, _, typ := query("SELECT deviceId FROM devices WHERE status = 'disabled'", 100)
	if len(raw) != 10 || typ != "Raw" || len(raw[0]) != 1 {
		t.Fatalf("projection %v type %s", raw, typ)
	}
	hubErr(t, c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM jobs"}), 400, "ArgumentInvalid")
	hubErr(t, c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices"}, "x-ms-continuation", "nope"), 400, "ArgumentInvalid")

	// GET /devices?top= lists at most top devices.
	r := c.hub(0, "GET", "/devices?top=5", nil)
	var list []map[string]any
	r.json(t, &list)
	if len(list) != 5 {
		t.Fatalf("list %d", len(list))
	}
}

func TestHubAuthenticationOnUpdate(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	ca := map[string]any{"type": "certificateAuthority"}
	wantStatus(t, c.hub(0, "PUT", "/devices/ca-1", map[string]any{"authentication": ca}), 200)
	wantStatus(t, c.hub(0, "PUT", "/devices/ca-2", map[string]any{"authentication": ca}), 200)
	// Sending the authentication back keeps it; omitting it makes the device sas, as the spec says.
	r := c.hub(0, "PUT", "/devices/ca-1", map[string]any{"status": "disabled", "authentication": ca}, "If-Match", "*")
	if !strings.Contains(string(r.body), `"type":"certificateAuthority"`) {
		t.Fatalf("authentication lost: %s", r.body)
	}
	r = c.hub(0, "POST", "/devices", []any{map[string]any{"id": "ca-2", "importMode": "update", "status": "disabled", "authentication": ca}})
	wantStatus(t, r, 200)
	r = c.hub(0, "GET", "/devices/ca-2", nil)
	if !strings.Contains(string(r.body), `"type":"certificateAuthority"`) || !strings.Contains(string(r.body), `"status":"disabled"`) {
		t.Fatalf("bulk update lost authentication or status: %s", r.body)
	}
	r = c.hub(0, "PUT", "/devices/ca-1", map[string]any{"status": "disabled"}, "If-Match", "*")
	if !strings.Contains(string(r.body), `"type":"sas"`) {
		t.Fatalf("update without authentication: %s", r.body)
	}
}

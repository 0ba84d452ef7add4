package emulator_test

import (
	"strings"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// A device reports Disconnected and 0001-01-01 times until its activity is set (by the admin
// endpoint here); the identity, its twin and the query then report what was set, an update of
// the identity keeps it, an HTTPS-only device leaves the twin's lastActivityTime alone, and a
// deleted and re-created identity starts over.
func TestSetActivityIsReportedLikeTheDevicesOwnTraffic(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	wantStatus(t, c.hub(0, "PUT", "/devices/act-1", map[string]any{"deviceId": "act-1"}), 200)
	type view struct {
		ConnectionState            string `json:"connectionState"`
		ConnectionStateUpdatedTime string `json:"connectionStateUpdatedTime"`
		LastActivityTime           string `json:"lastActivityTime"`
		Etag                       string `json:"etag"`
	}
	read := func() (dev, twin view) {
		t.Helper()
		c.hub(0, "GET", "/devices/act-1", nil).json(t, &dev)
		c.hub(0, "GET", "/twins/act-1", nil).json(t, &twin)
		return dev, twin
	}
	dev, twin := read()
	if dev.ConnectionState != "Disconnected" || !strings.HasPrefix(dev.LastActivityTime, "0001-01-01") || !strings.HasPrefix(twin.LastActivityTime, "0001-01-01") {
		t.Fatalf("a new identity: %+v, twin %+v", dev, twin)
	}
	at := time.Date(2026, 4, 2, 10, 0, 0, 0, time.UTC)
	if err := e.SetActivity("hub1", "act-1", emulator.Activity{ConnectionState: "Connected", ConnectionStateUpdatedTime: at, LastActivityTime: at.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	dev, twin = read()
	if dev.ConnectionState != "Connected" || !strings.HasPrefix(dev.ConnectionStateUpdatedTime, "2026-04-02T10:00:00") ||
		!strings.HasPrefix(dev.LastActivityTime, "2026-04-02T10:01:00") || twin.ConnectionState != "Connected" || !strings.HasPrefix(twin.LastActivityTime, "2026-04-02T10:01:00") {
		t.Fatalf("after SetActivity: %+v, twin %+v", dev, twin)
	}
	var twins []map[string]any
	c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices WHERE connectionState = 'Connected'"}).json(t, &twins)
	if len(twins) != 1 || twins[0]["deviceId"] != "act-1" {
		t.Fatalf("query for connected devices: %v", twins)
	}
	// An update of the identity keeps what the device's traffic set.
	wantStatus(t, c.hub(0, "PUT", "/devices/act-1", map[string]any{"deviceId": "act-1", "status": "disabled"}, "If-Match", "*"), 200)
	if dev, _ := read(); dev.ConnectionState != "Connected" {
		t.Fatalf("after an update: %+v", dev)
	}
	// Through the admin endpoint: an HTTPS-only device moves the identity's time, not the twin's.
	st, b := adminPut(t, e, "/_emulator/hubs/hub1/devices/act-1/activity", `{"lastActivityTime":"2026-04-03T00:00:00Z","httpOnly":true}`)
	if st != 204 {
		t.Fatalf("admin activity: %d %s", st, b)
	}
	dev, twin = read()
	if dev.ConnectionState != "Disconnected" || !strings.HasPrefix(dev.LastActivityTime, "2026-04-03") || !strings.HasPrefix(twin.LastActivityTime, "0001-01-01") {
		t.Fatalf("an HTTPS-only device: %+v, twin %+v", dev, twin)
	}
	if st, _ := adminPut(t, e, "/_emulator/hubs/hub1/devices/missing/activity", `{}`); st != 400 {
		t.Fatalf("activity of a missing device: %d", st)
	}
	if st, _ := adminPut(t, e, "/_emulator/hubs/hub1/devices/act-1/activity", `{"connectionState":"Online"}`); st != 400 {
		t.Fatalf("an unknown connection state: %d", st)
	}
	wantStatus(t, c.hub(0, "DELETE", "/devices/act-1", nil, "If-Match", "*"), 204)
	wantStatus(t, c.hub(0, "PUT", "/devices/act-1", map[string]any{"deviceId": "act-1"}), 200)
	if dev, _ := read(); dev.ConnectionState != "Disconnected" || !strings.HasPrefix(dev.LastActivityTime, "0001-01-01") {
		t.Fatalf("a re-created identity: %+v", dev)
	}
}

// adminPut calls an admin endpoint (served on any host) with a JSON body.
func adminPut(t *testing.T, e *emulator.Emulator, path, body string) (int, []byte) {
	t.Helper()
	r := newClient(t, e).call("PUT", e.Info().Hubs[0].Host, path, "", body)
	return r.status, r.body
}

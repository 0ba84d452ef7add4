package emulator_test

import (
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// TestReprovisionMigratesOrResets follows the reprovisioning policy of the admitting
// enrollment when a device registers again and its enrollment points at another hub.
func TestReprovisionMigratesOrResets(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	h1, h2 := e.Info().Hubs[0].Host, e.Info().Hubs[1].Host
	key := b64([]byte("0123456789abcdef0123456789abcdef"))
	for _, tc := range []struct {
		id             string
		update, migr   bool
		wantHub        string
		wantTags, gone bool
	}{
		{id: "rp-migrate", update: true, migr: true, wantHub: h2, wantTags: true, gone: true},
		{id: "rp-reset", update: true, migr: false, wantHub: h2, wantTags: false, gone: true},
		{id: "rp-never", update: false, migr: true, wantHub: h1, wantTags: true, gone: false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			en := map[string]any{"registrationId": tc.id, "attestation": map[string]any{"type": "symmetricKey",
				"symmetricKey": map[string]any{"primaryKey": key, "secondaryKey": key}},
				"iotHubs": []string{h1}, "allocationPolicy": "static",
				"initialTwin":       map[string]any{"tags": map[string]any{"from": "enrollment"}},
				"reprovisionPolicy": map[string]any{"updateHubAssignment": tc.update, "migrateDeviceData": tc.migr}}
			wantStatus(t, c.dps("PUT", "/enrollments/"+tc.id, en), 200)
			if _, st := registerDevice(t, e, tc.id, key, nil); st == nil {
				t.Fatal("first registration refused")
			}
			// The back end writes the twin in hub1.
			wantStatus(t, c.hub(0, "POST", "/devices", []any{map[string]any{"id": tc.id, "importMode": "updateTwin", "tags": map[string]any{"site": "north"}}}), 200)
			// The enrollment moves to hub2 (an update read back first: its etag).
			var cur map[string]any
			c.dps("GET", "/enrollments/"+tc.id, nil).json(t, &cur)
			cur["iotHubs"] = []string{h2}
			cur["attestation"] = en["attestation"]
			wantStatus(t, c.dps("PUT", "/enrollments/"+tc.id, cur, "If-Match", cur["etag"].(string)), 200)
			// Until the device registers again, it stays where it was.
			wantStatus(t, c.hub(0, "GET", "/devices/"+tc.id, nil), 200)
			_, st := registerDevice(t, e, tc.id, key, nil)
			status, hub, _ := regState(t, st)
			if status != "assigned" || hub != tc.wantHub {
				t.Fatalf("re-registration %v", st)
			}
			old := c.hub(0, "GET", "/devices/"+tc.id, nil)
			if tc.gone != (old.status == 404) {
				t.Fatalf("old identity status %d, gone=%v wanted", old.status, tc.gone)
			}
			idx := 0
			if hub == h2 {
				idx = 1
			}
			var tw struct{ Tags map[string]any }
			c.hub(idx, "GET", "/twins/"+tc.id, nil).json(t, &tw)
			if (tw.Tags["site"] == "north") != tc.wantTags {
				t.Fatalf("twin tags %v (want migrated=%v)", tw.Tags, tc.wantTags)
			}
			if !tc.wantTags && tw.Tags["from"] != "enrollment" {
				t.Fatalf("a reset starts from the enrollment's initial twin: %v", tw.Tags)
			}
		})
	}
}

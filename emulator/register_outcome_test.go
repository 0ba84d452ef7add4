package emulator_test

import (
	"context"
	"net/http"
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/dpsdevice"
	"dpsdeprov/internal/testenv"
)

// TestDisabledEnrollmentOutcome: a device whose key attests against its disabled individual
// enrollment is accepted (202 assigning) and its operation ends "disabled", as on DPS; the
// attempt changes neither its hub identity nor its registration record. A wrong key is still
// a 401, before any operation exists.
func TestDisabledEnrollmentOutcome(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	c := newClient(t, e)
	dc := deviceClient(e)
	ctx := context.Background()
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	en := map[string]any{"registrationId": "dis-1", "attestation": map[string]any{"type": "symmetricKey",
		"symmetricKey": map[string]string{"primaryKey": key, "secondaryKey": key}}}
	r := c.dps("PUT", "/enrollments/dis-1", en)
	wantStatus(t, r, 200)
	if _, err := dc.RegisterSymmetricKey(ctx, "dis-1", key); err != nil {
		t.Fatalf("enabled enrollment: %v", err)
	}
	before := c.dps("GET", "/registrations/dis-1", nil)
	devBefore := c.hub(0, "GET", "/devices/dis-1", nil)

	var cur map[string]any
	c.dps("GET", "/enrollments/dis-1", nil).json(t, &cur)
	cur["provisioningStatus"] = "disabled"
	wantStatus(t, c.dps("PUT", "/enrollments/dis-1", cur, "If-Match", cur["etag"].(string)), 200)

	// The wire: 202 assigning, then the poll answers 200 with status disabled.
	r0, st := registerDevice(t, e, "dis-1", key, nil)
	wantStatus(t, r0, 200)
	wantDisabled(t, st, "dis-1")
	// The device client reads it as a refusal of kind "disabled".
	_, err := dc.RegisterSymmetricKey(ctx, "dis-1", key)
	if rf, ok := dpsdevice.AsRefused(err); !ok || !rf.Disabled() || rf.Kind() != "disabled" {
		t.Fatalf("disabled enrollment: %v, want a disabled refusal", err)
	}
	if after := c.dps("GET", "/registrations/dis-1", nil); string(after.body) != string(before.body) {
		t.Fatalf("a disabled attempt changed the registration record:\n%s\n%s", before.body, after.body)
	}
	if devAfter := c.hub(0, "GET", "/devices/dis-1", nil); string(devAfter.body) != string(devBefore.body) {
		t.Fatalf("a disabled attempt changed the hub identity:\n%s\n%s", devBefore.body, devAfter.body)
	}
	// A key that does not attest against the entry: 401.
	_, err = dc.RegisterSymmetricKey(ctx, "dis-1", "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	if rf, ok := dpsdevice.AsRefused(err); !ok || rf.HTTPStatus != http.StatusUnauthorized {
		t.Fatalf("wrong key: %v, want 401", err)
	}
}

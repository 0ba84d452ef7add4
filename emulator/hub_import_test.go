package emulator_test

import (
	"strings"
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// TestBulkImportModesReplaceTheIdentity pins the registry's import semantics (hub_import.go):
// an update item replaces the identity, its omitted parts taking the spec's defaults; the twin
// changes only with twin data.
func TestBulkImportModesReplaceTheIdentity(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	thumb := "0123456789ABCDEF0123456789ABCDEF01234567"
	wantStatus(t, c.hub(0, "PUT", "/devices/x509", map[string]any{
		"authentication": map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": thumb}},
		"capabilities":   map[string]any{"iotEdge": true}}), 200)
	wantStatus(t, c.hub(0, "PUT", "/devices/sas", map[string]any{"deviceScope": "ms-azure-iot-edge://gw-1"}), 200)
	wantStatus(t, c.hub(0, "POST", "/devices", []any{
		map[string]any{"id": "x509", "importMode": "updateTwin", "tags": map[string]any{"site": "north"}},
	}), 200)
	var before struct {
		Authentication struct {
			SymmetricKey struct{ PrimaryKey, SecondaryKey string }
		}
	}
	c.hub(0, "GET", "/devices/sas", nil).json(t, &before)

	// What the engine used to send for a disable: status and reason, nothing else.
	wantStatus(t, c.hub(0, "POST", "/devices", []any{
		map[string]any{"id": "x509", "importMode": "update", "status": "disabled", "statusReason": "r"},
		map[string]any{"id": "sas", "importMode": "Update", "status": "disabled"},
	}), 200)
	type dev struct {
		Status         string
		StatusReason   *string
		GenerationID   string
		DeviceScope    string
		Capabilities   struct{ IotEdge bool }
		Authentication struct {
			Type           string
			SymmetricKey   struct{ PrimaryKey, SecondaryKey *string }
			X509Thumbprint struct{ PrimaryThumbprint *string }
		}
	}
	var x, s dev
	c.hub(0, "GET", "/devices/x509", nil).json(t, &x)
	c.hub(0, "GET", "/devices/sas", nil).json(t, &s)
	if x.Status != "disabled" || x.Authentication.Type != "sas" || x.Authentication.X509Thumbprint.PrimaryThumbprint != nil ||
		x.Authentication.SymmetricKey.PrimaryKey == nil || x.Capabilities.IotEdge {
		t.Fatalf("update without authentication/capabilities must default them (SAS, generated keys, no capability): %+v", x)
	}
	if s.Authentication.Type != "sas" || s.Authentication.SymmetricKey.PrimaryKey == nil ||
		*s.Authentication.SymmetricKey.PrimaryKey == before.Authentication.SymmetricKey.PrimaryKey || s.DeviceScope != "" {
		t.Fatalf("update of a SAS identity without keys must generate new keys and drop its scope: %+v", s)
	}
	var tw struct{ Tags map[string]any }
	c.hub(0, "GET", "/twins/x509", nil).json(t, &tw)
	if tw.Tags["site"] != "north" {
		t.Fatalf("an update without twin data keeps the twin: %+v", tw)
	}

	// Sending the whole identity back keeps it; updateIfMatchETag checks the device etag.
	var cur struct {
		Etag string
	}
	c.hub(0, "GET", "/devices/sas", nil).json(t, &cur)
	r := c.hub(0, "POST", "/devices", []any{map[string]any{"id": "sas", "importMode": "updateIfMatchETag", "eTag": cur.Etag,
		"status": "enabled", "authentication": map[string]any{"type": "sas", "symmetricKey": map[string]any{"primaryKey": before.Authentication.SymmetricKey.PrimaryKey, "secondaryKey": before.Authentication.SymmetricKey.SecondaryKey}},
		"deviceScope": "ms-azure-iot-edge://gw-1"}})
	wantStatus(t, r, 200)
	c.hub(0, "GET", "/devices/sas", nil).json(t, &s)
	if *s.Authentication.SymmetricKey.PrimaryKey != before.Authentication.SymmetricKey.PrimaryKey || s.DeviceScope != "ms-azure-iot-edge://gw-1" || s.Status != "enabled" {
		t.Fatalf("an update carrying the identity keeps it: %+v", s)
	}
	r = c.hub(0, "POST", "/devices", []any{map[string]any{"id": "sas", "importMode": "updateIfMatchETag", "eTag": cur.Etag, "status": "disabled"}})
	wantStatus(t, r, 400)
	if !strings.Contains(string(r.body), `"EtagDoesNotMatch"`) {
		t.Fatalf("a stale eTag must fail the item: %s", r.body)
	}
}

// The query's list operators: a batch of devices read in one call, missing ones left out.
func TestQueryDeviceIDIn(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	for _, id := range []string{"in-1", "in-2", "in-3"} {
		wantStatus(t, c.hub(0, "PUT", "/devices/"+id, map[string]any{}), 200)
	}
	var twins []struct {
		DeviceID           string `json:"deviceId"`
		AuthenticationType string `json:"authenticationType"`
		DeviceEtag         string `json:"deviceEtag"`
	}
	r := c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices WHERE deviceId IN ['in-1', 'in-3', 'nope', 'in-1']"})
	wantStatus(t, r, 200)
	r.json(t, &twins)
	if len(twins) != 2 || twins[0].AuthenticationType != "sas" || twins[0].DeviceEtag == "" {
		t.Fatalf("IN answered %s", r.body)
	}
	r = c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT deviceId FROM devices WHERE deviceId NIN ['in-1', 'in-3']"})
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), "in-2") || strings.Contains(string(r.body), "in-1") {
		t.Fatalf("NIN answered %s", r.body)
	}
	hubErr(t, c.hub(0, "POST", "/devices/query", map[string]string{"query": "SELECT * FROM devices WHERE deviceId IN 'in-1'"}), 400, "ArgumentInvalid")
}

package emulator_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/dpsdevice"
	"dpsdeprov/internal/testenv"
	"dpsdeprov/internal/tpmdevice"
)

func deviceClient(e *emulator.Emulator) *dpsdevice.Client {
	return &dpsdevice.Client{HTTP: testenv.EmulatorHTTPClient(e), IDScope: e.Info().DPS.IDScope}
}

func newTPM(t *testing.T, seed string) *tpmdevice.Device {
	t.Helper()
	d, err := tpmdevice.New(seed)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func tpmEnrollment(regID string, tpm *tpmdevice.Device, status string) map[string]any {
	return map[string]any{"registrationId": regID, "provisioningStatus": status,
		"attestation": map[string]any{"type": "tpm", "tpm": map[string]string{
			"endorsementKey": base64.StdEncoding.EncodeToString(tpm.EndorsementKey())}}}
}

// TestTPMAttestation runs DPS's TPM attestation against a TPM on the reference simulator: the
// TPM that holds the enrolled EK gets in, and the hub identity's key is the one DPS wrapped for
// the TPM; another TPM, a disabled enrollment and a deleted one are refused, each as DPS does.
func TestTPMAttestation(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	c := newClient(t, e)
	dc := deviceClient(e)
	ctx := context.Background()
	tpm := newTPM(t, "emu-kiosk")
	wantStatus(t, c.dps("PUT", "/enrollments/emu-kiosk", tpmEnrollment("emu-kiosk", tpm, "enabled")), 200)

	res, err := dc.RegisterTPM(ctx, "emu-kiosk", tpm)
	if err != nil {
		t.Fatalf("the enrolled TPM was refused: %v", err)
	}
	if res.AssignedHub != e.Info().Hubs[0].Host || res.DeviceID != "emu-kiosk" {
		t.Fatalf("assigned %+v", res)
	}
	// The hub identity is "sas" with the key the TPM imported last: an HMAC computed inside the
	// TPM equals one computed with the identity's primary key.
	r := c.hub(0, "GET", "/devices/emu-kiosk", nil)
	wantStatus(t, r, 200)
	var dev struct {
		Authentication struct {
			Type         string
			SymmetricKey struct{ PrimaryKey string }
		}
	}
	r.json(t, &dev)
	key, err := base64.StdEncoding.DecodeString(dev.Authentication.SymmetricKey.PrimaryKey)
	if dev.Authentication.Type != "sas" || err != nil {
		t.Fatalf("hub identity %s", r.body)
	}
	msg := []byte("hub1.azure-devices.net/devices/emu-kiosk\n1700000000")
	got, err := tpm.SignWithIdentity(msg)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	if !hmac.Equal(got, m.Sum(nil)) {
		t.Fatal("the TPM's identity key is not the hub identity's primary key")
	}

	// A TPM with another EK is not challenged at all.
	other := newTPM(t, "emu-stranger")
	_, err = dc.RegisterTPM(ctx, "emu-kiosk", other)
	if rf, ok := dpsdevice.AsRefused(err); !ok || rf.HTTPStatus != http.StatusUnauthorized {
		t.Fatalf("another TPM: %v, want a 401 refusal", err)
	}

	// Disabled: challenged, authenticated, and the operation ends "disabled".
	r = c.dps("GET", "/enrollments/emu-kiosk", nil)
	var en map[string]any
	r.json(t, &en)
	en["provisioningStatus"] = "disabled"
	wantStatus(t, c.dps("PUT", "/enrollments/emu-kiosk", en, "If-Match", en["etag"].(string)), 200)
	_, err = dc.RegisterTPM(ctx, "emu-kiosk", tpm)
	if rf, ok := dpsdevice.AsRefused(err); !ok || !rf.Disabled() {
		t.Fatalf("disabled enrollment: %v, want status disabled", err)
	}
	// Deleted: a plain 401, no challenge.
	wantStatus(t, c.dps("DELETE", "/enrollments/emu-kiosk", nil), 204)
	_, err = dc.RegisterTPM(ctx, "emu-kiosk", tpm)
	if rf, ok := dpsdevice.AsRefused(err); !ok || rf.HTTPStatus != http.StatusUnauthorized {
		t.Fatalf("deleted enrollment: %v, want a 401 refusal", err)
	}
}

// TestTPMChallengeWire checks the challenge at the byte level: the 401 body carries
// authenticationKey and keyName, the blob is six TPM2B fields for this TPM, a token signed
// with anything but the imported key is refused, and the poll needs the same token.
func TestTPMChallengeWire(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	c := newClient(t, e)
	tpm := newTPM(t, "emu-wire")
	wantStatus(t, c.dps("PUT", "/enrollments/emu-wire", tpmEnrollment("emu-wire", tpm, "enabled")), 200)
	scope := e.Info().DPS.IDScope
	path := "/" + scope + "/registrations/emu-wire/register?api-version=2019-03-31"
	body := map[string]any{"registrationId": "emu-wire", "tpm": map[string]string{
		"endorsementKey": base64.StdEncoding.EncodeToString(tpm.EndorsementKey()),
		"storageRootKey": base64.StdEncoding.EncodeToString(tpm.StorageRootKey())}}

	r := c.call("PUT", emulator.GlobalDeviceHost, path, "", body)
	wantStatus(t, r, 401)
	var ch struct {
		ErrorCode         int    `json:"errorCode"`
		AuthenticationKey string `json:"authenticationKey"`
		KeyName           string `json:"keyName"`
	}
	r.json(t, &ch)
	blob, err := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
	if err != nil || ch.KeyName != "registration" || ch.ErrorCode != 401002 || r.header.Get("x-ms-error-code") != "401002" {
		t.Fatalf("challenge %s", r.body)
	}
	// A SAS token signed with a key of the device's choosing is refused.
	forged, _ := emulator.SASToken(scope+"/registrations/emu-wire", base64.StdEncoding.EncodeToString(make([]byte, 32)), "registration", time.Hour)
	dpsErr(t, c.call("PUT", emulator.GlobalDeviceHost, path, forged, body), 401)
	// A blob for another TPM does not activate here; this one does.
	other := newTPM(t, "emu-wire-other")
	if other.ActivateIdentityKey(blob) == nil {
		t.Fatal("another TPM activated the challenge")
	}
	if err := tpm.ActivateIdentityKey(blob); err != nil {
		t.Fatalf("activating the challenge: %v", err)
	}
	if !bytes.Equal(tpm.URIData(), []byte(scope+"/registrations/emu-wire")) {
		t.Fatalf("URI data %q", tpm.URIData())
	}
	sig, err := tpm.SignWithIdentity([]byte("x"))
	if err != nil || len(sig) != sha256.Size {
		t.Fatalf("signing: %v", err)
	}
	// Malformed keys are a 400 naming the field.
	bad := map[string]any{"registrationId": "emu-wire", "tpm": map[string]string{"endorsementKey": "AAAA", "storageRootKey": "AAAA"}}
	r = c.call("PUT", emulator.GlobalDeviceHost, path, "", bad)
	wantStatus(t, r, 400)
	if !bytes.Contains(r.body, []byte("tpm.endorsementKey")) {
		t.Fatalf("malformed EK answer %s", r.body)
	}
}

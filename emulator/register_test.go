package emulator_test

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// registerDevice runs the device registration flow (PUT register, poll the operation) with
// either a SAS token or a client certificate, and returns the final operation status or the
// refusing answer.
func registerDevice(t *testing.T, e *emulator.Emulator, regID, key string, cert *tls.Certificate) (resp, map[string]any) {
	t.Helper()
	hc := testenv.EmulatorHTTPClientWithCert(e, cert)
	c := &client{t: t, e: e, http: hc}
	auth := ""
	if key != "" {
		tok, err := emulator.SASToken(e.Info().DPS.IDScope+"/registrations/"+regID, key, "registration", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		auth = tok
	}
	scope := e.Info().DPS.IDScope
	r := c.call("PUT", emulator.GlobalDeviceHost, "/"+scope+"/registrations/"+regID+"/register?api-version=2019-03-31", auth, map[string]string{"registrationId": regID})
	if r.status != http.StatusAccepted {
		return r, nil
	}
	var op struct {
		OperationID string `json:"operationId"`
		Status      string `json:"status"`
	}
	r.json(t, &op)
	if op.Status != "assigning" || op.OperationID == "" {
		t.Fatalf("register answer %s", r.body)
	}
	r = c.call("GET", emulator.GlobalDeviceHost, "/"+scope+"/registrations/"+regID+"/operations/"+op.OperationID+"?api-version=2019-03-31", auth, nil)
	wantStatus(t, r, 200)
	var st map[string]any
	r.json(t, &st)
	return r, st
}

func regState(t *testing.T, st map[string]any) (status, hub, deviceID string) {
	t.Helper()
	rs, _ := st["registrationState"].(map[string]any)
	if rs == nil {
		t.Fatalf("no registrationState in %v", st)
	}
	return st["status"].(string), rs["assignedHub"].(string), rs["deviceId"].(string)
}

// wantDisabled checks that a registration ended as DPS ends one whose credential attests
// against a disabled entry: accepted, then the operation status "disabled" (register_outcome.go).
func wantDisabled(t *testing.T, st map[string]any, regID string) {
	t.Helper()
	rs, _ := st["registrationState"].(map[string]any)
	if st["status"] != "disabled" || rs == nil || rs["registrationId"] != regID || rs["status"] != "disabled" || rs["assignedHub"] != nil {
		t.Fatalf("registration of %s ended %v, want status disabled", regID, st)
	}
}

func TestSymmetricKeyGroupRegistrationAndBlock(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	wantStatus(t, c.dps("PUT", "/enrollmentGroups/grp1", map[string]any{
		"enrollmentGroupId": "grp1", "attestation": map[string]any{"type": "symmetricKey"}}), 200)
	r := c.dps("POST", "/enrollmentGroups/grp1/attestationmechanism", nil)
	wantStatus(t, r, 200)
	var att struct {
		SymmetricKey struct{ PrimaryKey, SecondaryKey string } `json:"symmetricKey"`
	}
	r.json(t, &att)
	if att.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("attestation mechanism has no key: %s", r.body)
	}
	devKey, err := emulator.DeriveDeviceKey(att.SymmetricKey.SecondaryKey, "sensor-1")
	if err != nil {
		t.Fatal(err)
	}

	_, st := registerDevice(t, e, "sensor-1", devKey, nil)
	status, hubHost, devID := regState(t, st)
	if status != "assigned" || devID != "sensor-1" || !strings.HasSuffix(hubHost, ".azure-devices.net") {
		t.Fatalf("registration %v", st)
	}
	hubIdx := 0
	if hubHost == e.Info().Hubs[1].Host {
		hubIdx = 1
	}
	r = c.hub(hubIdx, "GET", "/devices/sensor-1", nil)
	wantStatus(t, r, 200)
	var dev struct {
		Authentication struct {
			Type         string
			SymmetricKey struct{ SecondaryKey string }
		}
	}
	r.json(t, &dev)
	if dev.Authentication.Type != "sas" || dev.Authentication.SymmetricKey.SecondaryKey != devKey {
		t.Fatalf("hub device %s", r.body)
	}
	r = c.dps("GET", "/registrations/SENSOR-1", nil)
	wantStatus(t, r, 200)
	var rs struct{ AssignedHub, DeviceID, Status, Etag string }
	r.json(t, &rs)
	if rs.AssignedHub != hubHost || rs.DeviceID != "sensor-1" || rs.Status != "assigned" || rs.Etag == "" {
		t.Fatalf("registration state %s", r.body)
	}

	// A wrong key is refused.
	bad, _ := emulator.DeriveDeviceKey(att.SymmetricKey.PrimaryKey, "sensor-2")
	r, _ = registerDevice(t, e, "sensor-1", bad, nil)
	dpsErr(t, r, 401)

	// A disabled individual enrollment (any attestation) blocks the group member. Its keys are
	// not the member's, so the member does not attest against it: 401, not "disabled".
	wantStatus(t, c.dps("PUT", "/enrollments/sensor-1", map[string]any{
		"registrationId": "sensor-1", "provisioningStatus": "disabled", "attestation": map[string]any{"type": "symmetricKey"}}), 200)
	r, _ = registerDevice(t, e, "sensor-1", devKey, nil)
	dpsErr(t, r, 401)
	// Other members still register.
	k2, _ := emulator.DeriveDeviceKey(att.SymmetricKey.PrimaryKey, "sensor-2")
	if _, st := registerDevice(t, e, "sensor-2", k2, nil); st == nil {
		t.Fatal("sensor-2 was refused")
	}
	// A disabled group refuses its members.
	r = c.dps("GET", "/enrollmentGroups/grp1", nil)
	var g map[string]any
	r.json(t, &g)
	g["provisioningStatus"] = "disabled"
	wantStatus(t, c.dps("PUT", "/enrollmentGroups/grp1", g, "If-Match", g["etag"].(string)), 200)
	_, st = registerDevice(t, e, "sensor-2", k2, nil)
	wantDisabled(t, st, "sensor-2")

	// Registration states of the group.
	r = c.dps("POST", "/registrations/grp1/query", nil)
	wantStatus(t, r, 200)
	var list []map[string]any
	r.json(t, &list)
	// Blocking and disabling keep the earlier registration records.
	if len(list) != 2 || list[0]["registrationId"] != "sensor-1" || list[1]["registrationId"] != "sensor-2" || r.header.Get("x-ms-item-type") != "DeviceRegistration" {
		t.Fatalf("group registrations %s", r.body)
	}
}

func TestIndividualSymmetricKeyRegistration(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	wantStatus(t, c.dps("PUT", "/enrollments/Meter-7", map[string]any{
		"registrationId": "Meter-7", "deviceId": "meter-device-7", "allocationPolicy": "static",
		"iotHubs":     []string{e.Info().Hubs[1].Host},
		"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]string{"primaryKey": key, "secondaryKey": key}}}), 200)
	_, st := registerDevice(t, e, "Meter-7", key, nil)
	_, hubHost, devID := regState(t, st)
	if hubHost != e.Info().Hubs[1].Host || devID != "meter-device-7" {
		t.Fatalf("registration %v", st)
	}
	wantStatus(t, c.hub(1, "GET", "/devices/meter-device-7", nil), 200)
	// The individual enrollment shows its registration state.
	r := c.dps("GET", "/enrollments/meter-7", nil)
	var en struct {
		RegistrationState struct{ AssignedHub string } `json:"registrationState"`
	}
	r.json(t, &en)
	if en.RegistrationState.AssignedHub != hubHost {
		t.Fatalf("enrollment %s", r.body)
	}
	// An expired token is refused.
	tok, _ := emulator.SASToken(e.Info().DPS.IDScope+"/registrations/Meter-7", key, "registration", -time.Minute)
	r = c.call("PUT", emulator.GlobalDeviceHost, "/"+e.Info().DPS.IDScope+"/registrations/Meter-7/register?api-version=2019-03-31", tok, map[string]string{"registrationId": "Meter-7"})
	dpsErr(t, r, 401)
	// No credential at all is refused.
	r = c.call("PUT", emulator.GlobalDeviceHost, "/"+e.Info().DPS.IDScope+"/registrations/Meter-7/register?api-version=2019-03-31", "", map[string]string{"registrationId": "Meter-7"})
	dpsErr(t, r, 401)
}

func TestX509Registration(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	c := newClient(t, e)
	root, err := emulator.NewTestCA("root")
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := root.Issue("intermediate", true)
	leaf, _ := inter.Issue("cam-1", false)
	other, _ := inter.Issue("cam-2", false)
	stranger, _ := emulator.NewTestCA("stranger")
	strangerLeaf, _ := stranger.Issue("cam-3", false)

	wantStatus(t, c.dps("PUT", "/enrollmentGroups/cams", map[string]any{
		"enrollmentGroupId": "cams",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]string{"certificate": string(root.CertPEM)}}}}}), 200)

	tc := leaf.TLSCertificate(inter)
	_, st := registerDevice(t, e, "cam-1", "", &tc)
	if s, _, id := regState(t, st); s != "assigned" || id != "cam-1" {
		t.Fatalf("registration %v", st)
	}
	r := c.hub(0, "GET", "/devices/cam-1", nil)
	var dev struct{ Authentication struct{ Type string } }
	r.json(t, &dev)
	if dev.Authentication.Type != "certificateAuthority" {
		t.Fatalf("device %s", r.body)
	}
	// The certificate's CN must be the registration id.
	r, _ = registerDevice(t, e, "cam-9", "", &tc)
	dpsErr(t, r, 401)
	// A chain not signed by the group's certificate is refused.
	sc := strangerLeaf.TLSCertificate()
	r, _ = registerDevice(t, e, "cam-3", "", &sc)
	dpsErr(t, r, 401)

	// A disabled X.509 individual enrollment for the leaf blocks it; the group stays enabled.
	wantStatus(t, c.dps("PUT", "/enrollments/cam-1", map[string]any{"registrationId": "cam-1", "provisioningStatus": "disabled",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]string{"certificate": string(leaf.CertPEM)}}}}}), 200)
	_, st = registerDevice(t, e, "cam-1", "", &tc)
	wantDisabled(t, st, "cam-1")
	oc := other.TLSCertificate(inter)
	if _, st := registerDevice(t, e, "cam-2", "", &oc); st == nil {
		t.Fatal("cam-2 refused")
	}

	// An enabled X.509 individual enrollment makes the device selfSigned with its thumbprint.
	r = c.dps("GET", "/enrollments/cam-1", nil)
	var en map[string]any
	r.json(t, &en)
	en["provisioningStatus"] = "enabled"
	r = c.dps("PUT", "/enrollments/cam-1", en, "If-Match", en["etag"].(string))
	wantStatus(t, r, 200)
	var en2 struct {
		Attestation struct {
			X509 struct {
				ClientCertificates struct {
					Primary struct {
						Certificate string
						Info        struct{ SHA1Thumbprint string }
					}
				}
			}
		}
	}
	r.json(t, &en2)
	thumb := en2.Attestation.X509.ClientCertificates.Primary.Info.SHA1Thumbprint
	if thumb == "" || en2.Attestation.X509.ClientCertificates.Primary.Certificate != "" {
		t.Fatalf("update without the certificate lost it or echoed it: %s", r.body)
	}
	tcLeafOnly := leaf.TLSCertificate()
	if _, st := registerDevice(t, e, "cam-1", "", &tcLeafOnly); st == nil {
		t.Fatal("cam-1 refused with its enabled individual enrollment")
	}
	r = c.hub(0, "GET", "/devices/cam-1", nil)
	var dev2 struct {
		Authentication struct {
			Type           string
			X509Thumbprint struct{ PrimaryThumbprint string }
		}
	}
	r.json(t, &dev2)
	if dev2.Authentication.Type != "selfSigned" || dev2.Authentication.X509Thumbprint.PrimaryThumbprint != thumb {
		t.Fatalf("device %s, want selfSigned %s", r.body, thumb)
	}
	// A certificate whose CN is not the registration id is refused.
	r, _ = registerDevice(t, e, "cam-1", "", &oc)
	dpsErr(t, r, 401)
	// An individual X.509 enrollment admits only its own certificate, even if a group would
	// admit the device: cam-2's enrollment holds another certificate with the same CN.
	impostor, _ := stranger.Issue("cam-2", false)
	wantStatus(t, c.dps("PUT", "/enrollments/cam-2", map[string]any{"attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]string{"certificate": string(impostor.CertPEM)}}}}}), 200)
	r, _ = registerDevice(t, e, "cam-2", "", &oc)
	dpsErr(t, r, 401)
	ic := impostor.TLSCertificate()
	if _, st := registerDevice(t, e, "cam-2", "", &ic); st == nil {
		t.Fatal("cam-2 refused with its own enrolled certificate")
	}
}

func TestRegistrationStatesAndReprovisioning(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	in := e.Info()
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	en := map[string]any{"registrationId": "mover", "allocationPolicy": "static", "iotHubs": []string{in.Hubs[0].Host},
		"initialTwin": map[string]any{"tags": map[string]any{"site": "a"}},
		"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]string{"primaryKey": key, "secondaryKey": key}}}
	r := c.dps("PUT", "/enrollments/mover", en)
	wantStatus(t, r, 200)
	var cur map[string]any
	r.json(t, &cur)

	// The DPS host also serves the device API.
	hc := &client{t: t, e: e, http: testenv.EmulatorHTTPClient(e)}
	tok, _ := emulator.SASToken(in.DPS.IDScope+"/registrations/mover", key, "registration", time.Hour)
	wantStatus(t, hc.call("PUT", in.DPS.Host, "/"+in.DPS.IDScope+"/registrations/mover/register?api-version=2021-06-01", tok, map[string]string{"registrationId": "mover"}), 202)
	r = c.hub(0, "GET", "/twins/mover", nil)
	if !strings.Contains(string(r.body), `"site":"a"`) {
		t.Fatalf("initial twin not applied: %s", r.body)
	}

	// Point the enrollment at hub2: the next registration moves the device.
	cur["iotHubs"] = []string{in.Hubs[1].Host}
	wantStatus(t, c.dps("PUT", "/enrollments/mover", cur, "If-Match", cur["etag"].(string)), 200)
	_, st := registerDevice(t, e, "mover", key, nil)
	rs := st["registrationState"].(map[string]any)
	if rs["assignedHub"] != in.Hubs[1].Host || rs["substatus"] != "deviceDataMigrated" {
		t.Fatalf("moved registration %v", rs)
	}
	hubErr(t, c.hub(0, "GET", "/devices/mover", nil), 404, "DeviceNotFound")
	wantStatus(t, c.hub(1, "GET", "/devices/mover", nil), 200)

	// Registration states: etag rules on delete.
	r = c.dps("GET", "/registrations/mover", nil)
	var state struct{ Etag string }
	r.json(t, &state)
	dpsErr(t, c.dps("DELETE", "/registrations/mover", nil, "If-Match", `"stale"`), 412)
	wantStatus(t, c.dps("DELETE", "/registrations/mover", nil, "If-Match", state.Etag), 204)
	dpsErr(t, c.dps("GET", "/registrations/mover", nil), 404)
	// Deleting the individual enrollment does not touch the hub device.
	wantStatus(t, c.dps("DELETE", "/enrollments/mover", nil), 204)
	wantStatus(t, c.hub(1, "GET", "/devices/mover", nil), 200)

	// Deleting a group keeps its members' registration states.
	wantStatus(t, c.dps("PUT", "/enrollmentGroups/g", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]string{"primaryKey": key, "secondaryKey": key}}}), 200)
	dk, _ := emulator.DeriveDeviceKey(key, "member")
	if _, st := registerDevice(t, e, "member", dk, nil); st == nil {
		t.Fatal("member refused")
	}
	wantStatus(t, c.dps("DELETE", "/enrollmentGroups/g", nil), 204)
	wantStatus(t, c.dps("GET", "/registrations/member", nil), 200)
	r, _ = registerDevice(t, e, "member", dk, nil)
	dpsErr(t, r, 401)

	// The operation poll needs the registering credential and a known operation.
	tok, _ = emulator.SASToken(in.DPS.IDScope+"/registrations/member", dk, "registration", time.Hour)
	dpsErr(t, hc.call("GET", emulator.GlobalDeviceHost, "/"+in.DPS.IDScope+"/registrations/member/operations/4.nope?api-version=2019-03-31", tok, nil), 404)
	// A wrong id scope is refused.
	dpsErr(t, hc.call("PUT", emulator.GlobalDeviceHost, "/0ne99999999/registrations/member/register?api-version=2019-03-31", tok, map[string]string{"registrationId": "member"}), 401)
}

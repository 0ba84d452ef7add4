package handler

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

func TestRegistrationIDRules(t *testing.T) {
	for _, id := range []string{"a", "sensor-042", "Sensor.042_x:y", strings.Repeat("a", 128), "0"} {
		if rej := checkRegistrationID("registrationId", id); rej != nil {
			t.Errorf("%q refused: %s", id, rej.Reason)
		}
	}
	for id, want := range map[string]string{
		strings.Repeat("a", 129): "129 characters",
		"a/b":                    `contains '/'`,
		"a\\b":                   `contains '\\'`,
		"a#b":                    `contains '#'`,
		"a?b":                    `contains '?'`,
		"a%2Fb":                  `contains '%'`,
		"a\x00b":                 "U+0000",
		".a":                     "starts with '.'",
		":a":                     "starts with ':'",
		"a_":                     "ends with '_'",
		"a-":                     "ends with '-'",
		"a b":                    "U+0020",
		"é":                      `'é'`,
	} {
		rej := checkRegistrationID("registrationId", id)
		if rej == nil || !strings.Contains(rej.Reason, want) || !strings.HasPrefix(rej.Reason, "registrationId") {
			t.Errorf("%q: got %v, want a reason naming registrationId and %s", id, rej, want)
		}
	}
	if rej := checkGroupID("enrollmentGroupId", "grp/1"); rej == nil || !strings.Contains(rej.Reason, "enrollment group id") {
		t.Errorf("group id with a slash: %v", rej)
	}
}

func TestDeviceIDRules(t *testing.T) {
	for _, id := range []string{"dev-1", "a+b.c_d*e!f(g)h,i=j@k$l'm", strings.Repeat("d", 128)} {
		if rej := checkDeviceID("deviceId", id); rej != nil {
			t.Errorf("%q refused: %s", id, rej.Reason)
		}
	}
	for id, want := range map[string]string{
		"a#b": "leave deviceId out", "a?b": "leave deviceId out", "a%2F": "leave deviceId out",
		"a/b": `contains '/'`, "a\\b": `contains '\\'`, "a\nb": "U+000A", strings.Repeat("d", 129): "129 characters",
	} {
		if rej := checkDeviceID("deviceId", id); rej == nil || !strings.Contains(rej.Reason, want) {
			t.Errorf("%q: got %v, want %s", id, rej, want)
		}
	}
}

func TestHubRules(t *testing.T) {
	p := Admission{Hubs: []string{"hub1.azure-devices.net"}}
	if h, rej := p.checkHub("iotHub", "HUB1.Azure-Devices.NET"); rej != nil || h != "hub1.azure-devices.net" {
		t.Errorf("configured hub in other case: %q, %v", h, rej)
	}
	for host, want := range map[string]string{
		"hub2.azure-devices.net":                 "not a hub this deployment manages",
		"hub1.azure-devices.net/x":               "not a hub host name",
		"https://hub1.azure-devices.net":         "not a hub host name",
		"hub1.azure-devices.net:443":             "not a hub host name",
		"hub1.azure-devices.net@evil.example":    "not a hub host name",
		"-hub.azure-devices.net":                 "not a hub host name",
		"hub..net":                               "not a hub host name",
		strings.Repeat("a.", 130) + "example":    "characters long",
		"hub1.azure-devices.net\r\nX-Injected:1": "not a hub host name",
	} {
		if _, rej := p.checkHub("iotHub", host); rej == nil || !strings.Contains(rej.Reason, want) {
			t.Errorf("%q: got %v, want %s", host, rej, want)
		}
	}
	// Without configured hubs only the form is checked.
	if _, rej := (&Admission{}).checkHub("targetHub", "any.example.net"); rej != nil {
		t.Errorf("unconfigured: %v", rej)
	}
}

func TestReasonRules(t *testing.T) {
	got, rej := cleanReason(" line one\r\n\tline two ")
	if rej != nil || got != "line one   line two" {
		t.Errorf("got %q, %v", got, rej)
	}
	for s, want := range map[string]string{
		"a\x07b":                       "U+0007",
		"a\x1b[2J":                     "U+001B",
		"a\u2028b":                     "U+2028",
		strings.Repeat("r", 1025):      "1025 characters",
		string([]byte{0xff, 0xfe}):     "UTF-8",
		"ok" + string(rune(0x9b)) + "": "U+009B",
	} {
		if _, rej := cleanReason(s); rej == nil || !strings.Contains(rej.Reason, want) {
			t.Errorf("%q: got %v, want %s", s, rej, want)
		}
	}
}

func selfSigned(t *testing.T, cn string, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestCertificateRules(t *testing.T) {
	root := fake.NewCA("root")
	inter := root.Issue("intermediate", true)
	leaf := inter.Issue("sensor-042", false)

	if cn, rej := checkCertificate(leaf.PEM, "SENSOR-042", true); rej != nil || cn != "sensor-042" {
		t.Errorf("leaf: %q %v", cn, rej)
	}
	if _, rej := checkCertificate(leaf.ChainPEM, "", true); rej != nil {
		t.Errorf("leaf with its chain: %v", rej)
	}
	// An expired leaf may still be the one to block.
	if _, rej := checkCertificate(selfSigned(t, "old-device", time.Now().Add(-365*24*time.Hour)), "old-device", true); rej != nil {
		t.Errorf("expired leaf: %v", rej)
	}
	// A group's issuers are CA certificates; that is right for a group-wide intent.
	if _, rej := checkCertificate(root.PEM, "", false); rej != nil {
		t.Errorf("group chain: %v", rej)
	}
	for name, c := range map[string]struct{ pem, rid, want string }{
		"wrong CN":    {leaf.PEM, "sensor-043", `CN "sensor-042" is not registrationId "sensor-043"`},
		"CA first":    {inter.PEM, "", "starts with a CA certificate"},
		"key":         {leaf.PEM + leaf.KeyPEM, "", "holds a private key"},
		"not PEM":     {"MIIB", "", "not PEM text"},
		"bad DER":     {"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "", "is not an X.509 certificate"},
		"other block": {"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "", "X509 CRL block"},
		"no CN":       {selfSigned(t, "", time.Now().Add(time.Hour)), "", "has no CN"},
		"CN too long": {selfSigned(t, strings.Repeat("c", 65), time.Now().Add(time.Hour)), "", "at most 64"},
		"CN bad":      {selfSigned(t, "a#b", time.Now().Add(time.Hour)), "", "contains '#'"},
		"trailing":    {leaf.PEM + "junk", "", "not a PEM block after certificate 1"},
		"cut":         {leaf.PEM[:100], "", "not a complete PEM block"},
		"too many":    {strings.Repeat(leaf.PEM, 11), "", "more than 10"},
		"too big":     {"-----BEGIN CERTIFICATE-----\n" + strings.Repeat("A", 70000), "", "bytes long"},
	} {
		_, rej := checkCertificate(c.pem, c.rid, true)
		if rej == nil || !strings.Contains(rej.Reason, c.want) {
			t.Errorf("%s: got %v, want %s", name, rej, c.want)
		}
		if rej != nil && strings.Contains(rej.Reason, "PRIVATE KEY-----") {
			t.Errorf("%s: the reason echoes the key", name)
		}
	}
}

func TestRedact(t *testing.T) {
	secrets := []string{
		"SharedAccessSignature sr=hub1.azure-devices.net%2Fdevices%2Fd1&sig=abcDEF123%2B%3D&se=1700000000&skn=iothubowner",
		"HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=",
		"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
		"https://x.blob.core.windows.net/c?sv=2022&sig=AbC%2Bdef%3D",
		`{"primaryKey":"c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="}`,
		"the group key is QWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY3OA== oops",
		"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIC\n-----END EC PRIVATE KEY-----",
	}
	for _, s := range secrets {
		got := redact(s)
		if !strings.Contains(got, "[REDACTED]") {
			t.Errorf("not redacted: %q → %q", s, got)
		}
		for _, part := range []string{"c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY", "Eby8vdM02xNOcqFlqUwJPLlm", "AbC%2Bdef", "abcDEF123", "QWJjZGVmZ2hp", "MHcCAQEEIC"} {
			if strings.Contains(got, part) {
				t.Errorf("%q still holds %q", got, part)
			}
		}
	}
	for _, s := range []string{
		"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventGrid/topics/security",
		"2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "sensor-042", "key exfiltrated", "hub1.azure-devices.net",
		"Contoso.Devices.DeviceCompromised", "ProductionLineSensorNumber42", "urn:dpsdeprov:operations-api", "assets/inventory/system01234",
	} {
		if got := redact(s); got != s {
			t.Errorf("redacted a non-secret: %q → %q", s, got)
		}
	}
}

// Normalize never lets a secret through, whether it accepts or rejects the event.
func TestNormalizeScrubsSecrets(t *testing.T) {
	const key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
	p := Admission{Events: DefaultEventTypes()}
	now := time.Now()
	for name, data := range map[string]map[string]string{
		"reason accepted": {"registrationId": "sensor-1", "reason": "leaked SharedAccessKey=" + key},
		"device rejected": {"registrationId": "sensor-1", "deviceId": "SharedAccessKey=" + key},
		"rid rejected":    {"registrationId": "SharedAccessSignature sr=x&sig=" + key},
	} {
		b, _ := json.Marshal(data)
		ev := Event{ID: "e1", Source: "/s", Type: "device-lost", Time: now, Data: b}
		req, rej := p.Normalize(ev, now)
		all, _ := json.Marshal(req)
		text := string(all)
		if rej != nil {
			text += rej.Reason
		}
		if strings.Contains(text, strings.TrimRight(key, "=")) {
			t.Errorf("%s: the key is in %s", name, text)
		}
	}
}

// A replay with the same content goes on (the engine resumes it); one with other content is
// journaled by the engine as a conflict under its own name and runs nothing.
// TestReplayConflictRealEngine does the same through the real engine.
func TestReplayConflict(t *testing.T) {
	eng := newFakeEngine()
	now := time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)
	srv := newTestServer(t, eng, Options{Clock: fixedClock(now)})
	ev := func(rid string) []byte {
		return hostileEnvelope(t, json.RawMessage(`{"specversion":"1.0","type":"device-lost","source":"/a","id":"same","data":{"registrationId":"`+rid+`"}}`), nil)
	}
	for i := 0; i < 2; i++ {
		if status, _ := post(t, srv, FunctionDeviceEvents, ev("sensor-a")); status != 200 {
			t.Fatal(status)
		}
	}
	if len(eng.submitted) != 2 {
		t.Fatalf("an identical redelivery must reach the engine (which resumes it): %d submissions", len(eng.submitted))
	}
	status, res := post(t, srv, FunctionDeviceEvents, ev("sensor-b"))
	if status != 200 || len(eng.submitted) != 2 {
		t.Fatalf("status %d, %d submissions", status, len(eng.submitted))
	}
	var found bool
	for id, reason := range eng.rejected {
		if strings.HasPrefix(id, "same~conflict-") && strings.Contains(reason, "differs in registrationId") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no conflict journaled: %v; logs %v", eng.rejected, res.Logs)
	}
	if op := eng.ops[deprovision.OperationID("/a", "same")]; op.Request.RegistrationID != "sensor-a" {
		t.Fatalf("the first event's operation changed: %+v", op.Request)
	}
}

// A huge dotted type is refused unread: matching costs a pass over the rest per dot, so a
// 4 MB type would hold the invocation for minutes (before the bound this test timed out).
func TestEventTypeMatchingIsBounded(t *testing.T) {
	huge := strings.Repeat("a.", 2<<20) + "device-lost"
	if _, ok := DefaultEventTypes().Intent(huge); ok {
		t.Fatal("a 4 MB event type was matched")
	}
	if in, ok := DefaultEventTypes().Intent(strings.Repeat("a.", 400) + "device-lost"); !ok || in != deprovision.IntentLost {
		t.Fatal("a long but bounded namespace prefix no longer matches")
	}
}

// The Operations endpoint treats a reused `id` the same way: a dry run followed by a real run
// under the same id is a conflict, answered 422 with the field that differs.
func TestOperationsReplayConflict(t *testing.T) {
	eng := newFakeEngine()
	srv := newTestServer(t, eng, Options{})
	withID := bytes.Replace(fixture(t, "http-post.json"), []byte(`\"reason\":\"audit finding\"`), []byte(`\"reason\":\"audit finding\",\"id\":\"req-9\"`), 1)
	if _, r := post(t, srv, FunctionOperations, withID); func() int { c, _ := httpRes(t, r); return c }() != 200 {
		t.Fatal("the dry run failed")
	}
	real := bytes.Replace(withID, []byte(`\"id\":\"req-9\"`), []byte(`\"id\":\"req-9\",\"dryRun\":false`), 1)
	_, r := post(t, srv, FunctionOperations, real)
	code, body := httpRes(t, r)
	if code != 422 || !strings.Contains(body["reason"].(string), "differs in dryRun") {
		t.Fatalf("res %d %v", code, body)
	}
	if len(eng.submitted) != 1 {
		t.Fatalf("the conflicting request reached the engine: %+v", eng.submitted)
	}
}

// The replay cases through the real engine (over in-memory DPS, hubs and journal): the
// conflict is decided where the operation is created or found, so what the handler journals
// and answers comes from the engine, and the first event's device is the only one changed.
func TestReplayConflictRealEngine(t *testing.T) {
	const hub = "hub1.azure-devices.net"
	dps, hubs, j := fake.NewDPS(), fake.NewHubDevices(hub), fake.NewJournal()
	for _, rid := range []string{"sensor-a", "sensor-b", "sensor-042"} {
		dps.AddEnrollment(deprovision.Enrollment{RegistrationID: rid, Attestation: deprovision.AttestationTPM, Enabled: true})
		dps.AddRegistration(deprovision.Registration{RegistrationID: rid, DeviceID: rid, AssignedHub: hub}, "")
		hubs.AddDevice(deprovision.Device{Hub: hub, DeviceID: rid, Enabled: true, AuthType: "sas"})
	}
	now := time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)
	eng := deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j, Clock: fixedClock(now)}, deprovision.Config{})
	h, err := New(Options{Engine: eng, Clock: fixedClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx := context.Background()

	ev := func(rid string) []byte {
		return hostileEnvelope(t, json.RawMessage(`{"specversion":"1.0","type":"device-lost","source":"/a","id":"same","data":{"registrationId":"`+rid+`"}}`), nil)
	}
	for _, rid := range []string{"sensor-a", "sensor-a", "sensor-b"} {
		if status, res := post(t, srv, FunctionDeviceEvents, ev(rid)); status != 200 {
			t.Fatalf("%s: %d %v", rid, status, res.Logs)
		}
	}
	first, _, err := eng.Operation(ctx, deprovision.OperationID("/a", "same"))
	if err != nil || first.Request.RegistrationID != "sensor-a" || first.Status != deprovision.StatusSucceeded {
		t.Fatalf("the first event's operation: %+v %v", first, err)
	}
	if en, _ := dps.Enrollment("sensor-b"); !en.Enabled {
		t.Fatal("the conflicting event disabled sensor-b")
	}
	status, res := post(t, srv, FunctionDeviceEvents, ev("sensor-b"))
	m := operationInLog.FindStringSubmatch(strings.Join(res.Logs, "\n"))
	if status != 200 || m == nil {
		t.Fatalf("the conflict redelivered: %d %v", status, res.Logs)
	}
	c, _, err := eng.Operation(ctx, m[1])
	if err != nil || c.Status != deprovision.StatusRejected || !strings.HasPrefix(c.Request.EventID, "same~conflict-") ||
		!strings.Contains(c.Reason, "already received with different content") || !strings.Contains(c.Reason, "differs in registrationId") {
		t.Fatalf("conflict operation: %+v %v", c, err)
	}

	// The Operations endpoint: a dry run, then the same id with "dryRun": false, is answered 422.
	withID := bytes.Replace(fixture(t, "http-post.json"), []byte(`\"reason\":\"audit finding\"`), []byte(`\"reason\":\"audit finding\",\"id\":\"req-9\"`), 1)
	if _, r := post(t, srv, FunctionOperations, withID); func() int { c, _ := httpRes(t, r); return c }() != 200 {
		t.Fatalf("the dry run failed: %v", r.Logs)
	}
	real := bytes.Replace(withID, []byte(`\"id\":\"req-9\"`), []byte(`\"id\":\"req-9\",\"dryRun\":false`), 1)
	_, r := post(t, srv, FunctionOperations, real)
	code, body := httpRes(t, r)
	if code != 422 || !strings.Contains(body["reason"].(string), "differs in dryRun") {
		t.Fatalf("res %d %v", code, body)
	}
	if en, _ := dps.Enrollment("sensor-042"); !en.Enabled {
		t.Fatal("the conflicting real run changed sensor-042")
	}
}

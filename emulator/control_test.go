package emulator_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func TestSASAuthentication(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	c := newClient(t, e)
	in := e.Info()
	host, pol, key := connParts(in.Hubs[0].ConnectionString)
	sign := func(resource, key, policy string, ttl time.Duration) string {
		tok, err := emulator.SASToken(resource, key, policy, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	get := func(auth string) resp {
		return c.call("GET", host, "/devices/x?api-version=2021-04-12", auth, nil)
	}
	hubErr(t, get(sign(host, key, pol, time.Hour)), 404, "DeviceNotFound") // authorized
	otherKey := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	for name, auth := range map[string]string{
		"missing":         "",
		"expired":         sign(host, key, pol, -time.Minute),
		"wrong key":       sign(host, otherKey, pol, time.Hour),
		"unknown policy":  sign(host, key, "nobody", time.Hour),
		"other hub's sr":  sign(in.Hubs[1].Host, key, pol, time.Hour),
		"garbage":         "SharedAccessSignature nonsense",
		"not SAS":         "Basic dXNlcjpwYXNz",
		"bearer disabled": "Bearer " + emulator.TestBearerToken(emulator.HubAudience, nil, time.Hour),
	} {
		t.Run(name, func(t *testing.T) { hubErr(t, get(auth), 401, "IotHubUnauthorizedAccess") })
	}
	// A hub key does not open DPS, and the DPS key signs only DPS.
	dpsHost, dpsPol, dpsKey := connParts(in.DPS.ConnectionString)
	dpsErr(t, c.call("GET", dpsHost, "/enrollments/x?api-version=2021-10-01", sign(dpsHost, key, dpsPol, time.Hour), nil), 401)
	dpsErr(t, c.call("GET", dpsHost, "/enrollments/x?api-version=2021-10-01", sign(dpsHost, dpsKey, dpsPol, -time.Second), nil), 401)
	dpsErr(t, c.call("GET", dpsHost, "/enrollments/x?api-version=2021-10-01", sign(dpsHost, dpsKey, dpsPol, time.Hour), nil), 404)

	// Permissions: registryReadWrite cannot query; service cannot write; enrollmentread cannot write.
	rw := e.HubConnectionString("hub1", "registryReadWrite")
	_, rwPol, rwKey := connParts(rw)
	hubErr(t, c.call("POST", host, "/devices/query?api-version=2021-04-12", sign(host, rwKey, rwPol, time.Hour), map[string]string{"query": "SELECT * FROM devices"}), 401, "IotHubUnauthorizedAccess")
	wantStatus(t, c.call("PUT", host, "/devices/rw?api-version=2021-04-12", sign(host, rwKey, rwPol, time.Hour), map[string]any{}), 200)
	_, svcPol, svcKey := connParts(e.HubConnectionString("hub1", "service"))
	wantStatus(t, c.call("POST", host, "/devices/query?api-version=2021-04-12", sign(host, svcKey, svcPol, time.Hour), map[string]string{"query": "SELECT * FROM devices"}), 200)
	hubErr(t, c.call("PUT", host, "/devices/svc?api-version=2021-04-12", sign(host, svcKey, svcPol, time.Hour), map[string]any{}), 401, "IotHubUnauthorizedAccess")
	_, erPol, erKey := connParts(e.DPSConnectionString("enrollmentread"))
	dpsErr(t, c.call("PUT", dpsHost, "/enrollments/x?api-version=2021-10-01", sign(dpsHost, erKey, erPol, time.Hour), symEnrollment("x")), 401)
	dpsErr(t, c.call("GET", dpsHost, "/enrollments/x?api-version=2021-10-01", sign(dpsHost, erKey, erPol, time.Hour), nil), 404)
	// The secondary key signs too.
	if e.HubConnectionString("hub1", "nope") != "" || e.DPSConnectionString("nope") != "" {
		t.Fatal("unknown policies have connection strings")
	}
	// api-version is required.
	hubErr(t, c.call("GET", host, "/devices/x", sign(host, key, pol, time.Hour), nil), 400, "ArgumentInvalid")
}

func TestBearerTokens(t *testing.T) {
	key := []byte("test-signing-key")
	e := testenv.StartEmulator(t, emulator.Options{AcceptBearer: true, BearerKey: key})
	c := newClient(t, e)
	in := e.Info()
	hubTok := emulator.TestBearerToken(emulator.HubAudience, key, time.Hour)
	hubErr(t, c.call("GET", in.Hubs[0].Host, "/devices/x?api-version=2021-04-12", "Bearer "+hubTok, nil), 404, "DeviceNotFound")
	dpsTok := emulator.TestBearerToken(emulator.DPSAudience, key, time.Hour)
	dpsErr(t, c.call("GET", in.DPS.Host, "/enrollments/x?api-version=2021-10-01", "Bearer "+dpsTok, nil), 404)
	for name, tok := range map[string]string{
		"wrong audience": emulator.TestBearerToken(emulator.DPSAudience, key, time.Hour),
		"expired":        emulator.TestBearerToken(emulator.HubAudience, key, -time.Minute),
		"unsigned":       emulator.TestBearerToken(emulator.HubAudience, nil, time.Hour),
		"wrong key":      emulator.TestBearerToken(emulator.HubAudience, []byte("other"), time.Hour),
		"not a JWT":      "abc",
	} {
		t.Run(name, func(t *testing.T) {
			hubErr(t, c.call("GET", in.Hubs[0].Host, "/devices/x?api-version=2021-04-12", "Bearer "+tok, nil), 401, "IotHubUnauthorizedAccess")
		})
	}
	// Without a key, unsigned tokens with the right audience pass.
	e2 := testenv.StartEmulator(t, emulator.Options{AcceptBearer: true})
	c2 := newClient(t, e2)
	hubErr(t, c2.call("GET", e2.Info().Hubs[0].Host, "/devices/x?api-version=2021-04-12", "Bearer "+emulator.TestBearerToken(emulator.HubAudience, nil, time.Hour), nil), 404, "DeviceNotFound")
}

func TestThrottle(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}, ThrottlePerMinute: 100, QueryThrottlePerMinute: 2})
	c := newClient(t, e)
	bulk := func(hub int, prefix string, n int) resp {
		var items []map[string]any
		for i := range n {
			items = append(items, map[string]any{"id": fmt.Sprintf("%s-%d", prefix, i), "importMode": "create"})
		}
		return c.hub(hub, "POST", "/devices", items)
	}
	// Every device in a bulk call counts: two calls of 50 fit a minute's budget, the third not.
	wantStatus(t, bulk(0, "a", 50), 200)
	wantStatus(t, bulk(0, "b", 50), 200)
	r := bulk(0, "c", 50)
	hubErr(t, r, 429, "ThrottlingException")
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	hubErr(t, c.hub(0, "GET", "/devices/a-0", nil), 429, "ThrottlingException")
	wantStatus(t, c.hub(0, "GET", "/devices/c-0", nil), 429) // nothing of the refused call was applied... checked on hub2 below
	// The other hub has its own bucket.
	wantStatus(t, bulk(1, "a", 100), 200)
	// Queries have their own budget.
	q := map[string]string{"query": "SELECT * FROM devices"}
	wantStatus(t, c.hub(0, "POST", "/devices/query", q), 200)
	wantStatus(t, c.hub(0, "POST", "/devices/query", q), 200)
	hubErr(t, c.hub(0, "POST", "/devices/query", q), 429, "ThrottlingException")

	st := e.Stats()
	h := st.Hubs["hub1"]
	if h.Throttled != 4 || h.RegistryOps != 100 || h.Calls != 8 {
		t.Fatalf("hub1 stats %+v", h)
	}
	if op := st.Operations["hub.devices.bulk"]; op.Calls != 4 || op.Throttled != 1 || op.Statuses["429"] != 1 {
		t.Fatalf("bulk stats %+v", op)
	}
	if st.Hubs["hub2"].RegistryOps != 100 {
		t.Fatalf("hub2 stats %+v", st.Hubs["hub2"])
	}
	// Lifting the throttle takes effect at once; the refused bulk call left nothing behind.
	if err := e.SetThrottle("hub1", 0, 0); err != nil {
		t.Fatal(err)
	}
	hubErr(t, c.hub(0, "GET", "/devices/c-0", nil), 404, "DeviceNotFound")
	if err := e.SetThrottle("hub9", 1, 1); err == nil {
		t.Fatal("throttle of an unknown hub accepted")
	}
}

func TestFaults(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 503, RetryAfter: 7, Count: 2}))
	r := c.hub(0, "GET", "/devices/x", nil)
	hubErr(t, r, 503, "ServiceUnavailable")
	if r.header.Get("Retry-After") != "7" {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	hubErr(t, c.hub(0, "GET", "/devices/x", nil), 503, "ServiceUnavailable")
	hubErr(t, c.hub(0, "GET", "/devices/x", nil), 404, "DeviceNotFound") // count used up
	if len(e.Faults()) != 0 {
		t.Fatalf("spent fault still installed: %+v", e.Faults())
	}

	must(e.AddFault(emulator.Fault{Op: "dps.*", Status: 500}))
	dpsErr(t, c.dps("GET", "/enrollments/x", nil), 500)
	dpsErr(t, c.dps("POST", "/enrollments/query", map[string]string{"query": "SELECT *"}), 500)
	e.ClearFaults()
	dpsErr(t, c.dps("GET", "/enrollments/x", nil), 404)

	must(e.AddFault(emulator.Fault{Op: "hub.devices.put", Status: 429, Count: 1}))
	r = c.hub(0, "PUT", "/devices/y", map[string]any{})
	hubErr(t, r, 429, "ThrottlingException")
	if r.header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}

	// Drop: the connection closes without an answer.
	must(e.AddFault(emulator.Fault{Op: "hub.devices.delete", Action: "drop", Count: 1}))
	host, tok := sasFor(t, e.Info().Hubs[0].ConnectionString)
	req, _ := http.NewRequest("DELETE", "https://"+host+"/devices/y?api-version=2021-04-12", nil)
	req.Header.Set("Authorization", tok)
	if res, err := c.http.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("dropped call answered %d", res.StatusCode)
	}
	hubErr(t, c.hub(0, "DELETE", "/devices/y", nil), 404, "DeviceNotFound")

	// Slow: served after the delay; the client's deadline fires first.
	must(e.AddFault(emulator.Fault{Op: "hub.devices.get", Action: "slow", Delay: emulator.Duration(time.Minute), Count: 1}))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", "https://"+host+"/devices/y?api-version=2021-04-12", nil)
	req.Header.Set("Authorization", tok)
	if res, err := c.http.Do(req); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		if res != nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			t.Fatalf("slow call answered %d %s %q; faults %+v", res.StatusCode, res.Header, b, e.Faults())
		}
		t.Fatalf("slow call did not outlast the deadline: %v", err)
	}
	must(e.AddFault(emulator.Fault{Op: "hub.devices.get", Action: "slow", Delay: emulator.Duration(time.Millisecond), Count: 1}))
	hubErr(t, c.hub(0, "GET", "/devices/y", nil), 404, "DeviceNotFound")

	// Probability 0 < p < 1 fires on some calls and not others.
	must(e.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 500, Probability: 0.5}))
	counts := map[int]int{}
	for range 60 {
		counts[c.hub(0, "GET", "/devices/z", nil).status]++
	}
	if counts[500] == 0 || counts[404] == 0 || counts[500]+counts[404] != 60 {
		t.Fatalf("probability fault outcomes %v", counts)
	}
	e.ClearFaults()
	st := e.Stats().Operations["hub.devices.get"]
	if st.Faults < 3 || st.Statuses["503"] != 2 {
		t.Fatalf("stats %+v", st)
	}
	if st := e.Stats().Operations["hub.devices.delete"]; st.Statuses["dropped"] != 1 {
		t.Fatalf("drop stats %+v", st)
	}

	for _, bad := range []emulator.Fault{{Status: 500}, {Op: "x", Status: 200}, {Op: "x", Action: "slow"}, {Op: "x", Action: "boom"}, {Op: "x", Status: 500, Probability: 2}} {
		if err := e.AddFault(bad); err == nil {
			t.Fatalf("fault %+v accepted", bad)
		}
	}
}

func TestAdminEndpointsAndPlainHTTP(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2", "hub3"}, HTTPAddr: "127.0.0.1:0"})
	in := e.Info()
	if in.HTTPAddr == "" {
		t.Fatal("no plain HTTP address")
	}
	base := "http://" + in.HTTPAddr
	post := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	st, b := post("POST", "/_emulator/seed", `{"prefix":"s","groups":3,"registrations":300,"hubs":["hub1","hub2"]}`)
	if st != 200 {
		t.Fatalf("seed %d %s", st, b)
	}
	var sr emulator.SeedResult
	if err := json.Unmarshal(b, &sr); err != nil || len(sr.Groups) != 3 || sr.Registrations != 300 || sr.Groups[0].Registrations != 100 || sr.Groups[0].PrimaryKey == "" {
		t.Fatalf("seed result %s", b)
	}
	// The seeded population is visible through the APIs, over plain HTTP with the Host header.
	c := newClient(t, e)
	r := c.dps("GET", "/registrations/s-g1-d7", nil)
	wantStatus(t, r, 200)
	var rs struct{ AssignedHub, DeviceID string }
	r.json(t, &rs)
	hubIdx := map[string]int{in.Hubs[0].Host: 0, in.Hubs[1].Host: 1}[rs.AssignedHub]
	if rs.DeviceID != "s-g1-d7" || (rs.AssignedHub != in.Hubs[0].Host && rs.AssignedHub != in.Hubs[1].Host) {
		t.Fatalf("seeded registration %s", r.body)
	}
	r = c.hub(hubIdx, "GET", "/devices/s-g1-d7", nil)
	var dev struct {
		Authentication struct{ SymmetricKey struct{ PrimaryKey string } }
	}
	r.json(t, &dev)
	want, _ := emulator.DeriveDeviceKey(sr.Groups[1].PrimaryKey, "s-g1-d7")
	if dev.Authentication.SymmetricKey.PrimaryKey != want {
		t.Fatalf("seeded device key %s", r.body)
	}
	// A seeded member can provision with its derived key.
	if _, st := registerDevice(t, e, "s-g1-d7", want, nil); st == nil {
		t.Fatal("seeded member refused")
	}
	// Plain HTTP routes by Host too.
	host, tok := sasFor(t, in.DPS.ConnectionString)
	req, _ := http.NewRequest("POST", base+"/registrations/s-g2/query?api-version=2021-10-01", nil)
	req.Host = host
	req.Header.Set("Authorization", tok)
	req.Header.Set("x-ms-max-item-count", "1000")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var regs []map[string]any
	_ = json.NewDecoder(res.Body).Decode(&regs)
	res.Body.Close()
	if res.StatusCode != 200 || len(regs) != 100 {
		t.Fatalf("group query over HTTP: %d, %d items", res.StatusCode, len(regs))
	}
	// Unknown hosts get 404.
	req, _ = http.NewRequest("GET", base+"/devices/x?api-version=2021-04-12", nil)
	req.Host = "other.azure-devices.net"
	res, _ = http.DefaultClient.Do(req)
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("unknown host answered %d", res.StatusCode)
	}
	// X.509 seeding returns the signing material; members register with issued leaves.
	st, b = post("POST", "/_emulator/seed", `{"prefix":"x","groups":1,"registrations":5,"attestation":"x509"}`)
	if err := json.Unmarshal(b, &sr); st != 200 || err != nil || sr.Groups[0].SigningCert == "" || sr.Groups[0].SigningKey == "" {
		t.Fatalf("x509 seed %d %s", st, b)
	}
	signer, err := emulator.ParseTestCert([]byte(sr.Groups[0].SigningCert), []byte(sr.Groups[0].SigningKey))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := signer.Issue("x-g0-d3", false)
	if err != nil {
		t.Fatal(err)
	}
	tc := leaf.TLSCertificate()
	if _, st := registerDevice(t, e, "x-g0-d3", "", &tc); st == nil {
		t.Fatal("seeded X.509 member refused")
	}

	// Faults, throttle, latency, stats, reset through the endpoints.
	if st, b := post("POST", "/_emulator/faults", `{"op":"hub.devices.get","status":500,"count":1}`); st != 200 || !strings.Contains(string(b), "hub.devices.get") {
		t.Fatalf("add fault %d %s", st, b)
	}
	if st, _ := post("POST", "/_emulator/faults", `{"op":"hub.devices.get","status":99}`); st != 400 {
		t.Fatalf("bad fault answered %d", st)
	}
	hubErr(t, c.hub(0, "GET", "/devices/x", nil), 500, "ServerError")
	if st, _ := post("PUT", "/_emulator/throttle", `{"hub":"hub3","perMinute":1}`); st != 204 {
		t.Fatalf("throttle %d", st)
	}
	wantStatus(t, c.hub(2, "GET", "/devices/x", nil), 404)
	hubErr(t, c.hub(2, "GET", "/devices/x", nil), 429, "ThrottlingException")
	if st, _ := post("PUT", "/_emulator/latency", `{"latency":"1ms"}`); st != 204 {
		t.Fatalf("latency %d", st)
	}
	if st, b := post("GET", "/_emulator/stats", ""); st != 200 || !strings.Contains(string(b), `"hub3"`) {
		t.Fatalf("stats %d %s", st, b)
	}
	if st, b := post("GET", "/_emulator/info", ""); st != 200 || !strings.Contains(string(b), in.DPS.IDScope) {
		t.Fatalf("info %d %s", st, b)
	}
	if st, _ := post("POST", "/_emulator/reset", ""); st != 204 {
		t.Fatalf("reset %d", st)
	}
	dpsErr(t, c.dps("GET", "/registrations/s-g1-d7", nil), 404)
	wantStatus(t, c.hub(2, "GET", "/devices/x", nil), 404) // throttle restored to unlimited
	if st, b := post("GET", "/_emulator/stats", ""); st != 200 || strings.Contains(string(b), `"hub3"`) && strings.Contains(string(b), `"throttled":1`) {
		t.Fatalf("stats after reset %d %s", st, b)
	}
	if st, _ := post("GET", "/_emulator/nothing", ""); st != 404 {
		t.Fatalf("unknown admin endpoint %d", st)
	}
}

func TestTLS(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	in := e.Info()
	pem, err := os.ReadFile(in.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file holds no certificate")
	}
	for _, name := range []string{in.DPS.Host, in.DPS.DeviceHost, in.Hubs[0].Host, in.Hubs[1].Host, "localhost", "127.0.0.1"} {
		conn, err := tls.Dial("tcp", in.Addr, &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Fatalf("TLS for %s: %v", name, err)
		}
		conn.Close()
	}
}

func TestLatency(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{Latency: time.Minute, HTTPAddr: "127.0.0.1:0"})
	c := newClient(t, e)
	host, tok := sasFor(t, e.Info().Hubs[0].ConnectionString)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+host+"/devices/x?api-version=2021-04-12", nil)
	req.Header.Set("Authorization", tok)
	if res, err := c.http.Do(req); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		if res != nil {
			res.Body.Close()
		}
		t.Fatalf("a call under a minute of latency did not outlast the deadline: %v", err)
	}
	// Admin endpoints are not delayed, and the latency can be changed at run time.
	req, _ = http.NewRequest("PUT", "http://"+e.Info().HTTPAddr+"/_emulator/latency", strings.NewReader(`{"latency":"0s"}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 204 {
		t.Fatalf("set latency: %v", err)
	}
	res.Body.Close()
	hubErr(t, c.hub(0, "GET", "/devices/x", nil), 404, "DeviceNotFound")
}

package emulator_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// client calls the emulator over HTTPS with the real host names, as SDKs do.
type client struct {
	t    testing.TB
	e    *emulator.Emulator
	http *http.Client
}

func newClient(t testing.TB, e *emulator.Emulator) *client {
	return &client{t: t, e: e, http: testenv.EmulatorHTTPClient(e)}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// connParts splits a connection string.
func connParts(cs string) (host, policy, key string) {
	for _, p := range strings.Split(cs, ";") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "HostName":
			host = v
		case "SharedAccessKeyName":
			policy = v
		case "SharedAccessKey":
			key = v
		}
	}
	return
}

func sasFor(t testing.TB, cs string) (string, string) {
	t.Helper()
	host, pol, key := connParts(cs)
	tok, err := emulator.SASToken(host, key, pol, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return host, tok
}

// call sends a request; auth is the Authorization value ("" for none). Headers come in pairs.
func (c *client) call(method, host, path, auth string, body any, headers ...string) resp {
	c.t.Helper()
	r, err := c.try(method, host, path, auth, body, headers...)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// try is call for goroutines other than the test's: it returns errors instead of failing.
func (c *client) try(method, host, path, auth string, body any, headers ...string) (resp, error) {
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			j, err := json.Marshal(b)
			if err != nil {
				return resp{}, err
			}
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequest(method, "https://"+host+path, rd)
	if err != nil {
		return resp{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := c.http.Do(req)
	if err != nil {
		return resp{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}, err
}

// dps calls the DPS service API as provisioningserviceowner.
func (c *client) dps(method, path string, body any, headers ...string) resp {
	c.t.Helper()
	host, tok := sasFor(c.t, c.e.Info().DPS.ConnectionString)
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return c.call(method, host, path+sep+"api-version=2021-10-01", tok, body, headers...)
}

// hub calls hub i's registry API as iothubowner.
func (c *client) hub(i int, method, path string, body any, headers ...string) resp {
	c.t.Helper()
	host, tok := sasFor(c.t, c.e.Info().Hubs[i].ConnectionString)
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return c.call(method, host, path+sep+"api-version=2021-04-12", tok, body, headers...)
}

func wantStatus(t testing.TB, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

// dpsErr checks a DPS error answer: status, x-ms-error-code header and body errorCode agree.
func dpsErr(t testing.TB, r resp, status int) {
	t.Helper()
	wantStatus(t, r, status)
	var b struct {
		ErrorCode  int    `json:"errorCode"`
		TrackingID string `json:"trackingId"`
		Message    string `json:"message"`
	}
	r.json(t, &b)
	if b.ErrorCode/1000 != status || r.header.Get("x-ms-error-code") == "" || b.Message == "" || b.TrackingID == "" {
		t.Fatalf("DPS error body/header wrong: header %q body %s", r.header.Get("x-ms-error-code"), r.body)
	}
}

// hubErr checks an IoT Hub error answer: status, iothub-errorcode and the nested Message.
func hubErr(t testing.TB, r resp, status int, name string) {
	t.Helper()
	wantStatus(t, r, status)
	if got := r.header.Get("iothub-errorcode"); got != name {
		t.Fatalf("iothub-errorcode %q, want %q; body %s", got, name, r.body)
	}
	var outer struct{ Message string }
	r.json(t, &outer)
	var inner struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	if err := json.Unmarshal([]byte(outer.Message), &inner); err != nil {
		t.Fatalf("Message is not nested JSON: %s", r.body)
	}
	if inner.ErrorCode/1000 != status && name != "TooManyDevices" {
		t.Fatalf("errorCode %d does not match status %d", inner.ErrorCode, status)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

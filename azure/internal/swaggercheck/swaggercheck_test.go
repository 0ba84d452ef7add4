package swaggercheck

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"dpsdeprov/internal/testenv"
)

func req(method, rawURL, body string, h map[string]string) Request {
	u, _ := url.Parse(rawURL)
	hd := http.Header{}
	for k, v := range h {
		hd.Set(k, v)
	}
	if body != "" {
		hd.Set("Content-Type", "application/json")
	}
	return Request{Method: method, URL: u, Header: hd, Body: []byte(body)}
}

// TestCheckFindsProblems makes sure the check can fail: each bad request must produce the
// named problem, and the good ones none.
func TestCheckFindsProblems(t *testing.T) {
	dps, err := Load(testenv.SharedReference(t, "specs", "dps-service.json"))
	if err != nil {
		t.Fatal(err)
	}
	hub, err := Load(testenv.SharedReference(t, "specs", "iothub-service.json"))
	if err != nil {
		t.Fatal(err)
	}
	const base = "https://dps1.azure-devices-provisioning.net"
	good := []struct {
		s  *Spec
		r  Request
		op string
	}{
		{dps, req("GET", base+"/enrollments/dev-1?api-version=2021-10-01", "", nil), "IndividualEnrollment_Get"},
		{dps, req("POST", base+"/enrollments/query?api-version=2021-10-01", `{"query":"SELECT *"}`, map[string]string{"x-ms-max-item-count": "5"}), "IndividualEnrollment_Query"},
		{dps, req("PUT", base+"/enrollments/dev-1?api-version=2021-10-01", `{"registrationId":"dev-1","attestation":{"type":"symmetricKey"},"provisioningStatus":"disabled"}`, map[string]string{"If-Match": "*"}), "IndividualEnrollment_CreateOrUpdate"},
		{hub, req("POST", "https://hub1.azure-devices.net/devices?api-version=2021-04-12", `[{"id":"d1","importMode":"delete"}]`, nil), "BulkRegistry_UpdateRegistry"},
	}
	for _, g := range good {
		op, errs := g.s.Check(g.r)
		if len(errs) > 0 || op != g.op {
			t.Errorf("%s: op %q errors %v, want %s and none", g.r, op, errs, g.op)
		}
	}
	bad := []struct {
		s    *Spec
		r    Request
		want string
	}{
		{dps, req("GET", base+"/enrollment/dev-1?api-version=2021-10-01", "", nil), "matches no path"},
		{dps, req("PATCH", base+"/enrollments/dev-1?api-version=2021-10-01", "", nil), "not declared for path"},
		{dps, req("GET", base+"/enrollments/dev-1", "", nil), "api-version: value is required but missing"},
		{dps, req("GET", base+"/enrollments/dev-1?api-version=2021-10-01&top=3", "", nil), "query parameter top is not declared"},
		{dps, req("GET", base+"/enrollments/dev-1?api-version=2021-10-01", "", map[string]string{"x-ms-continuation": "x"}), "header X-Ms-Continuation is not declared"},
		{dps, req("PUT", base+"/enrollments/dev-1?api-version=2021-10-01", `{"registrationId":"dev-1"}`, nil), `property "attestation" is missing`},
		{dps, req("PUT", base+"/enrollments/dev-1?api-version=2021-10-01", `{"registrationId":"dev-1","attestation":{"type":"psk"}}`, nil), "is not one of the allowed values"},
		{dps, req("PUT", base+"/enrollments/dev-1?api-version=2021-10-01", `{"registrationId":"dev-1","attestation":{"type":"tpm"},"provisioningState":"disabled"}`, nil), `property "provisioningState" is unsupported`},
		{dps, req("PUT", base+"/enrollments/dev-1?api-version=2021-10-01", `{"registrationId":"dev-1","attestation":{"type":"tpm"},"createdDateTimeUtc":"2024-01-01T00:00:00Z"}`, nil), `readOnly property "createdDateTimeUtc" in request`},
		{dps, req("POST", base+"/registrations/g1/query?api-version=2021-10-01", `{"query":"x"}`, nil), "request body not allowed"},
		{hub, req("POST", "https://hub1.azure-devices.net/devices?api-version=2021-04-12", `[{"id":"d1","importMode":"remove"}]`, nil), "is not one of"},
		{hub, req("POST", "https://hub1.azure-devices.net/devices?api-version=2021-04-12", `[{"id":"d1","importMode":"delete","etag":"x"}]`, nil), `body .0: property "etag" is unsupported`},
		{hub, req("PUT", "https://hub1.azure-devices.net/devices/d1?api-version=2021-04-12", `{"deviceId":"d1","status":"off"}`, nil), "is not one of"},
	}
	for _, b := range bad {
		_, errs := b.s.Check(b.r)
		found := false
		for _, e := range errs {
			found = found || strings.Contains(e.Error(), b.want)
		}
		if !found {
			t.Errorf("%s: errors %v, want one containing %q", b.r, errs, b.want)
		}
	}
}

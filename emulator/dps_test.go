package emulator_test

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

func symEnrollment(id string) map[string]any {
	return map[string]any{"registrationId": id, "attestation": map[string]any{"type": "symmetricKey"}}
}

func TestDPSEnrollmentETagRules(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)

	r := c.dps("PUT", "/enrollments/etag-1", symEnrollment("etag-1"))
	wantStatus(t, r, 200)
	var v1 struct{ Etag, CreatedDateTimeUtc string }
	r.json(t, &v1)
	// The service's etags are base64 of a quoted Cosmos DB etag (the recordings of
	// azure-sdk-for-python's DPS tests), with no quotes of their own.
	if raw, err := base64.StdEncoding.DecodeString(v1.Etag); err != nil || !strings.HasPrefix(string(raw), `"`) {
		t.Fatalf("etag %q is not base64 of a quoted etag", v1.Etag)
	}
	if r.header.Get("ETag") != "" {
		t.Fatalf("DPS answered with an ETag header %q; the recordings have none", r.header.Get("ETag"))
	}

	// Existing id, no If-Match: 409 with the recorded "already exists" code. Case-insensitive id.
	r = c.dps("PUT", "/enrollments/ETAG-1", symEnrollment("ETAG-1"))
	dpsErr(t, r, 409)
	if r.header.Get("x-ms-error-code") != "409201" {
		t.Fatalf("x-ms-error-code %q, want 409201", r.header.Get("x-ms-error-code"))
	}

	// Stale etag: 412; current etag, as received (Python) or quoted (C#): 200.
	r = c.dps("PUT", "/enrollments/etag-1", symEnrollment("etag-1"), "If-Match", v1.Etag)
	wantStatus(t, r, 200)
	var v2 struct{ Etag, CreatedDateTimeUtc, RegistrationID string }
	r.json(t, &v2)
	if v2.Etag == v1.Etag || v2.CreatedDateTimeUtc != v1.CreatedDateTimeUtc || v2.RegistrationID != "etag-1" {
		t.Fatalf("update answer %s", r.body)
	}
	dpsErr(t, c.dps("PUT", "/enrollments/etag-1", symEnrollment("etag-1"), "If-Match", v1.Etag), 412)
	r = c.dps("PUT", "/enrollments/etag-1", symEnrollment("etag-1"), "If-Match", `"`+v2.Etag+`"`)
	wantStatus(t, r, 200)

	// Wildcards, bare and quoted, replace unconditionally and create.
	wantStatus(t, c.dps("PUT", "/enrollments/etag-1", symEnrollment("etag-1"), "If-Match", "*"), 200)
	wantStatus(t, c.dps("PUT", "/enrollments/etag-1", symEnrollment("etag-1"), "If-Match", `"*"`), 200)
	wantStatus(t, c.dps("PUT", "/enrollments/etag-2", symEnrollment("etag-2"), "If-Match", "*"), 200)
	// A real etag on a missing id cannot match.
	dpsErr(t, c.dps("PUT", "/enrollments/etag-3", symEnrollment("etag-3"), "If-Match", v1.Etag), 412)

	// DELETE: stale etag 412; no If-Match unconditional; missing id 404 with error code.
	dpsErr(t, c.dps("DELETE", "/enrollments/etag-1", nil, "If-Match", v1.Etag), 412)
	wantStatus(t, c.dps("DELETE", "/enrollments/etag-1", nil), 204)
	r = c.dps("DELETE", "/enrollments/etag-1", nil)
	dpsErr(t, r, 404)
	if r.header.Get("x-ms-error-code") != "404201" {
		t.Fatalf("x-ms-error-code %q", r.header.Get("x-ms-error-code"))
	}
	dpsErr(t, c.dps("GET", "/enrollments/etag-1", nil), 404)
	dpsErr(t, c.dps("GET", "/enrollmentGroups/nope", nil), 404)
	dpsErr(t, c.dps("GET", "/registrations/nope", nil), 404)
	dpsErr(t, c.dps("DELETE", "/registrations/nope", nil), 404)
	// Missing id in the path: 405.
	dpsErr(t, c.dps("PUT", "/enrollments", symEnrollment("x")), 405)
}

func TestDPSValidation(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	long := strings.Repeat("a", 129)
	for _, tc := range []struct {
		name string
		path string
		body any
	}{
		{"id too long", "/enrollments/" + long, symEnrollment(long)},
		{"bad character", "/enrollments/" + url.PathEscape("a b"), symEnrollment("a b")},
		{"special first", "/enrollments/-abc", symEnrollment("-abc")},
		{"special last", "/enrollments/abc.", symEnrollment("abc.")},
		{"body id differs", "/enrollments/abc", symEnrollment("abd")},
		{"no attestation", "/enrollments/abc", map[string]any{"registrationId": "abc"}},
		{"unknown attestation", "/enrollments/abc", map[string]any{"attestation": map[string]any{"type": "password"}}},
		{"bad status", "/enrollments/abc", map[string]any{"provisioningStatus": "on", "attestation": map[string]any{"type": "symmetricKey"}}},
		{"bad key", "/enrollments/abc", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]string{"primaryKey": "not base64!"}}}},
		{"unlinked hub", "/enrollments/abc", map[string]any{"iotHubs": []string{"other.azure-devices.net"}, "attestation": map[string]any{"type": "symmetricKey"}}},
		{"bad certificate", "/enrollments/abc", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]string{"certificate": "garbage"}}}}}},
		{"group with client cert", "/enrollmentGroups/abc", map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{}}}}},
		{"tpm group", "/enrollmentGroups/abc", map[string]any{"attestation": map[string]any{"type": "tpm", "tpm": map[string]string{"endorsementKey": "AAAA"}}}},
		{"not JSON", "/enrollments/abc", "{"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.dps("PUT", tc.path, tc.body)
			dpsErr(t, r, 400)
		})
	}
	// 128 characters with : . _ - inside is fine.
	id := "a:b.c_d-" + strings.Repeat("z", 120)
	wantStatus(t, c.dps("PUT", "/enrollments/"+id, symEnrollment(id)), 200)
}

// TestDPSSecrets checks where DPS returns secrets: symmetric keys in the answer to the PUT
// that wrote them (generated ones included) and in the attestation mechanism, never in GET or
// query answers; certificates never, only their info (the recordings of azure-sdk-for-python's
// DPS tests, test_enrollment_symmetrickey_lifecycle and the X.509 lifecycles).
func TestDPSSecrets(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	r := c.dps("PUT", "/enrollments/sk-1", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]string{"primaryKey": key, "secondaryKey": key}}})
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), key) {
		t.Fatalf("the PUT answer does not echo the keys: %s", r.body)
	}
	for _, got := range []resp{c.dps("GET", "/enrollments/sk-1", nil), c.dps("POST", "/enrollments/query", map[string]string{"query": "SELECT *"})} {
		if strings.Contains(string(got.body), key) || strings.Contains(string(got.body), `"symmetricKey":{`) {
			t.Fatalf("key echoed: %s", got.body)
		}
	}
	var gen struct {
		Attestation struct {
			SymmetricKey struct{ PrimaryKey, SecondaryKey string }
		}
	}
	c.dps("PUT", "/enrollments/sk-gen", map[string]any{"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": nil}}}).json(t, &gen)
	if gen.Attestation.SymmetricKey.PrimaryKey == "" || gen.Attestation.SymmetricKey.SecondaryKey == "" {
		t.Fatal("the PUT answer does not carry the generated keys")
	}
	r = c.dps("POST", "/enrollments/sk-1/attestationmechanism", nil)
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), key) {
		t.Fatalf("attestation mechanism lacks the key: %s", r.body)
	}
	// A GET-modify-PUT without keys keeps them.
	var en map[string]any
	c.dps("GET", "/enrollments/sk-1", nil).json(t, &en)
	wantStatus(t, c.dps("PUT", "/enrollments/sk-1", en, "If-Match", en["etag"].(string)), 200)
	r = c.dps("POST", "/enrollments/sk-1/attestationmechanism", nil)
	if !strings.Contains(string(r.body), key) {
		t.Fatalf("update without keys lost them: %s", r.body)
	}

	// Certificates: info computed from the certificate, text never returned, all three
	// encodings accepted.
	ca, _ := emulator.NewTestCA("grp-ca")
	leaf, _ := ca.Issue("dev-x", false)
	der := leaf.Cert.Raw
	for i, text := range []string{string(leaf.CertPEM), b64(der), b64(leaf.CertPEM)} {
		id := fmt.Sprintf("x509-%d", i)
		r := c.dps("PUT", "/enrollments/"+id, map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]string{"certificate": text}}}}})
		wantStatus(t, r, 200)
		var got struct {
			Attestation struct {
				X509 struct {
					ClientCertificates struct {
						Primary struct {
							Certificate string
							Info        map[string]any
						}
					}
				}
			}
		}
		r.json(t, &got)
		p := got.Attestation.X509.ClientCertificates.Primary
		if p.Certificate != "" || p.Info["subjectName"] != "CN=dev-x" || p.Info["issuerName"] != "CN=grp-ca" || p.Info["version"] != float64(3) {
			t.Fatalf("encoding %d: %s", i, r.body)
		}
		for _, f := range []string{"sha1Thumbprint", "sha256Thumbprint", "notBeforeUtc", "notAfterUtc", "serialNumber"} {
			if s, _ := p.Info[f].(string); s == "" {
				t.Fatalf("info.%s empty: %s", f, r.body)
			}
		}
		if strings.Contains(string(c.dps("GET", "/enrollments/"+id, nil).body), "BEGIN CERTIFICATE") {
			t.Fatal("certificate echoed by GET")
		}
	}
}

func TestDPSQueryPaging(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	for i := range 25 {
		id := fmt.Sprintf("page-%02d", i)
		wantStatus(t, c.dps("PUT", "/enrollments/"+id, symEnrollment(id)), 200)
		gid := fmt.Sprintf("grp-%02d", i)
		wantStatus(t, c.dps("PUT", "/enrollmentGroups/"+gid, map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}), 200)
	}
	for _, tc := range []struct{ path, itemType, idField string }{
		{"/enrollments/query", "Enrollment", "registrationId"},
		{"/enrollmentGroups/query", "EnrollmentGroup", "enrollmentGroupId"},
	} {
		var seen []string
		token := ""
		pages := 0
		for {
			h := []string{"x-ms-max-item-count", "10"}
			if token != "" {
				h = append(h, "x-ms-continuation", token)
			}
			r := c.dps("POST", tc.path, map[string]string{"query": "SELECT *"}, h...)
			wantStatus(t, r, 200)
			if r.header.Get("x-ms-item-type") != tc.itemType {
				t.Fatalf("x-ms-item-type %q", r.header.Get("x-ms-item-type"))
			}
			var items []map[string]any
			r.json(t, &items)
			if len(items) > 10 {
				t.Fatalf("page of %d", len(items))
			}
			for _, it := range items {
				seen = append(seen, it[tc.idField].(string))
			}
			pages++
			token = r.header.Get("x-ms-continuation")
			if token == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			// A change between pages neither repeats nor loses the items still present.
			if pages == 1 && tc.itemType == "Enrollment" {
				wantStatus(t, c.dps("DELETE", "/enrollments/page-24", nil), 204)
			}
		}
		want := 25
		if tc.itemType == "Enrollment" {
			want = 24
		}
		if pages != 3 || len(seen) != want {
			t.Fatalf("%s: %d pages, %d items %v", tc.path, pages, len(seen), seen)
		}
		for i := 1; i < len(seen); i++ {
			if seen[i] <= seen[i-1] {
				t.Fatalf("not in a stable order: %v", seen)
			}
		}
	}
	dpsErr(t, c.dps("POST", "/enrollments/query", map[string]string{"query": "SELECT *"}, "x-ms-continuation", "bogus"), 400)
	dpsErr(t, c.dps("POST", "/enrollments/query", map[string]string{"query": "SELECT *"}, "x-ms-max-item-count", "zero"), 400)
	dpsErr(t, c.dps("POST", "/enrollments/query", nil), 400)
}

func TestDPSBulk(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	var items []map[string]any
	for i := range 10 {
		items = append(items, symEnrollment(fmt.Sprintf("bulk-%d", i)))
	}
	r := c.dps("POST", "/enrollments", map[string]any{"mode": "create", "enrollments": items})
	wantStatus(t, r, 200)
	var res struct {
		IsSuccessful bool
		Errors       []struct {
			RegistrationID string
			ErrorCode      int
			ErrorStatus    string
		}
	}
	r.json(t, &res)
	if !res.IsSuccessful || len(res.Errors) != 0 {
		t.Fatalf("bulk create %s", r.body)
	}
	r = c.dps("POST", "/enrollments", map[string]any{"mode": "create", "enrollments": items[:3]})
	r.json(t, &res)
	if res.IsSuccessful || len(res.Errors) != 3 || res.Errors[0].ErrorCode/1000 != 409 || res.Errors[0].RegistrationID != "bulk-0" {
		t.Fatalf("bulk create of existing %s", r.body)
	}
	// update writes like a PUT whose If-Match is the item's etag: without one it creates only
	// (recorded: an existing item fails 409201), with the current one it replaces.
	r = c.dps("POST", "/enrollments", map[string]any{"mode": "update", "enrollments": append(items[:1:1], symEnrollment("bulk-new"))})
	r.json(t, &res)
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].ErrorCode != 409201 || res.Errors[0].RegistrationID != "bulk-0" {
		t.Fatalf("bulk update without etags %s", r.body)
	}
	wantStatus(t, c.dps("GET", "/enrollments/bulk-new", nil), 200)
	var cur map[string]any
	c.dps("GET", "/enrollments/bulk-0", nil).json(t, &cur)
	cur["provisioningStatus"] = "disabled"
	r = c.dps("POST", "/enrollments", map[string]any{"mode": "update", "enrollments": []any{cur}})
	r.json(t, &res)
	if !res.IsSuccessful {
		t.Fatalf("bulk update with the current etag %s", r.body)
	}
	// updateIfMatchETag with a stale etag fails per item.
	stale := symEnrollment("bulk-1")
	stale["etag"] = `"stale"`
	r = c.dps("POST", "/enrollments", map[string]any{"mode": "updateIfMatchETag", "enrollments": []any{stale}})
	r.json(t, &res)
	if res.IsSuccessful || res.Errors[0].ErrorCode/1000 != 412 {
		t.Fatalf("bulk updateIfMatchETag %s", r.body)
	}
	dpsErr(t, c.dps("POST", "/enrollments", map[string]any{"mode": "create", "enrollments": append(items, symEnrollment("bulk-10"))}), 400)
	dpsErr(t, c.dps("POST", "/enrollments", map[string]any{"mode": "upsert", "enrollments": items[:1]}), 400)
	r = c.dps("POST", "/enrollments", map[string]any{"mode": "delete", "enrollments": items})
	r.json(t, &res)
	if !res.IsSuccessful {
		t.Fatalf("bulk delete %s", r.body)
	}
	dpsErr(t, c.dps("GET", "/enrollments/bulk-5", nil), 404)

	// Groups use enrollmentGroups and enrollmentGroupId.
	r = c.dps("POST", "/enrollmentGroups", map[string]any{"mode": "create", "enrollmentGroups": []any{
		map[string]any{"enrollmentGroupId": "bg-1", "attestation": map[string]any{"type": "symmetricKey"}}}})
	r.json(t, &res)
	if !res.IsSuccessful {
		t.Fatalf("group bulk %s", r.body)
	}
	wantStatus(t, c.dps("GET", "/enrollmentGroups/BG-1", nil), 200)
}

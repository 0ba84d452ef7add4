package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

const testKey = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg5" // base64("secret-key-for-tests-only-0123456789")

func TestParseConnectionString(t *testing.T) {
	cs, err := ParseConnectionString("HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + testKey)
	if err != nil {
		t.Fatal(err)
	}
	if cs.HostName != "hub1.azure-devices.net" || cs.SharedAccessKeyName != "iothubowner" || cs.SharedAccessKey != testKey {
		t.Fatalf("parsed %+v", cs)
	}
	if s := fmt.Sprint(cs); strings.Contains(s, testKey) {
		t.Fatalf("String leaks the key: %s", s)
	}
	if s := fmt.Sprintf("%#v", cs); strings.Contains(s, testKey) {
		t.Fatalf("GoString leaks the key: %s", s)
	}
	bad := map[string]string{
		"":                                      "empty",
		"HostName=h;SharedAccessKey=" + testKey: "no SharedAccessKeyName",
		"SharedAccessKeyName=a;SharedAccessKey=" + testKey:     "no HostName",
		"HostName=h;SharedAccessKeyName=a":                     "neither",
		"HostName=h;SharedAccessKeyName=a;SharedAccessKey=%%%": "not valid base64",
		"HostName=h;DeviceId=d;SharedAccessKey=" + testKey:     "device connection string",
		"HostName=h;Foo=1": "unknown key",
		"HostName=https://h;SharedAccessKeyName=a;SharedAccessKey=" + testKey: "bare host name",
	}
	for in, want := range bad {
		_, err := ParseConnectionString(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConnectionString(%q) = %v, want an error containing %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Errorf("error leaks the key: %v", err)
		}
	}
}

// TestSignMatchesDocumentedFormula recomputes the signature independently from the parts of
// the token, as the service does.
func TestSignMatchesDocumentedFormula(t *testing.T) {
	exp := time.Unix(1700000000, 0)
	tok, err := Sign("Hub1.azure-devices.net", "iothubowner", testKey, exp)
	if err != nil {
		t.Fatal(err)
	}
	rest, ok := strings.CutPrefix(tok, "SharedAccessSignature ")
	if !ok {
		t.Fatalf("token %q lacks the prefix", tok)
	}
	q, err := url.ParseQuery(rest)
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("sr") != "hub1.azure-devices.net" || q.Get("se") != "1700000000" || q.Get("skn") != "iothubowner" {
		t.Fatalf("token fields %v", q)
	}
	key, _ := base64.StdEncoding.DecodeString(testKey)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(url.QueryEscape("hub1.azure-devices.net") + "\n1700000000"))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); q.Get("sig") != want {
		t.Fatalf("sig %q, want %q", q.Get("sig"), want)
	}
}

func TestPolicyRefreshesBeforeExpiry(t *testing.T) {
	cs, _ := ParseConnectionString("HostName=dps1.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + testKey)
	now := time.Unix(1700000000, 0)
	p, err := NewTokenPolicy(cs, &TokenPolicyOptions{TTL: 100 * time.Second, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := p.Token()
	now = now.Add(79 * time.Second) // 21 s left, more than the 20 s margin
	if again, _ := p.Token(); again != first {
		t.Fatal("token replaced while still well within its lifetime")
	}
	now = now.Add(2 * time.Second) // 19 s left: inside the margin
	next, _ := p.Token()
	if next == first {
		t.Fatal("token not refreshed inside the refresh margin")
	}
	if !strings.Contains(next, "se=1700000181") {
		t.Fatalf("refreshed token %q does not expire TTL after now", next)
	}
}

func TestPolicyRejectsBadTTL(t *testing.T) {
	cs, _ := ParseConnectionString("HostName=h;SharedAccessKeyName=a;SharedAccessKey=" + testKey)
	for _, ttl := range []time.Duration{-time.Second, time.Millisecond} {
		if _, err := NewTokenPolicy(cs, &TokenPolicyOptions{TTL: ttl}); err == nil {
			t.Errorf("TTL %s accepted", ttl)
		}
	}
}

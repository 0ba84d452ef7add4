package loopback

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNewClientRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"10.0.0.1:443", "example.com:443", "localhost:443", "127.0.0.1", "0.0.0.0:443", "127.0.0.1:0"} {
		if _, err := NewClient(addr, nil); err == nil {
			t.Errorf("NewClient(%q) accepted a non-loopback or incomplete address", addr)
		}
	}
	if _, err := NewClient("127.0.0.1:1", []byte("not a pem")); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Errorf("bad CA accepted: %v", err)
	}
}

// TestNewClientKeepsHostName dials a local TLS server whose certificate is for
// example.com-like names while the request names a real Azure host: the server must see the
// real host name in the Host header and the TLS server name.
func TestNewClientKeepsHostName(t *testing.T) {
	var gotHost, gotSNI string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotSNI = r.Host, r.TLS.ServerName
		io.WriteString(w, "ok")
	}))
	srv.StartTLS()
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := NewClient(srv.Listener.Addr().String(), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	// httptest's certificate is valid for "example.com", so that name verifies; the dial goes
	// to the loopback listener whatever the URL says.
	resp, err := c.Get("https://example.com/devices/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotHost != "example.com" || gotSNI != "example.com" {
		t.Fatalf("server saw Host %q SNI %q, want example.com for both", gotHost, gotSNI)
	}
	// A name the certificate does not cover must fail verification: the CA is trusted, not
	// everything.
	if _, err := c.Get("https://hub1.azure-devices.net/"); err == nil {
		t.Fatal("a certificate for another name was accepted")
	}
}

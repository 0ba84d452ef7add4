package emulator_test

import (
	"net/http"
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// TestCAReferencesGroupAdmitsThroughVerifiedCA: a group that names a DPS CA certificate
// (caReferences) admits a device whose chain ends at that CA, only while the CA is registered
// and verified; the service API never shows the certificate.
func TestCAReferencesGroupAdmitsThroughVerifiedCA(t *testing.T) {
	e := testenv.StartEmulator(t, emulator.Options{})
	c := newClient(t, e)
	root, err := emulator.NewTestCA("fleet-root")
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := root.Issue("fleet-inter", true)
	leaf, _ := inter.Issue("ref-dev-1", false)
	wantStatus(t, c.dps("PUT", "/enrollmentGroups/by-ref", map[string]any{"enrollmentGroupId": "by-ref",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{"caReferences": map[string]any{"primary": "fleet-root-ca"}}}}), 200)
	tc := leaf.TLSCertificate(inter)

	// No such CA yet: nothing admits the device.
	r, _ := registerDevice(t, e, "ref-dev-1", "", &tc)
	dpsErr(t, r, http.StatusUnauthorized)

	// Registered but not verified: still refused.
	if _, err := e.PutCACertificate(emulator.CACertificate{Name: "fleet-root-ca", Certificate: string(root.CertPEM)}); err != nil {
		t.Fatal(err)
	}
	r, _ = registerDevice(t, e, "ref-dev-1", "", &tc)
	dpsErr(t, r, http.StatusUnauthorized)

	// Verified (through the admin endpoint): admitted, as a certificateAuthority identity.
	ar := c.call("PUT", e.Info().DPS.Host, "/_emulator/certificates/fleet-root-ca", "", map[string]any{"certificate": string(root.CertPEM), "isVerified": true})
	wantStatus(t, ar, 200)
	var got emulator.CACertificate
	ar.json(t, &got)
	if got.Subject == "" || got.Thumbprint == "" || !got.IsVerified {
		t.Fatalf("certificate resource %s", ar.body)
	}
	_, st := registerDevice(t, e, "ref-dev-1", "", &tc)
	if st == nil {
		t.Fatal("a chain ending at the verified CA was refused")
	}
	status, hub, _ := regState(t, st)
	if status != "assigned" {
		t.Fatalf("status %s", status)
	}
	var dev struct{ Authentication struct{ Type string } }
	hr := c.hub(0, "GET", "/devices/ref-dev-1", nil)
	hr.json(t, &dev)
	if dev.Authentication.Type != "certificateAuthority" || hub != e.Info().Hubs[0].Host {
		t.Fatalf("identity %s", hr.body)
	}
	// A chain that does not end at that CA is refused.
	other, _ := emulator.NewTestCA("other-root")
	stranger, _ := other.Issue("ref-dev-2", false)
	sc := stranger.TLSCertificate()
	r, _ = registerDevice(t, e, "ref-dev-2", "", &sc)
	dpsErr(t, r, http.StatusUnauthorized)
	// The CA removed: the group admits nobody.
	wantStatus(t, c.call("DELETE", e.Info().DPS.Host, "/_emulator/certificates/FLEET-ROOT-CA", "", nil), 204)
	r, _ = registerDevice(t, e, "ref-dev-1", "", &tc)
	dpsErr(t, r, http.StatusUnauthorized)
}

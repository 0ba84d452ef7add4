package emulator

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// CACertificate is a CA certificate registered with the DPS instance. In Azure it is the
// management-plane resource Microsoft.Devices/provisioningServices/certificates ("Dps
// Certificate - Create Or Update / Get" of the ARM REST API): the service API that the app
// and the SDKs use never shows it, and an X.509 enrollment group refers to it by name in
// attestation.x509.caReferences. The emulator keeps these certificates beside the service
// API, set through [Emulator.PutCACertificate] or PUT /_emulator/certificates/{name}.
type CACertificate struct {
	// Name is the certificate's resource name, which caReferences.primary/secondary name.
	Name string `json:"name"`
	// Certificate is the CA certificate, PEM (or base64 DER) on input; PEM on output.
	Certificate string `json:"certificate"`
	// IsVerified says proof of possession was shown (or the certificate was uploaded with
	// isVerified, as the portal's "automatic verification" does). DPS accepts a device
	// through a caReferences group only with a verified CA ("X.509 certificate attestation":
	// the CA must be uploaded and verified; how-to-verify-certificates.md).
	IsVerified bool `json:"isVerified"`
	// Subject, Thumbprint (SHA-1, upper-case hex) and Expiry are computed, as the resource's
	// properties report them.
	Subject    string `json:"subject,omitempty"`
	Thumbprint string `json:"thumbprint,omitempty"`
	Expiry     string `json:"expiry,omitempty"`
}

type caCert struct {
	info CACertificate
	cert *x509.Certificate
}

// caStore holds the DPS instance's CA certificates, by lower-case name. Its zero value is
// an empty store.
type caStore struct {
	mu sync.RWMutex
	m  map[string]*caCert
}

func (s *caStore) put(c CACertificate) (CACertificate, error) {
	if err := validCAName(c.Name); err != nil {
		return CACertificate{}, err
	}
	cert, err := parseCertificate(c.Certificate)
	if err != nil {
		return CACertificate{}, fmt.Errorf("certificate %s: %w", c.Name, err)
	}
	if !cert.IsCA {
		return CACertificate{}, fmt.Errorf("certificate %s is not a CA certificate (basic constraints)", c.Name)
	}
	c.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	c.Subject = cert.Subject.String()
	c.Thumbprint = thumbprintSHA1(cert)
	c.Expiry = cert.NotAfter.UTC().Format(time.RFC1123)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*caCert{}
	}
	s.m[strings.ToLower(c.Name)] = &caCert{info: c, cert: cert}
	return c, nil
}

func (s *caStore) delete(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[strings.ToLower(name)]
	delete(s.m, strings.ToLower(name))
	return ok
}

func (s *caStore) list() []CACertificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]CACertificate, 0, len(s.m))
	for _, c := range s.m {
		out = append(out, c.info)
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i].Name) < strings.ToLower(out[j].Name) })
	return out
}

// verified returns the certificate registered as name if it is verified, else nil.
func (s *caStore) verified(name string) *x509.Certificate {
	if name == "" {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.m[strings.ToLower(name)]; c != nil && c.info.IsVerified {
		return c.cert
	}
	return nil
}

func (s *caStore) reset() {
	s.mu.Lock()
	s.m = nil
	s.mu.Unlock()
}

// validCAName applies the resource name rules of a DPS certificate (letters, digits, '-',
// '.', '_'; at most 256 characters).
func validCAName(n string) error {
	if n == "" || len(n) > 256 {
		return fmt.Errorf("certificate name %q must be 1 to 256 characters", n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-._", c)) {
			return fmt.Errorf("certificate name %q may hold only letters, digits, '-', '.' and '_'", n)
		}
	}
	return nil
}

// groupSigners returns the certificates an X.509 enrollment group trusts: its inline
// signing certificates, and the verified DPS CA certificates its caReferences name. A
// caReferences group whose CA is missing or unverified admits nobody.
func (d *dps) groupSigners(g *enrollment) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range g.certs {
		if c != nil {
			out = append(out, c)
		}
	}
	if a := g.body.Attestation; a != nil && a.X509 != nil && a.X509.CAReferences != nil {
		for _, name := range []string{a.X509.CAReferences.Primary, a.X509.CAReferences.Secondary} {
			if c := d.cas.verified(name); c != nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// PutCACertificate registers (or replaces) a CA certificate of the DPS instance, as the
// management plane's certificates resource does, and returns it with its computed fields.
func (e *Emulator) PutCACertificate(c CACertificate) (CACertificate, error) { return e.dps.cas.put(c) }

// DeleteCACertificate removes a CA certificate and reports whether it existed.
func (e *Emulator) DeleteCACertificate(name string) bool { return e.dps.cas.delete(name) }

// CACertificates lists the DPS instance's CA certificates, by name.
func (e *Emulator) CACertificates() []CACertificate { return e.dps.cas.list() }

// serveCAAdmin serves /_emulator/certificates[/{name}] (GET lists, PUT registers, DELETE
// removes) and reports whether p was one of its paths.
func (e *Emulator) serveCAAdmin(w http.ResponseWriter, r *http.Request, p string) bool {
	rest, ok := strings.CutPrefix(p, "certificates")
	if !ok || rest != "" && !strings.HasPrefix(rest, "/") {
		return false
	}
	name := strings.TrimPrefix(rest, "/")
	fail := func(status int, err error) { writeJSON(w, status, map[string]string{"error": err.Error()}) }
	switch {
	case name == "" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, e.CACertificates())
	case name != "" && r.Method == http.MethodPut:
		var c CACertificate
		if err := readJSON(r, &c); err != nil {
			fail(http.StatusBadRequest, err)
			return true
		}
		if c.Name != "" && !strings.EqualFold(c.Name, name) {
			fail(http.StatusBadRequest, fmt.Errorf("name %q in the body differs from %q in the path", c.Name, name))
			return true
		}
		c.Name = name
		out, err := e.PutCACertificate(c)
		if err != nil {
			fail(http.StatusBadRequest, err)
			return true
		}
		writeJSON(w, http.StatusOK, out)
	case name != "" && r.Method == http.MethodDelete:
		if !e.DeleteCACertificate(name) {
			fail(http.StatusNotFound, fmt.Errorf("no CA certificate %s", name))
			return true
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(http.StatusNotFound, fmt.Errorf("no admin endpoint %s %s", r.Method, r.URL.Path))
	}
	return true
}

// nearestGroup returns the X.509 group whose certificate is nearest the leaf in a chain that
// verifies (the first group found walking up from the leaf, "X.509 certificate attestation"),
// the first of ids on a tie; nil when no group's certificate verifies the chain. One
// verification against every group's certificates at once gives every chain.
func (d *dps) nearestGroup(ids []string, leaf *x509.Certificate, intermediates []*x509.Certificate) *enrollment {
	roots := x509.NewCertPool()
	owners := map[string][]int{} // certificate → indexes in ids of the groups trusting it
	for i, id := range ids {
		for _, sc := range d.groupSigners(d.groups[id]) {
			if _, ok := owners[string(sc.Raw)]; !ok {
				roots.AddCert(sc)
			}
			owners[string(sc.Raw)] = append(owners[string(sc.Raw)], i)
		}
	}
	if len(owners) == 0 {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil
	}
	best, bestLen := -1, 0
	for _, ch := range chains {
		// Every certificate of the chain above the leaf may be a group's: the nearest counts.
		for depth, c := range ch[1:] {
			for _, i := range owners[string(c.Raw)] {
				if best < 0 || depth+2 < bestLen || depth+2 == bestLen && i < best {
					best, bestLen = i, depth+2
				}
			}
		}
	}
	if best < 0 {
		return nil
	}
	return d.groups[ids[best]]
}

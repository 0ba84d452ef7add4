package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// TestCert is a generated certificate with its private key, for the emulator's own TLS and
// for tests that need X.509 devices and enrollment-group signing certificates.
type TestCert struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewTestCA generates a self-signed CA certificate with the common name cn.
func NewTestCA(cn string) (*TestCert, error) {
	return issue(nil, cn, true, nil, nil)
}

// Issue generates a certificate with the common name cn signed by c. isCA makes it an
// intermediate CA; otherwise it is a leaf usable for TLS client and server authentication.
func (c *TestCert) Issue(cn string, isCA bool) (*TestCert, error) {
	return issue(c, cn, isCA, nil, nil)
}

// TLSCertificate returns c as a tls.Certificate whose chain holds c and then chain (for
// example the intermediates between c and the root).
func (c *TestCert) TLSCertificate(chain ...*TestCert) tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, x := range chain {
		tc.Certificate = append(tc.Certificate, x.Cert.Raw)
	}
	return tc
}

func issue(parent *TestCert, cn string, isCA bool, dns []string, ips []net.IP) (*TestCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key for %s: %w", cn, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(5 * 365 * 24 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	}
	signer, parentCert := crypto.Signer(key), tmpl
	if parent != nil {
		signer, parentCert = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("creating certificate %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &TestCert{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}),
	}, nil
}

// serverTLS builds the emulator's CA and a server certificate naming every served host
// (plus wildcards for the two Azure domains, localhost and 127.0.0.1). The server asks for,
// but does not verify, a client certificate: X.509 devices present theirs and the
// registration handler checks it against enrollments.
func serverTLS(hosts []string) (*TestCert, *tls.Config, error) {
	ca, err := NewTestCA("IoT Emulator Test CA")
	if err != nil {
		return nil, nil, err
	}
	dns := append([]string{"localhost", "*.azure-devices.net", "*.azure-devices-provisioning.net"}, hosts...)
	srv, err := issue(ca, "iot-emulator", false, dns, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{srv.TLSCertificate(ca)},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
	return ca, cfg, nil
}

// ParseTestCert reads a certificate and its private key (PKCS#8, PKCS#1 or SEC 1) from PEM,
// for example a seeded group's signing certificate, so that it can issue more certificates.
func ParseTestCert(certPEM, keyPEM []byte) (*TestCert, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("reading certificate and key: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the private key cannot sign")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &TestCert{Cert: cert, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

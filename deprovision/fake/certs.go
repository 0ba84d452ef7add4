package fake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"time"

	"dpsdeprov/deprovision"
)

// Cert is a test certificate with its key, for building chains (root → intermediate → leaf).
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is the certificate alone; ChainPEM the certificate followed by its issuers;
	// KeyPEM the private key (for a device that presents the certificate).
	PEM, ChainPEM, KeyPEM string
}

// Info is the certificate's DPS-style info.
func (c *Cert) Info() deprovision.CertInfo { return deprovision.InfoOf(c.Cert) }

// NewCA returns a self-signed CA certificate with common name cn.
func NewCA(cn string) *Cert { return issue(cn, nil, true) }

// Issue returns a certificate for cn signed by c; ca makes it an intermediate CA.
func (c *Cert) Issue(cn string, ca bool) *Cert { return issue(cn, c, ca) }

func issue(cn string, parent *Cert, ca bool) *Cert {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"dpsdeprov test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  ca,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	kp := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	c := &Cert{Cert: cert, Key: key, PEM: p, ChainPEM: p, KeyPEM: kp}
	if parent != nil {
		c.ChainPEM = p + parent.ChainPEM
	}
	return c
}

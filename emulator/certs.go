package emulator

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// parseCertificate accepts the three encodings official clients send for an enrollment
// certificate: PEM text, base64 of DER, and base64 of PEM text.
func parseCertificate(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("certificate is empty")
	}
	if strings.Contains(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, errors.New("certificate PEM holds no CERTIFICATE block")
		}
		return x509.ParseCertificate(blk.Bytes)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		return nil, errors.New("certificate is neither PEM nor base64")
	}
	if strings.Contains(string(raw), "-----BEGIN") {
		return parseCertificate(string(raw))
	}
	c, err := x509.ParseCertificate(raw)
	if err != nil {
		return nil, fmt.Errorf("certificate base64 does not hold DER: %w", err)
	}
	return c, nil
}

// x509CertificateInfo is X509CertificateInfo from the DPS spec, computed from the certificate.
type x509CertificateInfo struct {
	SubjectName      string `json:"subjectName"`
	SHA1Thumbprint   string `json:"sha1Thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IssuerName       string `json:"issuerName"`
	NotBeforeUtc     string `json:"notBeforeUtc"`
	NotAfterUtc      string `json:"notAfterUtc"`
	SerialNumber     string `json:"serialNumber"`
	Version          int    `json:"version"`
}

func certInfo(c *x509.Certificate) *x509CertificateInfo {
	return &x509CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   thumbprintSHA1(c),
		SHA256Thumbprint: thumbprintSHA256(c),
		IssuerName:       c.Issuer.String(),
		NotBeforeUtc:     c.NotBefore.UTC().Format(time.RFC3339),
		NotAfterUtc:      c.NotAfter.UTC().Format(time.RFC3339),
		SerialNumber:     strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes())),
		Version:          c.Version,
	}
}

func thumbprintSHA1(c *x509.Certificate) string {
	s := sha1.Sum(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

func thumbprintSHA256(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

package deprovision

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"sort"
	"strings"
)

// Chain is what is known of a certificate's chain of issuers: the names and thumbprints of
// the certificates above it, from DPS's certificate info and, where the sender gave a PEM
// bundle, from signatures verified with crypto/x509.
type Chain struct {
	// Leaf is the certificate the chain starts from.
	Leaf CertInfo
	// Above holds the normalized subject names and upper-case hex thumbprints of every
	// certificate known to be above the leaf (issuers of issuers), plus the issuer name of the
	// topmost one.
	Above map[string]bool
	// Complete is true when the chain is known to end at a self-signed root, so that no
	// unknown certificate can be above it.
	Complete bool
	// Top is the issuer name of the topmost known certificate (for messages).
	Top string
	// Verified is true when the chain was built from the PEM by checking signatures.
	Verified bool
	// Levels are the certificates above the leaf, nearest first: the leaf's issuer (its
	// name alone, unless the PEM holds it), then each verified issuer's issuer.
	Levels []CertInfo
}

// ParseCertificates decodes PEM text (one or more CERTIFICATE blocks) or base64 DER.
func ParseCertificates(text string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(strings.TrimSpace(text))
	if len(rest) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	if !strings.Contains(text, "-----BEGIN") {
		der, err := base64.StdEncoding.DecodeString(string(rest))
		if err != nil {
			return nil, fmt.Errorf("certificate is neither PEM nor base64 DER: %w", err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parsing base64 DER certificate: %w", err)
		}
		return []*x509.Certificate{c}, nil
	}
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if strings.Contains(b.Type, "PRIVATE KEY") {
				return nil, fmt.Errorf("the PEM holds a private key: send only certificates")
			}
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d of the PEM: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("the PEM holds no CERTIFICATE block")
	}
	return certs, nil
}

// InfoOf returns the DPS-style info of c: names as "CN=..., O=..." and upper-case hex thumbprints.
func InfoOf(c *x509.Certificate) CertInfo {
	s1 := sha1.Sum(c.Raw)
	s256 := sha256.Sum256(c.Raw)
	return CertInfo{
		SubjectName:      c.Subject.String(),
		IssuerName:       c.Issuer.String(),
		SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256Thumbprint: strings.ToUpper(hex.EncodeToString(s256[:])),
		NotBefore:        c.NotBefore,
		NotAfter:         c.NotAfter,
	}
}

// normName makes distinguished names comparable whatever their spelling: DPS (from .NET)
// writes "CN=a, O=b", Go writes "CN=a,O=b", and RDN order may differ.
func normName(dn string) string {
	if dn == "" {
		return ""
	}
	var parts []string
	var cur strings.Builder
	esc := false
	for _, r := range dn {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			cur.WriteRune(r)
			esc = true
		case r == ',' || r == ';' || r == '+':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	parts = append(parts, cur.String())
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if ok {
			p = strings.ToUpper(strings.TrimSpace(k)) + "=" + strings.ToLower(strings.TrimSpace(v))
		} else {
			p = strings.ToLower(strings.TrimSpace(p))
		}
		parts[i] = p
	}
	sort.Strings(parts)
	return "dn:" + strings.Join(parts, ",")
}

func thumb(t string) string {
	if t == "" {
		return ""
	}
	return "tp:" + strings.ToUpper(strings.ReplaceAll(t, ":", ""))
}

// CommonName returns the CN of a DPS-style subject name.
func CommonName(dn string) string {
	for _, p := range strings.Split(dn, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "CN") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// BuildChain returns what is known above leaf. pemText, when not empty, is a bundle whose
// certificates are linked to leaf by verified signatures; the leaf of the bundle must be the
// same certificate as leaf (same thumbprint, or same subject when DPS gave no thumbprint),
// otherwise the bundle is ignored and a note says so.
func BuildChain(leaf CertInfo, pemText string) (Chain, string) {
	ch := Chain{Leaf: leaf, Above: map[string]bool{}, Top: leaf.IssuerName}
	add := func(ci CertInfo) {
		for _, k := range []string{normName(ci.SubjectName), thumb(ci.SHA1Thumbprint), thumb(ci.SHA256Thumbprint)} {
			if k != "" {
				ch.Above[k] = true
			}
		}
	}
	if leaf.IssuerName != "" {
		ch.Above[normName(leaf.IssuerName)] = true
		ch.Levels = append(ch.Levels, CertInfo{SubjectName: leaf.IssuerName})
	}
	ch.Complete = leaf.IssuerName != "" && normName(leaf.IssuerName) == normName(leaf.SubjectName)
	if pemText == "" || ch.Complete {
		return ch, ""
	}
	certs, err := ParseCertificates(pemText)
	if err != nil {
		return ch, "certificate in the request ignored for the chain check: " + err.Error()
	}
	var start *x509.Certificate
	for _, c := range certs {
		ci := InfoOf(c)
		if sameCert(ci, leaf) {
			start = c
			break
		}
	}
	if start == nil {
		return ch, "certificate in the request is not the enrollment's certificate; ignored for the chain check"
	}
	cur := start
	seen := map[*x509.Certificate]bool{cur: true}
	for depth := 0; depth < 10; depth++ {
		if cur.CheckSignatureFrom(cur) == nil && string(cur.RawIssuer) == string(cur.RawSubject) {
			ch.Complete = true
			break
		}
		var next *x509.Certificate
		for _, c := range certs {
			if seen[c] || string(c.RawSubject) != string(cur.RawIssuer) {
				continue
			}
			// A real signature check: a bundle cannot claim an issuer it does not hold the key of.
			if cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		seen[next] = true
		ci := InfoOf(next)
		add(ci)
		if depth == 0 && len(ch.Levels) == 1 {
			ch.Levels[0] = ci // the issuer the leaf names, now with its thumbprints
		} else {
			ch.Levels = append(ch.Levels, ci)
		}
		ch.Above[normName(ci.IssuerName)] = true
		ch.Top = ci.IssuerName
		ch.Verified = true
		cur = next
	}
	return ch, ""
}

func sameCert(a, b CertInfo) bool {
	if b.SHA1Thumbprint != "" || b.SHA256Thumbprint != "" {
		return thumb(a.SHA1Thumbprint) == thumb(b.SHA1Thumbprint) && b.SHA1Thumbprint != "" ||
			thumb(a.SHA256Thumbprint) == thumb(b.SHA256Thumbprint) && b.SHA256Thumbprint != ""
	}
	return normName(a.SubjectName) == normName(b.SubjectName) && normName(a.IssuerName) == normName(b.IssuerName)
}

// Cover is the answer to "could an enabled enrollment group admit this certificate?".
type Cover struct {
	// Covered is true when an enabled group provably signs the chain (Group names it), or when
	// that cannot be ruled out (Group is empty).
	Covered bool
	Group   string
	Reason  string
}

// CoveringGroup checks the enabled X.509 groups (other than except) against a chain.
func CoveringGroup(ch Chain, groups []*Group, except string) Cover {
	var others []string
	for _, g := range groups {
		if g == nil || !g.Enabled || g.Attestation != AttestationX509 || g.ID == except {
			continue
		}
		others = append(others, g.ID)
		for _, s := range g.SigningCerts {
			for _, k := range []string{normName(s.SubjectName), thumb(s.SHA1Thumbprint), thumb(s.SHA256Thumbprint)} {
				if k != "" && ch.Above[k] {
					return Cover{Covered: true, Group: g.ID, Reason: fmt.Sprintf("enabled enrollment group %s signs the chain (its certificate %s is in the chain of %s)", g.ID, s.SubjectName, ch.Leaf.SubjectName)}
				}
			}
		}
		if len(g.CAReferences) > 0 {
			// DPS's service API names the CA but never shows it, and the engine does not read
			// the management plane's certificates resource (docs/policy.md, "X.509 safety"):
			// the CA may be any certificate of the chain, a complete one included.
			return Cover{Covered: true, Reason: fmt.Sprintf("enabled enrollment group %s trusts a DPS-registered CA (%s) that DPS does not show, so it may admit the chain of %s", g.ID, strings.Join(g.CAReferences, ", "), ch.Leaf.SubjectName)}
		}
	}
	if len(others) == 0 {
		return Cover{Reason: "no enabled X.509 enrollment group exists"}
	}
	if ch.Complete {
		return Cover{Reason: fmt.Sprintf("the chain ends at a self-signed root and none of the enabled X.509 groups (%s) is in it", strings.Join(others, ", "))}
	}
	return Cover{Covered: true, Reason: fmt.Sprintf("cannot prove that enabled X.509 groups (%s) do not sign a certificate above %q: send the full certificate chain in the event to allow deletion", strings.Join(others, ", "), ch.Top)}
}

// sameLevel reports whether a group's signing certificate s is the certificate at a chain
// level: by thumbprint when the level has one, by name otherwise.
func sameLevel(s, level CertInfo) bool {
	if level.SHA1Thumbprint != "" || level.SHA256Thumbprint != "" {
		return sameCert(s, level)
	}
	return normName(s.SubjectName) == normName(level.SubjectName)
}

// admittingGroup finds the X.509 group DPS admits a member's chain through: the first group
// found walking up from the leaf ("X.509 certificate attestation"), enabled or not. It
// returns nil with the reason when the chain does not tell: a group trusting a DPS-registered
// CA (which DPS does not show) could stand anywhere in it.
func admittingGroup(leaf CertInfo, pemText string, groups []*Group) (*Group, string) {
	ch, _ := BuildChain(leaf, pemText)
	var refs []*Group
	disabledRef := false
	for _, g := range groups {
		if g != nil && g.Attestation == AttestationX509 && len(g.CAReferences) > 0 {
			refs = append(refs, g)
			disabledRef = disabledRef || !g.Enabled
		}
	}
	for _, level := range ch.Levels {
		for _, g := range groups {
			if g == nil || g.Attestation != AttestationX509 {
				continue
			}
			for _, s := range g.SigningCerts {
				if !sameLevel(s, level) {
					continue
				}
				if disabledRef {
					return nil, fmt.Sprintf("group %s signs its chain, but a disabled group trusting a DPS-registered CA may stand nearer the leaf", g.ID)
				}
				return g, ""
			}
		}
	}
	switch {
	case len(refs) == 0:
		return nil, "no enrollment group's certificate is in its chain"
	case !ch.Complete:
		return nil, "no group's certificate is in the known part of its chain: send the full certificate chain"
	case disabledRef:
		return nil, "a disabled group trusting a DPS-registered CA may admit its chain"
	}
	return refs[0], ""
}

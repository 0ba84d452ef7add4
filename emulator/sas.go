package emulator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// sasToken is a parsed "SharedAccessSignature sr=...&sig=...&se=...&skn=..." value, the
// format of authenticate-authorize-sas.md (fields in any order; sig is
// base64(HMAC-SHA256(key, urlencode(sr) + "\n" + se))).
type sasToken struct {
	rawSR  string // sr exactly as sent (still URL-encoded)
	sr     string // sr decoded
	sig    []byte
	expiry int64
	skn    string
}

// parseSAS parses an Authorization header value holding a SAS token.
func parseSAS(h string) (*sasToken, error) {
	const prefix = "SharedAccessSignature "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return nil, errors.New("authorization is not a SharedAccessSignature")
	}
	t := &sasToken{}
	var haveSig, haveSE bool
	for _, part := range strings.Split(strings.TrimSpace(h[len(prefix):]), "&") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("malformed SAS field %q", part)
		}
		dec, err := url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("SAS field %s is not URL-encoded correctly: %w", k, err)
		}
		switch k {
		case "sr":
			t.rawSR, t.sr = v, dec
		case "sig":
			if t.sig, err = base64.StdEncoding.DecodeString(dec); err != nil {
				return nil, fmt.Errorf("SAS sig is not base64: %w", err)
			}
			haveSig = true
		case "se":
			if t.expiry, err = strconv.ParseInt(dec, 10, 64); err != nil {
				return nil, fmt.Errorf("SAS se is not an integer: %w", err)
			}
			haveSE = true
		case "skn":
			t.skn = dec
		}
	}
	if t.sr == "" || !haveSig || !haveSE {
		return nil, errors.New("SAS token lacks sr, sig or se")
	}
	return t, nil
}

// verify checks the token's expiry and its signature with the base64 key. Clients differ in
// how they encode sr in the string to sign (case of the percent escapes, lower-casing), so
// every common form is tried; all of them sign the same resource.
func (t *sasToken) verify(key string, now time.Time) error {
	if t.expiry < now.Unix() {
		return errors.New("SAS token has expired")
	}
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return fmt.Errorf("stored key is not base64: %w", err)
	}
	se := strconv.FormatInt(t.expiry, 10)
	enc := url.QueryEscape(t.sr)
	for _, cand := range []string{t.rawSR, enc, strings.ToLower(enc), url.QueryEscape(strings.ToLower(t.sr)), t.sr} {
		if hmac.Equal(signHMAC(k, cand+"\n"+se), t.sig) {
			return nil
		}
	}
	return errors.New("SAS signature does not match")
}

// coversResource reports whether the token's sr covers resource, matching per path segment
// and ignoring case.
func (t *sasToken) coversResource(resource string) bool {
	sr := strings.ToLower(strings.TrimSuffix(t.sr, "/"))
	r := strings.ToLower(resource)
	for _, p := range []string{"https://", "http://"} {
		sr = strings.TrimPrefix(sr, p)
	}
	return r == sr || strings.HasPrefix(r, sr+"/")
}

func signHMAC(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// DeriveDeviceKey returns the symmetric key of a device in a symmetric-key enrollment group:
// base64(HMAC-SHA256(base64decode(groupKey), registrationID)), as
// concepts-symmetric-key-attestation.md ("Group enrollments") derives it.
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	k, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		return "", fmt.Errorf("group key is not base64: %w", err)
	}
	return base64.StdEncoding.EncodeToString(signHMAC(k, registrationID)), nil
}

// SASToken builds a SAS token for resource signed with the base64 key; policy may be empty
// (device tokens) and ttl is the token lifetime.
func SASToken(resource, key, policy string, ttl time.Duration) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("key is not base64: %w", err)
	}
	se := strconv.FormatInt(time.Now().Add(ttl).Unix(), 10)
	sr := url.QueryEscape(resource)
	sig := base64.StdEncoding.EncodeToString(signHMAC(k, sr+"\n"+se))
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
	if policy != "" {
		tok += "&skn=" + url.QueryEscape(policy)
	}
	return tok, nil
}

// Bearer token audiences the emulator accepts, as Entra ID issues them.
const (
	HubAudience = "https://iothubs.azure.net"
	DPSAudience = "https://azure-devices-provisioning.net"
)

// verifyBearer checks a test JWT: three base64url parts; a payload whose aud (string or
// array) is audience (a trailing slash is allowed) and whose exp and nbf, when present, hold
// now. With a key, the header's alg must be HS256 and the signature must verify; without one,
// the signature is not checked.
func verifyBearer(tok, audience string, key []byte, now time.Time) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return errors.New("bearer token is not a JWT (want header.payload.signature)")
	}
	hb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[0], "="))
	if err != nil {
		return fmt.Errorf("JWT header is not base64url: %w", err)
	}
	pb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return fmt.Errorf("JWT payload is not base64url: %w", err)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return fmt.Errorf("JWT header is not JSON: %w", err)
	}
	if len(key) > 0 {
		if hdr.Alg != "HS256" {
			return fmt.Errorf("JWT alg %q is not HS256", hdr.Alg)
		}
		sig, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[2], "="))
		if err != nil {
			return fmt.Errorf("JWT signature is not base64url: %w", err)
		}
		m := hmac.New(sha256.New, key)
		m.Write([]byte(parts[0] + "." + parts[1]))
		if !hmac.Equal(m.Sum(nil), sig) {
			return errors.New("JWT signature does not match")
		}
	}
	var claims struct {
		Aud any     `json:"aud"`
		Exp float64 `json:"exp"`
		Nbf float64 `json:"nbf"`
	}
	if err := json.Unmarshal(pb, &claims); err != nil {
		return fmt.Errorf("JWT payload is not JSON: %w", err)
	}
	if claims.Exp != 0 && int64(claims.Exp) < now.Unix() {
		return errors.New("JWT has expired")
	}
	if claims.Nbf != 0 && int64(claims.Nbf) > now.Unix()+60 {
		return errors.New("JWT is not valid yet")
	}
	var auds []string
	switch a := claims.Aud.(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				auds = append(auds, s)
			}
		}
	}
	for _, a := range auds {
		if strings.TrimSuffix(a, "/") == audience {
			return nil
		}
	}
	return fmt.Errorf("JWT audience %v is not %s", auds, audience)
}

// TestBearerToken returns a JWT the emulator accepts when bearer tokens are enabled: HS256
// signed with key, or unsigned (alg "none", empty signature) when key is empty; aud is
// audience ([HubAudience] or [DPSAudience]) and exp is now+ttl.
func TestBearerToken(audience string, key []byte, ttl time.Duration) string {
	alg := "none"
	if len(key) > 0 {
		alg = "HS256"
	}
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	p, _ := json.Marshal(map[string]any{"aud": audience, "exp": time.Now().Add(ttl).Unix(), "iat": time.Now().Unix(), "oid": "emulator-test"})
	s := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	sig := ""
	if len(key) > 0 {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		sig = base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	return s + "." + sig
}

// newKey returns a random 32-byte key, base64-encoded, as the services generate.
func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

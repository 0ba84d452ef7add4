package handler

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"dpsdeprov/deprovision"
)

// Limits applied to every event before the engine sees it (docs/reliability.md explains each).
const (
	// MaxEventBytes is Event Grid's limit for one event (1 MB); a larger one cannot have come
	// through Event Grid, so it is refused unread.
	MaxEventBytes = 1 << 20
	// MaxReasonChars bounds the free-text reason. The hub keeps only 128 characters of a
	// statusReason; the rest is for the journal, which needs no novel.
	MaxReasonChars = 1024
	// maxIdentityChars bounds an event's id, source and type: they are journaled, and a Table
	// property holds at most 32K characters.
	maxIdentityChars = 1024
	// maxCertificateBytes bounds the certificate field: a leaf and its chain fit many times.
	maxCertificateBytes = 64 << 10
	// maxChainCertificates bounds how many certificates the PEM may hold (the leaf first, then
	// its issuers, which the engine uses to find a covering enrollment group).
	maxChainCertificates   = 10
	maxRegistrationIDChars = 128
	// maxX509RegistrationIDChars: an X.509 registration id is the certificate's CN, at most
	// 64 characters (Microsoft's DPS X.509 attestation concepts).
	maxX509RegistrationIDChars = 64
	maxDeviceIDChars           = 128
	maxHostChars               = 253
	// maxClockSkew is how far in the future an event's time may be.
	maxClockSkew = 15 * time.Minute
)

// checkRegistrationID applies DPS's registration id rules (the DPS service REST spec):
// at most 128 characters, ASCII letters, digits and - . _ :, no special character first or
// last. (The X.509 article also allows a trailing '-'; the engine's own check, Request.Validate,
// follows the spec text and refuses it, so the handler does too and says so first.) These rules
// also keep / \ # ? % and control characters, and so every path trick, out of URLs and
// journal keys.
func checkRegistrationID(field, id string) *Rejection {
	return checkDPSID(field, id, "registration")
}

// checkGroupID applies the same rules to an enrollment group id, which DPS puts in the same
// URL position and which the journal uses as a key.
func checkGroupID(field, id string) *Rejection {
	return checkDPSID(field, id, "enrollment group")
}

func checkDPSID(field, id, what string) *Rejection {
	if n := utf8.RuneCountInString(id); n > maxRegistrationIDChars {
		return reject("%s is %d characters long; a DPS %s id has at most %d", field, n, what, maxRegistrationIDChars)
	}
	for i, r := range id {
		if isASCIIAlnum(r) {
			continue
		}
		if !strings.ContainsRune("-._:", r) {
			return reject("%s %s contains %s; a DPS %s id has only ASCII letters, digits and - . _ :", field, quote(id), describeRune(r), what)
		}
		if i == 0 {
			return reject("%s %s starts with %q; a DPS %s id starts with a letter or a digit", field, quote(id), r, what)
		}
		if i == len(id)-1 {
			return reject("%s %s ends with %q; a DPS %s id ends with a letter or a digit", field, quote(id), r, what)
		}
	}
	return nil
}

// checkDeviceID applies IoT Hub's device id rules (the identity registry's: at most 128
// ASCII letters, digits and - . + % _ # * ? ! ( ) , = @ $ ') minus the characters that are
// hostile in our URLs and journal keys: '#' and '?' end a URL path, '%' makes escapes such as
// %2F ("/") possible, and '/', '\' and control characters are not valid anyway. The device id
// in an event is only a hint: without it the engine reads the id from the registration state,
// so a device whose id holds one of these characters is still revocable.
func checkDeviceID(field, id string) *Rejection {
	if n := utf8.RuneCountInString(id); n > maxDeviceIDChars {
		return reject("%s is %d characters long; an IoT Hub device id has at most %d", field, n, maxDeviceIDChars)
	}
	for _, r := range id {
		switch {
		case isASCIIAlnum(r) || strings.ContainsRune("-.+_*!(),=@$'", r):
		case r == '#' || r == '?' || r == '%':
			return reject("%s %s contains %q, which this function refuses in a device id (it would change the meaning of a URL); leave %s out: the device id is then read from the device's DPS registration", field, quote(id), r, field)
		default:
			return reject("%s %s contains %s; an IoT Hub device id has only ASCII letters, digits and - . + _ * ! ( ) , = @ $ '", field, quote(id), describeRune(r))
		}
	}
	return nil
}

// checkHub checks a hub host name and returns it as configured. When hubs are configured
// (Admission.Hubs, from IOT_HUBS or the hub connection strings), the name must be one of them
// (case-insensitive); otherwise it must at least be a DNS host name.
func (p *Admission) checkHub(field, host string) (string, *Rejection) {
	if n := len(host); n > maxHostChars {
		return "", reject("%s is %d characters long; a host name has at most %d", field, n, maxHostChars)
	}
	for _, label := range strings.Split(host, ".") {
		ok := label != "" && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for _, r := range label {
			ok = ok && (isASCIIAlnum(r) || r == '-')
		}
		if !ok {
			return "", reject("%s %s is not a hub host name such as myhub.azure-devices.net", field, quote(host))
		}
	}
	if len(p.Hubs) == 0 {
		return host, nil
	}
	for _, h := range p.Hubs {
		if strings.EqualFold(h, host) {
			return h, nil
		}
	}
	return "", reject("%s %s is not a hub this deployment manages (configured: %s); add it to IOT_HUBS (or a hub connection string) if it should be", field, quote(host), strings.Join(p.Hubs, ", "))
}

// cleanReason makes the free-text reason safe to journal and to pass on as a hub statusReason:
// tabs and line breaks become spaces, any other control character (or invalid UTF-8) refuses
// the event, and a reason longer than MaxReasonChars is refused rather than silently cut.
func cleanReason(s string) (string, *Rejection) {
	if !utf8.ValidString(s) {
		return "", reject("data field reason is not valid UTF-8 text")
	}
	if n := utf8.RuneCountInString(s); n > MaxReasonChars {
		return "", reject("data field reason is %d characters long; at most %d are allowed", n, MaxReasonChars)
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			b.WriteRune(' ')
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			return "", reject("data field reason contains the control character %U; send plain text", r)
		default:
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String()), nil
}

// checkCertificate checks the certificate field: PEM text holding only CERTIFICATE blocks
// (the device's leaf first, then optionally its issuers), no private key, nothing else; the
// leaf parses, is not a CA, and has a CN that is a valid X.509 registration id and equals
// registrationID when that is given. It returns the leaf's CN.
//
// An expired leaf is accepted on purpose: a device whose certificate expired may still be the
// one to block (an enrollment group may accept it again once renewed), and expiry says
// nothing about who sent the event.
//
// For a group-wide intent (leaf false) the certificates are the issuers of the group's own
// certificate; only the PEM structure is checked.
func checkCertificate(text, registrationID string, leafFirst bool) (string, *Rejection) {
	if len(text) > maxCertificateBytes {
		return "", reject("data field certificate is %d bytes long; at most %d are allowed (send the device's leaf certificate, optionally followed by its issuers)", len(text), maxCertificateBytes)
	}
	rest := []byte(strings.TrimSpace(text))
	if !strings.HasPrefix(string(rest), "-----BEGIN ") {
		return "", reject("data field certificate is not PEM text: it must start with -----BEGIN CERTIFICATE-----")
	}
	var certs []*x509.Certificate
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil && len(certs) == 0 {
			return "", reject("data field certificate is not a complete PEM block (is it cut off before its -----END line?)")
		}
		if b == nil {
			return "", reject("data field certificate has text that is not a PEM block after certificate %d; send only PEM CERTIFICATE blocks", len(certs))
		}
		rest = []byte(strings.TrimSpace(string(rest)))
		if strings.Contains(b.Type, "PRIVATE KEY") {
			// Never echo the block: it is a secret.
			return "", reject("data field certificate holds a private key (%s block); never send keys, only the device's certificate", b.Type)
		}
		if b.Type != "CERTIFICATE" {
			return "", reject("data field certificate holds a %s block; only CERTIFICATE blocks are allowed", abbreviate(b.Type, 40))
		}
		if len(certs) == maxChainCertificates {
			return "", reject("data field certificate holds more than %d certificates; send the leaf and at most %d issuers", maxChainCertificates, maxChainCertificates-1)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return "", reject("data field certificate: PEM block %d is not an X.509 certificate (%v)", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return "", reject("data field certificate holds no CERTIFICATE block")
	}
	if !leafFirst {
		return "", nil
	}
	leaf := certs[0]
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return "", reject("data field certificate starts with a CA certificate (%s); the device's own leaf certificate must come first", quote(leaf.Subject.String()))
	}
	cn := leaf.Subject.CommonName
	if cn == "" {
		return "", reject("the certificate's subject (%s) has no CN; the CN is the device's registration id", quote(leaf.Subject.String()))
	}
	if rej := checkRegistrationID("the certificate's CN", cn); rej != nil {
		return "", rej
	}
	if n := utf8.RuneCountInString(cn); n > maxX509RegistrationIDChars {
		return "", reject("the certificate's CN is %d characters long; an X.509 registration id has at most %d", n, maxX509RegistrationIDChars)
	}
	if registrationID != "" && !strings.EqualFold(cn, registrationID) {
		return "", reject("the certificate's CN %s is not registrationId %s; DPS matches a device by its certificate's CN, so this certificate belongs to another device", quote(cn), quote(registrationID))
	}
	return cn, nil
}

// checkIdentity bounds an event's id, source and type, which are journaled as they are.
func checkIdentity(req deprovision.Request) *Rejection {
	for _, f := range []struct{ name, v string }{{"id", req.EventID}, {"source", req.Source}, {"type", req.EventType}} {
		if n := utf8.RuneCountInString(f.v); n > maxIdentityChars {
			return reject("the event's %s is %d characters long; at most %d are allowed", f.name, n, maxIdentityChars)
		}
		if !utf8.ValidString(f.v) {
			return reject("the event's %s is not valid UTF-8", f.name)
		}
		for _, r := range f.v {
			if unicode.IsControl(r) {
				return reject("the event's %s contains the control character %U", f.name, r)
			}
		}
	}
	return nil
}

// safeIdentity makes an event id or source fit to journal under: one that is too long, holds
// control characters or looks like a secret is replaced by a name derived from its hash, so
// that redeliveries of the same event still land on the same operation and nothing hostile or
// secret is written.
func safeIdentity(kind, v string) string {
	bad := utf8.RuneCountInString(v) > maxIdentityChars || !utf8.ValidString(v) || redact(v) != v
	for _, r := range v {
		bad = bad || unicode.IsControl(r)
	}
	if !bad {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "unsafe-" + kind + "-sha256-" + hex.EncodeToString(sum[:16])
}

// secretPatterns match the secrets this function could meet: SAS tokens, connection-string
// keys, SAS signature parameters and symmetric keys given as JSON or key=value pairs.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)SharedAccessSignature\s+[^\s"',;]*(?:[&\s]*(?:sr|sig|se|skn)=[^\s"',;&]*)*`),
	regexp.MustCompile(`(?i)\b(SharedAccessKey|AccountKey|AccessKey|SharedAccessSignature|PrimaryKey|SecondaryKey|SymmetricKey|aeg-sas-key|aeg-sas-token)\s*[=:]\s*"?[^\s"';,&]+`),
	regexp.MustCompile(`(?i)\b(sig|signature)=[^\s"';,&]+`),
	regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)`),
}

// base64Token matches a run of characters that may hold a bare symmetric key; looksLikeKey
// decides.
var base64Token = regexp.MustCompile(`[A-Za-z0-9+/=._-]{22,}`)

// redact replaces anything that looks like a secret in free text with [REDACTED]. Besides the
// named forms, a bare base64 run that decodes to 16..64 bytes (IoT symmetric keys are 16 to
// 64 random bytes in base64) is taken for a key when it is padded.
func redact(s string) string {
	for _, re := range secretPatterns {
		s = re.ReplaceAllString(s, "[REDACTED]")
	}
	return base64Token.ReplaceAllStringFunc(s, func(tok string) string {
		if looksLikeKey(tok) {
			return "[REDACTED]"
		}
		return tok
	})
}

func looksLikeKey(tok string) bool {
	// Paths, host names, GUIDs and ids hold . _ - or start with /; keys do not.
	if strings.ContainsAny(tok, "._-") || tok[0] == '/' || len(tok)%4 != 0 {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	if err != nil || len(b) < 16 || len(b) > 64 {
		return false
	}
	// IoT keys are 16, 32 or 64 bytes, so their base64 is padded. An unpadded run is left
	// alone: it may be a device name or a path.
	return strings.HasSuffix(tok, "=")
}

// refuseSecrets rejects a request whose ids or hub names look like secrets. Such a field is
// refused rather than redacted: redacting an id would turn the request into one about
// another device.
func refuseSecrets(req deprovision.Request) *Rejection {
	for _, f := range []struct{ name, v string }{{"registrationId", req.RegistrationID}, {"deviceId", req.DeviceID},
		{"iotHub", req.Hub}, {"targetHub", req.TargetHub}, {"enrollmentGroupId", req.EnrollmentGroupID}} {
		if redact(f.v) != f.v {
			return reject("data field %s looks like it holds a secret (a key or SAS token); secrets are never journaled: send the id alone", f.name)
		}
	}
	return nil
}

// scrub removes secrets from everything of a rejected req that is journaled, logged or
// published, and from reason.
func scrub(req deprovision.Request, reason string) (deprovision.Request, string) {
	req.EventID = safeIdentity("id", req.EventID)
	req.Source = safeIdentity("source", req.Source)
	req.EventType = redact(req.EventType)
	req.RegistrationID = redact(req.RegistrationID)
	req.DeviceID = redact(req.DeviceID)
	req.Hub = redact(req.Hub)
	req.TargetHub = redact(req.TargetHub)
	req.EnrollmentGroupID = redact(req.EnrollmentGroupID)
	req.Reason = redact(req.Reason)
	if req.CertificatePEM != "" && redact(req.CertificatePEM) != req.CertificatePEM {
		// A certificate field holding a key is refused; keep none of it.
		req.CertificatePEM = ""
	}
	return req, redact(reason)
}

func isASCIIAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// describeRune names a character so that a person can find it: control and invisible
// characters by code point, others quoted.
func describeRune(r rune) string {
	if r == utf8.RuneError {
		return "invalid UTF-8"
	}
	if unicode.IsControl(r) || unicode.IsSpace(r) || !unicode.IsPrint(r) {
		return fmt.Sprintf("the character %U", r)
	}
	return fmt.Sprintf("%q", r)
}

// quote quotes a value for a rejection reason, shortened so that a hostile megabyte does not
// become a megabyte of reason.
func quote(s string) string {
	return fmt.Sprintf("%q", abbreviate(s, 80))
}

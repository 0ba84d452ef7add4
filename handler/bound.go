package handler

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"unicode/utf8"

	"dpsdeprov/deprovision"
)

// What a rejected request keeps in the journal. An event of up to Event Grid's 1 MB may put
// all of it in one field; the journal keeps the operation's request in one Table entity (at
// most 1 MiB, 64 KiB per string property, and the journal's own bound of 300,000 characters
// for the request's JSON), so a refused field is cut, and the cut is named with its length
// and the SHA-256 of what was cut, which the sender can match against what it sent.
const (
	// maxJournaledField bounds each id, host name, type and the reason, in characters. Every
	// check refuses far less (128 for a registration id, 1024 for a reason or an event id),
	// so only a field refused for its length is ever cut.
	maxJournaledField = 1024
	// maxJournaledCertificate bounds a rejected certificate that is PEM-like text (printable
	// ASCII and line breaks) and longer than the largest certificate the checks accept
	// (maxCertificateBytes), so a certificate refused for another reason is kept whole. It is
	// below maxCertificateBytes with its marker, which the engine also keeps of a rejection.
	maxJournaledCertificate = 60 << 10
	// maxJournaledOddCertificate bounds a certificate field holding anything else: escaped in
	// JSON, a control character takes six characters, so it is kept much shorter.
	maxJournaledOddCertificate = 4096
)

// boundRejected returns req with every field cut to what the journal keeps of a rejected
// request (see the constants above). In the worst case (every field cut, and made of
// characters JSON escapes as \u00XX) its JSON stays under 200,000 characters. Fields within
// their bounds are unchanged, so a rejected request that was not oversized is journaled as
// it came.
func boundRejected(req deprovision.Request) deprovision.Request {
	for _, f := range []*string{&req.EventID, &req.Source, &req.EventType, &req.RegistrationID, &req.DeviceID,
		&req.Hub, &req.EnrollmentGroupID, &req.TargetHub, &req.Reason} {
		*f = cut(*f, maxJournaledField)
	}
	switch {
	case !pemLike(req.CertificatePEM):
		req.CertificatePEM = cut(req.CertificatePEM, maxJournaledOddCertificate)
	case len(req.CertificatePEM) > maxCertificateBytes:
		req.CertificatePEM = cut(req.CertificatePEM, maxJournaledCertificate)
	}
	return req
}

// cut returns s when it has at most n characters, and otherwise its first characters followed
// by a marker naming how many characters were cut and the SHA-256 of the cut bytes; the result
// has at most n characters. Invalid UTF-8 counts one character per bad byte and is kept as
// it is (the JSON encoder replaces it).
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	// The marker's length depends on the count it names; the count has at most as many
	// digits as len(s), which bounds the marker from above.
	marker := func(count int, tail string) string {
		sum := sha256.Sum256([]byte(tail))
		return fmt.Sprintf("…[%d characters cut, sha256:%s]", count, hex.EncodeToString(sum[:]))
	}
	keep := n - utf8.RuneCountInString(marker(len(s), ""))
	if keep < 0 {
		keep = 0
	}
	i, kept := 0, 0
	for i < len(s) && kept < keep {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		kept++
	}
	tail := s[i:]
	return s[:i] + marker(utf8.RuneCountInString(tail), tail)
}

// pemLike reports whether s holds only what PEM text holds: printable ASCII and line breaks.
func pemLike(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < ' ' || c > '~') && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return true
}

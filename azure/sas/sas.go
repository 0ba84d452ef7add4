// Package sas builds the shared access signature (SAS) tokens that the DPS service API and the
// IoT Hub service API accept, from a service connection string, and provides the azcore policy
// that signs every request with a token it refreshes before the token expires.
//
// The token format and the signature follow the services' documentation:
//
//	SharedAccessSignature sr={urlencode(resource)}&sig={urlencode(base64(HMAC-SHA256(base64decode(key), urlencode(resource)+"\n"+se)))}&se={expiry}&skn={policy}
//
// where the resource of a service-side token is the bare host name.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ConnectionString is a parsed service connection string such as
// "HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=...".
// Either SharedAccessKey (with SharedAccessKeyName) or SharedAccessSignature is set.
type ConnectionString struct {
	HostName              string
	SharedAccessKeyName   string
	SharedAccessKey       string
	SharedAccessSignature string
}

// ParseConnectionString parses a service connection string. Keys are matched
// case-insensitively; unknown keys are rejected so that a misspelt key is not silently
// ignored. The error never contains the key or signature.
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	if strings.TrimSpace(s) == "" {
		return cs, errors.New("connection string is empty")
	}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return cs, fmt.Errorf("connection string part %q has no '='", redactPart(part))
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			cs.HostName = strings.TrimSpace(v)
		case "sharedaccesskeyname":
			cs.SharedAccessKeyName = strings.TrimSpace(v)
		case "sharedaccesskey":
			cs.SharedAccessKey = strings.TrimSpace(v)
		case "sharedaccesssignature":
			cs.SharedAccessSignature = strings.TrimSpace(v)
		case "deviceid", "moduleid":
			return cs, fmt.Errorf("connection string has %s: it is a device connection string, and a service connection string is needed", k)
		default:
			return cs, fmt.Errorf("connection string has unknown key %q", k)
		}
	}
	if cs.HostName == "" {
		return cs, errors.New("connection string has no HostName")
	}
	if strings.ContainsAny(cs.HostName, "/:") {
		return cs, fmt.Errorf("connection string HostName %q must be a bare host name, without scheme, port or path", cs.HostName)
	}
	switch {
	case cs.SharedAccessSignature != "":
		if !strings.HasPrefix(cs.SharedAccessSignature, "SharedAccessSignature ") {
			return cs, errors.New("connection string SharedAccessSignature does not start with \"SharedAccessSignature \"")
		}
	case cs.SharedAccessKey == "":
		return cs, errors.New("connection string has neither SharedAccessKey nor SharedAccessSignature")
	case cs.SharedAccessKeyName == "":
		return cs, errors.New("connection string has SharedAccessKey but no SharedAccessKeyName")
	default:
		if _, err := base64.StdEncoding.DecodeString(cs.SharedAccessKey); err != nil {
			return cs, errors.New("connection string SharedAccessKey is not valid base64")
		}
	}
	return cs, nil
}

// redactPart keeps only the key of a malformed part, which may hold a secret.
func redactPart(p string) string {
	if len(p) > 24 {
		return p[:8] + "…"
	}
	return p
}

// String returns the connection string with its key and signature redacted, so that printing
// or logging one by accident leaks nothing.
func (cs ConnectionString) String() string {
	s := "HostName=" + cs.HostName
	if cs.SharedAccessKeyName != "" {
		s += ";SharedAccessKeyName=" + cs.SharedAccessKeyName
	}
	if cs.SharedAccessKey != "" {
		s += ";SharedAccessKey=REDACTED"
	}
	if cs.SharedAccessSignature != "" {
		s += ";SharedAccessSignature=REDACTED"
	}
	return s
}

// GoString redacts like [ConnectionString.String], for %#v.
func (cs ConnectionString) GoString() string { return "sas.ConnectionString(" + cs.String() + ")" }

// Sign returns a SharedAccessSignature token for resource (for service tokens, the host name),
// signed with the base64 policy key and valid until expiry (rounded down to the second).
func Sign(resource, keyName, key string, expiry time.Time) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", errors.New("shared access key is not valid base64")
	}
	sr := url.QueryEscape(strings.ToLower(resource))
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + url.QueryEscape(keyName)
	}
	return tok, nil
}

package emulator

import (
	"fmt"
	"strings"
)

// validRegistrationID checks a DPS registration or enrollment group id: at most 128
// characters of ASCII letters, digits and - . _ : with no special character first or last
// (the DPS spec's registrationId: case-insensitive, up to 128 characters, alphanumerics and
// the four specials, none first or last; concepts-x509-attestation.md adds the same).
func validRegistrationID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(id) > 128 {
		return fmt.Errorf("%s %q is longer than 128 characters", kind, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if !strings.ContainsRune("-._:", rune(c)) {
			return fmt.Errorf("%s %q holds %q; only letters, digits and - . _ : are allowed", kind, id, c)
		}
		if i == 0 || i == len(id)-1 {
			return fmt.Errorf("%s %q must start and end with a letter or digit", kind, id)
		}
	}
	return nil
}

// validDeviceID checks an IoT Hub device id: at most 128 characters of ASCII letters, digits
// and - : . + % _ # * ? ! ( ) , = @ ; $ ' (iot-hub-devguide-identity-registry.md, "Device
// identity properties": deviceId).
func validDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("device id is empty")
	}
	if len(id) > 128 {
		return fmt.Errorf("device id %q is longer than 128 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-:.+%_#*?!(),=@;$'", c) >= 0 {
			continue
		}
		return fmt.Errorf("device id %q holds %q, which is not allowed", id, c)
	}
	return nil
}

// ifMatch is a parsed If-Match header.
type ifMatch struct {
	present  bool
	wildcard bool
	quoted   bool
	value    string // without surrounding quotes
}

// parseIfMatch reads an If-Match header. An empty quoted value ("\"\"") is no condition:
// the .NET hub client sends it on every create, and the hub creates the device (recorded:
// DevicesClient_IdentityLifecycle.json of Azure/azure-sdk-for-net,
// sdk/iot/Azure.IoT.Hub.Service/tests/SessionRecords/DevicesClientTests, dd27b123).
func parseIfMatch(h string) ifMatch {
	h = strings.TrimSpace(h)
	if h == "" || h == `""` {
		return ifMatch{}
	}
	m := ifMatch{present: true, value: h}
	h = strings.TrimPrefix(h, "W/")
	if len(h) >= 2 && h[0] == '"' && h[len(h)-1] == '"' {
		m.quoted = true
		m.value = h[1 : len(h)-1]
	} else {
		m.value = h
	}
	m.wildcard = m.value == "*"
	return m
}

// unquote removes one pair of surrounding double quotes.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

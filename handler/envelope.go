package handler

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// invocation is the body the Functions host posts for every non-HTTP-forwarded invocation
// ({"Data":…,"Metadata":…}). encoding/json matches the host's PascalCase keys case-insensitively.
type invocation struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// binding returns Data[name]; when the binding has another name (a hand-edited function.json)
// and Data holds exactly one value, that value.
func (inv *invocation) binding(name string) (json.RawMessage, error) {
	if v, ok := inv.Data[name]; ok {
		return v, nil
	}
	for _, k := range sortedKeys(inv.Data) {
		if strings.EqualFold(k, name) {
			return inv.Data[k], nil
		}
	}
	if len(inv.Data) == 1 {
		for _, v := range inv.Data {
			return v, nil
		}
	}
	keys := make([]string, 0, len(inv.Data))
	for k := range inv.Data {
		keys = append(keys, k)
	}
	return nil, fmt.Errorf("the invocation's Data has no binding %q (it has %v)", name, keys)
}

// meta returns Metadata[name] as text (see decodeText), matching the name case-insensitively
// as the host's binding data does.
func (inv *invocation) meta(name string) (string, bool) {
	if v, ok := inv.Metadata[name]; ok {
		s, err := decodeText(v)
		return s, err == nil
	}
	for _, k := range sortedKeys(inv.Metadata) {
		if strings.EqualFold(k, name) {
			s, err := decodeText(inv.Metadata[k])
			return s, err == nil
		}
	}
	return "", false
}

// sortedKeys returns m's keys in order, so that a case-insensitive lookup among two spellings
// of a name always picks the same one.
func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// maxEncodingLevels bounds how many JSON-string wrappings are undone. The host adds one
// (every .NET string goes through JsonConvert.SerializeObject in the host's
// GetHttpScriptInvocationContextValue); a sender that
// serialises its payload before enqueueing adds another. Three covers both with one to spare.
const maxEncodingLevels = 3

// decodeText returns the text a Data or Metadata value stands for. A JSON string is unquoted,
// and unquoted again while its content is itself a JSON string literal: the host double-encodes
// strings ("\"hello\"" for hello), the documentation's samples show them single-encoded, and
// both are accepted. A number or boolean (the docs' `"DequeueCount": 1`) gives its JSON text.
func decodeText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", errors.New("value is null or absent")
	}
	if raw[0] != '"' {
		return string(raw), nil // a number, a boolean, or JSON the caller reads as text
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("value is not a valid JSON string: %w", err)
	}
	for i := 1; i < maxEncodingLevels; i++ {
		t := strings.TrimSpace(s)
		if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' {
			break
		}
		var inner string
		if json.Unmarshal([]byte(t), &inner) != nil {
			break // text that merely starts and ends with a quote
		}
		s = inner
	}
	return s, nil
}

// decodeJSON returns the JSON object or array a value stands for: the value itself when it is
// one (the host's form for Event Grid events and timer info), or the JSON held in a string, at
// any encoding level up to maxEncodingLevels (the form when a binding setting makes the host
// hold the value as a .NET string).
func decodeJSON(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
		return raw, nil
	}
	s, err := decodeText(raw)
	if err != nil {
		return nil, err
	}
	t := strings.TrimSpace(s)
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid([]byte(t)) {
		return json.RawMessage(t), nil
	}
	return nil, fmt.Errorf("value is neither a JSON object nor a string holding one (starts %q)", abbreviate(t, 24))
}

// decodeBase64JSON undoes base64 (the host's form for `dataType: "binary"`) when that yields a
// JSON object or array; ok is false otherwise.
func decodeBase64JSON(s string) (json.RawMessage, bool) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, false
	}
	b = bytes.TrimSpace(b)
	if len(b) > 0 && (b[0] == '{' || b[0] == '[') && json.Valid(b) {
		return b, true
	}
	return nil, false
}

// hostTime parses the host's DateTime renderings leniently (the suffix depends
// on the DateTime's Kind): RFC 3339 with or without fractional seconds, with an offset, with Z,
// or with no zone at all (read as UTC).
func hostTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05Z07:00", "01/02/2006 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date-time", s)
}

// flexTime is a time in a JSON document that the host rendered (see hostTime); JSON null
// leaves it zero.
type flexTime struct{ time.Time }

// UnmarshalJSON reads a host date-time, or null.
func (t *flexTime) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	s, err := decodeText(b)
	if err != nil {
		return err
	}
	if s == "" {
		return nil
	}
	t.Time, err = hostTime(s)
	return err
}

// flexBool accepts true, "true" and "\"true\"" (a bool in Metadata arrives as a string).
type flexBool bool

// UnmarshalJSON reads a boolean in any of its encodings.
func (b *flexBool) UnmarshalJSON(raw []byte) error {
	s, err := decodeText(raw)
	if err != nil {
		return nil
	}
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a boolean", s)
	}
	*b = flexBool(v)
	return nil
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

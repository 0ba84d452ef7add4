package handler

import (
	"fmt"
	"sort"
	"strings"
	"unicode"

	"dpsdeprov/deprovision"
)

// EventTypes maps event types to intents. Matching ignores case and treats `-`, `_`, `.` and
// CamelCase word breaks as equal, so "device-compromised", "DeviceCompromised" and
// "Device.Compromised" are one type; a dotted namespace prefix such as "Contoso.Devices." is
// allowed in front of a known type.
type EventTypes struct {
	byKey map[string]deprovision.Intent
}

// defaultEventTypes is the built-in mapping (docs/app.md), before any configured additions.
var defaultEventTypes = map[string]deprovision.Intent{
	"device-compromised":           deprovision.IntentCompromised,
	"device-stolen":                deprovision.IntentStolen,
	"device-lost":                  deprovision.IntentLost,
	"device-recovered":             deprovision.IntentRecovered,
	"device-found":                 deprovision.IntentRecovered,
	"device-sold":                  deprovision.IntentSold,
	"device-transferred":           deprovision.IntentSold,
	"device-moved":                 deprovision.IntentMoved,
	"device-retired":               deprovision.IntentRetired,
	"device-decommissioned":        deprovision.IntentRetired,
	"enrollment-group-compromised": deprovision.IntentGroupCompromised,
	"enrollment-group-retired":     deprovision.IntentGroupRetired,
}

// ParseIntent returns the intent named s (case-insensitive, word breaks as for event types).
func ParseIntent(s string) (deprovision.Intent, bool) {
	k := typeKey(s)
	for _, in := range deprovision.Intents {
		if typeKey(string(in)) == k {
			return in, true
		}
	}
	return "", false
}

// DefaultEventTypes returns the built-in mapping.
func DefaultEventTypes() EventTypes {
	m := EventTypes{byKey: map[string]deprovision.Intent{}}
	for t, in := range defaultEventTypes {
		m.byKey[typeKey(t)] = in
	}
	return m
}

// ParseEventTypes returns the built-in mapping extended (or overridden) by spec, a
// comma-separated list of `eventType=intent` pairs, e.g.
// "Contoso.Assets.Disposed=retired, SecurityAlert=compromised". An empty spec gives the defaults.
func ParseEventTypes(spec string) (EventTypes, error) {
	m := DefaultEventTypes()
	for _, pair := range strings.Split(spec, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		t, in, ok := strings.Cut(pair, "=")
		t, in = strings.TrimSpace(t), strings.TrimSpace(in)
		if !ok || t == "" || in == "" {
			return EventTypes{}, fmt.Errorf("%q is not an eventType=intent pair", pair)
		}
		intent, ok := ParseIntent(in)
		if !ok {
			return EventTypes{}, fmt.Errorf("%q maps to unknown intent %q (known: %s)", t, in, intentList())
		}
		k := typeKey(t)
		if k == "" {
			return EventTypes{}, fmt.Errorf("%q is not an event type", t)
		}
		m.byKey[k] = intent
	}
	return m, nil
}

func intentList() string {
	s := make([]string, len(deprovision.Intents))
	for i, in := range deprovision.Intents {
		s[i] = string(in)
	}
	return strings.Join(s, ", ")
}

// Intent returns the intent of eventType. The whole type is tried first, then each shorter
// suffix after a `.`, so that a namespace prefix is allowed but a word inside a segment is not
// taken for a known type.
func (m EventTypes) Intent(eventType string) (deprovision.Intent, bool) {
	if len(eventType) > maxIdentityChars {
		// Each dot costs a pass over the rest: a megabyte of dots would take minutes.
		return "", false
	}
	rest := eventType
	for {
		if in, ok := m.byKey[typeKey(rest)]; ok && rest != "" {
			return in, true
		}
		_, after, found := strings.Cut(rest, ".")
		if !found {
			return "", false
		}
		rest = after
	}
}

// Known lists the mapped event types in their canonical form (for messages and docs).
func (m EventTypes) Known() []string {
	s := make([]string, 0, len(m.byKey))
	for k := range m.byKey {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// typeKey reduces an event type to lowercase words joined by "-".
func typeKey(s string) string {
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(s)
	for i, r := range rs {
		switch {
		case r == '-' || r == '_' || r == '.' || unicode.IsSpace(r):
			flush()
			continue
		case unicode.IsUpper(r) && len(cur) > 0:
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			// "deviceCompromised" breaks before C; "IoTHub" breaks before H (an upper
			// letter followed by a lower one ends an acronym).
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				flush()
			}
		}
		cur = append(cur, r)
	}
	flush()
	return strings.Join(words, "-")
}

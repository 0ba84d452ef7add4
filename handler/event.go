package handler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"dpsdeprov/deprovision"
)

// Schema names the envelope an event came in.
type Schema string

// The two schemas Event Grid delivers in (an event subscription's delivery schema).
const (
	SchemaEventGrid   Schema = "EventGridSchema"
	SchemaCloudEvents Schema = "CloudEvents-1.0"
)

// Event is one event, decoded from either schema by the SDK's types, reduced to what
// normalisation needs.
type Event struct {
	Schema  Schema
	ID      string
	Source  string // CloudEvents source, or the Event Grid topic
	Type    string
	Subject string
	Time    time.Time // zero when the event carries none (CloudEvents time is optional)
	// Data is the event's data as a JSON object; nil when the event has none.
	Data json.RawMessage
}

// DecodeEvent decodes one event. A CloudEvent (it has `specversion`) is decoded with
// azcore/messaging.CloudEvent, an Event Grid schema event (it has `eventType`) with
// azeventgrid.Event. On error the returned Event still holds whatever identity could be read,
// so that the rejection can be journaled under the event's own id and source.
//
// The identity it returns is safe to journal (see safeIdentity) and the error names no secret.
func DecodeEvent(raw json.RawMessage) (Event, error) {
	ev, err := decodeEvent(raw)
	if err == nil {
		if rej := checkIdentity(deprovision.Request{EventID: ev.ID, Source: ev.Source, EventType: ev.Type}); rej != nil {
			err = rej
		} else if redact(ev.ID) != ev.ID || redact(ev.Source) != ev.Source {
			err = errors.New("the event's id or source holds what looks like a secret (a key or SAS token); secrets are never journaled: fix the sender")
		}
	}
	ev.ID, ev.Source, ev.Type = safeIdentity("id", ev.ID), safeIdentity("source", ev.Source), redact(ev.Type)
	if err != nil {
		err = errors.New(redact(err.Error()))
	}
	return ev, err
}

func decodeEvent(raw json.RawMessage) (Event, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return Event{}, fmt.Errorf("the event is not a JSON object: %w", err)
	}
	loose := looseIdentity(keys)
	if len(raw) > MaxEventBytes {
		// Event Grid refuses events over 1 MB (413), so this one did not come through it.
		return loose, fmt.Errorf("the event is %d bytes long; Event Grid delivers events of at most %d bytes", len(raw), MaxEventBytes)
	}
	if key, path, found := duplicateKey(raw); found {
		// Through the Functions host a key twice in the event object never arrives: the host
		// parses each event with Json.NET, which keeps the last value (docs/app.md). It does
		// arrive inside data sent as a JSON string or as data_base64 (parseFields checks
		// that), and from anything that posts to the handler unparsed, as devhost may.
		if path == key {
			// An identity attribute given twice identifies nothing: journal the event under
			// the hash of its bytes and unknown-source instead of either value.
			switch key {
			case "id":
				loose.ID = ""
			case "source", "topic":
				loose.Source = ""
			case "type", "eventType":
				loose.Type = ""
			}
		}
		return loose, refuseDuplicateKeys("the event", raw)
	}
	if has(keys, "specversion") {
		// CloudEvents attribute names are lower-case; these are the Event Grid schema's.
		for _, k := range []string{"eventType", "eventTime", "topic", "dataVersion", "metadataVersion"} {
			if has(keys, k) {
				loose.Schema = SchemaCloudEvents
				return loose, fmt.Errorf("the event mixes schemas: it has CloudEvents `specversion` and Event Grid `%s`; send one schema", k)
			}
		}
	}
	switch {
	case has(keys, "specversion"):
		var ce messaging.CloudEvent
		if err := json.Unmarshal(raw, &ce); err != nil {
			loose.Schema = SchemaCloudEvents
			return loose, fmt.Errorf("the CloudEvent cannot be read: %w", firstProblem(keys, err, "id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"))
		}
		if ce.SpecVersion != "1.0" {
			loose.Schema = SchemaCloudEvents
			return loose, fmt.Errorf("the CloudEvent has specversion %q; only 1.0 is supported", ce.SpecVersion)
		}
		ev := Event{Schema: SchemaCloudEvents, ID: ce.ID, Source: ce.Source, Type: ce.Type}
		if ce.Subject != nil {
			ev.Subject = *ce.Subject
		}
		if ce.Time != nil {
			ev.Time = ce.Time.UTC()
		}
		if b, ok := ce.Data.([]byte); ok && len(b) > 0 {
			d, err := eventData(b)
			if err != nil {
				return ev, err
			}
			ev.Data = d
		}
		return ev, nil
	case has(keys, "eventType"):
		var eg azeventgrid.Event
		if err := json.Unmarshal(raw, &eg); err != nil {
			loose.Schema = SchemaEventGrid
			return loose, fmt.Errorf("the Event Grid event cannot be read: %w", firstProblem(keys, err, "id", "topic", "subject", "eventType", "eventTime", "dataVersion", "metadataVersion"))
		}
		ev := Event{Schema: SchemaEventGrid, ID: deref(eg.ID), Source: deref(eg.Topic), Type: deref(eg.EventType), Subject: deref(eg.Subject)}
		if eg.EventTime != nil {
			ev.Time = eg.EventTime.UTC()
		}
		var missing []string
		// In a fixed order: the reason must not change between deliveries (found by FuzzDecodeEvent).
		for _, f := range []struct{ name, v string }{{"id", ev.ID}, {"eventType", ev.Type}} {
			if strings.TrimSpace(f.v) == "" {
				missing = append(missing, f.name)
			}
		}
		if eg.EventTime == nil {
			missing = append(missing, "eventTime")
		}
		if len(missing) > 0 {
			return ev, fmt.Errorf("the Event Grid event lacks required %s", strings.Join(missing, ", "))
		}
		if eg.Data != nil {
			b, err := json.Marshal(eg.Data)
			if err != nil {
				return ev, fmt.Errorf("the event's data cannot be read: %w", err)
			}
			d, err := eventData(b)
			if err != nil {
				return ev, err
			}
			ev.Data = d
		}
		return ev, nil
	default:
		return loose, errors.New("the event is in neither schema: it has no `specversion` (CloudEvents 1.0) and no `eventType` (Event Grid schema)")
	}
}

// firstProblem names the first attribute, in the order given, that is not a string (or, for
// a time, not an RFC 3339 time), so that the reason for refusing an event does not depend on
// the order in which the SDK happened to read its attributes; sdkErr when all are fine.
func firstProblem(keys map[string]json.RawMessage, sdkErr error, names ...string) error {
	for _, n := range names {
		v, ok := keys[n]
		if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return fmt.Errorf("attribute %s is not a string", n)
		}
		if n == "time" || n == "eventTime" {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				return fmt.Errorf("attribute %s %q is not an RFC 3339 time", n, abbreviate(s, 40))
			}
		}
	}
	return sdkErr
}

// eventData returns the event's data as a JSON object: an object as is, or the object held in a
// JSON string (a publisher that serialised its data first; Event Grid passes it through).
func eventData(b []byte) (json.RawMessage, error) {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil, nil
	}
	d, err := decodeJSON(b)
	if err != nil {
		return nil, fmt.Errorf("the event's data: %w", err)
	}
	if d[0] != '{' {
		return nil, errors.New("the event's data is a JSON array; an object is expected")
	}
	return d, nil
}

// looseIdentity reads id, source (or topic), type (or eventType) and subject without the
// schema's rules, for journaling an event the SDK types refuse.
func looseIdentity(keys map[string]json.RawMessage) Event {
	// Exact names first, then the others in sorted order, so that an event with both "id"
	// and "ID" is always journaled under the same one.
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	get := func(wanted ...string) string {
		for _, n := range wanted {
			var s string
			if v, ok := keys[n]; ok && json.Unmarshal(v, &s) == nil {
				return s
			}
			for _, k := range names {
				if strings.EqualFold(k, n) && json.Unmarshal(keys[k], &s) == nil {
					return s
				}
			}
		}
		return ""
	}
	return Event{ID: get("id"), Source: get("source", "topic"), Type: get("type", "eventType"), Subject: get("subject")}
}

func has(keys map[string]json.RawMessage, name string) bool {
	_, ok := keys[name]
	return ok
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// fallbackID names an event whose own id cannot be read: the hash of its bytes, so that a
// redelivery of the same bytes lands on the same journal operation.
func fallbackID(raw []byte) string {
	sum := sha256.Sum256(raw)
	return "sha256-" + hex.EncodeToString(sum[:16])
}

// eventFields are the data fields of an event (docs/app.md, "The functions"), read with
// case-insensitive names.
type eventFields struct {
	RegistrationID, DeviceID, IoTHub, EnrollmentGroupID, Certificate, Reason, Action, TargetHub string
	// Intent and Type let an HTTP request name what it asks for.
	Intent, Type string
	DryRun       *bool
}

// parseFields reads the fields from a data object. Every field but dryRun must be a JSON
// string; dryRun is a boolean, or a string holding one. A key twice anywhere in the data
// refuses it (see duplicateKey).
func parseFields(data json.RawMessage) (eventFields, error) {
	var f eventFields
	if len(data) == 0 {
		return f, nil
	}
	if json.Valid(data) {
		if rej := refuseDuplicateKeys("the data", data); rej != nil {
			return f, rej
		}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return f, fmt.Errorf("the data is not a JSON object: %w", err)
	}
	targets := map[string]*string{
		"registrationid": &f.RegistrationID, "deviceid": &f.DeviceID, "iothub": &f.IoTHub,
		"enrollmentgroupid": &f.EnrollmentGroupID, "certificate": &f.Certificate, "reason": &f.Reason,
		"action": &f.Action, "targethub": &f.TargetHub, "intent": &f.Intent, "type": &f.Type, "eventtype": &f.Type,
	}
	seen := make(map[string]string, len(m))
	for k := range m {
		lk := strings.ToLower(k)
		if lk == "eventtype" {
			lk = "type"
		}
		if prev, dup := seen[lk]; dup {
			// Names are case-insensitive: two spellings of one field would make the outcome
			// depend on which one is read last.
			a, b := prev, k
			if b < a {
				a, b = b, a
			}
			return f, fmt.Errorf("the data has both %s and %s; field names are case-insensitive, so send one", a, b)
		}
		seen[lk] = k
	}
	for k, v := range m {
		lk := strings.ToLower(k)
		if lk == "dryrun" {
			s, err := decodeText(v)
			if err != nil {
				continue
			}
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return f, fmt.Errorf("data field %s is %q; true or false is expected", k, s)
			}
			f.DryRun = &b
			continue
		}
		p, ok := targets[lk]
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		if len(v) == 0 || bytes.Equal(v, []byte("null")) {
			continue
		}
		if v[0] != '"' {
			// A number or a boolean is not an id: taking its text would make 12345, 1.2345e4
			// and "12345" three spellings of one device to some readers and not to others.
			return f, fmt.Errorf("data field %s is a JSON %s; a string is expected (got %s; send it in quotes)", k, jsonKind(v), abbreviate(string(v), 24))
		}
		s, err := decodeText(v)
		if err != nil {
			return f, fmt.Errorf("data field %s: %w", k, err)
		}
		// Only ASCII blanks are trimmed: a trailing control or Unicode space (U+0085) is refused
		// by the field's checks rather than silently turned into another id.
		*p = strings.Trim(s, " \t")
	}
	return f, nil
}

// jsonKind names the JSON type of a value that is not a string.
func jsonKind(v []byte) string {
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// idFromSubject reads a registration id from a subject "devices/{id}" or "registrations/{id}"
// (possibly after a longer path), and a group id from "enrollmentGroups/{id}".
func idFromSubject(subject string) (registrationID, groupID string) {
	parts := strings.Split(strings.Trim(subject, "/"), "/")
	if len(parts) < 2 {
		return "", ""
	}
	kind, id := strings.ToLower(parts[len(parts)-2]), parts[len(parts)-1]
	switch kind {
	case "devices", "registrations":
		return id, ""
	case "enrollmentgroups", "groups":
		return "", id
	}
	return "", ""
}

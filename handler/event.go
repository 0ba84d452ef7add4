package handler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
)

// Schema names the envelope an event came in.
type Schema string

// The two schemas Event Grid delivers in (reference §5).
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
func DecodeEvent(raw json.RawMessage) (Event, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return Event{}, fmt.Errorf("the event is not a JSON object: %w", err)
	}
	loose := looseIdentity(keys)
	switch {
	case has(keys, "specversion"):
		var ce messaging.CloudEvent
		if err := json.Unmarshal(raw, &ce); err != nil {
			loose.Schema = SchemaCloudEvents
			return loose, fmt.Errorf("the CloudEvent cannot be read: %w", err)
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
			return loose, fmt.Errorf("the Event Grid event cannot be read: %w", err)
		}
		ev := Event{Schema: SchemaEventGrid, ID: deref(eg.ID), Source: deref(eg.Topic), Type: deref(eg.EventType), Subject: deref(eg.Subject)}
		if eg.EventTime != nil {
			ev.Time = eg.EventTime.UTC()
		}
		var missing []string
		for name, v := range map[string]string{"id": ev.ID, "eventType": ev.Type} {
			if strings.TrimSpace(v) == "" {
				missing = append(missing, name)
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
	get := func(names ...string) string {
		for _, n := range names {
			for k, v := range keys {
				if strings.EqualFold(k, n) {
					var s string
					if json.Unmarshal(v, &s) == nil {
						return s
					}
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

// eventFields are the data fields of DESIGN §4, read with case-insensitive names.
type eventFields struct {
	RegistrationID, DeviceID, IoTHub, EnrollmentGroupID, Certificate, Reason, Action, TargetHub string
	// Intent and Type let an HTTP request name what it asks for.
	Intent, Type string
	DryRun       *bool
}

// parseFields reads the fields from a data object. Scalars of other JSON types are taken as
// their text (a numeric registration id is still an id); a boolean dryRun may also be a string.
func parseFields(data json.RawMessage) (eventFields, error) {
	var f eventFields
	if len(data) == 0 {
		return f, nil
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
		if v[0] == '{' || v[0] == '[' {
			return f, fmt.Errorf("data field %s is a JSON %s; a string is expected", k, map[byte]string{'{': "object", '[': "array"}[v[0]])
		}
		s, err := decodeText(v)
		if err != nil {
			return f, fmt.Errorf("data field %s: %w", k, err)
		}
		*p = strings.TrimSpace(s)
	}
	return f, nil
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

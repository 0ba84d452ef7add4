// Package jsontime decodes the timestamps of the DPS and IoT Hub service APIs, which are not
// always RFC 3339: .NET services write some values, such as DateTime.MinValue for a device
// that never connected ("0001-01-01T00:00:00"), without a zone. Such values are taken as UTC.
package jsontime

import (
	"encoding/json"
	"fmt"
	"time"
)

// layouts are tried in order.
var layouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"}

// Time is a timestamp as the services write it. JSON null and "" decode to the zero Time
// with Set false.
type Time struct {
	time.Time
	Set bool
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timestamp %s is not a JSON string", b)
	}
	if s == "" {
		return nil
	}
	for _, l := range layouts {
		if v, err := time.Parse(l, s); err == nil {
			t.Time, t.Set = v, true
			return nil
		}
	}
	return fmt.Errorf("timestamp %q is neither RFC 3339 nor ISO 8601 without a zone", s)
}

// Ptr returns the time, or nil when none was given.
func (t Time) Ptr() *time.Time {
	if !t.Set {
		return nil
	}
	v := t.Time
	return &v
}

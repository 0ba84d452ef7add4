package iothub

import (
	"encoding/json"

	"dpsdeprov/azure/internal/jsontime"
)

// The models with timestamps decode them leniently (see package jsontime): the hub writes
// "0001-01-01T00:00:00", without a zone, for a device that never connected, which plain
// time.Time decoding would reject, failing the whole call.

// UnmarshalJSON implements json.Unmarshaler.
func (d *Device) UnmarshalJSON(b []byte) error {
	type plain Device
	aux := struct {
		*plain
		ConnectionStateUpdated jsontime.Time `json:"connectionStateUpdatedTime"`
		StatusUpdated          jsontime.Time `json:"statusUpdatedTime"`
		LastActivity           jsontime.Time `json:"lastActivityTime"`
	}{plain: (*plain)(d)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	d.ConnectionStateUpdatedTime, d.StatusUpdatedTime, d.LastActivityTime = aux.ConnectionStateUpdated.Ptr(), aux.StatusUpdated.Ptr(), aux.LastActivity.Ptr()
	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Twin) UnmarshalJSON(b []byte) error {
	type plain Twin
	aux := struct {
		*plain
		StatusUpdate jsontime.Time `json:"statusUpdateTime"`
		LastActivity jsontime.Time `json:"lastActivityTime"`
	}{plain: (*plain)(t)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	t.StatusUpdateTime, t.LastActivityTime = aux.StatusUpdate.Ptr(), aux.LastActivity.Ptr()
	return nil
}

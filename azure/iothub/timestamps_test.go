package iothub

import (
	"encoding/json"
	"testing"
	"time"
)

// TestDeviceTimestampsWithoutZone decodes a device as the hub returns a never-connected
// one, and checks that every other field still decodes.
func TestDeviceTimestampsWithoutZone(t *testing.T) {
	body := `{"deviceId":"d1","etag":"NTEwOTM0NjY0","status":"disabled","statusReason":null,
		"connectionState":"Disconnected","connectionStateUpdatedTime":"0001-01-01T00:00:00",
		"statusUpdatedTime":"2024-03-01T12:00:00.1234567Z","lastActivityTime":"0001-01-01T00:00:00",
		"cloudToDeviceMessageCount":0,"authentication":{"type":"sas","symmetricKey":{"primaryKey":"a","secondaryKey":"b"}}}`
	var d Device
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	if d.DeviceID != "d1" || d.Status != DeviceStatusDisabled || d.Authentication.SymmetricKey.PrimaryKey != "a" || d.ETag != "NTEwOTM0NjY0" {
		t.Fatalf("decoded %+v", d)
	}
	if d.LastActivityTime == nil || !d.LastActivityTime.IsZero() || d.StatusUpdatedTime == nil || !d.StatusUpdatedTime.Equal(time.Date(2024, 3, 1, 12, 0, 0, 123456700, time.UTC)) {
		t.Fatalf("times %v %v", d.LastActivityTime, d.StatusUpdatedTime)
	}
	var tw Twin
	if err := json.Unmarshal([]byte(`{"deviceId":"d1","statusUpdateTime":"0001-01-01T00:00:00","version":3,"properties":{"desired":{"a":1}}}`), &tw); err != nil || tw.Version != 3 || tw.Properties.Desired["a"] != float64(1) {
		t.Fatalf("twin %+v %v", tw, err)
	}
	// Encoding is unchanged: the standard RFC 3339 form.
	out, _ := json.Marshal(d)
	if !json.Valid(out) {
		t.Fatal("re-encoding failed")
	}
}

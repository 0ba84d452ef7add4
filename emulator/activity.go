package emulator

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Activity is what a hub reports of a device's own traffic: its connection state and when
// the device was last active. On a real hub the device's connections and messages set these
// (the hub's REST specification, Device and Twin: connectionState "Connected"|"Disconnected",
// connectionStateUpdatedTime "the date and time the connection state was last updated",
// lastActivityTime "the date and last time the device last connected, received, or sent a
// message"; the Twin's lastActivityTime "is not updated if the device uses the HTTP/1
// protocol"). The emulator serves no device traffic, so a test sets them with
// [Emulator.SetActivity]; until then a device reports what a new identity reports:
// Disconnected, with both times at 0001-01-01 (the recordings of Microsoft's SDK tests).
type Activity struct {
	ConnectionState            string    `json:"connectionState"`
	ConnectionStateUpdatedTime time.Time `json:"connectionStateUpdatedTime"`
	LastActivityTime           time.Time `json:"lastActivityTime"`
	// TwinLastActivityTime is the twin's lastActivityTime; zero takes LastActivityTime, as
	// for a device that speaks MQTT or AMQP. A device that speaks only HTTPS leaves it at
	// 0001-01-01 while its identity's lastActivityTime moves.
	TwinLastActivityTime time.Time `json:"twinLastActivityTime"`
	// HTTPOnly makes the twin's lastActivityTime stay at 0001-01-01 (see above).
	HTTPOnly bool `json:"httpOnly,omitempty"`
}

// SetActivity sets what hub hubName reports of device id's connection and activity. The
// values stay with the identity through updates, and go with it when it is deleted.
func (e *Emulator) SetActivity(hubName, id string, a Activity) error {
	h := e.hubByName(hubName)
	if h == nil {
		return fmt.Errorf("hub %q is not served by this emulator", hubName)
	}
	switch a.ConnectionState {
	case "":
		a.ConnectionState = "Disconnected"
	case "Connected", "Disconnected":
	default:
		return fmt.Errorf("connectionState %q is not Connected or Disconnected", a.ConnectionState)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.devices[id]
	if d == nil {
		return fmt.Errorf("device %s does not exist on %s", id, h.host)
	}
	c := *d // readers may hold the old value
	c.act = &a
	h.devices[id] = &c
	return nil
}

func emuTime(t time.Time) string {
	if t.IsZero() {
		return zeroTime
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// connectionState is the device's connectionState as the hub reports it.
func (d *device) connectionState() string {
	if d.act == nil {
		return "Disconnected"
	}
	return d.act.ConnectionState
}

// connectionStateUpdated is its connectionStateUpdatedTime.
func (d *device) connectionStateUpdated() string {
	if d.act == nil {
		return zeroTime
	}
	return emuTime(d.act.ConnectionStateUpdatedTime)
}

// lastActivity is the identity's lastActivityTime.
func (d *device) lastActivity() string {
	if d.act == nil {
		return zeroTime
	}
	return emuTime(d.act.LastActivityTime)
}

// twinLastActivity is the twin's lastActivityTime.
func (d *device) twinLastActivity() string {
	switch {
	case d.act == nil || d.act.HTTPOnly:
		return zeroTime
	case !d.act.TwinLastActivityTime.IsZero():
		return emuTime(d.act.TwinLastActivityTime)
	}
	return emuTime(d.act.LastActivityTime)
}

// serveActivity serves PUT /_emulator/hubs/{hub}/devices/{id}/activity.
func (e *Emulator) serveActivity(w http.ResponseWriter, r *http.Request, p string) bool {
	rest, ok := strings.CutPrefix(p, "hubs/")
	if !ok || r.Method != http.MethodPut {
		return false
	}
	hubName, rest, ok := strings.Cut(rest, "/devices/")
	id, tail, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || tail != "activity" || id == "" {
		return false
	}
	var a Activity
	if err := readJSON(r, &a); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return true
	}
	if err := e.SetActivity(hubName, id, a); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return true
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

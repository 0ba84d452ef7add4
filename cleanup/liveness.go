package cleanup

import (
	"context"
	"fmt"
	"time"
)

// Activity is what a hub itself reports of a device's life: the identity's connectionState,
// connectionStateUpdatedTime and lastActivityTime, and its twin's lastActivityTime. IoT Hub
// raises no connection events for a device that speaks only HTTPS, and a lost connect event
// leaves the last-seen row behind, so the stale pass asks the hub before it retires anything.
// Microsoft documents lastActivityTime as approximate: it is taken as evidence of life, never
// as evidence of death.
type Activity struct {
	Connected              bool
	ConnectionStateUpdated time.Time
	LastActivity           time.Time
	TwinLastActivity       time.Time
}

// Liveness reads a device's activity from its hub.
type Liveness interface {
	// Activity returns ErrNotFound (wrapped) when the hub has no such identity.
	Activity(ctx context.Context, hub, deviceID string) (Activity, error)
}

// evidence says what in a shows the device alive since since ("" when nothing does), and the
// newest time it shows.
func (a Activity) evidence(since time.Time) (string, time.Time) {
	newest := a.LastActivity
	for _, t := range []time.Time{a.TwinLastActivity, a.ConnectionStateUpdated} {
		if t.After(newest) {
			newest = t
		}
	}
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	switch {
	case a.Connected:
		return "the hub reports it connected (since " + stamp(a.ConnectionStateUpdated) + ")", newest
	case a.LastActivity.After(since):
		return "the hub reports its last activity at " + stamp(a.LastActivity), newest
	case a.TwinLastActivity.After(since):
		return "its twin reports its last activity at " + stamp(a.TwinLastActivity), newest
	case a.ConnectionStateUpdated.After(since):
		return fmt.Sprintf("the hub reports its connection state changed at %s", stamp(a.ConnectionStateUpdated)), newest
	}
	return "", newest
}

package adapter

import (
	"context"
	"time"

	"dpsdeprov/azure/iothub"
	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

// Liveness reads what the hubs report of a device's life, for the cleanup's stale pass: the
// identity through devices (so that the read is paced by the hub rate limiter like any other
// registry operation), and the twin through the hub's client (twin reads have their own, much
// larger, throttle).
type Liveness struct {
	devices deprovision.Devices
	clients map[string]*iothub.Client // by canonical host name
}

var _ cleanup.Liveness = (*Liveness)(nil)

// NewLiveness returns the reader over devices (the Devices of [NewHubs], rate limited or not)
// and the hubs' clients, keyed by host name.
func NewLiveness(devices deprovision.Devices, clients map[string]*iothub.Client) *Liveness {
	l := &Liveness{devices: devices, clients: map[string]*iothub.Client{}}
	for h, c := range clients {
		l.clients[iothub.CanonicalHost(h)] = c
	}
	return l
}

// Activity implements cleanup.Liveness: connectionState, connectionStateUpdatedTime and
// lastActivityTime of the identity, and the twin's lastActivityTime. The hub writes
// 0001-01-01 for "never", which reads as the zero time.
func (l *Liveness) Activity(ctx context.Context, hub, deviceID string) (cleanup.Activity, error) {
	var a cleanup.Activity
	d, err := l.devices.GetDevice(ctx, hub, deviceID)
	if err != nil {
		return a, err
	}
	if id, ok := d.Identity.(*iothub.Device); ok {
		a.Connected = id.ConnectionState == iothub.ConnectionStateConnected
		a.ConnectionStateUpdated, a.LastActivity = timeOf(id.ConnectionStateUpdatedTime), timeOf(id.LastActivityTime)
	}
	c, ok := l.clients[iothub.CanonicalHost(hub)]
	if !ok {
		return a, nil
	}
	t, err := c.GetTwin(ctx, deviceID, nil)
	if err != nil {
		return a, mapError(err, "reading the twin of %s in %s", deviceID, hub)
	}
	a.TwinLastActivity = timeOf(t.LastActivityTime)
	return a, nil
}

// timeOf is t, or the zero time for nil and the hub's 0001-01-01.
func timeOf(t *time.Time) time.Time {
	if t == nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t.UTC()
}

package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"

	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// An update costs what the hub charges for it: one token for a device written back as
// GetDevice read it (the adapter writes the identity it carries), two for any other update
// (the adapter reads first), one for a create; the tokens granted equal the hub's registry
// operations every time.
func TestPutDeviceCostsWhatTheHubCharges(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	const hub = "hub1.azure-devices.net"
	var tokens atomic.Int64
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000, OnGrant: func(g Grant) { tokens.Add(int64(g.Tokens)) }})
	d := NewLimitedDevices(hubAdapter(t, em), l, nil)
	ctx := context.Background()
	check := func(what string, want int64) {
		t.Helper()
		if got, ops := tokens.Load(), em.Stats().Hubs["hub1"].RegistryOps; got != want || ops != want {
			t.Errorf("%s: %d tokens granted, %d registry operations charged; want %d", what, got, ops, want)
		}
		tokens.Store(0)
		em.ResetStats()
	}
	em.ResetStats()
	if _, err := d.PutDevice(ctx, &deprovision.Device{Hub: hub, DeviceID: "dev-1", Enabled: true}, ""); err != nil {
		t.Fatal(err)
	}
	check("create", 1)
	got, err := d.GetDevice(ctx, hub, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	check("read", 1)
	got.Enabled = false
	w, err := d.PutDevice(ctx, got, got.ETag)
	if err != nil {
		t.Fatal(err)
	}
	check("update of the device as read", 1)
	w.Enabled = true
	w, err = d.PutDevice(ctx, w, "*")
	if err != nil {
		t.Fatal(err)
	}
	check("unconditional update", 2)
	if _, err := d.PutDevice(ctx, &deprovision.Device{Hub: hub, DeviceID: "dev-1", Enabled: false}, w.ETag); err != nil {
		t.Fatal(err)
	}
	check("update of a device built by hand", 2)
}

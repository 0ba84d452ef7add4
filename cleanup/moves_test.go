package cleanup_test

import (
	"context"
	"log/slog"
	"testing"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

// The moves pass confirms a move once DPS shows the device in its target hub, and leaves a
// move alone until then; the journal on Azurite keeps the wait between runs.
func TestMovesPassConfirmsOnlyMovedDevices(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.device("mv-1")
	op, err := w.engine.Submit(ctx, deprovision.Request{EventID: "ev-mv-1", Source: "urn:test", Intent: deprovision.IntentMoved,
		RegistrationID: "mv-1", TargetHub: "hub2.azure-devices.net", EventTime: w.clock.Now()})
	if err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("moved: %v %v", op, err)
	}
	moves := deprovision.NewMoves(deprovision.Deps{Registrations: w.dps, Devices: w.hubs, Journal: w.j, Clock: w.clock, Logger: slog.New(slog.DiscardHandler)})
	r, err := cleanup.New(cleanup.Deps{Engine: w.engine, Operations: w.j, Journal: w.hk, Enrollments: w.dps, Registrations: w.dps,
		Devices: w.hubs, Moves: moves, Clock: w.clock}, cleanup.Options{Hubs: []string{hub1}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.RunPass(ctx, cleanup.PassMoves, cleanup.Overrides{})
	if p := passReport(t, rep, cleanup.PassMoves); err != nil || p.Checked != 1 || p.Submitted != 0 {
		t.Fatalf("before the device moved: %+v %v", p, err)
	}
	if _, dev := w.enabled("mv-1"); !dev {
		t.Fatal("the old identity went before the device moved")
	}
	// The device provisions again into hub2 (DPS would remove the old identity; here it is left).
	w.dps.AddRegistration(deprovision.Registration{RegistrationID: "mv-1", DeviceID: "mv-1", AssignedHub: "hub2.azure-devices.net", Status: "assigned"}, "")
	rep, err = r.RunPass(ctx, cleanup.PassMoves, cleanup.Overrides{})
	if p := passReport(t, rep, cleanup.PassMoves); err != nil || p.Checked != 1 || p.Submitted != 1 {
		t.Fatalf("after the device moved: %+v %v", p, err)
	}
	if _, ok := w.hubs.Device(hub1, "mv-1"); ok {
		t.Fatal("the identity left in the old hub was not removed")
	}
	ds, err := w.j.GetDevice(ctx, "mv-1")
	if err != nil || ds.MoveTarget != "" || ds.HubAction != deprovision.HubMoved {
		t.Fatalf("device row %+v %v", ds, err)
	}
	rep, _ = r.RunPass(ctx, cleanup.PassMoves, cleanup.Overrides{})
	if p := passReport(t, rep, cleanup.PassMoves); p.Checked != 0 {
		t.Fatalf("a confirmed move is checked again: %+v", p)
	}
}

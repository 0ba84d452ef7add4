package journal_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/internal/testenv"
)

func newHousekeeping(t *testing.T) (*journal.Journal, *journal.Housekeeping) {
	t.Helper()
	_, svc := newJournal(t)
	o := journal.Options{TablePrefix: testenv.UniqueName("h")}
	j, err := journal.New(context.Background(), svc, o)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := journal.NewHousekeeping(context.Background(), svc, o)
	if err != nil {
		t.Fatal(err)
	}
	return j, hk
}

func TestSightingsMergeForwardAndListAfterAKey(t *testing.T) {
	_, hk := newHousekeeping(t)
	ctx := context.Background()
	record := func(hub, dev string, s deprovision.Sighting) *deprovision.Sighting {
		t.Helper()
		s.Hub, s.DeviceID = hub, dev
		got, err := hk.RecordSighting(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	record("Hub-B", "dev?1", deprovision.Sighting{LastSeen: t0, LastEvent: "connected"})
	got := record("hub-b", "dev?1", deprovision.Sighting{LastSeen: t0.Add(-time.Hour), LastEvent: "telemetry"})
	if !got.LastSeen.Equal(t0) || got.LastEvent != "connected" {
		t.Fatalf("an older event moved last seen back: %+v", got)
	}
	got = record("hub-b", "dev?1", deprovision.Sighting{Deleted: t0.Add(time.Hour)})
	if got.Deleted.IsZero() || !got.LastSeen.Equal(t0) {
		t.Fatalf("after a delete: %+v", got)
	}
	got = record("hub-b", "dev?1", deprovision.Sighting{Created: t0.Add(2 * time.Hour), LastSeen: t0.Add(2 * time.Hour)})
	if !got.Deleted.IsZero() {
		t.Fatalf("created again after the delete, still deleted: %+v", got)
	}
	record("hub-a", "z", deprovision.Sighting{LastSeen: t0})
	record("hub-b", "Dev#0", deprovision.Sighting{LastSeen: t0})
	record("hub-c", "a", deprovision.Sighting{LastSeen: t0})
	var all []string
	var keys []string
	for s, err := range hk.Sightings(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		all, keys = append(all, s.Hub+"/"+s.DeviceID), append(keys, s.Key)
	}
	if len(all) != 4 {
		t.Fatalf("sightings: %v", all)
	}
	for i := range keys {
		var rest []string
		for s, err := range hk.Sightings(ctx, keys[i]) {
			if err != nil {
				t.Fatal(err)
			}
			rest = append(rest, s.Hub+"/"+s.DeviceID)
		}
		if strings.Join(rest, ",") != strings.Join(all[i+1:], ",") {
			t.Fatalf("after %s: %v, want %v", keys[i], rest, all[i+1:])
		}
	}
}

func TestCursorsFindingsAndDeviceRows(t *testing.T) {
	j, hk := newHousekeeping(t)
	ctx := context.Background()
	if _, err := hk.GetCursor(ctx, "drift"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("unknown cursor: %v", err)
	}
	c := &deprovision.Cursor{Pass: "drift", After: "dev-3", RunID: "r1", Updated: t0}
	if err := hk.PutCursor(ctx, c); err != nil {
		t.Fatal(err)
	}
	stale := *c
	c.After = "dev-9"
	if err := hk.PutCursor(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := hk.PutCursor(ctx, &stale); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("a stale cursor write: %v; want ErrPreconditionFailed", err)
	}
	for _, rid := range []string{"b?2", "a/1", "c#3"} {
		if err := j.PutDevice(ctx, &deprovision.DeviceState{RegistrationID: rid, Intent: deprovision.IntentLost, Updated: t0}); err != nil {
			t.Fatal(err)
		}
	}
	var rows []string
	for ds, err := range hk.DeviceRows(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, ds.RegistrationID)
	}
	if len(rows) != 3 {
		t.Fatalf("device rows: %v", rows)
	}
	var rest []string
	for ds, err := range hk.DeviceRows(ctx, rows[0]) {
		if err != nil {
			t.Fatal(err)
		}
		rest = append(rest, ds.RegistrationID)
		if ds.Intent != deprovision.IntentLost || ds.ETag == "" {
			t.Fatalf("row %+v", ds)
		}
	}
	if strings.Join(rest, ",") != strings.Join(rows[1:], ",") {
		t.Fatalf("after %s: %v, want %v", rows[0], rest, rows[1:])
	}
	f := deprovision.Finding{ID: "drift/device-enabled/a/1/op-1", Pass: "drift", Kind: "device-enabled", RegistrationID: "a/1", RunID: "r1", Time: t0}
	for range 2 { // a re-run rewrites the same row
		if err := hk.RecordFinding(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := hk.RecordFinding(ctx, deprovision.Finding{ID: "x", RunID: "r2", Time: t0}); err != nil {
		t.Fatal(err)
	}
	count := func(run string) int {
		n := 0
		for _, err := range hk.Findings(ctx, run) {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		return n
	}
	if count("r1") != 1 || count("r2") != 1 || count("") != 2 {
		t.Fatalf("findings: r1 %d, r2 %d, all %d", count("r1"), count("r2"), count(""))
	}
}

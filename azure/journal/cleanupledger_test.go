package journal_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"dpsdeprov/azure/journal"
	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
	"dpsdeprov/internal/testenv"
)

// A hub's last-seen rows spread over partitions; a row written before they did (one partition
// per hub) is still read, and moves to its bucket when it is next written.
func TestSightingsSpreadOverPartitionsAndMoveThere(t *testing.T) {
	ctx := context.Background()
	_, svc := newJournal(t)
	prefix := testenv.UniqueName("s")
	hk, err := journal.NewHousekeeping(ctx, svc, journal.Options{TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if _, err := hk.RecordSighting(ctx, deprovision.Sighting{Hub: "hub1", DeviceID: fmt.Sprintf("d-%d", i), LastSeen: t0}); err != nil {
			t.Fatal(err)
		}
	}
	seen := svc.NewClient(prefix + "seen")
	parts := map[string]bool{}
	pager := seen.NewListEntitiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range page.Entities {
			var e struct{ PartitionKey string }
			_ = json.Unmarshal(raw, &e)
			parts[e.PartitionKey] = true
		}
	}
	if len(parts) < 8 {
		t.Fatalf("40 devices of one hub in %d partitions %v; want them spread", len(parts), parts)
	}
	// A row of old, in the hub's single partition.
	old, _ := json.Marshal(map[string]any{"PartitionKey": "hub1", "RowKey": "legacy", "Hub": "hub1", "DeviceID": "legacy",
		"LastSeen": t0.Add(-time.Hour).Format(time.RFC3339Nano), "LastEvent": "Microsoft.Devices.DeviceDisconnected"})
	if _, err := seen.AddEntity(ctx, old, nil); err != nil {
		t.Fatal(err)
	}
	got, err := hk.GetSighting(ctx, "hub1", "legacy")
	if err != nil || !got.LastSeen.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("the old row: %+v %v", got, err)
	}
	if got, err = hk.RecordSighting(ctx, deprovision.Sighting{Hub: "hub1", DeviceID: "legacy", LastSeen: t0, LastEvent: "Microsoft.Devices.DeviceConnected"}); err != nil || got.Key == "hub1/legacy" {
		t.Fatalf("moving the old row: %+v %v", got, err)
	}
	if _, err := seen.GetEntity(ctx, "hub1", "legacy", nil); err == nil {
		t.Fatal("the old row is still in the hub's single partition")
	}
	if got, err = hk.GetSighting(ctx, "hub1", "legacy"); err != nil || !got.LastSeen.Equal(t0) {
		t.Fatalf("the moved row: %+v %v", got, err)
	}
	n := 0
	for _, err := range hk.Sightings(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 41 {
		t.Fatalf("listed %d sightings, want 41", n)
	}
	if err := hk.DeleteSighting(ctx, "hub1", "legacy"); err != nil {
		t.Fatal(err)
	}
	if _, err := hk.GetSighting(ctx, "hub1", "legacy"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("after DeleteSighting: %v", err)
	}
}

// The ledger: a hub's newest event only moves forward; the fleet count is written under its
// ETag; tracked groups are listed; old findings are pruned and recent ones read back by time.
func TestLedgerKeepsBeatsFleetGroupsAndFindings(t *testing.T) {
	ctx := context.Background()
	_, hk := newHousekeeping(t)
	for _, at := range []time.Time{t0, t0.Add(-time.Hour), t0.Add(time.Minute)} {
		if err := hk.RecordBeat(ctx, "Hub1", at); err != nil {
			t.Fatal(err)
		}
	}
	beats, err := hk.Beats(ctx)
	if err != nil || !beats["hub1"].Equal(t0.Add(time.Minute)) {
		t.Fatalf("beats %v %v", beats, err)
	}
	if _, err := hk.GetFleet(ctx); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatalf("fleet before the first count: %v", err)
	}
	f := &cleanup.Fleet{Count: 7, CountedAt: t0, Counting: 3}
	if err := hk.PutFleet(ctx, f); err != nil {
		t.Fatal(err)
	}
	stale := *f
	f.Count = 8
	if err := hk.PutFleet(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := hk.PutFleet(ctx, &stale); !errors.Is(err, deprovision.ErrPreconditionFailed) {
		t.Fatalf("a stale fleet write: %v", err)
	}
	if got, err := hk.GetFleet(ctx); err != nil || got.Count != 8 || got.Counting != 3 {
		t.Fatalf("fleet %+v %v", got, err)
	}
	if err := hk.TrackGroup(ctx, cleanup.TrackedGroup{GroupID: "G-1", OperationID: "op-1", Intent: deprovision.IntentGroupCompromised, Action: "disabled", Time: t0}); err != nil {
		t.Fatal(err)
	}
	for g, err := range hk.TrackedGroups(ctx) {
		if err != nil || g.GroupID != "G-1" || g.Intent != deprovision.IntentGroupCompromised || g.OperationID != "op-1" {
			t.Fatalf("tracked %+v %v", g, err)
		}
	}
	for i, at := range []time.Time{t0.Add(-100 * 24 * time.Hour), t0.Add(-time.Hour), t0} {
		run := at.Format("20060102T150405Z") + "-r" + fmt.Sprint(i)
		if err := hk.RecordFinding(ctx, deprovision.Finding{ID: "f", Pass: "drift", Kind: "device-enabled", RunID: run, Time: at}); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, err := range hk.FindingsSince(ctx, t0.Add(-2*time.Hour)) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("findings since two hours before: %d, want 2", n)
	}
	if pruned, err := hk.PruneFindings(ctx, t0.Add(-90*24*time.Hour), 10); err != nil || pruned != 1 {
		t.Fatalf("pruned %d, %v; want the finding 100 days old", pruned, err)
	}
}

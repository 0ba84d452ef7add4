package journal

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

var _ cleanup.Ledger = (*Housekeeping)(nil)

// Partitions of the {prefix}cleanup table that the ledger keeps.
const (
	beatPartition    = "beat"          // one row per hub: its newest lifecycle event
	fleetPartition   = "fleet"         // the stale pass's fleet count
	trackedPartition = "tracked-group" // one row per group this system disabled or deleted
	fleetRow         = "stale"
)

// runStamp is the form of a run id's leading time (cleanup run ids start with it), so that
// finding partitions sort and filter by time.
const runStamp = "20060102T150405Z"

// RecordBeat moves hub's newest lifecycle event time forward to at.
func (h *Housekeeping) RecordBeat(ctx context.Context, hub string, at time.Time) error {
	rk, err := EncodeKey(strings.ToLower(hub))
	if err != nil {
		return err
	}
	for range 6 {
		etag := ""
		resp, err := h.cleanup.GetEntity(ctx, beatPartition, rk, nil)
		switch err = classify(err); {
		case errors.Is(err, deprovision.ErrNotFound):
		case err != nil:
			return fmt.Errorf("reading the newest event of hub %s: %w", hub, err)
		default:
			e, err := decode(resp.Value)
			if err != nil {
				return err
			}
			if !at.After(e.time("At")) {
				return nil
			}
			etag = string(resp.ETag)
		}
		_, err = h.put(ctx, h.cleanup, entity{"PartitionKey": beatPartition, "RowKey": rk, "Hub": strings.ToLower(hub), "At": stamp(at)}, etag)
		if errors.Is(err, deprovision.ErrPreconditionFailed) || errors.Is(err, deprovision.ErrConflict) {
			continue // another instance moved it: read again
		}
		if err != nil {
			return fmt.Errorf("writing the newest event of hub %s: %w", hub, err)
		}
		return nil
	}
	return deprovision.Transient(fmt.Errorf("the newest event of hub %s kept changing: %w", hub, deprovision.ErrBusy))
}

// Beats returns each hub's newest lifecycle event time.
func (h *Housekeeping) Beats(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	for e, err := range h.query(ctx, h.cleanup, "PartitionKey eq '"+beatPartition+"'") {
		if err != nil {
			return nil, err
		}
		out[e.str("Hub")] = e.time("At")
	}
	return out, nil
}

// GetFleet reads the fleet count (ErrNotFound before the first).
func (h *Housekeeping) GetFleet(ctx context.Context) (*cleanup.Fleet, error) {
	resp, err := h.cleanup.GetEntity(ctx, fleetPartition, fleetRow, nil)
	if err != nil {
		return nil, fmt.Errorf("reading the fleet count: %w", classify(err))
	}
	e, err := decode(resp.Value)
	if err != nil {
		return nil, err
	}
	return &cleanup.Fleet{Count: e.int("Count"), CountedAt: e.time("CountedAt"), Counting: e.int("Counting"), ETag: string(resp.ETag)}, nil
}

// PutFleet creates (ETag "") or replaces (ETag matching) the fleet count, and sets f.ETag.
func (h *Housekeeping) PutFleet(ctx context.Context, f *cleanup.Fleet) error {
	etag, err := h.put(ctx, h.cleanup, entity{"PartitionKey": fleetPartition, "RowKey": fleetRow, "Count": f.Count,
		"CountedAt": stamp(f.CountedAt), "Counting": f.Counting}, f.ETag)
	if err != nil {
		return fmt.Errorf("writing the fleet count: %w", err)
	}
	f.ETag = etag
	return nil
}

// TrackGroup records (upserts) a group this system disabled or deleted.
func (h *Housekeeping) TrackGroup(ctx context.Context, g cleanup.TrackedGroup) error {
	rk, err := EncodeKey(strings.ToLower(g.GroupID))
	if err != nil {
		return err
	}
	b, err := entity{"PartitionKey": trackedPartition, "RowKey": rk, "GroupID": g.GroupID, "OperationID": g.OperationID,
		"Intent": string(g.Intent), "Action": g.Action, "Time": stamp(g.Time)}.marshal()
	if err != nil {
		return err
	}
	if _, err := h.cleanup.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return fmt.Errorf("tracking enrollment group %s: %w", g.GroupID, classify(err))
	}
	return nil
}

// TrackedGroups lists the groups TrackGroup recorded.
func (h *Housekeeping) TrackedGroups(ctx context.Context) iter.Seq2[*cleanup.TrackedGroup, error] {
	return func(yield func(*cleanup.TrackedGroup, error) bool) {
		for e, err := range h.query(ctx, h.cleanup, "PartitionKey eq '"+trackedPartition+"'") {
			if err != nil {
				yield(nil, err)
				return
			}
			g := &cleanup.TrackedGroup{GroupID: e.str("GroupID"), OperationID: e.str("OperationID"),
				Intent: deprovision.Intent(e.str("Intent")), Action: e.str("Action"), Time: e.time("Time")}
			if !yield(g, nil) {
				return
			}
		}
	}
}

// FindingsSince lists the findings of the runs that started at or after since, oldest run first.
func (h *Housekeeping) FindingsSince(ctx context.Context, since time.Time) iter.Seq2[*deprovision.Finding, error] {
	filter := "PartitionKey ge '" + findingPrefix + since.UTC().Format(runStamp) + "' and PartitionKey lt 'run.'"
	return h.findingsWhere(ctx, filter)
}

// PruneFindings deletes at most max findings of runs that started before before.
func (h *Housekeeping) PruneFindings(ctx context.Context, before time.Time, max int) (int, error) {
	filter := "PartitionKey ge '" + findingPrefix + "' and PartitionKey lt '" + findingPrefix + before.UTC().Format(runStamp) + "'"
	n := 0
	for e, err := range h.query(ctx, h.cleanup, filter) {
		if err != nil {
			return n, err
		}
		if n >= max {
			break
		}
		if err := h.deleteRow(ctx, h.cleanup, e.str("PartitionKey"), e.str("RowKey")); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// DeleteSighting deletes the last-seen row of hub/deviceID.
func (h *Housekeeping) DeleteSighting(ctx context.Context, hub, deviceID string) error {
	pk, rk, err := sightingKeys(hub, deviceID)
	if err != nil {
		return err
	}
	lpk, _, _ := legacySightingKeys(hub, deviceID)
	if err := h.deleteRow(ctx, h.seen, lpk, rk); err != nil {
		return err
	}
	return h.deleteRow(ctx, h.seen, pk, rk)
}

// deleteRow deletes one entity unconditionally; one already gone is no error.
func (h *Housekeeping) deleteRow(ctx context.Context, c *aztables.Client, pk, rk string) error {
	match := azcore.ETagAny
	_, err := c.DeleteEntity(ctx, pk, rk, &aztables.DeleteEntityOptions{IfMatch: &match})
	if err = classify(err); err != nil && !errors.Is(err, deprovision.ErrNotFound) {
		return fmt.Errorf("deleting %s/%s: %w", pk, rk, err)
	}
	return nil
}

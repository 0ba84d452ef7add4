package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/azure/internal/tables"
	"dpsdeprov/deprovision"
)

// Housekeeping is the part of the journal the scheduled cleanup keeps: the passes' cursors
// and findings and the enrollment groups seen ({prefix}cleanup), the devices' last-seen times
// from IoT Hub lifecycle events ({prefix}seen), and a walk over the device rows of the
// journal's {prefix}devices table. It implements deprovision.CleanupJournal,
// deprovision.LastSeenStore and cleanup.Ledger (cleanupledger.go).
type Housekeeping struct {
	cleanup, seen, devices *aztables.Client
}

var (
	_ deprovision.CleanupJournal = (*Housekeeping)(nil)
	_ deprovision.LastSeenStore  = (*Housekeeping)(nil)
)

// Row kinds of the {prefix}cleanup table, as partition keys (findings are partitioned by run).
const (
	cursorPartition = "cursor"
	groupPartition  = "group"
	findingPrefix   = "run-"
)

// NewHousekeeping returns the cleanup's tables over svc (with the journal's prefix, see
// [Options]), creating the ones that are missing. The device rows it walks are the journal's.
func NewHousekeeping(ctx context.Context, svc *aztables.ServiceClient, o Options) (*Housekeeping, error) {
	p := o.TablePrefix
	if p == "" {
		p = "deprov"
	}
	if !validPrefix(p) {
		return nil, fmt.Errorf("table prefix %q: use letters and digits only, starting with a letter, at most 55 characters", p)
	}
	h := &Housekeeping{}
	for _, t := range []struct {
		c    **aztables.Client
		name string
	}{{&h.cleanup, p + "cleanup"}, {&h.seen, p + "seen"}, {&h.devices, p + "devices"}} {
		c, err := tables.Create(ctx, svc, t.name)
		if err != nil {
			return nil, classify(err)
		}
		*t.c = c
	}
	return h, nil
}

// GetCursor reads a pass's cursor (ErrNotFound when the pass never ran).
func (h *Housekeeping) GetCursor(ctx context.Context, pass string) (*deprovision.Cursor, error) {
	rk, err := EncodeKey(pass)
	if err != nil {
		return nil, err
	}
	resp, err := h.cleanup.GetEntity(ctx, cursorPartition, rk, nil)
	if err != nil {
		return nil, fmt.Errorf("reading the cursor of pass %s: %w", pass, classify(err))
	}
	e, err := decode(resp.Value)
	if err != nil {
		return nil, err
	}
	return &deprovision.Cursor{Pass: pass, After: e.str("After"), RunID: e.str("RunID"), Sweeps: e.int("Sweeps"),
		SweptAt: e.time("SweptAt"), Updated: e.time("Updated"), ETag: string(resp.ETag)}, nil
}

// PutCursor creates (ETag "") or replaces (ETag matching) a cursor, and sets c.ETag.
func (h *Housekeeping) PutCursor(ctx context.Context, c *deprovision.Cursor) error {
	rk, err := EncodeKey(c.Pass)
	if err != nil {
		return err
	}
	e := entity{"PartitionKey": cursorPartition, "RowKey": rk, "Pass": c.Pass, "After": truncate(c.After, maxErrorChars),
		"RunID": c.RunID, "Sweeps": c.Sweeps, "SweptAt": stamp(c.SweptAt), "Updated": stamp(c.Updated)}
	etag, err := h.put(ctx, h.cleanup, e, c.ETag)
	if err != nil {
		return fmt.Errorf("writing the cursor of pass %s: %w", c.Pass, err)
	}
	c.ETag = etag
	return nil
}

// put adds e (etag "") or replaces it if etag matches; it returns the new ETag.
func (h *Housekeeping) put(ctx context.Context, c *aztables.Client, e entity, etag string) (string, error) {
	b, err := e.marshal()
	if err != nil {
		return "", err
	}
	if etag == "" {
		resp, err := c.AddEntity(ctx, b, nil)
		if err != nil {
			return "", classify(err)
		}
		return string(resp.ETag), nil
	}
	m := azcore.ETag(etag)
	resp, err := c.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &m, UpdateMode: aztables.UpdateModeReplace})
	if err != nil {
		err = classify(err)
		if errors.Is(err, deprovision.ErrNotFound) {
			err = fmt.Errorf("%w: %w", deprovision.ErrPreconditionFailed, err)
		}
		return "", err
	}
	return string(resp.ETag), nil
}

// RecordFinding upserts a finding under its run.
func (h *Housekeeping) RecordFinding(ctx context.Context, f deprovision.Finding) error {
	pk, err := EncodeKey(findingPrefix + strings.TrimPrefix(f.RunID, findingPrefix))
	if err != nil {
		return err
	}
	rk, err := EncodeKey(f.ID)
	if err != nil {
		return err
	}
	e := entity{"PartitionKey": pk, "RowKey": rk, "ID": f.ID, "Pass": f.Pass, "Kind": f.Kind,
		"RegistrationID": f.RegistrationID, "DeviceID": f.DeviceID, "Hub": f.Hub, "GroupID": f.GroupID,
		"Intent": string(f.Intent), "Detail": truncate(f.Detail, maxReasonChars), "Action": f.Action,
		"OperationID": f.OperationID, "OperationStatus": string(f.OperationStatus), "RunID": f.RunID, "Time": stamp(f.Time)}
	b, err := e.marshal()
	if err != nil {
		return err
	}
	if _, err := h.cleanup.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return fmt.Errorf("journaling finding %s: %w", f.ID, classify(err))
	}
	return nil
}

// Findings lists the findings of one run (every run when runID is "").
func (h *Housekeeping) Findings(ctx context.Context, runID string) iter.Seq2[*deprovision.Finding, error] {
	filter := "PartitionKey ge '" + findingPrefix + "' and PartitionKey lt 'run.'" // '.' follows '-'
	if runID != "" {
		pk, err := EncodeKey(findingPrefix + strings.TrimPrefix(runID, findingPrefix))
		if err != nil {
			return func(yield func(*deprovision.Finding, error) bool) { yield(nil, err) }
		}
		filter = "PartitionKey eq '" + odata(pk) + "'"
	}
	return h.findingsWhere(ctx, filter)
}

// findingsWhere lists the findings of the cleanup table that filter selects.
func (h *Housekeeping) findingsWhere(ctx context.Context, filter string) iter.Seq2[*deprovision.Finding, error] {
	return func(yield func(*deprovision.Finding, error) bool) {
		for e, err := range h.query(ctx, h.cleanup, filter) {
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(findingFrom(e), nil) {
				return
			}
		}
	}
}

// findingFrom reads a finding entity.
func findingFrom(e entity) *deprovision.Finding {
	return &deprovision.Finding{ID: e.str("ID"), Pass: e.str("Pass"), Kind: e.str("Kind"),
		RegistrationID: e.str("RegistrationID"), DeviceID: e.str("DeviceID"), Hub: e.str("Hub"), GroupID: e.str("GroupID"),
		Intent: deprovision.Intent(e.str("Intent")), Detail: e.str("Detail"), Action: e.str("Action"),
		OperationID: e.str("OperationID"), OperationStatus: deprovision.Status(e.str("OperationStatus")),
		RunID: e.str("RunID"), Time: e.time("Time")}
}

// query yields the entities matching filter ("" = every entity), in key order.
func (h *Housekeeping) query(ctx context.Context, c *aztables.Client, filter string) iter.Seq2[entity, error] {
	return func(yield func(entity, error) bool) {
		var opts *aztables.ListEntitiesOptions
		if filter != "" {
			opts = &aztables.ListEntitiesOptions{Filter: &filter}
		}
		pager := c.NewListEntitiesPager(opts)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				yield(nil, fmt.Errorf("querying %s: %w", filter, classify(err)))
				return
			}
			for _, raw := range page.Entities {
				e, err := decode(raw)
				if err == nil {
					var meta struct {
						ETag string `json:"odata.etag"`
					}
					_ = json.Unmarshal(raw, &meta)
					e["odata.etag"] = meta.ETag
				}
				if !yield(e, err) {
					return
				}
			}
		}
	}
}

// DeviceRows lists the journal's device rows in key order, after the row of registration id after.
func (h *Housekeeping) DeviceRows(ctx context.Context, after string) iter.Seq2[*deprovision.DeviceState, error] {
	filter := "RowKey eq 'device'"
	if after != "" {
		pk, err := EncodeKey(after)
		if err != nil {
			return func(yield func(*deprovision.DeviceState, error) bool) { yield(nil, err) }
		}
		filter = "PartitionKey gt '" + odata(pk) + "' and RowKey eq 'device'"
	}
	return func(yield func(*deprovision.DeviceState, error) bool) {
		for e, err := range h.query(ctx, h.devices, filter) {
			if err != nil {
				yield(nil, err)
				return
			}
			rid, derr := DecodeKey(e.str("PartitionKey"))
			if derr != nil {
				rid = e.str("RegistrationID")
			}
			if !yield(deviceFrom(rid, e, e.str("odata.etag")), nil) {
				return
			}
		}
	}
}

// deviceFrom reads a device row entity.
func deviceFrom(rid string, e entity, etag string) *deprovision.DeviceState {
	return &deprovision.DeviceState{
		RegistrationID: rid, DeviceID: e.str("DeviceID"), Hub: e.str("Hub"),
		Intent: deprovision.Intent(e.str("Intent")), OperationID: e.str("OperationID"), EventTime: e.time("EventTime"),
		BlockingEnrollment: e.bool("BlockingEnrollment"), GroupMember: e.bool("GroupMember"), HubAction: e.str("HubAction"),
		EnrollmentAction: e.str("EnrollmentAction"), PendingOperation: e.str("PendingOperation"), MoveTarget: e.str("MoveTarget"), FoundDisabled: e.bool("FoundDisabled"),
		Updated: e.time("Updated"), ETag: etag,
	}
}

// KnownGroups lists the enrollment group ids remembered by RememberGroup.
func (h *Housekeeping) KnownGroups(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		for e, err := range h.query(ctx, h.cleanup, "PartitionKey eq '"+groupPartition+"'") {
			if err != nil {
				yield("", err)
				return
			}
			if !yield(e.str("GroupID"), nil) {
				return
			}
		}
	}
}

// RememberGroup records that an enrollment group existed (DPS ids are case-insensitive).
func (h *Housekeeping) RememberGroup(ctx context.Context, groupID string) error {
	rk, err := EncodeKey(strings.ToLower(groupID))
	if err != nil {
		return err
	}
	b, err := entity{"PartitionKey": groupPartition, "RowKey": rk, "GroupID": groupID}.marshal()
	if err != nil {
		return err
	}
	if _, err := h.cleanup.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return fmt.Errorf("remembering enrollment group %s: %w", groupID, classify(err))
	}
	return nil
}

// sightingBuckets spreads a hub's last-seen rows over partitions: a partition's throughput
// target is 2,000 entities a second, which 100,000 devices of one hub reconnecting every few
// minutes (a read and a write each) would approach in a single partition. Sixteen take any
// hub's fleet below it, and together more than a storage account's 20,000 a second.
const sightingBuckets = 16

// sightingKeys returns the partition and row keys of a (hub, device) sighting: the partition
// is the hub's name and a bucket of the device id's hash ("hub1.0a"), the row the device id.
func sightingKeys(hub, deviceID string) (string, string, error) {
	pk, rk, err := legacySightingKeys(hub, deviceID)
	if err != nil {
		return "", "", err
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(deviceID))
	return fmt.Sprintf("%s.%02x", pk, h.Sum32()%sightingBuckets), rk, nil
}

// legacySightingKeys are the keys of a sighting written before the rows were spread: one
// partition per hub. A sighting found there is moved to its bucket when it is next written.
func legacySightingKeys(hub, deviceID string) (string, string, error) {
	pk, err := EncodeKey(strings.ToLower(hub))
	if err != nil {
		return "", "", fmt.Errorf("hub %q: %w", hub, err)
	}
	rk, err := EncodeKey(deviceID) // device ids are case-sensitive
	if err != nil {
		return "", "", fmt.Errorf("device %q: %w", deviceID, err)
	}
	return pk, rk, nil
}

func sightingFrom(e entity, etag string) *deprovision.Sighting {
	return &deprovision.Sighting{Key: e.str("PartitionKey") + "/" + e.str("RowKey"), Hub: e.str("Hub"), DeviceID: e.str("DeviceID"),
		LastSeen: e.time("LastSeen"), LastEvent: e.str("LastEvent"), Created: e.time("Created"), Deleted: e.time("Deleted"), ETag: etag}
}

// GetSighting reads a device's sighting (ErrNotFound when no event about it arrived).
func (h *Housekeeping) GetSighting(ctx context.Context, hub, deviceID string) (*deprovision.Sighting, error) {
	s, _, err := h.getSighting(ctx, hub, deviceID)
	return s, err
}

// getSighting reads a sighting from its bucket, or from the hub's single partition of old;
// legacy is true for the latter.
func (h *Housekeeping) getSighting(ctx context.Context, hub, deviceID string) (s *deprovision.Sighting, legacy bool, err error) {
	pk, rk, err := sightingKeys(hub, deviceID)
	if err != nil {
		return nil, false, err
	}
	lpk, _, _ := legacySightingKeys(hub, deviceID)
	for _, k := range []string{pk, lpk} {
		resp, err := h.seen.GetEntity(ctx, k, rk, nil)
		if err = classify(err); errors.Is(err, deprovision.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading last seen of %s/%s: %w", hub, deviceID, err)
		}
		e, err := decode(resp.Value)
		if err != nil {
			return nil, false, err
		}
		return sightingFrom(e, string(resp.ETag)), k == lpk, nil
	}
	return nil, false, fmt.Errorf("reading last seen of %s/%s: %w", hub, deviceID, deprovision.ErrNotFound)
}

// RecordSighting merges s into the stored sighting, moving each time only forward. A sighting
// still in the hub's single partition of old is moved to its bucket.
func (h *Housekeeping) RecordSighting(ctx context.Context, s deprovision.Sighting) (*deprovision.Sighting, error) {
	pk, rk, err := sightingKeys(s.Hub, s.DeviceID)
	if err != nil {
		return nil, err
	}
	for range 6 {
		cur, legacy, err := h.getSighting(ctx, s.Hub, s.DeviceID)
		switch {
		case errors.Is(err, deprovision.ErrNotFound):
			cur = &deprovision.Sighting{Hub: strings.ToLower(s.Hub), DeviceID: s.DeviceID}
		case err != nil:
			return nil, err
		}
		merged := *cur
		if s.LastSeen.After(merged.LastSeen) {
			merged.LastSeen, merged.LastEvent = s.LastSeen, s.LastEvent
		}
		if s.Created.After(merged.Created) {
			merged.Created = s.Created
		}
		if s.Deleted.After(merged.Deleted) {
			merged.Deleted = s.Deleted
		}
		if !merged.Created.IsZero() && merged.Created.After(merged.Deleted) {
			merged.Deleted = time.Time{} // created again after the delete
		}
		if cur.ETag != "" && merged == *cur && !legacy {
			return cur, nil
		}
		e := entity{"PartitionKey": pk, "RowKey": rk, "Hub": merged.Hub, "DeviceID": merged.DeviceID,
			"LastSeen": stamp(merged.LastSeen), "LastEvent": merged.LastEvent, "Created": stamp(merged.Created), "Deleted": stamp(merged.Deleted)}
		etag := cur.ETag
		if legacy {
			etag = "" // created in its bucket; the old row goes below
		}
		etag, err = h.put(ctx, h.seen, e, etag)
		if errors.Is(err, deprovision.ErrPreconditionFailed) || errors.Is(err, deprovision.ErrConflict) {
			continue // another event about the device won the race: merge again
		}
		if err != nil {
			return nil, fmt.Errorf("writing last seen of %s/%s: %w", s.Hub, s.DeviceID, err)
		}
		if legacy {
			lpk, _, _ := legacySightingKeys(s.Hub, s.DeviceID)
			if err := h.deleteRow(ctx, h.seen, lpk, rk); err != nil {
				return nil, fmt.Errorf("moving last seen of %s/%s to its bucket: %w", s.Hub, s.DeviceID, err)
			}
		}
		merged.ETag, merged.Key = etag, pk+"/"+rk
		return &merged, nil
	}
	return nil, deprovision.Transient(fmt.Errorf("last seen of %s/%s kept changing: %w", s.Hub, s.DeviceID, deprovision.ErrBusy))
}

// Sightings lists sightings in key order, after the key after ("" = from the start).
func (h *Housekeeping) Sightings(ctx context.Context, after string) iter.Seq2[*deprovision.Sighting, error] {
	var filters []string
	if after == "" {
		filters = []string{""}
	} else {
		pk, rk, ok := strings.Cut(after, "/")
		if !ok {
			return func(yield func(*deprovision.Sighting, error) bool) {
				yield(nil, fmt.Errorf("sighting key %q is not hub/device", after))
			}
		}
		// Two simple queries rather than one with or: Azurite does not serve complex filters.
		filters = []string{"PartitionKey eq '" + odata(pk) + "' and RowKey gt '" + odata(rk) + "'", "PartitionKey gt '" + odata(pk) + "'"}
	}
	return func(yield func(*deprovision.Sighting, error) bool) {
		for _, f := range filters {
			for e, err := range h.query(ctx, h.seen, f) {
				if err != nil {
					yield(nil, err)
					return
				}
				if !yield(sightingFrom(e, e.str("odata.etag")), nil) {
					return
				}
			}
		}
	}
}

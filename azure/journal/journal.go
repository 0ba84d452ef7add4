// Package journal is the deprovisioning engine's journal in Azure Table Storage: one row per
// operation, one per step, one per device (the state this system left it in) and one per
// (device, operation) for a device's history. It implements deprovision.Journal on aztables.
//
// Keys are encoded with [EncodeKey] (Table keys forbid / \ # ? and control characters, which
// ids may hold); free text is cut to the 64 KiB property limit; a plan or request too large
// for one property is split over numbered properties, within the entity's 1 MiB and 252
// custom properties, which are checked here rather than left to the service (Azurite does not
// enforce the property count). Updates of operations and device rows carry the ETag read
// (If-Match), so two writers cannot both win: the second gets deprovision.ErrPreconditionFailed.
package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"sort"
	"strconv"
	"strings"
	"time"

	"dpsdeprov/azure/internal/azerr"
	"dpsdeprov/azure/internal/tables"
	"dpsdeprov/deprovision"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Options configure the journal.
type Options struct {
	// TablePrefix starts the names of the journal's four tables (letters and digits, starting
	// with a letter; default "deprov"): {prefix}ops, {prefix}steps, {prefix}devices, {prefix}history.
	TablePrefix string
}

// Journal is the Table Storage journal.
type Journal struct {
	ops, steps, devices, history *aztables.Client
}

var _ deprovision.Journal = (*Journal)(nil)

// New returns the journal over svc, creating its tables if they are missing.
func New(ctx context.Context, svc *aztables.ServiceClient, o Options) (*Journal, error) {
	p := o.TablePrefix
	if p == "" {
		p = "deprov"
	}
	if !validPrefix(p) {
		return nil, fmt.Errorf("table prefix %q: use letters and digits only, starting with a letter, at most 55 characters", p)
	}
	j := &Journal{}
	for _, t := range []struct {
		c    **aztables.Client
		name string
	}{{&j.ops, p + "ops"}, {&j.steps, p + "steps"}, {&j.devices, p + "devices"}, {&j.history, p + "history"}} {
		c, err := tables.Create(ctx, svc, t.name)
		if err != nil {
			return nil, classify(err)
		}
		*t.c = c
	}
	return j, nil
}

func validPrefix(p string) bool {
	if len(p) == 0 || len(p) > 55 || !(p[0] >= 'a' && p[0] <= 'z' || p[0] >= 'A' && p[0] <= 'Z') {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// classify maps a Table Storage failure onto the engine's error kinds ([azerr.Classify]): 404,
// 409 and 412 onto ErrNotFound, ErrConflict and ErrPreconditionFailed; 408, 429, 5xx and
// connection failures are transient (the journal is unavailable: try the delivery again later).
func classify(err error) error { return azerr.Classify(err, "") }

type entity map[string]any

func (e entity) str(k string) string {
	s, _ := e[k].(string)
	return s
}

func (e entity) int(k string) int {
	switch v := e[k].(type) {
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

func (e entity) bool(k string) bool {
	b, _ := e[k].(bool)
	return b
}

func (e entity) time(k string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, e.str(k))
	return t
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// putChunks stores s under name, name1, name2... (each within the string limit) and the
// number of parts under name+"Parts".
func (e entity) putChunks(name, s string) {
	parts := split(s, maxStringChars)
	e[name+"Parts"] = len(parts)
	for i, p := range parts {
		k := name
		if i > 0 {
			k = name + strconv.Itoa(i)
		}
		e[k] = p
	}
}

func (e entity) chunks(name string) string {
	n := e.int(name + "Parts")
	if n == 0 {
		return e.str(name)
	}
	var b strings.Builder
	for i := range n {
		k := name
		if i > 0 {
			k = name + strconv.Itoa(i)
		}
		b.WriteString(e.str(k))
	}
	return b.String()
}

// marshal checks the entity against Table Storage's limits before it is sent.
func (e entity) marshal() ([]byte, error) {
	if n := len(e) - 2; n > maxProperties {
		return nil, fmt.Errorf("entity %s/%s has %d properties; Table Storage allows %d", e["PartitionKey"], e["RowKey"], n, maxProperties)
	}
	for k, v := range e {
		if s, ok := v.(string); ok && units(s) > 32*1024 {
			return nil, fmt.Errorf("property %s of %s/%s holds %d characters; Table Storage allows 32K", k, e["PartitionKey"], e["RowKey"], units(s))
		}
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(b) > maxEntityBytes {
		return nil, fmt.Errorf("entity %s/%s is %d bytes; Table Storage allows 1 MiB", e["PartitionKey"], e["RowKey"], len(b))
	}
	return b, nil
}

const (
	maxReasonChars = 4096
	maxErrorChars  = 8192
	// maxPlanChars bounds the operation's plan and request together, so the entity stays
	// under 1 MiB; a larger plan is stored cut, with PlanTruncated set.
	maxPlanChars = 300_000
)

func opEntity(op *deprovision.Operation) (entity, error) {
	req := op.Request
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	prog, err := json.Marshal(op.Progress)
	if err != nil {
		return nil, err
	}
	e := entity{
		"PartitionKey": op.ID, "RowKey": "op",
		"Source": truncate(req.Source, 1024), "EventID": truncate(req.EventID, 1024),
		"Intent": string(req.Intent), "RegistrationID": req.RegistrationID,
		"EnrollmentGroupID": req.EnrollmentGroupID, "DryRun": req.DryRun,
		"Status": string(op.Status), "Open": !op.Status.Terminal(),
		"Reason": truncate(op.Reason, maxReasonChars), "Progress": truncate(string(prog), maxErrorChars),
		"Created": stamp(op.Created), "Updated": stamp(op.Updated),
		"LeaseOwner": op.LeaseOwner, "LeaseUntil": stamp(op.LeaseUntil),
		// Unannounced is queried as Open is; rows written before it existed lack it and are
		// not listed, as their announcements, made or lost, are long past.
		"Announced": stamp(op.Announced), "Unannounced": op.Unannounced(),
	}
	if h := op.Hold; h != nil {
		e["HoldLimit"], e["HoldMax"], e["HoldCount"] = h.Limit, h.Max, h.Count
	}
	if units(string(reqJSON)) > maxPlanChars {
		return nil, fmt.Errorf("operation %s: the request is %d characters; at most %d fit a journal row", op.ID, units(string(reqJSON)), maxPlanChars)
	}
	e.putChunks("Request", string(reqJSON))
	if op.Plan != nil {
		planJSON, err := json.Marshal(op.Plan)
		if err != nil {
			return nil, err
		}
		ps := string(planJSON)
		if units(ps)+units(string(reqJSON)) > maxPlanChars {
			// Plans hold a handful of steps; only an absurd request gets here. Keep the head
			// readable for a person and mark it: such an operation is not resumed (opFrom).
			ps = truncate(ps, maxPlanChars-units(string(reqJSON)))
			e["PlanTruncated"] = true
		}
		e.putChunks("Plan", ps)
	}
	return e, nil
}

func opFrom(e entity, etag azcore.ETag) (*deprovision.Operation, error) {
	op := &deprovision.Operation{
		ID: e.str("PartitionKey"), Status: deprovision.Status(e.str("Status")), Reason: e.str("Reason"),
		Created: e.time("Created"), Updated: e.time("Updated"),
		LeaseOwner: e.str("LeaseOwner"), LeaseUntil: e.time("LeaseUntil"), Announced: e.time("Announced"), ETag: string(etag),
	}
	if l := e.str("HoldLimit"); l != "" {
		op.Hold = &deprovision.Hold{Limit: l, Max: e.int("HoldMax"), Count: e.int("HoldCount")}
	}
	if err := json.Unmarshal([]byte(e.chunks("Request")), &op.Request); err != nil {
		return nil, fmt.Errorf("operation %s: stored request unreadable: %w", op.ID, err)
	}
	if s := e.str("Progress"); s != "" {
		if err := json.Unmarshal([]byte(s), &op.Progress); err != nil {
			return nil, fmt.Errorf("operation %s: stored progress unreadable: %w", op.ID, err)
		}
	}
	if p := e.chunks("Plan"); p != "" {
		if e.bool("PlanTruncated") {
			// Resuming from a cut plan would apply a different plan: refuse loudly instead.
			return nil, fmt.Errorf("operation %s: its plan was too large for the journal and was stored cut; it cannot be resumed", op.ID)
		}
		op.Plan = new(deprovision.Plan)
		if err := json.Unmarshal([]byte(p), op.Plan); err != nil {
			return nil, fmt.Errorf("operation %s: stored plan unreadable: %w", op.ID, err)
		}
	}
	return op, nil
}

func decode(b []byte) (entity, error) {
	var e entity
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decoding entity: %w", err)
	}
	return e, nil
}

// CreateOperation inserts op, or returns the stored operation with created=false.
func (j *Journal) CreateOperation(ctx context.Context, op *deprovision.Operation) (*deprovision.Operation, bool, error) {
	e, err := opEntity(op)
	if err != nil {
		return nil, false, err
	}
	b, err := e.marshal()
	if err != nil {
		return nil, false, err
	}
	resp, err := j.ops.AddEntity(ctx, b, nil)
	if err != nil {
		err = classify(err)
		if errors.Is(err, deprovision.ErrConflict) {
			stored, gerr := j.GetOperation(ctx, op.ID)
			return stored, false, gerr
		}
		return nil, false, fmt.Errorf("journaling operation %s: %w", op.ID, err)
	}
	stored := *op
	stored.ETag = string(resp.ETag)
	if err := j.putHistory(ctx, &stored); err != nil {
		return nil, false, err
	}
	return &stored, true, nil
}

// GetOperation reads an operation.
func (j *Journal) GetOperation(ctx context.Context, id string) (*deprovision.Operation, error) {
	resp, err := j.ops.GetEntity(ctx, id, "op", nil)
	if err != nil {
		return nil, fmt.Errorf("reading operation %s: %w", id, classify(err))
	}
	e, err := decode(resp.Value)
	if err != nil {
		return nil, err
	}
	return opFrom(e, resp.ETag)
}

// UpdateOperation replaces op if its ETag still matches, and sets op.ETag to the new one.
func (j *Journal) UpdateOperation(ctx context.Context, op *deprovision.Operation) error {
	e, err := opEntity(op)
	if err != nil {
		return err
	}
	b, err := e.marshal()
	if err != nil {
		return err
	}
	etag := azcore.ETag(op.ETag)
	if etag == "" {
		return fmt.Errorf("updating operation %s: no ETag: %w", op.ID, deprovision.ErrPreconditionFailed)
	}
	resp, err := j.ops.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
	if err != nil {
		err = classify(err)
		if errors.Is(err, deprovision.ErrNotFound) {
			err = fmt.Errorf("%w: %w", deprovision.ErrPreconditionFailed, err)
		}
		return fmt.Errorf("updating operation %s: %w", op.ID, err)
	}
	op.ETag = string(resp.ETag)
	return j.putHistory(ctx, op)
}

// putHistory writes the (device, operation) row of a device's history; group-wide operations
// have none. It is rewritten on every update, so it converges even after an interruption.
func (j *Journal) putHistory(ctx context.Context, op *deprovision.Operation) error {
	rid := op.Request.RegistrationID
	if op.Request.Intent.GroupWide() || rid == "" {
		return nil
	}
	pk, err := EncodeKey(strings.ToLower(rid))
	if err != nil {
		// Only a malformed request (refused before policy) has such an id; its operation row
		// keeps it, and there is no device whose history it belongs to.
		return nil
	}
	e := entity{"PartitionKey": pk, "RowKey": op.ID, "Intent": string(op.Request.Intent), "Status": string(op.Status),
		"Reason": truncate(op.Reason, maxReasonChars), "EventTime": stamp(op.Request.EventTime), "Updated": stamp(op.Updated)}
	b, err := e.marshal()
	if err != nil {
		return err
	}
	if _, err := j.history.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return fmt.Errorf("writing history of %s: %w", rid, classify(err))
	}
	return nil
}

// RecordStep writes a step record; the latest write for an index wins.
func (j *Journal) RecordStep(ctx context.Context, rec deprovision.StepRecord) error {
	e := entity{"PartitionKey": rec.OperationID, "RowKey": fmt.Sprintf("%06d", rec.Index),
		"Kind": string(rec.Kind), "Target": truncate(rec.Target, 2048), "Outcome": string(rec.Outcome),
		"HTTPStatus": rec.HTTPStatus, "ErrorCode": truncate(rec.ErrorCode, 256), "Error": truncate(rec.Error, maxErrorChars),
		"DurationMs": strconv.FormatInt(rec.Duration.Milliseconds(), 10), "Time": stamp(rec.Time)}
	b, err := e.marshal()
	if err != nil {
		return err
	}
	if _, err := j.steps.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return fmt.Errorf("journaling step %d of %s: %w", rec.Index+1, rec.OperationID, classify(err))
	}
	return nil
}

// Steps returns an operation's step records in order.
func (j *Journal) Steps(ctx context.Context, id string) ([]deprovision.StepRecord, error) {
	var out []deprovision.StepRecord
	err := j.list(ctx, j.steps, "PartitionKey eq '"+odata(id)+"'", func(e entity) error {
		idx, err := strconv.Atoi(e.str("RowKey"))
		if err != nil {
			return fmt.Errorf("step row %q: %w", e.str("RowKey"), err)
		}
		ms, _ := strconv.ParseInt(e.str("DurationMs"), 10, 64)
		out = append(out, deprovision.StepRecord{OperationID: id, Index: idx, Kind: deprovision.StepKind(e.str("Kind")),
			Target: e.str("Target"), Outcome: deprovision.StepOutcome(e.str("Outcome")), HTTPStatus: e.int("HTTPStatus"),
			ErrorCode: e.str("ErrorCode"), Error: e.str("Error"), Duration: time.Duration(ms) * time.Millisecond, Time: e.time("Time")})
		return nil
	})
	sort.Slice(out, func(a, b int) bool { return out[a].Index < out[b].Index })
	return out, err
}

func odata(s string) string { return strings.ReplaceAll(s, "'", "''") }

func (j *Journal) list(ctx context.Context, c *aztables.Client, filter string, f func(entity) error) error {
	pager := c.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("querying %s: %w", filter, classify(err))
		}
		for _, raw := range page.Entities {
			e, err := decode(raw)
			if err != nil {
				return err
			}
			if err := f(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// GetDevice reads a device row (ErrNotFound when this system never touched the device).
func (j *Journal) GetDevice(ctx context.Context, rid string) (*deprovision.DeviceState, error) {
	pk, err := EncodeKey(rid)
	if err != nil {
		return nil, err
	}
	resp, err := j.devices.GetEntity(ctx, pk, "device", nil)
	if err != nil {
		return nil, fmt.Errorf("reading device row %s: %w", rid, classify(err))
	}
	e, err := decode(resp.Value)
	if err != nil {
		return nil, err
	}
	return deviceFrom(rid, e, string(resp.ETag)), nil
}

// PutDevice creates (ETag "") or replaces (ETag matching) a device row, and sets ds.ETag.
func (j *Journal) PutDevice(ctx context.Context, ds *deprovision.DeviceState) error {
	pk, err := EncodeKey(ds.RegistrationID)
	if err != nil {
		return err
	}
	e := entity{"PartitionKey": pk, "RowKey": "device", "RegistrationID": ds.RegistrationID,
		"DeviceID": ds.DeviceID, "Hub": ds.Hub, "Intent": string(ds.Intent), "OperationID": ds.OperationID,
		"EventTime": stamp(ds.EventTime), "BlockingEnrollment": ds.BlockingEnrollment, "GroupMember": ds.GroupMember, "HubAction": ds.HubAction,
		"EnrollmentAction": ds.EnrollmentAction, "PendingOperation": ds.PendingOperation, "Updated": stamp(ds.Updated)}
	if ds.MoveTarget != "" {
		e["MoveTarget"] = ds.MoveTarget
	}
	if ds.FoundDisabled {
		e["FoundDisabled"] = true
	}
	b, err := e.marshal()
	if err != nil {
		return err
	}
	if ds.ETag == "" {
		resp, err := j.devices.AddEntity(ctx, b, nil)
		if err != nil {
			return fmt.Errorf("creating device row %s: %w", ds.RegistrationID, classify(err))
		}
		ds.ETag = string(resp.ETag)
		return nil
	}
	etag := azcore.ETag(ds.ETag)
	resp, err := j.devices.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
	if err != nil {
		err = classify(err)
		if errors.Is(err, deprovision.ErrNotFound) {
			err = fmt.Errorf("%w: %w", deprovision.ErrPreconditionFailed, err)
		}
		return fmt.Errorf("updating device row %s: %w", ds.RegistrationID, err)
	}
	ds.ETag = string(resp.ETag)
	return nil
}

// DeviceHistory lists the operations about a device, newest first.
func (j *Journal) DeviceHistory(ctx context.Context, rid string) ([]deprovision.OperationSummary, error) {
	pk, err := EncodeKey(rid)
	if err != nil {
		return nil, err
	}
	var out []deprovision.OperationSummary
	err = j.list(ctx, j.history, "PartitionKey eq '"+odata(pk)+"'", func(e entity) error {
		out = append(out, deprovision.OperationSummary{OperationID: e.str("RowKey"), Intent: deprovision.Intent(e.str("Intent")),
			Status: deprovision.Status(e.str("Status")), Reason: e.str("Reason"), EventTime: e.time("EventTime"), Updated: e.time("Updated")})
		return nil
	})
	sort.Slice(out, func(a, b int) bool {
		if !out[a].Updated.Equal(out[b].Updated) {
			return out[a].Updated.After(out[b].Updated)
		}
		return out[a].OperationID < out[b].OperationID
	})
	return out, err
}

// OpenOperations lists operations not in a terminal state last updated before olderThan.
func (j *Journal) OpenOperations(ctx context.Context, olderThan time.Time) iter.Seq2[*deprovision.Operation, error] {
	return j.listOps(ctx, "Open eq true", "open", olderThan)
}

// UnannouncedOperations lists operations whose present state (terminal, or awaiting
// approval) was not handed to the notifier, last updated before olderThan.
func (j *Journal) UnannouncedOperations(ctx context.Context, olderThan time.Time) iter.Seq2[*deprovision.Operation, error] {
	return j.listOps(ctx, "Unannounced eq true", "unannounced", olderThan)
}

// listOps lists the operation rows that filter selects, last updated before olderThan.
func (j *Journal) listOps(ctx context.Context, filter, what string, olderThan time.Time) iter.Seq2[*deprovision.Operation, error] {
	return func(yield func(*deprovision.Operation, error) bool) {
		pager := j.ops.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				yield(nil, fmt.Errorf("listing %s operations: %w", what, classify(err)))
				return
			}
			for _, raw := range page.Entities {
				e, err := decode(raw)
				if err != nil {
					if !yield(nil, err) {
						return
					}
					continue
				}
				if !e.time("Updated").Before(olderThan) {
					continue
				}
				var meta struct {
					ETag string `json:"odata.etag"`
				}
				_ = json.Unmarshal(raw, &meta)
				op, err := opFrom(e, azcore.ETag(meta.ETag))
				if !yield(op, err) {
					return
				}
			}
		}
	}
}

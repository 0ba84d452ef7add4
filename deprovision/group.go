package deprovision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// maxBulk is the hub's limit of devices per bulk registry call.
const maxBulk = 100

// maxFailures bounds the failed members an operation lists (the counts stay exact).
const maxFailures = 20

// MemberResult is the outcome of applying a hub action to some members of a group.
type MemberResult struct {
	Done   int `json:"done"`
	Failed int `json:"failed,omitempty"`
	// Failures are "deviceId: error" for the members that failed.
	Failures []string `json:"failures,omitempty"`
	// Records counts the members' registration records deleted (group retirement).
	Records int `json:"records,omitempty"`
}

// ApplyMembers applies action (disable or delete) to members, all assigned to hub, with the
// hub's bulk registry API (up to 100 devices a call). A member already in the wanted state,
// or already gone, counts as done. [Engine.ApplyBatch] applies a fanned-out batch with it;
// opID names the batch's operation in logs.
// The error is for the whole batch (transient ones mean "retry the batch"); a member's own
// failure is counted in the result.
//
// A disable changes status and status reason and nothing else (disableMembers): a bulk
// update replaces the whole identity, so each item carries the identity back as read.
func (e *Engine) ApplyMembers(ctx context.Context, opID, hub string, members []Registration, action Action, statusReason string) (MemberResult, error) {
	var res MemberResult
	mode := BulkDisable
	switch action {
	case ActionDisable:
	case ActionDelete:
		mode = BulkDelete
	default:
		return res, fmt.Errorf("applying %q to members: the action must be disable or delete", action)
	}
	ctx = GroupWork(ctx)
	if len(e.c.Hubs) > 0 && !slices.ContainsFunc(e.c.Hubs, func(h string) bool { return strings.EqualFold(h, hub) }) {
		for _, m := range members {
			res.fail(memberID(m), fmt.Errorf("hub %s is not managed by this deployment", hub))
		}
		return res, nil
	}
	for start := 0; start < len(members); start += maxBulk {
		chunk := members[start:min(start+maxBulk, len(members))]
		if mode == BulkDisable {
			if err := e.disableMembers(ctx, opID, hub, chunk, statusReason, &res); err != nil {
				return res, err
			}
			continue
		}
		waiting, err := e.waitingMoves(ctx, hub, chunk)
		if err != nil {
			return res, fmt.Errorf("operation %s: %w", opID, err)
		}
		items := make([]BulkItem, 0, len(chunk))
		for _, m := range chunk {
			if waiting[memberID(m)] {
				res.Done++ // it moved out of the group: its identity waits for DPS to migrate it
				continue
			}
			items = append(items, BulkItem{DeviceID: memberID(m), StatusReason: statusReason})
		}
		if len(items) == 0 {
			continue
		}
		out, err := e.d.Devices.Bulk(ctx, hub, mode, items)
		if err != nil {
			return res, fmt.Errorf("operation %s: %s %d devices in %s: %w", opID, mode, len(items), hub, err)
		}
		for _, r := range out {
			if r.Err == nil || errors.Is(r.Err, ErrNotFound) {
				res.Done++
			} else if IsTransient(r.Err) {
				return res, fmt.Errorf("operation %s: device %s in %s: %w", opID, r.DeviceID, hub, r.Err)
			} else {
				res.fail(r.DeviceID, r.Err)
			}
		}
	}
	e.log.InfoContext(ctx, "group members applied", "operation", opID, "hub", hub, "action", action,
		"done", res.Done, "failed", res.Failed)
	return res, nil
}

// disableMembers disables up to 100 members of one hub keeping everything but status and
// status reason, at the fewest registry operations that can: one query (the hub's query
// budget, not the registry's) returns every member's authentication type, thumbprints,
// capabilities, scopes, status and ETag; a member already disabled, or gone, is done at no
// cost; a SAS member is read (one registry operation: the query shows no keys, and an update
// without them would generate new ones); then one bulk updateIfMatchETag writes the
// identities back disabled (one operation a member). So an X.509 member costs one registry
// operation and a SAS member two, the minimum for a write that replaces the identity
// (docs/policy.md, "What a disable keeps"). A member changed between the read and the write
// fails its ETag and is read and written again, a bounded number of times.
func (e *Engine) disableMembers(ctx context.Context, opID, hub string, chunk []Registration, reason string, res *MemberResult) error {
	pending := make([]string, len(chunk))
	for i, m := range chunk {
		pending[i] = memberID(m)
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > e.c.ETagRetries {
			return Transient(fmt.Errorf("operation %s: devices %s in %s kept changing (412 after %d re-reads)", opID, strings.Join(pending, ", "), hub, e.c.ETagRetries))
		}
		found, err := e.d.Devices.Identities(ctx, hub, pending)
		if err != nil {
			return fmt.Errorf("operation %s: reading %d devices in %s: %w", opID, len(pending), hub, err)
		}
		byID := make(map[string]*Device, len(found))
		for _, d := range found {
			byID[d.DeviceID] = d
		}
		var items []BulkItem
		for _, id := range pending {
			d := byID[id]
			if d != nil && d.Enabled && d.AuthType == "sas" {
				// The query shows no keys: read them, so that the write keeps them.
				d, err = e.d.Devices.GetDevice(ctx, hub, id)
				if errors.Is(err, ErrNotFound) {
					d, err = nil, nil
				}
				if IsTransient(err) {
					return fmt.Errorf("operation %s: reading device %s in %s: %w", opID, id, hub, err)
				}
				if err != nil {
					res.fail(id, err)
					continue
				}
			}
			if d == nil || !d.Enabled {
				res.Done++ // gone, or already disabled: nothing to write
				continue
			}
			items = append(items, BulkItem{DeviceID: id, StatusReason: reason, Device: d})
		}
		pending = nil
		if len(items) == 0 {
			break
		}
		out, err := e.d.Devices.Bulk(ctx, hub, BulkDisable, items)
		if err != nil {
			return fmt.Errorf("operation %s: disable %d devices in %s: %w", opID, len(items), hub, err)
		}
		for _, r := range out {
			switch {
			case r.Err == nil || errors.Is(r.Err, ErrNotFound):
				res.Done++
			case errors.Is(r.Err, ErrPreconditionFailed):
				pending = append(pending, r.DeviceID) // changed since it was read: again
			case IsTransient(r.Err):
				return fmt.Errorf("operation %s: device %s in %s: %w", opID, r.DeviceID, hub, r.Err)
			default:
				res.fail(r.DeviceID, r.Err)
			}
		}
	}
	return nil
}

// waitingMoves returns the members (by device id) whose device row says a move waits with
// their identity in hub: DPS still lists them among the group's registrations until the
// device provisions again, but the move took them out of the group, and deleting the identity
// now would lose the twin DPS is to migrate (move.go). One journal read a member, a few at a
// time; no hub or DPS operation.
func (e *Engine) waitingMoves(ctx context.Context, hub string, members []Registration) (map[string]bool, error) {
	out := map[string]bool{}
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, m := range members {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ds, err := e.d.Journal.GetDevice(ctx, deviceKey(m.RegistrationID))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				if first == nil {
					first = asTransient(fmt.Errorf("reading device row %s: %w", m.RegistrationID, err))
				}
			case ds.MoveTarget != "" && strings.EqualFold(ds.Hub, hub) && ds.DeviceID == memberID(m):
				out[memberID(m)] = true
			}
		}()
	}
	wg.Wait()
	return out, first
}

type groupWorkKey struct{}

// GroupWork marks ctx as carrying group-wide work: every hub call made with it (the bulk
// calls, and the reads of SAS members a disable makes) is bulk work, which a rate limit
// serves after single-device revocations.
func GroupWork(ctx context.Context) context.Context {
	return context.WithValue(ctx, groupWorkKey{}, true)
}

// IsGroupWork reports whether ctx carries group-wide work ([GroupWork]).
func IsGroupWork(ctx context.Context) bool { v, _ := ctx.Value(groupWorkKey{}).(bool); return v }

func (r *MemberResult) fail(id string, err error) {
	r.Failed++
	if len(r.Failures) < maxFailures {
		r.Failures = append(r.Failures, id+": "+err.Error())
	}
}

func memberID(m Registration) string {
	if m.DeviceID != "" {
		return m.DeviceID
	}
	return m.RegistrationID
}

// groupMembers is the StepGroupMembers step. Production and the tests take one path: the
// members go to the GroupWork workers through the queue ([WorkQueue], see fanOut), which
// apply them in batches with [Engine.ApplyBatch] at the hubs' pace, however long that takes;
// the operation's own invocation only pages the group and enqueues.
func (e *Engine) groupMembers(ctx context.Context, op *Operation, st Step) stepResult {
	if e.d.Work == nil {
		return failed(fmt.Errorf("operation %s: group-wide work goes through the group work queue, and the engine has none (Deps.Work)", op.ID))
	}
	return e.fanOut(ctx, op, st)
}

// deleteGroupRegistrations deletes a retired group's registration records. It always reads
// the first page again, since deleted records leave it: a resume needs no continuation.
// The record of a member that moved out of the group and waits to re-provision stays: DPS
// migrates the device from the hub that record names (move.go); a page holding only such
// records is stepped over.
func (e *Engine) deleteGroupRegistrations(ctx context.Context, gid string) stepResult {
	deleted, from := 0, ""
	kept := map[string]bool{}
	for {
		var page RegistrationPage
		for pg, err := range e.d.Registrations.GroupRegistrations(ctx, gid, from, e.c.GroupPageSize) {
			if err != nil {
				return failed(fmt.Errorf("reading registrations of group %s: %w", gid, err))
			}
			page = pg
			break
		}
		if len(page.Items) == 0 {
			break
		}
		waiting := map[string]bool{}
		for hub, ms := range byAssignedHub(page.Items) {
			w, err := e.waitingMoves(ctx, hub, ms)
			if err != nil {
				return failed(err)
			}
			for id := range w {
				waiting[id] = true
			}
		}
		progress, before := 0, deleted
		var errs []string
		for _, m := range page.Items {
			if waiting[memberID(m)] {
				kept[m.RegistrationID] = true
				continue
			}
			err := e.d.Registrations.DeleteRegistration(ctx, m.RegistrationID, "")
			switch {
			case err == nil:
				deleted++
				progress++
			case errors.Is(err, ErrNotFound):
				progress++
			case IsTransient(err):
				return failed(fmt.Errorf("deleting registration record %s: %w", m.RegistrationID, err))
			default:
				errs = append(errs, m.RegistrationID+": "+err.Error())
			}
		}
		switch {
		case progress == 0 && len(errs) == 0 && page.Next != "":
			from = page.Next // only records that wait for a move: look further
			continue
		case progress == 0 && len(errs) > 0:
			return failed(fmt.Errorf("no registration record of group %s could be deleted: %s", gid, strings.Join(errs, "; ")))
		case deleted == before:
			return stepResult{changed: deleted > 0, note: recordsNote(deleted, len(kept))} // nothing left to delete
		}
		from = ""
	}
	return stepResult{changed: deleted > 0, note: recordsNote(deleted, len(kept))}
}

func recordsNote(deleted, kept int) string {
	s := fmt.Sprintf("%d registration records deleted", deleted)
	if kept > 0 {
		s += fmt.Sprintf("; %d kept for members that moved out and wait to re-provision", kept)
	}
	return s
}

// byAssignedHub splits registrations by their assigned hub (unassigned ones are left out).
func byAssignedHub(regs []Registration) map[string][]Registration {
	out := map[string][]Registration{}
	for _, r := range regs {
		if r.AssignedHub != "" {
			out[r.AssignedHub] = append(out[r.AssignedHub], r)
		}
	}
	return out
}

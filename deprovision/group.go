package deprovision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// maxBulk is the hub's limit of devices per bulk registry call.
const maxBulk = 100

// maxFailures bounds the failed members an operation lists (the counts stay exact).
const maxFailures = 20

// MemberResult is the outcome of applying a hub action to some members of a group.
type MemberResult struct {
	Done, Failed int
	// Failures are "deviceId: error" for the members that failed.
	Failures []string
}

// ApplyMembers applies action (disable or delete) to members, all assigned to hub, with the
// hub's bulk registry API (up to 100 devices a call). A member already in the wanted state,
// or already gone, counts as done. [Engine.ApplyBatch] applies a fanned-out batch with it;
// opID names the batch's operation in logs.
// The error is for the whole batch (transient ones mean "retry the batch"); a member's own
// failure is counted in the result.
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
	if len(e.c.Hubs) > 0 && !slices.ContainsFunc(e.c.Hubs, func(h string) bool { return strings.EqualFold(h, hub) }) {
		for _, m := range members {
			res.fail(memberID(m), fmt.Errorf("hub %s is not managed by this deployment", hub))
		}
		return res, nil
	}
	for start := 0; start < len(members); start += maxBulk {
		chunk := members[start:min(start+maxBulk, len(members))]
		items := make([]BulkItem, len(chunk))
		for i, m := range chunk {
			items[i] = BulkItem{DeviceID: memberID(m), StatusReason: statusReason}
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
func (e *Engine) deleteGroupRegistrations(ctx context.Context, gid string) stepResult {
	deleted := 0
	for {
		var page RegistrationPage
		for pg, err := range e.d.Registrations.GroupRegistrations(ctx, gid, "", e.c.GroupPageSize) {
			if err != nil {
				return failed(fmt.Errorf("reading registrations of group %s: %w", gid, err))
			}
			page = pg
			break
		}
		if len(page.Items) == 0 {
			break
		}
		progress, before := 0, deleted
		var errs []string
		for _, m := range page.Items {
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
		if progress == 0 {
			return failed(fmt.Errorf("no registration record of group %s could be deleted: %s", gid, strings.Join(errs, "; ")))
		}
		if deleted == before {
			break // the listing still shows records that are gone: nothing left to delete
		}
	}
	return stepResult{changed: deleted > 0, note: fmt.Sprintf("%d registration records deleted", deleted)}
}

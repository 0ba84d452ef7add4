package deprovision

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Guardrails bound what events may change without a person's approval: an operation beyond
// a limit is journaled awaiting-approval, with its plan and the reason, and nothing of it runs
// until [Engine.Approve]. The zero value sets no limit.
type Guardrails struct {
	// MaxGroupDevices is the most registered devices a group-wide operation may touch
	// unapproved (0: no limit). The group is counted page by page, and counting stops as soon
	// as the limit is passed, so a huge group costs a few pages, not a full listing.
	MaxGroupDevices int
	// MaxDestructivePerHour is the most destructive operations (those that disable or delete
	// enrollments, groups, registration records or hub identities) that may start in one
	// clock hour (UTC) across every instance (0: no limit). It needs [Deps.Budget]. A
	// single-device `compromised` operation is exempt and not counted: revoking one
	// compromised device is never slowed down.
	MaxDestructivePerHour int
}

// Budget counts destructive operations per window, shared by every instance of the app.
type Budget interface {
	// Admit counts operation opID in window if fewer than limit operations are counted there,
	// and reports whether opID is (now, or already was) counted, with the window's count. An
	// operation is counted at most once per window, however often it asks.
	Admit(ctx context.Context, window, opID string, limit int) (admitted bool, count int, err error)
}

// Approval is a person's go-ahead for an operation that a guardrail held.
type Approval struct {
	// By is who approved, as the caller was identified.
	By string
	// Via says where By comes from (an authenticated principal header, or the request body),
	// so that an audit can tell an authenticated identity from a claimed one.
	Via string
	// Reason is why the person approved.
	Reason string
}

// StepApproval is the kind of the journal record an approval leaves. It is recorded beside
// the plan's steps at index [ApprovalIndex], before any of them, and is never applied.
const StepApproval StepKind = "guard.approval"

// ApprovalIndex is the step index of the approval record.
const ApprovalIndex = -1

// ErrNotAwaitingApproval is returned by [Engine.Approve] for an operation that no guardrail
// holds.
var ErrNotAwaitingApproval = errors.New("the operation is not awaiting approval")

// destructiveKinds are the steps that take something away; a plan with one of them that
// would change its target counts against MaxDestructivePerHour.
var destructiveKinds = map[StepKind]bool{
	StepDisableEnrollment: true, StepDeleteEnrollment: true, StepCreateBlockingEnrollment: true,
	StepDeleteRegistration: true, StepDisableGroup: true, StepDeleteGroup: true,
	StepDisableDevice: true, StepDeleteDevice: true, StepGroupMembers: true, StepDeleteGroupRegistrations: true,
}

// destructive reports whether p would disable or delete anything.
func destructive(p *Plan) bool {
	if p == nil {
		return false
	}
	for _, st := range p.Steps {
		if destructiveKinds[st.Kind] && wouldChange(st) {
			return true
		}
	}
	return false
}

// budgetWindow is the clock hour (UTC) t falls in, as a budget window name.
func budgetWindow(t time.Time) string { return t.UTC().Format("2006010215") }

// guard decides whether op, just planned, may run now. When a limit holds it back and no
// person approved it, op is journaled awaiting-approval without a lease, and held is true.
func (e *Engine) guard(ctx context.Context, op *Operation) (held bool, err error) {
	g := e.c.Guard
	req := op.Request
	// Some plans wait for a person whatever the limits (reenrolled.go).
	reason, hold := personalDecision(op)
	if reason == "" && ((g.MaxGroupDevices <= 0 && (g.MaxDestructivePerHour <= 0 || e.d.Budget == nil) && e.d.Holder == nil) || !destructive(op.Plan)) {
		return false, nil
	}
	own := false
	if reason == "" && e.d.Holder != nil && destructive(op.Plan) {
		d, err := e.d.Holder.Hold(ctx, op)
		if r, ok := AsRefusal(err); ok {
			_, err := e.finish(ctx, op, StatusRejected, r.Reason)
			return true, err
		}
		if err != nil {
			return false, asTransient(fmt.Errorf("guarding operation %s: %w", op.ID, err))
		}
		own = d.Own
		if d.Hold != nil {
			reason, hold = d.Reason, d.Hold
		}
	}
	if reason == "" && req.Intent.GroupWide() && g.MaxGroupDevices > 0 {
		n, err := e.countGroup(ctx, req.EnrollmentGroupID, g.MaxGroupDevices)
		if err != nil {
			return false, asTransient(fmt.Errorf("counting the registrations of group %s: %w", req.EnrollmentGroupID, err))
		}
		if n > g.MaxGroupDevices {
			reason = fmt.Sprintf("group %s has more than %d registered devices (counting stopped at %d), above the limit of %d per group operation (MAX_GROUP_DEVICES)",
				req.EnrollmentGroupID, g.MaxGroupDevices, n, g.MaxGroupDevices)
			hold = &Hold{Limit: "MAX_GROUP_DEVICES", Max: g.MaxGroupDevices, Count: n}
		}
	}
	if reason == "" && !own && g.MaxDestructivePerHour > 0 && e.d.Budget != nil && !(req.Intent == IntentCompromised) {
		window := budgetWindow(e.d.Clock.Now())
		ok, n, err := e.d.Budget.Admit(ctx, window, op.ID, g.MaxDestructivePerHour)
		if err != nil {
			return false, asTransient(fmt.Errorf("counting destructive operations of hour %s: %w", window, err))
		}
		if !ok {
			reason = fmt.Sprintf("%d destructive operations already started in the hour %s UTC, the limit (MAX_DESTRUCTIVE_PER_HOUR)",
				n, e.d.Clock.Now().UTC().Truncate(time.Hour).Format("2006-01-02 15:04"))
			hold = &Hold{Limit: "MAX_DESTRUCTIVE_PER_HOUR", Max: g.MaxDestructivePerHour, Count: n}
		}
	}
	if reason == "" {
		return false, nil
	}
	if a, err := e.approval(ctx, op.ID); err != nil {
		return false, err
	} else if a != nil {
		e.log.InfoContext(ctx, "guardrail passed by approval", "operation", op.ID, "limit", reason, "approval", a.Target)
		return false, nil
	}
	op.Status = StatusAwaitingApproval
	op.Reason = "awaiting approval: " + reason
	op.Hold, op.Announced = hold, time.Time{}
	op.LeaseOwner, op.LeaseUntil, op.Updated = "", time.Time{}, e.d.Clock.Now()
	if err := e.d.Journal.UpdateOperation(ctx, op); err != nil {
		if errors.Is(err, ErrPreconditionFailed) {
			return false, Transient(fmt.Errorf("operation %s: lease lost to another delivery: %w", op.ID, ErrBusy))
		}
		return false, asTransient(fmt.Errorf("journaling operation %s as awaiting approval: %w", op.ID, err))
	}
	e.log.WarnContext(ctx, "operation held for approval", "operation", op.ID, "intent", req.Intent,
		"registrationId", req.RegistrationID, "enrollmentGroupId", req.EnrollmentGroupID, "reason", reason)
	// Only here, on the way into awaiting-approval: a redelivery of a held event finds it
	// held (acquire) and announces nothing.
	e.announce(ctx, op)
	return true, nil
}

// countGroup counts the registrations of group gid, stopping at the first page that takes the
// count above limit.
func (e *Engine) countGroup(ctx context.Context, gid string, limit int) (int, error) {
	n := 0
	for page, err := range e.d.Registrations.GroupRegistrations(ctx, gid, "", e.c.GroupPageSize) {
		if err != nil {
			return n, err
		}
		n += len(page.Items)
		if n > limit || page.Next == "" {
			break
		}
	}
	return n, nil
}

// approval returns the approval record of operation id, nil when there is none.
func (e *Engine) approval(ctx context.Context, id string) (*StepRecord, error) {
	recs, err := e.d.Journal.Steps(ctx, id)
	if err != nil {
		return nil, asTransient(fmt.Errorf("reading steps of %s: %w", id, err))
	}
	for i := range recs {
		if recs[i].Index == ApprovalIndex && recs[i].Kind == StepApproval {
			return &recs[i], nil
		}
	}
	return nil, nil
}

// Approve lets an operation that a guardrail held run, journaling who approved it, when and
// why, and then runs it (as [Engine.Submit] would: a transient error means a redelivery, the
// cleanup timer or another approval call resumes it). The operation is planned again, since
// what it acts on may have changed while it waited; the guardrails let it pass from then on.
// Approving an operation already approved returns it as it stands; any other operation that
// is not awaiting approval gives [ErrNotAwaitingApproval].
func (e *Engine) Approve(ctx context.Context, id string, a Approval) (*Operation, error) {
	a.By, a.Reason = strings.TrimSpace(a.By), strings.TrimSpace(a.Reason)
	if a.By == "" {
		return nil, refuse("an approval must say who approves")
	}
	if a.Reason == "" {
		return nil, refuse("an approval must say why")
	}
	op, err := e.d.Journal.GetOperation(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reading operation %s: %w", id, err)
	}
	if op.Status != StatusAwaitingApproval {
		prev, err := e.approval(ctx, id)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			return op, nil
		}
		return op, fmt.Errorf("operation %s is %s: %w", id, op.Status, ErrNotAwaitingApproval)
	}
	now := e.d.Clock.Now()
	held := strings.TrimPrefix(op.Reason, "awaiting approval: ")
	via := ""
	if a.Via != "" {
		via = " (" + a.Via + ")"
	}
	rec := StepRecord{OperationID: id, Index: ApprovalIndex, Kind: StepApproval, Target: a.By + via,
		Outcome: StepDone, Error: "approved: " + a.Reason + "; held because " + held, Time: now}
	// The approval is journaled first: if the process dies before the operation is flipped to
	// running, a second approval call finds the operation still waiting and records it again.
	if err := e.d.Journal.RecordStep(ctx, rec); err != nil {
		return nil, asTransient(fmt.Errorf("journaling the approval of %s: %w", id, err))
	}
	op.Status, op.Reason, op.Plan, op.Updated = StatusRunning, "", nil, now
	op.Hold, op.Announced = nil, time.Time{}
	op.LeaseOwner, op.LeaseUntil = newOwner(), now.Add(e.c.LeaseDuration)
	if err := e.d.Journal.UpdateOperation(ctx, op); err != nil {
		if errors.Is(err, ErrPreconditionFailed) {
			return nil, Transient(fmt.Errorf("operation %s changed while being approved (another approval?): %w", id, ErrBusy))
		}
		return nil, asTransient(fmt.Errorf("journaling operation %s as approved: %w", id, err))
	}
	e.log.InfoContext(ctx, "operation approved", "operation", id, "by", a.By, "via", a.Via, "reason", a.Reason)
	return e.run(ctx, op)
}

// StepDenial is the kind of the journal record a denial leaves, at [DenialIndex].
const StepDenial StepKind = "guard.denial"

// DenialIndex is the step index of the denial record: apart from the approval's, so that an
// approval and a denial racing each other cannot overwrite one another's record.
const DenialIndex = -2

// Deny ends an operation that a guardrail holds without running any of it: it becomes
// rejected, and who denied it, when and why is journaled. Denying an operation already denied
// returns it as it stands; any other operation that is not awaiting approval gives
// [ErrNotAwaitingApproval].
func (e *Engine) Deny(ctx context.Context, id string, a Approval) (*Operation, error) {
	a.By, a.Reason = strings.TrimSpace(a.By), strings.TrimSpace(a.Reason)
	if a.By == "" {
		return nil, refuse("a denial must say who denies")
	}
	if a.Reason == "" {
		return nil, refuse("a denial must say why")
	}
	op, err := e.d.Journal.GetOperation(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reading operation %s: %w", id, err)
	}
	if op.Status != StatusAwaitingApproval {
		recs, err := e.d.Journal.Steps(ctx, id)
		if err != nil {
			return nil, asTransient(fmt.Errorf("reading steps of %s: %w", id, err))
		}
		for _, r := range recs {
			if r.Index == DenialIndex && r.Kind == StepDenial {
				return op, nil
			}
		}
		return op, fmt.Errorf("operation %s is %s: %w", id, op.Status, ErrNotAwaitingApproval)
	}
	via := ""
	if a.Via != "" {
		via = " (" + a.Via + ")"
	}
	held := strings.TrimPrefix(op.Reason, "awaiting approval: ")
	rec := StepRecord{OperationID: id, Index: DenialIndex, Kind: StepDenial, Target: a.By + via,
		Outcome: StepSkipped, Error: "denied: " + a.Reason + "; held because " + held, Time: e.d.Clock.Now()}
	if err := e.d.Journal.RecordStep(ctx, rec); err != nil {
		return nil, asTransient(fmt.Errorf("journaling the denial of %s: %w", id, err))
	}
	e.log.InfoContext(ctx, "operation denied", "operation", id, "by", a.By, "via", a.Via, "reason", a.Reason)
	return e.finish(ctx, op, StatusRejected, fmt.Sprintf("denied by %s: %s (held because %s)", a.By, a.Reason, held))
}

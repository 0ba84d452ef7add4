package deprovision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// RequestDiff names the fields in which b differs from a, as far as they make b another
// event: EventTime is left out, because a CloudEvent without `time` is stamped with its time
// of receipt, which differs on every delivery of the same event.
func RequestDiff(a, b Request) []string {
	var d []string
	add := func(name string, same bool) {
		if !same {
			d = append(d, name)
		}
	}
	add("type", a.EventType == b.EventType)
	add("intent", a.Intent == b.Intent)
	add("registrationId", strings.EqualFold(a.RegistrationID, b.RegistrationID))
	add("deviceId", a.DeviceID == b.DeviceID)
	add("iotHub", strings.EqualFold(a.Hub, b.Hub))
	add("enrollmentGroupId", strings.EqualFold(a.EnrollmentGroupID, b.EnrollmentGroupID))
	add("certificate", strings.TrimSpace(a.CertificatePEM) == strings.TrimSpace(b.CertificatePEM))
	add("reason", a.Reason == b.Reason)
	add("action", a.Action == b.Action)
	add("targetHub", strings.EqualFold(a.TargetHub, b.TargetHub))
	add("dryRun", a.DryRun == b.DryRun)
	return d
}

// ReplayConflict decides whether req, arriving under the (Source, EventID) of the stored
// operation, is a delivery of the same event (ok false) or another event reusing its id. For
// the latter it returns the request to journal instead, under an event id derived from its
// content (the original id would only find the stored operation; the same conflicting event
// delivered again derives the same id), and the reason to reject it with.
func ReplayConflict(stored *Operation, req Request) (conflict Request, reason string, ok bool) {
	diff := RequestDiff(stored.Request, req)
	if len(diff) == 0 {
		return req, "", false
	}
	keyed := req
	keyed.EventTime = stored.Request.EventTime // not part of what makes it another event
	sum := sha256.Sum256(fmt.Appendf(nil, "%#v", keyed))
	conflict = req
	conflict.EventID = shorten(req.EventID, 200) + "~conflict-" + hex.EncodeToString(sum[:8])
	reason = fmt.Sprintf("event id %q from %q was already received with different content (operation %s; differs in %s); an event id names one event: give a new event its own id",
		shorten(req.EventID, 80), shorten(req.Source, 80), stored.ID, strings.Join(diff, ", "))
	return conflict, reason, true
}

// shorten cuts s to at most n bytes, at a character boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// createOrConflict is the engine's create-or-get: it journals op, or finds the operation
// already journaled under its id. When that operation was created by another event reusing
// the id (see [ReplayConflict]), the newcomer is journaled as rejected under its conflict id
// instead, and that rejected operation is returned with conflict true; the check is made
// here, on the stored row, so that two different events arriving at the same moment cannot
// both pass it. extra, when not empty, is appended to the conflict's reason.
func (e *Engine) createOrConflict(ctx context.Context, op *Operation, extra string) (stored *Operation, created, conflict bool, err error) {
	if IsDeferred(ctx) {
		// The burst queue hands over a request journaled when it was deferred: read it
		// rather than try to create it again (an insert refused costs a Table call more).
		stored, err = e.d.Journal.GetOperation(ctx, op.ID)
		if errors.Is(err, ErrNotFound) {
			stored, err = nil, nil
		}
		if err != nil {
			return nil, false, false, err
		}
	}
	if stored == nil {
		stored, created, err = e.d.Journal.CreateOperation(ctx, op)
		if err != nil || created {
			return stored, created, false, err
		}
	}
	req, reason, ok := ReplayConflict(stored, op.Request)
	if !ok {
		return stored, false, false, nil
	}
	if extra != "" {
		reason += "; besides, " + extra
	}
	now := e.d.Clock.Now()
	rej := &Operation{ID: OperationID(req.Source, req.EventID), Request: req, Status: StatusRejected,
		Reason: reason, Created: now, Updated: now}
	got, made, err := e.d.Journal.CreateOperation(ctx, rej)
	if err != nil {
		return nil, false, true, fmt.Errorf("journaling the conflict of event %s with operation %s: %w", op.Request.EventID, stored.ID, err)
	}
	if made {
		e.log.WarnContext(ctx, "event id reused with different content: rejected as a conflict",
			"operation", got.ID, "storedOperation", stored.ID, "reason", reason)
		e.notify(ctx, got)
	}
	return got, made, true, nil
}

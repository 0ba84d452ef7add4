package cleanup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"dpsdeprov/deprovision"
)

// maxErrors bounds the errors a pass report lists.
const maxErrors = 10

func (p *PassReport) note(err error) {
	if len(p.Errors) < maxErrors {
		p.Errors = append(p.Errors, err.Error())
	}
}

// fatal reports whether err should stop the pass: the journal or a service is unavailable,
// so the next items would fail too. Anything else is one item's problem.
func fatal(err error) bool {
	return deprovision.IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// resume first announces the operations whose end (or hold) was journaled but never
// announced, AnnounceAfter ago or more (see announce), then submits every operation that has
// stood unfinished longer than ResumeAfter again: the engine carries on at its first
// unfinished step. Operations awaiting approval wait for a person, not for the timer. The
// cursor is the id of the last operation resumed.
func (x *run) resume(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	if done, err := x.announce(ctx, p); err != nil || !done {
		return after, false, err
	}
	last := after
	for op, err := range x.d.Operations.OpenOperations(ctx, x.now.Add(-x.o.ResumeAfter)) {
		if err != nil {
			if op == nil && fatal(err) {
				return last, false, fmt.Errorf("listing open operations: %w", err)
			}
			p.note(err)
			p.Failed++
			continue
		}
		if after != "" && op.ID <= after || op.Status == deprovision.StatusAwaitingApproval {
			continue
		}
		if !x.left(1) {
			return last, false, nil
		}
		p.Checked++
		if x.allDry() {
			// A dry run only counts what a real run would resume.
			last = op.ID
			continue
		}
		x.spend(p, 1)
		rctx := ctx
		if x.d.ResumeContext != nil {
			// At the priority of its intent, as the event path ran it: a compromised device
			// resumed by the timer must not wait behind group work.
			rctx = x.d.ResumeContext(ctx, op.Request.Intent)
		}
		got, err := x.d.Engine.Submit(rctx, op.Request)
		if err != nil {
			p.Failed++
			p.note(fmt.Errorf("resuming %s: %w", op.ID, err))
		} else {
			p.Submitted++
			x.log.InfoContext(ctx, "cleanup resumed operation", "run", x.id, "operation", op.ID, "status", got.Status)
		}
		last = op.ID
	}
	return "", true, nil
}

// announce makes the announcements that a process dying between an operation's terminal
// (or awaiting-approval) journal write and its notifier call lost, one unit each. It needs no
// cursor: an operation announced leaves the list. done is false when the budget ran out.
func (x *run) announce(ctx context.Context, p *PassReport) (done bool, err error) {
	for op, err := range x.d.Operations.UnannouncedOperations(ctx, x.now.Add(-x.o.AnnounceAfter)) {
		if err != nil {
			if op == nil && fatal(err) {
				return false, fmt.Errorf("listing unannounced operations: %w", err)
			}
			p.note(err)
			p.Failed++
			continue
		}
		if !x.left(1) {
			return false, nil
		}
		p.Checked++
		if x.allDry() {
			continue // a dry run only counts what a real run would announce
		}
		x.spend(p, 1)
		got, did, err := x.d.Engine.Announce(ctx, op.ID)
		if err != nil {
			p.Failed++
			p.note(fmt.Errorf("announcing %s: %w", op.ID, err))
			if fatal(err) && !did {
				return false, fmt.Errorf("announcing %s: %w", op.ID, err)
			}
			continue
		}
		if did {
			p.Announced++
			x.log.InfoContext(ctx, "cleanup announced an operation whose announcement was lost", "run", x.id, "operation", op.ID, "status", got.Status)
		}
	}
	return true, nil
}

// poison settles group-work batches left in the poison queue without a journal record, one
// unit per batch settled or kept (a settled batch is one bulk hub call). It has no cursor: the
// queue is its own, settled messages leave it and kept ones are hidden from the next sweeps.
// The sweep is complete when the queue had fewer messages than the pass could take.
func (x *run) poison(ctx context.Context, p *PassReport) (string, bool, error) {
	n := x.room()
	res, err := x.d.Poison.Sweep(ctx, n)
	p.Checked += res.Settled + res.Kept + res.Young
	p.Submitted += res.Settled
	p.Failed += res.Kept
	x.spend(p, res.Settled+res.Kept)
	if res.Kept > 0 {
		p.note(fmt.Errorf("%d poisoned messages could not be settled and stay in the poison queue for an operator", res.Kept))
	}
	if err != nil {
		return "", false, fmt.Errorf("sweeping the poison queue: %w", err)
	}
	if res.Settled > 0 || res.Kept > 0 {
		x.log.InfoContext(ctx, "cleanup swept the poison queue", "run", x.id, "settled", res.Settled, "kept", res.Kept, "young", res.Young)
	}
	return "", p.Checked < n, nil
}

// grace escalates devices this system revoked as lost or stolen longer than GraceAfter ago,
// to GraceIntent, or only reports them when no intent is set. The cursor is a registration id.
func (x *run) grace(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	last := after
	for ds, err := range x.d.Journal.DeviceRows(ctx, after) {
		if err != nil {
			return last, false, fmt.Errorf("listing device rows: %w", err)
		}
		if !x.left(1) {
			return last, false, nil
		}
		since := ds.EventTime
		if (ds.Intent == deprovision.IntentLost || ds.Intent == deprovision.IntentStolen) && ds.PendingOperation == "" &&
			!since.IsZero() && x.now.Sub(since) > x.o.GraceAfter {
			p.Checked++
			rid := ds.RegistrationID
			stamp := strconv.FormatInt(since.Unix(), 10)
			f := deprovision.Finding{ID: "grace/" + rid + "/" + stamp, Kind: "grace-expired", RegistrationID: rid, DeviceID: ds.DeviceID,
				Hub: ds.Hub, Intent: ds.Intent, Action: "reported",
				Detail: fmt.Sprintf("%s since %s (operation %s), longer than the grace period of %s", ds.Intent, since.UTC().Format("2006-01-02T15:04:05Z"), ds.OperationID, x.o.GraceAfter)}
			if x.o.GraceIntent != "" {
				dry := x.dryRun(!x.o.ApplyGrace)
				op, err := x.submit(ctx, p, deprovision.Request{EventID: eventID(PassGrace, dry, rid, stamp), EventType: "cleanup.grace",
					Intent: x.o.GraceIntent, RegistrationID: rid, DeviceID: ds.DeviceID, Hub: ds.Hub, DryRun: dry,
					Reason: fmt.Sprintf("%s for longer than the grace period (%s)", ds.Intent, x.o.GraceAfter)})
				if err != nil {
					if fatal(err) {
						return last, false, err
					}
					p.note(err)
					last = rid
					continue
				}
				f.Action, f.OperationID, f.OperationStatus = "escalated to "+string(x.o.GraceIntent), op.ID, op.Status
				if dry {
					f.Action = "planned (dry run): " + string(x.o.GraceIntent)
				}
			}
			if err := x.finding(ctx, p, f); err != nil {
				return last, false, err
			}
		}
		last = ds.RegistrationID
	}
	return "", true, nil
}

// drift checks each device this system revoked: an enrollment it disabled that is enabled
// again, a blocking enrollment that is gone, a hub identity it disabled that is enabled again,
// or one it deleted that is back. A compromised device is revoked again; others are reported.
// Each finding is journaled and announced. The cursor is a registration id.
func (x *run) drift(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	last := after
	for ds, err := range x.d.Journal.DeviceRows(ctx, after) {
		if err != nil {
			return last, false, fmt.Errorf("listing device rows: %w", err)
		}
		if !x.left(1) {
			return last, false, nil
		}
		if !ds.Intent.Revoking() || ds.PendingOperation != "" || nothingToCheck(ds) {
			last = ds.RegistrationID
			continue
		}
		// A compromised device may need its re-revocation too: keep room for it.
		if ds.Intent == deprovision.IntentCompromised && !x.left(2) {
			return last, false, nil
		}
		p.Checked++
		x.spend(p, 1)
		found, err := x.checkDevice(ctx, ds)
		if err != nil {
			if fatal(err) {
				return last, false, err
			}
			p.note(err)
			p.Failed++
		}
		if len(found) > 0 {
			if err := x.settleDrift(ctx, p, ds, found); err != nil {
				return last, false, err
			}
		}
		last = ds.RegistrationID
	}
	return "", true, nil
}

// nothingToCheck reports whether a device row has nothing left that drift could find: the
// device was sold or retired, its individual enrollment deleted (or it never had one) and its
// hub identity deleted. Only a person can bring such a device back (there is no enrollment to
// provision through), which is not drift. A disabled or blocking enrollment, or a disabled
// identity, is always checked: those are what a re-enable reverses.
func nothingToCheck(ds *deprovision.DeviceState) bool {
	if !ds.Intent.Final() || ds.BlockingEnrollment {
		return false
	}
	switch ds.EnrollmentAction {
	case "disabled", "blocked", "move-enrollment", "retargeted", "enabled":
		return false
	}
	return ds.HubAction != "disabled" && ds.HubAction != "enabled"
}

// checkDevice compares DPS and the hub with what the device row says this system did.
func (x *run) checkDevice(ctx context.Context, ds *deprovision.DeviceState) ([]deprovision.Finding, error) {
	rid := ds.RegistrationID
	base := deprovision.Finding{RegistrationID: rid, DeviceID: ds.DeviceID, Hub: ds.Hub, Intent: ds.Intent}
	var out []deprovision.Finding
	add := func(kind, detail string) {
		f := base
		f.Kind, f.Detail = kind, detail
		f.ID = PassDrift + "/" + kind + "/" + rid + "/" + ds.OperationID
		out = append(out, f)
	}
	switch ds.EnrollmentAction {
	case "disabled", "blocked":
		e, err := x.d.Enrollments.GetEnrollment(ctx, rid)
		switch {
		case errors.Is(err, deprovision.ErrNotFound):
			if ds.EnrollmentAction == "blocked" {
				add("blocking-enrollment-missing", "the disabled individual enrollment this system created to block the group member is gone: the device can enroll through its group again")
			}
		case err != nil:
			return out, fmt.Errorf("reading enrollment %s: %w", rid, err)
		case e.Enabled:
			add("enrollment-enabled", fmt.Sprintf("the individual enrollment this system %s (operation %s) is enabled again", ds.EnrollmentAction, ds.OperationID))
		}
	case "deleted":
		_, err := x.d.Enrollments.GetEnrollment(ctx, rid)
		switch {
		case err == nil:
			add("enrollment-present", fmt.Sprintf("the individual enrollment this system deleted (operation %s) exists again", ds.OperationID))
		case !errors.Is(err, deprovision.ErrNotFound):
			return out, fmt.Errorf("reading enrollment %s: %w", rid, err)
		}
	}
	if ds.Hub != "" && ds.DeviceID != "" {
		d, err := x.d.Devices.GetDevice(ctx, ds.Hub, ds.DeviceID)
		switch {
		case errors.Is(err, deprovision.ErrNotFound):
		case err != nil:
			return out, fmt.Errorf("reading device %s in %s: %w", ds.DeviceID, ds.Hub, err)
		case ds.HubAction == "disabled" && d.Enabled:
			add("device-enabled", fmt.Sprintf("the hub identity this system disabled (operation %s) is enabled again", ds.OperationID))
		case ds.HubAction == "deleted":
			add("device-present", fmt.Sprintf("the hub identity this system deleted (operation %s) exists again (status %s)", ds.OperationID, enabledWord(d.Enabled)))
		}
	}
	return out, nil
}

func enabledWord(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

// settleDrift revokes a drifted compromised device again (through the engine, idempotent per
// drift of one operation) and journals and announces every finding.
func (x *run) settleDrift(ctx context.Context, p *PassReport, ds *deprovision.DeviceState, found []deprovision.Finding) error {
	action, opID, status := "reported", "", deprovision.Status("")
	waiting := ""
	if ds.Intent == deprovision.IntentCompromised && x.d.DeviceJournal != nil {
		// The operator re-enrolled the device and asked for re-enrolled, which waits for a
		// person: revoking it again now would undo the remedy the plan named.
		hist, err := x.d.DeviceJournal.DeviceHistory(ctx, ds.RegistrationID)
		if err != nil {
			return fmt.Errorf("reading the history of %s: %w", ds.RegistrationID, err)
		}
		for _, h := range hist {
			if h.Intent == deprovision.IntentReEnrolled && !h.Status.Terminal() {
				waiting = h.OperationID
			}
		}
	}
	if waiting != "" {
		action, opID, status = "reported: re-enrollment awaiting approval", waiting, deprovision.StatusAwaitingApproval
	} else if ds.Intent == deprovision.IntentCompromised {
		dry := x.dryRun(x.o.DriftDryRun)
		kinds := make([]string, len(found))
		for i, f := range found {
			kinds[i] = f.Kind
		}
		// One operation per sweep: a re-revocation that failed is tried again, as a new
		// operation, by the next sweep, and a re-run within a sweep finds the same one.
		req := deprovision.Request{EventID: eventID(PassDrift, dry, ds.RegistrationID, ds.OperationID, "s"+strconv.Itoa(x.sweep)), EventType: "cleanup.drift",
			Intent: deprovision.IntentCompromised, RegistrationID: ds.RegistrationID, DeviceID: ds.DeviceID, Hub: ds.Hub, DryRun: dry,
			Reason: "drift: " + strings.Join(kinds, ", ")}
		if ds.HubAction == "deleted" {
			req.Action = deprovision.ActionDelete
		}
		op, err := x.submit(ctx, p, req)
		switch {
		case err != nil && fatal(err):
			return err
		case err != nil:
			p.note(err)
			action = "re-revocation failed: " + err.Error()
		default:
			action, opID, status = "re-revoked", op.ID, op.Status
			switch {
			case dry:
				action = "planned (dry run): re-revoke"
			case op.Status == deprovision.StatusFailed:
				action = "re-revocation failed (the next sweep tries again): " + op.Reason
				p.Failed++
			case op.Status == deprovision.StatusRejected:
				action = "re-revocation refused: " + op.Reason
			case !op.Status.Terminal():
				action = "re-revocation " + string(op.Status)
			}
		}
	}
	for _, f := range found {
		f.Action, f.OperationID, f.OperationStatus = action, opID, status
		if err := x.reportDrift(ctx, p, f); err != nil {
			return err
		}
	}
	return nil
}

// groupCursor is the position of a pass that walks enrollment groups' registration records:
// the group (lower case), the continuation token of the page being worked on, and how many
// records of it (or, for a pass that deletes as it goes, of the whole listing) to skip.
type groupCursor struct {
	group, page string
	skip        int
}

func parseGroupCursor(s string) groupCursor {
	parts := strings.SplitN(s, "\n", 3)
	var c groupCursor
	if len(parts) == 3 {
		c.group, c.page = parts[0], parts[1]
		c.skip, _ = strconv.Atoi(parts[2])
	}
	return c
}

func (c groupCursor) String() string {
	return c.group + "\n" + c.page + "\n" + strconv.Itoa(c.skip)
}

package cleanup

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

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
		if x.dry != nil && *x.dry {
			// A dry run by hand only counts what a real run would resume.
			last = op.ID
			continue
		}
		x.spend(p, 1)
		got, err := x.d.Engine.Submit(ctx, op.Request)
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
		if x.dry != nil && *x.dry {
			continue // a dry run by hand only counts what a real run would announce
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
		if !ds.Intent.Revoking() || ds.PendingOperation != "" {
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
	if ds.Intent == deprovision.IntentCompromised {
		dry := x.dryRun(x.o.DriftDryRun)
		kinds := make([]string, len(found))
		for i, f := range found {
			kinds[i] = f.Kind
		}
		req := deprovision.Request{EventID: eventID(PassDrift, dry, ds.RegistrationID, ds.OperationID), EventType: "cleanup.drift",
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
			if dry {
				action = "planned (dry run): re-revoke"
			}
		}
	}
	for _, f := range found {
		f.Action, f.OperationID, f.OperationStatus = action, opID, status
		if err := x.finding(ctx, p, f); err != nil {
			return err
		}
		if x.d.Reporter != nil {
			f.Pass, f.RunID, f.Time = p.Pass, x.id, x.d.Clock.Now()
			x.d.Reporter.DriftDetected(ctx, f)
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

// driftGroups finds members of disabled enrollment groups whose hub identity is enabled. They
// are reported, not changed: which disabled group was compromised (rather than retired by a
// person) is not on record per member.
func (x *run) driftGroups(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	var groups []string
	for g, err := range x.d.Enrollments.Groups(ctx) {
		if err != nil {
			return after, false, fmt.Errorf("listing enrollment groups: %w", err)
		}
		if !g.Enabled {
			groups = append(groups, strings.ToLower(g.ID))
		}
	}
	slices.Sort(groups)
	// A group whose group-wide operation is still running is not drift: its members are being
	// disabled right now.
	busy := map[string]bool{}
	for op, err := range x.d.Operations.OpenOperations(ctx, x.now.Add(time.Minute)) {
		if err != nil {
			if op == nil && fatal(err) {
				return after, false, fmt.Errorf("listing open operations: %w", err)
			}
			continue
		}
		if op.Request.Intent.GroupWide() {
			busy[strings.ToLower(op.Request.EnrollmentGroupID)] = true
		}
	}
	cur := parseGroupCursor(after)
	for _, gid := range groups {
		if cur.group != "" && gid < cur.group || busy[gid] {
			continue
		}
		page, skip := "", 0
		if gid == cur.group {
			page, skip = cur.page, cur.skip
		}
		for pg, err := range x.d.Registrations.GroupRegistrations(ctx, gid, page, x.o.PageSize) {
			if err != nil {
				return groupCursor{gid, page, skip}.String(), false, fmt.Errorf("listing registrations of group %s: %w", gid, err)
			}
			for i, reg := range pg.Items {
				if i < skip || reg.DeviceID == "" || reg.AssignedHub == "" {
					continue
				}
				if !x.left(1) {
					return groupCursor{gid, page, i}.String(), false, nil
				}
				p.Checked++
				x.spend(p, 1)
				d, err := x.d.Devices.GetDevice(ctx, reg.AssignedHub, reg.DeviceID)
				switch {
				case errors.Is(err, deprovision.ErrNotFound):
					continue
				case err != nil && fatal(err):
					return groupCursor{gid, page, i}.String(), false, err
				case err != nil:
					p.note(err)
					p.Failed++
					continue
				case !d.Enabled:
					continue
				}
				f := deprovision.Finding{ID: PassDriftGroups + "/group-member-enabled/" + gid + "/" + reg.RegistrationID,
					Kind: "group-member-enabled", RegistrationID: reg.RegistrationID, DeviceID: reg.DeviceID, Hub: reg.AssignedHub,
					GroupID: gid, Action: "reported",
					Detail: fmt.Sprintf("enrollment group %s is disabled, and its member %s is enabled in %s", gid, reg.DeviceID, reg.AssignedHub)}
				if err := x.finding(ctx, p, f); err != nil {
					return groupCursor{gid, page, i}.String(), false, err
				}
				if x.d.Reporter != nil {
					f.Pass, f.RunID, f.Time = p.Pass, x.id, x.d.Clock.Now()
					x.d.Reporter.DriftDetected(ctx, f)
				}
			}
			page, skip = pg.Next, 0
			if pg.Next == "" {
				break
			}
		}
	}
	return "", true, nil
}

// stale requests `retired` for devices no lifecycle event has shown alive for StaleAfter,
// except allow-listed ones, at most StaleMax per run. The registration id is taken to be the
// device id (what DPS assigns unless an enrollment names another). The cursor is a sighting key.
func (x *run) stale(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	last := after
	requested := 0
	for s, err := range x.d.Seen.Sightings(ctx, after) {
		if err != nil {
			return last, false, fmt.Errorf("listing last-seen rows: %w", err)
		}
		if !x.left(1) || requested >= x.o.StaleMax {
			return last, false, nil
		}
		// A device whose latest event is a connect is still connected: a device that stays
		// online sends no further lifecycle event (telemetry events are optional), and retiring
		// a working device is the costly mistake, so a missed disconnect errs on the safe side.
		connected := s.LastEvent == "Microsoft.Devices.DeviceConnected"
		if !s.Deleted.IsZero() || s.LastSeen.IsZero() || connected || x.now.Sub(s.LastSeen) <= x.o.StaleAfter || x.allowed(s.Hub, s.DeviceID) {
			last = s.Key
			continue
		}
		p.Checked++
		host := x.hubHost(s.Hub)
		seen := strconv.FormatInt(s.LastSeen.Unix(), 10)
		f := deprovision.Finding{ID: PassStale + "/" + s.Hub + "/" + s.DeviceID + "/" + seen, Kind: "stale",
			RegistrationID: s.DeviceID, DeviceID: s.DeviceID, Hub: host,
			Detail: fmt.Sprintf("last seen %s (%s), not for longer than %s", s.LastSeen.UTC().Format("2006-01-02T15:04:05Z"), s.LastEvent, x.o.StaleAfter)}
		dry := x.dryRun(!x.o.ApplyStale)
		req := deprovision.Request{EventID: eventID(PassStale, dry, s.Hub, s.DeviceID, seen), EventType: "cleanup.stale",
			Intent: deprovision.IntentRetired, RegistrationID: s.DeviceID, DeviceID: s.DeviceID, Hub: host, DryRun: dry,
			Reason: "not seen since " + s.LastSeen.UTC().Format("2006-01-02T15:04:05Z")}
		if err := req.Validate(); err != nil && !strings.Contains(err.Error(), "source is empty") {
			f.Action = "skipped: " + err.Error()
		} else {
			requested++
			op, err := x.submit(ctx, p, req)
			if err != nil {
				if fatal(err) {
					return last, false, err
				}
				p.note(err)
				f.Action = "retire failed: " + err.Error()
			} else {
				f.Action, f.OperationID, f.OperationStatus = "retire requested", op.ID, op.Status
				if dry {
					f.Action = "planned (dry run): retire"
				} else if op.Status == deprovision.StatusSucceeded {
					// Gone for good: the next sweeps need not look at it again (a DeviceDeleted
					// would say the same; a later DeviceCreated brings it back).
					if _, err := x.d.Seen.RecordSighting(ctx, deprovision.Sighting{Hub: s.Hub, DeviceID: s.DeviceID, Deleted: x.now}); err != nil {
						p.note(err)
					}
				}
			}
		}
		if err := x.finding(ctx, p, f); err != nil {
			return last, false, err
		}
		last = s.Key
	}
	return "", true, nil
}

// allowed reports whether the stale allow-list spares the device.
func (x *run) allowed(hub, deviceID string) bool {
	for _, a := range x.o.StaleAllow {
		h, pat, scoped := strings.Cut(a, "/")
		if !scoped {
			h, pat = "", a
		}
		if h != "" && !strings.EqualFold(h, hub) && !strings.EqualFold(h, x.hubHost(hub)) {
			continue
		}
		if ok, _ := path.Match(pat, deviceID); ok || pat == deviceID {
			return true
		}
	}
	return false
}

// hubHost maps a hub name from a lifecycle event onto the configured host name.
func (x *run) hubHost(name string) string {
	for _, h := range x.o.Hubs {
		label, _, _ := strings.Cut(h, ".")
		if strings.EqualFold(label, name) || strings.EqualFold(h, name) {
			return h
		}
	}
	if strings.Contains(name, ".") {
		return name
	}
	return strings.ToLower(name) + ".azure-devices.net"
}

// orphans deletes the registration records of enrollment groups that no longer exist: DPS
// keeps them when a group is deleted, and they count against the registration quota. DPS
// cannot list all registration records, only a group's by its id, so the pass checks the
// groups it has seen before (it remembers every group it lists) and OrphanGroups.
func (x *run) orphans(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	current := map[string]bool{}
	for g, err := range x.d.Enrollments.Groups(ctx) {
		if err != nil {
			return after, false, fmt.Errorf("listing enrollment groups: %w", err)
		}
		current[strings.ToLower(g.ID)] = true
	}
	known := map[string]bool{}
	for _, g := range x.o.OrphanGroups {
		known[strings.ToLower(g)] = true
	}
	for g, err := range x.d.Journal.KnownGroups(ctx) {
		if err != nil {
			return after, false, fmt.Errorf("listing remembered groups: %w", err)
		}
		known[strings.ToLower(g)] = true
	}
	for g := range current {
		if !known[g] {
			if err := x.d.Journal.RememberGroup(ctx, g); err != nil {
				return after, false, err
			}
		}
	}
	var gone []string
	for g := range known {
		if !current[g] {
			gone = append(gone, g)
		}
	}
	slices.Sort(gone)
	dry := x.dryRun(!x.o.DeleteOrphans)
	after, wasDry := strings.CutPrefix(after, dryMark)
	cur := parseGroupCursor(after)
	if wasDry != dry {
		// The two modes count their position differently: start the sweep over.
		cur = groupCursor{}
	}
	for _, gid := range gone {
		if cur.group != "" && gid < cur.group {
			continue
		}
		// A dry run resumes at the page it stopped in. A live run deletes as it goes, which
		// moves later records forward, so it lists the group from the start again and skips
		// the records it kept (failed deletes) at the front.
		page, skip := "", 0
		if gid == cur.group {
			skip = cur.skip
			if dry {
				page = cur.page
			}
		}
		kept, n := skip, 0
		for pg, err := range x.d.Registrations.GroupRegistrations(ctx, gid, page, x.o.PageSize) {
			if err != nil {
				return x.orphanCursor(gid, page, skip, kept, dry), false, fmt.Errorf("listing registrations of group %s: %w", gid, err)
			}
			for i, reg := range pg.Items {
				n++
				if dry && i < skip || !dry && n <= skip {
					continue
				}
				if !x.left(1) {
					return x.orphanCursor(gid, page, i, kept, dry), false, nil
				}
				p.Checked++
				x.spend(p, 1)
				f := deprovision.Finding{ID: PassOrphans + "/" + gid + "/" + strings.ToLower(reg.RegistrationID), Kind: "orphan-registration",
					RegistrationID: reg.RegistrationID, DeviceID: reg.DeviceID, Hub: reg.AssignedHub, GroupID: gid,
					Detail: fmt.Sprintf("registration record of enrollment group %s, which no longer exists", gid)}
				if dry {
					f.Action = "planned (dry run): delete"
				} else {
					err := x.d.Registrations.DeleteRegistration(ctx, reg.RegistrationID, reg.ETag)
					switch {
					case err == nil || errors.Is(err, deprovision.ErrNotFound):
						f.Action = "deleted"
					case fatal(err):
						return x.orphanCursor(gid, page, i, kept, dry), false, err
					default:
						kept++
						p.Failed++
						p.note(fmt.Errorf("deleting registration %s: %w", reg.RegistrationID, err))
						f.Action = "delete failed: " + err.Error()
					}
				}
				if err := x.finding(ctx, p, f); err != nil {
					return x.orphanCursor(gid, page, i, kept, dry), false, err
				}
			}
			page, skip = pg.Next, 0
			if pg.Next == "" {
				break
			}
		}
	}
	return "", true, nil
}

// dryMark starts the orphans cursor of a dry run.
const dryMark = "dry\n"

func (x *run) orphanCursor(gid, page string, inPage, kept int, dry bool) string {
	if dry {
		return dryMark + groupCursor{gid, page, inPage}.String()
	}
	return groupCursor{gid, "", kept}.String()
}

package cleanup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"dpsdeprov/deprovision"
)

// driftGroups checks the enrollment groups: first those this system disabled or deleted
// (tracked by TrackGroups), any of which is enabled again (or back) is reported and, with
// RedisableGroups, revoked again through the engine with the intent that disabled it (planned
// only in a dry run); then
// the members of every disabled group, whose hub identity enabled is reported (which disabled
// group was compromised, rather than disabled by a person, is not on record per member).
func (x *run) driftGroups(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	all := map[string]*deprovision.Group{}
	var disabled []string
	for g, err := range x.d.Enrollments.Groups(ctx) {
		if err != nil {
			return after, false, fmt.Errorf("listing enrollment groups: %w", err)
		}
		all[strings.ToLower(g.ID)] = g
		if !g.Enabled {
			disabled = append(disabled, strings.ToLower(g.ID))
		}
	}
	slices.Sort(disabled)
	// A group whose group-wide operation is still running is not drift: it is being
	// disabled (or its members are) right now.
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
	if cur.group == "" && cur.page == "" && cur.skip == 0 {
		// The tracked groups are few (one per group-wide revocation) and cost nothing but the
		// listing above: every sweep starts with them.
		if err := x.trackedGroups(ctx, p, all, busy); err != nil {
			return after, false, err
		}
	}
	for _, gid := range disabled {
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
				if err := x.reportDrift(ctx, p, f); err != nil {
					return groupCursor{gid, page, i}.String(), false, err
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

// trackedGroups reports (and with RedisableGroups revokes again) the groups this system
// disabled that are enabled again, and those it deleted that exist again.
func (x *run) trackedGroups(ctx context.Context, p *PassReport, all map[string]*deprovision.Group, busy map[string]bool) error {
	if x.d.Ledger == nil {
		return nil
	}
	for tg, err := range x.d.Ledger.TrackedGroups(ctx) {
		if err != nil {
			return fmt.Errorf("listing the groups this system disabled: %w", err)
		}
		gid := strings.ToLower(tg.GroupID)
		g := all[gid]
		if g == nil || busy[gid] {
			continue // gone (nothing to enable), or being changed right now
		}
		p.Checked++
		f := deprovision.Finding{GroupID: tg.GroupID, Intent: tg.Intent, Action: "reported"}
		switch {
		case tg.Action == "deleted":
			f.Kind = "group-present"
			f.Detail = fmt.Sprintf("enrollment group %s, which this system deleted (operation %s, %s), exists again (%s)", tg.GroupID, tg.OperationID, tg.Intent, enabledWord(g.Enabled))
		case g.Enabled:
			f.Kind = "group-enabled"
			f.Detail = fmt.Sprintf("enrollment group %s, which this system disabled (operation %s, %s), is enabled again: its members can provision", tg.GroupID, tg.OperationID, tg.Intent)
		default:
			continue
		}
		f.ID = PassDriftGroups + "/" + f.Kind + "/" + gid + "/" + tg.OperationID
		if tg.Action != "deleted" && tg.Intent.GroupWide() && x.o.RedisableGroups {
			if !x.left(1) {
				f.Action = "reported: no budget left to revoke it again in this run"
			} else {
				dry := x.dryRun(false)
				op, err := x.submit(ctx, p, deprovision.Request{EventID: eventID(PassDriftGroups, dry, gid, tg.OperationID, "s"+strconv.Itoa(x.sweep)),
					EventType: "cleanup.drift-groups", Intent: tg.Intent, EnrollmentGroupID: tg.GroupID, DryRun: dry,
					Reason: "drift: the group was enabled again"})
				switch {
				case err != nil && fatal(err):
					return err
				case err != nil:
					p.note(err)
					f.Action = "revocation failed: " + err.Error()
				default:
					f.Action, f.OperationID, f.OperationStatus = "revoked again", op.ID, op.Status
					if dry {
						f.Action = "planned (dry run): revoke again"
					}
				}
			}
		}
		if err := x.reportDrift(ctx, p, f); err != nil {
			return err
		}
	}
	return nil
}

// reportDrift journals a drift finding and hands it to the reporter.
func (x *run) reportDrift(ctx context.Context, p *PassReport, f deprovision.Finding) error {
	if err := x.finding(ctx, p, f); err != nil {
		return err
	}
	if x.d.Reporter != nil {
		f.Pass, f.RunID, f.Time = p.Pass, x.id, x.d.Clock.Now()
		x.d.Reporter.DriftDetected(ctx, f)
	}
	return nil
}

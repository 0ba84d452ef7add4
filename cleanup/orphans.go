package cleanup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"dpsdeprov/deprovision"
)

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
				// A check, and for a live run the request that deletes the record.
				if !x.left(1) || !dry && !x.left(2) {
					return x.orphanCursor(gid, page, i, kept, dry), false, nil
				}
				p.Checked++
				x.spend(p, 1)
				f := deprovision.Finding{ID: PassOrphans + "/" + gid + "/" + strings.ToLower(reg.RegistrationID), Kind: "orphan-registration",
					RegistrationID: reg.RegistrationID, DeviceID: reg.DeviceID, Hub: reg.AssignedHub, GroupID: gid,
					Detail: fmt.Sprintf("registration record of enrollment group %s, which no longer exists", gid)}
				// A record whose hub identity exists is kept: it is how a later revocation of the
				// device finds it, and a group recreated under the same id would otherwise leave
				// its devices unknown to this system while their identities stay enabled.
				exists, err := x.identityExists(ctx, reg)
				switch {
				case err != nil && fatal(err):
					return x.orphanCursor(gid, page, i, kept, dry), false, err
				case err != nil:
					kept++
					p.Failed++
					p.note(err)
					f.Action = "check failed: " + err.Error()
				case exists:
					kept++
					p.Refused++
					f.Kind, f.Action = "orphan-kept", "kept: its hub identity "+reg.DeviceID+" in "+reg.AssignedHub+" exists"
				case dry:
					f.Action = "planned (dry run): delete"
				default:
					// Through the engine, journaled and counted against the timer's budget; a
					// new operation each run, so that a refusal (the identity was back, the
					// hour's budget was used) is looked at again. Deleting a record twice is
					// harmless: the second finds it gone.
					op, err := x.submit(ctx, p, deprovision.Request{EventID: eventID(PassOrphans, false, gid, strings.ToLower(reg.RegistrationID), x.id),
						EventType: EventTypeOrphans, Intent: deprovision.IntentOrphaned, RegistrationID: reg.RegistrationID,
						DeviceID: reg.DeviceID, Hub: reg.AssignedHub, EnrollmentGroupID: gid, Reason: "registration record of deleted group " + gid})
					switch {
					case err != nil && fatal(err):
						return x.orphanCursor(gid, page, i, kept, dry), false, err
					case err != nil:
						kept++
						p.note(err)
						f.Action = "delete failed: " + err.Error()
					default:
						f.OperationID, f.OperationStatus = op.ID, op.Status
						switch op.Status {
						case deprovision.StatusSucceeded:
							f.Action = "deleted"
						case deprovision.StatusAwaitingApproval:
							kept++
							f.Action = "held for approval: " + op.Reason
						case deprovision.StatusRejected:
							kept++
							p.Refused++
							f.Action = "kept: " + op.Reason
							if strings.HasSuffix(op.Reason, laterHour) {
								// The timer's hourly budget is used: carry on in a later run.
								if err := x.finding(ctx, p, f); err != nil {
									return x.orphanCursor(gid, page, i, kept, dry), false, err
								}
								// The record is not kept: the next run lists it again first.
								return x.orphanCursor(gid, page, i, kept-1, dry), false, nil
							}
						default:
							kept++
							p.Failed++
							f.Action = "delete " + string(op.Status) + ": " + op.Reason
						}
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

// identityExists reports whether the hub identity a registration record points at exists.
func (x *run) identityExists(ctx context.Context, reg deprovision.Registration) (bool, error) {
	if reg.AssignedHub == "" || reg.DeviceID == "" {
		return false, nil // never assigned: no identity to protect
	}
	_, err := x.d.Devices.GetDevice(ctx, reg.AssignedHub, reg.DeviceID)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, deprovision.ErrNotFound):
		return false, nil
	}
	return false, fmt.Errorf("reading device %s in %s: %w", reg.DeviceID, reg.AssignedHub, err)
}

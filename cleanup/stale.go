package cleanup

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"dpsdeprov/deprovision"
)

// stale requests `retired` for devices no lifecycle event has shown alive for StaleAfter. A
// sighting is a candidate when it is of a hub this app manages, not deleted, not allowed,
// its latest event is not a connect, and its time is older than the stale period. Before a
// candidate is retired, in this order (each refusal is a finding, and costs what it read):
//
//   - the hub's lifecycle feed must be alive: its newest event no older than StaleFeedMaxAge;
//   - the journal must hold no revoking state for the device (compromised, lost, stolen: their
//     identities are evidence, and their grace belongs to the grace pass) and no operation
//     under way or awaiting approval;
//   - DPS must assign the device's registration to the hub and device id of the sighting;
//   - the hub must show no evidence of life: not connected, and no activity (identity or
//     twin) and no connection change within the stale period.
//
// At most min(StaleMax, StaleRunShare of the fleet) are requested per run; the request's
// guard (Guard) holds those beyond the timer's hourly budget or StaleDayShare of the fleet a
// day for approval, and the pass starts no more while StaleMax of them wait. The fleet is
// counted as the pass sweeps. The cursor is a sighting key.
func (x *run) stale(ctx context.Context, p *PassReport, after string) (string, bool, error) {
	fleet, err := x.d.Ledger.GetFleet(ctx)
	if errors.Is(err, deprovision.ErrNotFound) {
		fleet, err = &Fleet{}, nil
	}
	if err != nil {
		return after, false, fmt.Errorf("reading the fleet count: %w", err)
	}
	if after == "" {
		fleet.Counting = 0
	}
	if fleet.Count == 0 && after == "" {
		// The first sweep: count the fleet before any share of it is taken.
		n, err := x.countFleet(ctx)
		if err != nil {
			return after, false, err
		}
		fleet.Count, fleet.CountedAt = n, x.now
	}
	beats, err := x.d.Ledger.Beats(ctx)
	if err != nil {
		return after, false, fmt.Errorf("reading the lifecycle feed's newest events: %w", err)
	}
	held, err := x.heldStale(ctx)
	if err != nil {
		return after, false, err
	}
	runCap := min(x.o.StaleMax, share(fleet.Count, x.o.StaleRunShare))
	last, requested := after, 0
	silent := map[string]bool{}
	complete := false
	defer func() {
		// The count of the sweep so far, or of the sweep just finished.
		if complete {
			fleet.Count, fleet.CountedAt, fleet.Counting = fleet.Counting, x.now, 0
		}
		if x.hand && x.allDry() {
			return
		}
		if perr := x.d.Ledger.PutFleet(ctx, fleet); perr != nil && !errors.Is(perr, deprovision.ErrPreconditionFailed) && !errors.Is(perr, deprovision.ErrConflict) {
			p.note(fmt.Errorf("writing the fleet count: %w", perr))
		}
	}()
	for s, err := range x.d.Seen.Sightings(ctx, after) {
		if err != nil {
			return last, false, fmt.Errorf("listing last-seen rows: %w", err)
		}
		if !x.managed(s.Hub) {
			last = s.Key
			continue
		}
		if !x.staleCandidate(s) {
			if s.Deleted.IsZero() {
				fleet.Counting++
			}
			last = s.Key
			continue
		}
		if !x.left(2) || requested >= runCap || held >= x.o.StaleMax {
			return last, false, nil
		}
		fleet.Counting++
		if beat := beats[strings.ToLower(s.Hub)]; x.now.Sub(beat) > x.o.StaleFeedMaxAge {
			if !silent[s.Hub] {
				silent[s.Hub] = true
				p.Refused++
				newest := "never"
				if !beat.IsZero() {
					newest = beat.UTC().Format(time.RFC3339)
				}
				f := deprovision.Finding{ID: PassStale + "/feed-silent/" + s.Hub, Kind: "stale-feed-silent", Hub: x.hubHost(s.Hub), Action: "refused",
					Detail: fmt.Sprintf("the newest lifecycle event of hub %s is from %s, older than %s: the feed may be broken (an Event Grid subscription?), so no device of the hub is retired as stale", s.Hub, newest, x.o.StaleFeedMaxAge)}
				if err := x.finding(ctx, p, f); err != nil {
					return last, false, err
				}
			}
			last = s.Key
			continue
		}
		p.Checked++
		f, ok, err := x.retirable(ctx, p, s)
		if err != nil {
			if fatal(err) {
				return last, false, err
			}
			p.note(err)
			p.Failed++
			f.Action = "check failed: " + err.Error()
		}
		if ok {
			requested++
			if err := x.retire(ctx, p, s, &f); err != nil {
				return last, false, err
			}
			if f.OperationStatus == deprovision.StatusAwaitingApproval {
				held++
			}
		} else if err == nil {
			p.Refused++
		}
		if err := x.finding(ctx, p, f); err != nil {
			return last, false, err
		}
		last = s.Key
	}
	complete = true
	return "", true, nil
}

// staleCandidate reports whether a sighting alone makes the device a candidate.
func (x *run) staleCandidate(s *deprovision.Sighting) bool {
	// A device whose latest event is a connect is still connected: a device that stays online
	// sends no further lifecycle event (telemetry events are optional).
	connected := s.LastEvent == "Microsoft.Devices.DeviceConnected"
	return s.Deleted.IsZero() && !s.LastSeen.IsZero() && !connected && x.now.Sub(s.LastSeen) > x.o.StaleAfter && !x.allowed(s.Hub, s.DeviceID)
}

// retirable runs the checks that cost calls (see stale), one unit for all of them. ok is
// true when nothing refuses; f is the finding either way.
func (x *run) retirable(ctx context.Context, p *PassReport, s *deprovision.Sighting) (f deprovision.Finding, ok bool, err error) {
	host := x.hubHost(s.Hub)
	seen := s.LastSeen.UTC().Format(time.RFC3339)
	f = deprovision.Finding{ID: PassStale + "/" + s.Hub + "/" + s.DeviceID + "/" + strconv.FormatInt(s.LastSeen.Unix(), 10), Kind: "stale",
		RegistrationID: s.DeviceID, DeviceID: s.DeviceID, Hub: host,
		Detail: fmt.Sprintf("last seen %s (%s), not for longer than %s", seen, s.LastEvent, x.o.StaleAfter)}
	refuse := func(kind, why string) (deprovision.Finding, bool, error) {
		f.Kind, f.Action = kind, "refused: "+why
		return f, false, nil
	}
	if err := (deprovision.Request{EventID: "x", Source: Source, Intent: deprovision.IntentRetired, RegistrationID: s.DeviceID}).Validate(); err != nil {
		return refuse("stale-refused", "the device id is not a registration id ("+err.Error()+")")
	}
	// The journal: free of budget.
	ds, err := x.d.DeviceJournal.GetDevice(ctx, strings.ToLower(s.DeviceID))
	switch {
	case errors.Is(err, deprovision.ErrNotFound):
	case err != nil:
		return f, false, fmt.Errorf("reading the device row of %s: %w", s.DeviceID, err)
	case ds.PendingOperation != "":
		return refuse("stale-refused", "operation "+ds.PendingOperation+" is changing the device")
	case ds.Intent.Revoking():
		f.Intent = ds.Intent
		return refuse("stale-refused", fmt.Sprintf("the journal holds %s (operation %s): the stale pass never retires a device in a revoking state", ds.Intent, ds.OperationID))
	}
	hist, err := x.d.DeviceJournal.DeviceHistory(ctx, strings.ToLower(s.DeviceID))
	if err != nil {
		return f, false, fmt.Errorf("reading the history of %s: %w", s.DeviceID, err)
	}
	for _, h := range hist {
		if !h.Status.Terminal() {
			return refuse("stale-refused", fmt.Sprintf("operation %s (%s) is %s", h.OperationID, h.Intent, h.Status))
		}
	}
	x.spend(p, 1)
	// DPS: is this the registration's hub and device?
	reg, err := x.d.Registrations.GetRegistration(ctx, s.DeviceID)
	switch {
	case errors.Is(err, deprovision.ErrNotFound):
		return refuse("stale-refused", "DPS has no registration record "+s.DeviceID+": the sighting cannot be matched to an enrollment")
	case err != nil:
		return f, false, fmt.Errorf("reading the registration of %s: %w", s.DeviceID, err)
	case !strings.EqualFold(reg.AssignedHub, host) || reg.DeviceID != "" && reg.DeviceID != s.DeviceID:
		return refuse("stale-elsewhere", fmt.Sprintf("DPS assigns registration %s to device %s in %s, not %s in %s, where it was seen: it moved, or the sighting is another hub's", s.DeviceID, reg.DeviceID, reg.AssignedHub, s.DeviceID, host))
	}
	// The hub: any evidence of life?
	a, err := x.d.Liveness.Activity(ctx, host, s.DeviceID)
	switch {
	case errors.Is(err, deprovision.ErrNotFound):
		if _, err := x.d.Seen.RecordSighting(ctx, deprovision.Sighting{Hub: s.Hub, DeviceID: s.DeviceID, Deleted: x.now}); err != nil {
			p.note(err)
		}
		return refuse("stale-refused", "the hub has no identity "+s.DeviceID+" any more")
	case err != nil:
		return f, false, fmt.Errorf("reading the activity of %s in %s: %w", s.DeviceID, host, err)
	}
	if why, newest := a.evidence(x.now.Add(-x.o.StaleAfter)); why != "" {
		// Remember it, so that the next sweeps do not ask again before the period passes.
		at := newest
		if a.Connected || at.After(x.now) {
			at = x.now
		}
		if at.After(s.LastSeen) {
			if _, err := x.d.Seen.RecordSighting(ctx, deprovision.Sighting{Hub: s.Hub, DeviceID: s.DeviceID, LastSeen: at, LastEvent: "hub-activity"}); err != nil {
				p.note(err)
			}
		}
		return refuse("stale-alive", why)
	}
	return f, true, nil
}

// retire submits the retirement of a stale device and records what became of it in f.
func (x *run) retire(ctx context.Context, p *PassReport, s *deprovision.Sighting, f *deprovision.Finding) error {
	host := x.hubHost(s.Hub)
	dry := x.dryRun(!x.o.ApplyStale)
	req := deprovision.Request{EventID: eventID(PassStale, dry, s.Hub, s.DeviceID, strconv.FormatInt(s.LastSeen.Unix(), 10)), EventType: EventTypeStale,
		Intent: deprovision.IntentRetired, RegistrationID: s.DeviceID, DeviceID: s.DeviceID, Hub: host, DryRun: dry,
		Reason: "not seen since " + s.LastSeen.UTC().Format("2006-01-02T15:04:05Z")}
	op, err := x.submit(ctx, p, req)
	if err != nil {
		if fatal(err) {
			return err
		}
		p.note(err)
		f.Action = "retire failed: " + err.Error()
		return nil
	}
	f.OperationID, f.OperationStatus = op.ID, op.Status
	switch {
	case dry:
		f.Action = "planned (dry run): retire"
	case op.Status == deprovision.StatusSucceeded:
		f.Action = "retire requested"
		// Gone for good: the next sweeps need not look at it again (a DeviceDeleted would
		// say the same; a later DeviceCreated brings it back).
		if _, err := x.d.Seen.RecordSighting(ctx, deprovision.Sighting{Hub: s.Hub, DeviceID: s.DeviceID, Deleted: x.now}); err != nil {
			p.note(err)
		}
	case op.Status == deprovision.StatusAwaitingApproval:
		f.Action = "held for approval: " + op.Reason
	case op.Status == deprovision.StatusRejected:
		p.Refused++
		f.Action = "refused by the engine: " + op.Reason
	default:
		f.Action = "retire " + string(op.Status) + ": " + op.Reason
	}
	return nil
}

// countFleet counts the sightings of managed hubs that are not deleted.
func (x *run) countFleet(ctx context.Context) (int, error) {
	n := 0
	for s, err := range x.d.Seen.Sightings(ctx, "") {
		if err != nil {
			return 0, fmt.Errorf("counting the fleet: %w", err)
		}
		if x.managed(s.Hub) && s.Deleted.IsZero() {
			n++
		}
	}
	return n, nil
}

// heldStale counts the stale retirements waiting for a person's approval.
func (x *run) heldStale(ctx context.Context) (int, error) {
	n := 0
	for op, err := range x.d.Operations.OpenOperations(ctx, x.now.Add(time.Minute)) {
		if err != nil {
			if op == nil && fatal(err) {
				return 0, fmt.Errorf("listing open operations: %w", err)
			}
			continue
		}
		if op.Status == deprovision.StatusAwaitingApproval && op.Request.Source == Source && op.Request.EventType == EventTypeStale {
			n++
		}
	}
	return n, nil
}

// managed reports whether a hub (by name, as lifecycle events give it) is one this app
// manages; with no hubs configured, every hub is.
func (x *run) managed(hub string) bool {
	if len(x.o.Hubs) == 0 {
		return true
	}
	for _, h := range x.o.Hubs {
		label, _, _ := strings.Cut(h, ".")
		if strings.EqualFold(label, hub) || strings.EqualFold(h, hub) {
			return true
		}
	}
	return false
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

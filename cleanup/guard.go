package cleanup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"dpsdeprov/deprovision"
)

// Hold limits of the timer's guard.
const (
	HoldTimerPerHour = "CLEANUP_MAX_DESTRUCTIVE_PER_HOUR"
	HoldStalePerDay  = "CLEANUP_STALE_MAX_DAY_PERCENT"
)

// Event types of the requests of the passes the guard treats apart.
const (
	// EventTypeStale is the event type of the stale pass's retirements.
	EventTypeStale = "cleanup.stale"
	// EventTypeOrphans is the event type of the orphans pass's deletions.
	EventTypeOrphans = "cleanup.orphans"
)

// laterHour ends the reason of an orphan deletion refused for the timer's hourly budget; the
// orphans pass stops there and carries on in a later run.
const laterHour = "the record waits for a later run"

// Guard is the timer's guardrail, a deprovision.Holder the app gives the engine: it owns
// every operation the cleanup submits (source "cleanup"), so that none of them takes the
// event path's MAX_DESTRUCTIVE_PER_HOUR, and counts them against the timer's own hourly
// budget instead, which is smaller; the stale pass's retirements also against a daily share
// of the fleet. Beyond either limit an operation waits for a person's approval, except an
// orphaned record's deletion, which is refused and waits for a later run. A stale
// retirement whose plan would act on another hub or device than the sighting it came from is
// refused. A single-device compromised re-revocation is exempt from the counts, as on the
// event path: restoring a compromise revocation is never slowed down.
type Guard struct {
	// Budget counts operations per window (the journal's guard table); nil counts nothing.
	Budget deprovision.Budget
	// Fleet reads the fleet count (the Ledger); nil, or no count yet, allows one a day.
	Fleet interface {
		GetFleet(ctx context.Context) (*Fleet, error)
	}
	Clock deprovision.Clock
	// MaxPerHour is the timer's destructive budget an hour (default 50).
	MaxPerHour int
	// StaleDayShare is the share of the fleet stale retirements may reach a day (default 0.01).
	StaleDayShare float64
}

var _ deprovision.Holder = (*Guard)(nil)

// Hold implements deprovision.Holder.
func (g *Guard) Hold(ctx context.Context, op *deprovision.Operation) (deprovision.HoldDecision, error) {
	req := op.Request
	if req.Source != Source {
		return deprovision.HoldDecision{}, nil
	}
	if req.EventType == EventTypeStale {
		if err := samePlace(op); err != nil {
			return deprovision.HoldDecision{}, err
		}
	}
	d := deprovision.HoldDecision{Own: true}
	if req.Intent == deprovision.IntentCompromised || g.Budget == nil {
		return d, nil
	}
	clock := g.Clock
	if clock == nil {
		clock = deprovision.SystemClock{}
	}
	now := clock.Now().UTC()
	limit := g.MaxPerHour
	if limit <= 0 {
		limit = DefaultMaxDestructivePerHour
	}
	hour := "cleanup-" + now.Format("2006010215")
	ok, n, err := g.Budget.Admit(ctx, hour, op.ID, limit)
	if err != nil {
		return d, fmt.Errorf("counting the timer's destructive operations of hour %s: %w", hour, err)
	}
	if !ok {
		why := fmt.Sprintf("the cleanup timer already started %d destructive operations in the hour %s UTC, its own limit (%s)",
			n, now.Truncate(time.Hour).Format("2006-01-02 15:04"), HoldTimerPerHour)
		if req.EventType == EventTypeOrphans {
			// A record nothing can use needs no person: it waits for a later hour. (Held, a
			// new operation of each sweep would pile up awaiting approval.)
			return d, &deprovision.Refusal{Reason: why + ": " + laterHour}
		}
		d.Hold = &deprovision.Hold{Limit: HoldTimerPerHour, Max: limit, Count: n}
		d.Reason = why
		return d, nil
	}
	if req.EventType != EventTypeStale {
		return d, nil
	}
	fleet := 0
	if g.Fleet != nil {
		f, err := g.Fleet.GetFleet(ctx)
		switch {
		case err == nil:
			fleet = f.Count
		case !errors.Is(err, deprovision.ErrNotFound):
			return d, fmt.Errorf("reading the fleet count: %w", err)
		}
	}
	s := g.StaleDayShare
	if s <= 0 {
		s = DefaultStaleDayShare
	}
	dayLimit := share(fleet, s)
	day := "cleanup-stale-" + now.Format("20060102")
	ok, n, err = g.Budget.Admit(ctx, day, op.ID, dayLimit)
	if err != nil {
		return d, fmt.Errorf("counting the stale retirements of day %s: %w", day, err)
	}
	if !ok {
		d.Hold = &deprovision.Hold{Limit: HoldStalePerDay, Max: dayLimit, Count: n}
		d.Reason = fmt.Sprintf("%d stale devices were already retired on %s UTC, %g%% of the fleet of %d (%s): more at once may mean the last-seen feed is broken",
			n, now.Format("2006-01-02"), s*100, fleet, HoldStalePerDay)
	}
	return d, nil
}

// samePlace refuses a stale retirement whose plan acts on another hub or device id than the
// sighting (the request's) it came from: DPS assigned the registration elsewhere since, or the
// sighting came from a hub the registration never was in.
func samePlace(op *deprovision.Operation) error {
	req := op.Request
	if op.Plan == nil {
		return nil
	}
	for _, st := range op.Plan.Steps {
		hub, id := st.Params[deprovision.ParamHub], st.Params[deprovision.ParamDeviceID]
		if hub == "" && id == "" {
			continue
		}
		if !strings.EqualFold(hub, req.Hub) || id != req.DeviceID {
			return &deprovision.Refusal{Reason: fmt.Sprintf("the stale device %s was seen in %s, but the plan acts on %s in %s (DPS's assignment): the timer retires only what it saw", req.DeviceID, req.Hub, id, hub)}
		}
	}
	return nil
}

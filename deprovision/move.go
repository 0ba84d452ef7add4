package deprovision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// A move waits for its device. `moved` points the device's enrollment at the target hub and
// leaves the old identity where it is: with the enrollment's reprovisionPolicy
// (updateHubAssignment and migrateDeviceData, set by every move), DPS moves the device's twin,
// capabilities and device id to the new hub and removes the old identity when the device
// provisions again ("IoT Hub Device reprovisioning concepts", "How to reprovision devices";
// ReprovisionPolicy in the DPS service spec). Deleting the old identity first would lose its
// tags and properties, and the channel that tells the device to re-provision. So the move's
// operation ends with the hub.await-move step, the device row keeps the target
// (DeviceState.MoveTarget), and [Moves] confirms the move once DPS shows the device assigned
// to the target hub: the Cleanup timer asks it for every row that waits.

// MoveResult is what [Moves.Confirm] found.
type MoveResult string

// Results of a confirmation.
const (
	// MoveWaiting: DPS does not show the device in its target hub yet; nothing changed.
	MoveWaiting MoveResult = "waiting"
	// MoveConfirmed: DPS shows the device in its target hub; what was left of the old
	// identity is gone (or disabled, when the move asked for it) and the row says moved.
	MoveConfirmed MoveResult = "confirmed"
	// MoveNone: the row waits for no move (no target, or a later change superseded it).
	MoveNone MoveResult = "none"
)

// MoveConfirmIndex is the step index under which a confirmation is journaled in its move's
// operation (after any planned step, before fanned-out batches).
const MoveConfirmIndex = 800

// Moves confirms the moves that wait for their device. It needs Registrations, Devices and
// Journal of [Deps]; Clock and Logger are optional.
type Moves struct {
	d   Deps
	log *slog.Logger
}

// NewMoves returns the confirmer of waiting moves over d.
func NewMoves(d Deps) *Moves {
	if d.Clock == nil {
		d.Clock = SystemClock{}
	}
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Moves{d: d, log: log}
}

// Confirm checks the device row ds, which may wait for a move: when DPS shows the device
// assigned to the target hub, the old identity is deleted if DPS left it (or disabled, when
// the move's action was disable), the confirmation is journaled in the move's operation, and
// the row is updated. It costs a DPS read, and, for a device that has moved, a hub operation
// or two. An error worth retrying is [Transient]; the next run tries again.
func (m *Moves) Confirm(ctx context.Context, ds *DeviceState) (MoveResult, error) {
	if ds == nil || ds.MoveTarget == "" || ds.PendingOperation != "" {
		return MoveNone, nil
	}
	reg, err := m.d.Registrations.GetRegistration(ctx, ds.RegistrationID)
	if errors.Is(err, ErrNotFound) {
		return MoveWaiting, nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the registration state of %s: %w", ds.RegistrationID, err)
	}
	if !strings.EqualFold(reg.AssignedHub, ds.MoveTarget) {
		return MoveWaiting, nil
	}
	action := ActionDelete
	if op, err := m.d.Journal.GetOperation(ctx, ds.OperationID); err == nil && op.Request.Action == ActionDisable {
		action = ActionDisable
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return "", asTransient(fmt.Errorf("reading the move's operation %s: %w", ds.OperationID, err))
	}
	rec := StepRecord{OperationID: ds.OperationID, Index: MoveConfirmIndex, Kind: StepConfirmMove,
		Target: deviceTarget(ds.Hub, ds.DeviceID), Outcome: StepNoChange}
	start := m.d.Clock.Now()
	switch {
	case ds.Hub == "" || strings.EqualFold(ds.Hub, ds.MoveTarget):
		rec.Error = fmt.Sprintf("DPS shows the device assigned to %s", ds.MoveTarget)
	default:
		res := m.leave(ctx, ds.Hub, ds.DeviceID, action)
		if res.err != nil {
			return "", res.err
		}
		rec.Error = fmt.Sprintf("DPS shows the device assigned to %s (device %s); %s", ds.MoveTarget, reg.DeviceID, res.note)
		if res.changed {
			rec.Outcome = StepDone
		}
	}
	now := m.d.Clock.Now()
	rec.Time, rec.Duration = now, now.Sub(start)
	if ds.OperationID != "" {
		if err := m.d.Journal.RecordStep(ctx, rec); err != nil {
			return "", asTransient(fmt.Errorf("journaling the move of %s: %w", ds.RegistrationID, err))
		}
	}
	// The row changes only if it still waits for this move: a later operation wins.
	target := ds.MoveTarget
	ds.Hub, ds.DeviceID, ds.HubAction, ds.MoveTarget = reg.AssignedHub, reg.DeviceID, HubMoved, ""
	ds.Updated = now
	if err := m.d.Journal.PutDevice(ctx, ds); err != nil {
		if errors.Is(err, ErrPreconditionFailed) || errors.Is(err, ErrConflict) {
			return MoveNone, nil // changed meanwhile: the next run reads it afresh
		}
		return "", asTransient(fmt.Errorf("writing device row %s: %w", ds.RegistrationID, err))
	}
	m.log.InfoContext(ctx, "move confirmed", "registrationId", ds.RegistrationID, "hub", target, "operation", ds.OperationID, "detail", rec.Error)
	return MoveConfirmed, nil
}

// leave removes what is left of the old identity once the device is in its target hub.
func (m *Moves) leave(ctx context.Context, hub, id string, action Action) stepResult {
	if action == ActionDisable {
		d, err := m.d.Devices.GetDevice(ctx, hub, id)
		if errors.Is(err, ErrNotFound) {
			return stepResult{note: "the old identity in " + hub + " is gone (DPS removed it)"}
		}
		if err != nil {
			return failed(asTransient(fmt.Errorf("reading device %s in %s: %w", id, hub, err)))
		}
		if !d.Enabled {
			return stepResult{note: "the old identity in " + hub + " is disabled"}
		}
		d.Enabled, d.StatusReason = false, "dpsdeprov moved"
		if _, err := m.d.Devices.PutDevice(ctx, d, d.ETag); err != nil {
			return failed(asTransient(fmt.Errorf("disabling device %s in %s: %w", id, hub, err)))
		}
		return stepResult{changed: true, note: "the old identity in " + hub + " was left by DPS and is now disabled"}
	}
	err := m.d.Devices.DeleteDevice(ctx, hub, id, "*")
	switch {
	case errors.Is(err, ErrNotFound):
		return stepResult{note: "the old identity in " + hub + " is gone (DPS removed it)"}
	case err != nil:
		return failed(asTransient(fmt.Errorf("deleting device %s in %s: %w", id, hub, err)))
	}
	return stepResult{changed: true, note: "the old identity in " + hub + " was left by DPS and is now deleted"}
}

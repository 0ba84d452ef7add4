package cleanup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"dpsdeprov/deprovision"
)

// LifecycleKind is what an IoT Hub lifecycle event says happened to a device.
type LifecycleKind string

// Lifecycle kinds, one per Microsoft.Devices event type the app takes.
const (
	LifecycleConnected    LifecycleKind = "connected"
	LifecycleDisconnected LifecycleKind = "disconnected"
	LifecycleTelemetry    LifecycleKind = "telemetry"
	LifecycleCreated      LifecycleKind = "created"
	LifecycleDeleted      LifecycleKind = "deleted"
)

// LifecycleEvent is one IoT Hub lifecycle event, decoded.
type LifecycleEvent struct {
	EventID string
	// Type is the event type as sent (Microsoft.Devices.DeviceConnected, …).
	Type string
	Kind LifecycleKind
	// Hub is the hub's name (hubName, or the last segment of the event's topic).
	Hub      string
	DeviceID string
	Time     time.Time
}

// StepConfirmDelete is the kind of the journal step that records the hub's confirmation of a
// device delete this system requested (a DeviceDeleted event): the delete step says
// "requested", this one "confirmed".
const StepConfirmDelete deprovision.StepKind = "iothub.confirm-delete"

// ConfirmStepIndex is the step index of that record: above any plan's steps, below the
// outcome publisher's record.
const ConfirmStepIndex = 9998

// ConfirmJournal is what confirmations need of the journal; deprovision.Journal satisfies it.
type ConfirmJournal interface {
	GetDevice(ctx context.Context, registrationID string) (*deprovision.DeviceState, error)
	GetOperation(ctx context.Context, id string) (*deprovision.Operation, error)
	RecordStep(ctx context.Context, rec deprovision.StepRecord) error
}

// Lifecycle keeps each device's last-seen time from lifecycle events and confirms the hub
// deletes this system requested.
type Lifecycle struct {
	Seen    deprovision.LastSeenStore
	Journal ConfirmJournal
	Logger  *slog.Logger
}

// Record stores what ev says. An error is worth a redelivery (the store is unavailable).
func (l *Lifecycle) Record(ctx context.Context, ev LifecycleEvent) error {
	s := deprovision.Sighting{Hub: strings.ToLower(ev.Hub), DeviceID: ev.DeviceID}
	switch ev.Kind {
	case LifecycleDeleted:
		s.Deleted = ev.Time
	case LifecycleCreated:
		s.Created, s.LastSeen, s.LastEvent = ev.Time, ev.Time, ev.Type
	default:
		s.LastSeen, s.LastEvent = ev.Time, ev.Type
	}
	if _, err := l.Seen.RecordSighting(ctx, s); err != nil {
		return fmt.Errorf("recording %s of %s/%s: %w", ev.Kind, ev.Hub, ev.DeviceID, err)
	}
	if ev.Kind == LifecycleDeleted && l.Journal != nil {
		return l.confirmDelete(ctx, ev)
	}
	return nil
}

// confirmDelete journals the hub's confirmation on the operation that deleted the device, if
// this system deleted it. The device row is found by registration id = device id (DPS's
// default); a device whose registration id differs keeps its confirmation in the last-seen row only.
func (l *Lifecycle) confirmDelete(ctx context.Context, ev LifecycleEvent) error {
	ds, err := l.Journal.GetDevice(ctx, strings.ToLower(ev.DeviceID))
	if errors.Is(err, deprovision.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading device row %s: %w", ev.DeviceID, err)
	}
	opID := ""
	target := ""
	if ds.PendingOperation != "" {
		// The event can arrive before the operation that deleted the device has ended.
		op, err := l.Journal.GetOperation(ctx, ds.PendingOperation)
		if err != nil && !errors.Is(err, deprovision.ErrNotFound) {
			return fmt.Errorf("reading operation %s: %w", ds.PendingOperation, err)
		}
		if op != nil && op.Plan != nil {
			for _, st := range op.Plan.Steps {
				if st.Kind == deprovision.StepDeleteDevice && st.Params[deprovision.ParamDeviceID] == ev.DeviceID && sameHub(st.Params[deprovision.ParamHub], ev.Hub) {
					opID, target = op.ID, st.Target
				}
			}
		}
	}
	if opID == "" && ds.HubAction == "deleted" && ds.DeviceID == ev.DeviceID && sameHub(ds.Hub, ev.Hub) {
		opID, target = ds.OperationID, ds.Hub+"/devices/"+ds.DeviceID
	}
	if opID == "" {
		return nil
	}
	rec := deprovision.StepRecord{OperationID: opID, Index: ConfirmStepIndex, Kind: StepConfirmDelete, Target: target,
		Outcome: deprovision.StepDone, Time: ev.Time, Error: "confirmed by IoT Hub event " + ev.Type + " " + ev.EventID}
	if err := l.Journal.RecordStep(ctx, rec); err != nil {
		return fmt.Errorf("journaling the confirmation of %s: %w", target, err)
	}
	if l.Logger != nil {
		l.Logger.InfoContext(ctx, "hub delete confirmed", "operation", opID, "target", target, "event", ev.EventID)
	}
	return nil
}

// sameHub reports whether a host name (hub1.azure-devices.net) and a hub name (hub1) name the same hub.
func sameHub(host, name string) bool {
	label, _, _ := strings.Cut(host, ".")
	return strings.EqualFold(host, name) || strings.EqualFold(label, name)
}

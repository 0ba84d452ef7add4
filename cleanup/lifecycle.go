package cleanup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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

// Lifecycle keeps each device's last-seen time from lifecycle events, each hub's newest
// event (so that the stale pass can tell a silent feed from a silent fleet), and confirms the
// hub deletes this system requested.
type Lifecycle struct {
	Seen    deprovision.LastSeenStore
	Journal ConfirmJournal
	// Beats, when set, keeps each hub's newest event time (the Ledger).
	Beats interface {
		RecordBeat(ctx context.Context, hub string, at time.Time) error
	}
	// Hubs are the host names of the hubs this app manages: events of any other hub (a second
	// hub's system topic subscribed by mistake) are not recorded. Empty takes every hub.
	Hubs   []string
	Logger *slog.Logger

	mu sync.Mutex
	// beat is the newest event time this instance wrote per hub: the feed's heartbeat is
	// written at most once a minute of event time per hub and instance.
	beat map[string]time.Time
}

// ErrUnmanagedHub is returned by Record for an event of a hub this app does not manage: it
// is acknowledged and not recorded.
var ErrUnmanagedHub = errors.New("the event is from a hub this app does not manage")

// beatEvery is how far a hub's heartbeat may lag behind its newest event.
const beatEvery = time.Minute

// Record stores what ev says. An error other than ErrUnmanagedHub is worth a redelivery (the
// store is unavailable).
func (l *Lifecycle) Record(ctx context.Context, ev LifecycleEvent) error {
	if !l.managed(ev.Hub) {
		return fmt.Errorf("%w: %s (managed: %s)", ErrUnmanagedHub, ev.Hub, strings.Join(l.Hubs, ", "))
	}
	if err := l.heartbeat(ctx, strings.ToLower(ev.Hub), ev.Time); err != nil {
		return err
	}
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

// managed reports whether a hub name is one of Hubs (or Hubs is empty).
func (l *Lifecycle) managed(hub string) bool {
	if len(l.Hubs) == 0 {
		return true
	}
	for _, h := range l.Hubs {
		if sameHub(h, hub) {
			return true
		}
	}
	return false
}

// heartbeat moves the hub's newest event time forward, at most once a minute of event time
// per hub and instance (a chatty fleet would otherwise double the writes of every event).
func (l *Lifecycle) heartbeat(ctx context.Context, hub string, at time.Time) error {
	if l.Beats == nil || at.IsZero() {
		return nil
	}
	l.mu.Lock()
	last, ok := l.beat[hub]
	due := !ok || at.Sub(last) >= beatEvery
	l.mu.Unlock()
	if !due {
		return nil
	}
	if err := l.Beats.RecordBeat(ctx, hub, at); err != nil {
		return fmt.Errorf("recording the newest event of hub %s: %w", hub, err)
	}
	l.mu.Lock()
	if l.beat == nil {
		l.beat = map[string]time.Time{}
	}
	if at.After(l.beat[hub]) {
		l.beat[hub] = at
	}
	l.mu.Unlock()
	return nil
}

package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azsystemevents"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

// LifecyclePrefix starts the type of every IoT Hub event (Microsoft.Devices.DeviceConnected,
// …). Such an event is never a deprovisioning request: the DeviceEvents function hands it to
// the last-seen store instead of the normalizer.
const LifecyclePrefix = "Microsoft.Devices."

// LifecycleRecorder keeps what IoT Hub lifecycle events say; *cleanup.Lifecycle satisfies it.
type LifecycleRecorder interface {
	Record(ctx context.Context, ev cleanup.LifecycleEvent) error
}

// IsLifecycleEvent reports whether an event type is one of IoT Hub's (case-insensitive, as
// event types are matched everywhere in the app).
func IsLifecycleEvent(eventType string) bool {
	return len(eventType) >= len(LifecyclePrefix) && strings.EqualFold(eventType[:len(LifecyclePrefix)], LifecyclePrefix)
}

// lifecycleKinds maps the lifecycle event types the app takes onto their kinds.
var lifecycleKinds = map[string]cleanup.LifecycleKind{
	strings.ToLower(azsystemevents.TypeIOTHubDeviceConnected):    cleanup.LifecycleConnected,
	strings.ToLower(azsystemevents.TypeIOTHubDeviceDisconnected): cleanup.LifecycleDisconnected,
	strings.ToLower(azsystemevents.TypeIOTHubDeviceTelemetry):    cleanup.LifecycleTelemetry,
	strings.ToLower(azsystemevents.TypeIOTHubDeviceCreated):      cleanup.LifecycleCreated,
	strings.ToLower(azsystemevents.TypeIOTHubDeviceDeleted):      cleanup.LifecycleDeleted,
}

// DecodeLifecycleEvent reads an IoT Hub lifecycle event's data with the azsystemevents types.
// ok is false for a Microsoft.Devices type the app does not use; err names what is malformed.
func DecodeLifecycleEvent(ev Event) (le cleanup.LifecycleEvent, ok bool, err error) {
	kind, ok := lifecycleKinds[strings.ToLower(ev.Type)]
	if !ok {
		return le, false, nil
	}
	le = cleanup.LifecycleEvent{EventID: ev.ID, Type: ev.Type, Kind: kind, Time: ev.Time}
	if len(ev.Data) == 0 {
		return le, true, fmt.Errorf("the %s event has no data", ev.Type)
	}
	var device, hub *string
	switch kind {
	case cleanup.LifecycleConnected:
		var d azsystemevents.IOTHubDeviceConnectedEventData
		err = json.Unmarshal(ev.Data, &d)
		device, hub = d.DeviceID, d.HubName
	case cleanup.LifecycleDisconnected:
		var d azsystemevents.IOTHubDeviceDisconnectedEventData
		err = json.Unmarshal(ev.Data, &d)
		device, hub = d.DeviceID, d.HubName
	case cleanup.LifecycleCreated:
		var d azsystemevents.IOTHubDeviceCreatedEventData
		err = json.Unmarshal(ev.Data, &d)
		device, hub = d.DeviceID, d.HubName
	case cleanup.LifecycleDeleted:
		var d azsystemevents.IOTHubDeviceDeletedEventData
		err = json.Unmarshal(ev.Data, &d)
		device, hub = d.DeviceID, d.HubName
	case cleanup.LifecycleTelemetry:
		var d azsystemevents.IOTHubDeviceTelemetryEventData
		if err = json.Unmarshal(ev.Data, &d); err != nil {
			// A body that is not JSON arrives base64-encoded as a string, which the SDK type
			// (a map) refuses; the device is in the system properties either way.
			var sys struct {
				SystemProperties map[string]*string `json:"systemProperties"`
			}
			if json.Unmarshal(ev.Data, &sys) == nil && sys.SystemProperties != nil {
				d.SystemProperties, err = sys.SystemProperties, nil
			}
		}
		for k, v := range d.SystemProperties {
			if strings.EqualFold(k, "iothub-connection-device-id") {
				device = v
			}
		}
		// Telemetry names its hub only in the topic: …/providers/Microsoft.Devices/IotHubs/{name}.
		if i := strings.LastIndex(strings.ToLower(ev.Source), "/iothubs/"); i >= 0 {
			h := ev.Source[i+len("/iothubs/"):]
			hub = &h
		}
	}
	if err != nil {
		return le, true, fmt.Errorf("the %s event's data cannot be read: %w", ev.Type, err)
	}
	var missing []string
	if device == nil || strings.TrimSpace(*device) == "" {
		missing = append(missing, "deviceId")
	} else {
		le.DeviceID = *device
	}
	if hub == nil || strings.TrimSpace(*hub) == "" {
		missing = append(missing, "hubName")
	} else {
		le.Hub = strings.ToLower(strings.TrimSpace(*hub))
	}
	if len(missing) > 0 {
		return le, true, fmt.Errorf("the %s event lacks %s", ev.Type, strings.Join(missing, " and "))
	}
	if n := utf8.RuneCountInString(le.DeviceID); n > 128 || strings.ContainsAny(le.DeviceID, "\x00\r\n\t") {
		return le, true, fmt.Errorf("the %s event's deviceId is not an IoT Hub device id (at most 128 printable ASCII characters)", ev.Type)
	}
	if le.Time.IsZero() {
		return le, true, fmt.Errorf("the %s event has no time", ev.Type)
	}
	return le, true, nil
}

// lifecycle handles one IoT Hub lifecycle event: recorded, or journaled as rejected when
// malformed, never normalized into a deprovisioning request.
func (h *Handler) lifecycle(ctx context.Context, c *call, ev Event) error {
	le, ok, err := DecodeLifecycleEvent(ev)
	if err != nil {
		req := deprovision.Request{EventID: ev.ID, Source: ev.Source, EventType: ev.Type, EventTime: h.o.Clock.Now()}
		if strings.TrimSpace(req.Source) == "" {
			req.Source = "unknown-source"
		}
		return h.journalRejection(ctx, c, req, err.Error())
	}
	if !ok {
		c.logf(slog.LevelInfo, "event %s: %s is an IoT Hub event the app does not use; acknowledged", ev.ID, ev.Type)
		return nil
	}
	if h.o.Lifecycle == nil {
		c.logf(slog.LevelWarn, "event %s: %s arrived but no last-seen store is configured; acknowledged without recording", ev.ID, ev.Type)
		return nil
	}
	if err := h.o.Lifecycle.Record(ctx, le); err != nil {
		if errors.Is(err, cleanup.ErrUnmanagedHub) {
			// A second hub's system topic subscribed by mistake: its devices are none of this
			// app's business, and recording them would let the stale pass act on them.
			c.logf(slog.LevelWarn, "event %s: %s of %s/%s ignored: %v", ev.ID, le.Kind, le.Hub, le.DeviceID, err)
			return nil
		}
		if deprovision.IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("event %s (%s of %s/%s): %w", ev.ID, le.Kind, le.Hub, le.DeviceID, err)
		}
		return h.journalRejection(ctx, c, deprovision.Request{EventID: ev.ID, Source: ev.Source, EventType: ev.Type, EventTime: h.o.Clock.Now()}, err.Error())
	}
	c.logf(slog.LevelDebug, "event %s: %s of %s/%s recorded", ev.ID, le.Kind, le.Hub, le.DeviceID)
	return nil
}

package adapter

import (
	"context"
	"errors"
	"fmt"

	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// HubDevices adapts one *iothub.Client per hub to deprovision.Devices.
type HubDevices struct {
	clients map[string]*iothub.Client // by lower-case host name
}

var _ deprovision.Devices = (*HubDevices)(nil)

// NewHubDevices returns the adapter over clients, keyed by hub host name (such as
// "hub1.azure-devices.net", as DPS reports a device's assigned hub).
func NewHubDevices(clients map[string]*iothub.Client) *HubDevices {
	h := &HubDevices{clients: make(map[string]*iothub.Client, len(clients))}
	for host, c := range clients {
		h.clients[iothub.CanonicalHost(host)] = c
	}
	return h
}

// client finds the hub's client by host name, or by bare name.
func (h *HubDevices) client(hub string) (*iothub.Client, error) {
	if c, ok := h.clients[iothub.CanonicalHost(hub)]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("hub %q is not configured", hub)
}

// GetDevice reads a device identity.
func (h *HubDevices) GetDevice(ctx context.Context, hub, deviceID string) (*deprovision.Device, error) {
	c, err := h.client(hub)
	if err != nil {
		return nil, err
	}
	r, err := c.GetDevice(ctx, deviceID, nil)
	if err != nil {
		return nil, mapError(err, "reading device %s in %s", deviceID, hub)
	}
	return deviceFromHub(c.HostName(), &r.Device), nil
}

// PutDevice sets a device's status and status reason. With etag "" it creates the device
// (the hub generates SAS keys unless AuthType says otherwise). An update writes the whole
// identity back changed, so its keys and thumbprints stay (a PUT replaces the identity): when
// d is a device GetDevice returned and etag its ETag, the identity it carries is written at
// once, guarded by that etag (one registry operation; a 412 is the caller's to re-read and
// re-decide); otherwise the identity is read first (two), and with "*" the etag just read
// guards the write, retried a few times if another writer races it.
func (h *HubDevices) PutDevice(ctx context.Context, d *deprovision.Device, etag string) (*deprovision.Device, error) {
	if d == nil || d.DeviceID == "" {
		return nil, errors.New("writing device: no device id")
	}
	c, err := h.client(d.Hub)
	if err != nil {
		return nil, err
	}
	if reason := len(d.StatusReason); reason > 128 {
		return nil, fmt.Errorf("writing device %s: status reason is %d bytes, the hub takes at most 128", d.DeviceID, reason)
	}
	if etag == "" {
		body := iothub.Device{DeviceID: d.DeviceID, Status: hubStatus(d.Enabled), StatusReason: d.StatusReason}
		if d.AuthType != "" && d.AuthType != string(iothub.AuthenticationTypeSAS) {
			body.Authentication = &iothub.AuthenticationMechanism{Type: iothub.AuthenticationType(d.AuthType)}
		}
		r, err := c.CreateOrUpdateDevice(ctx, body, nil)
		if err != nil {
			return nil, mapError(err, "creating device %s in %s", d.DeviceID, d.Hub)
		}
		return deviceFromHub(c.HostName(), &r.Device), nil
	}
	if cur, ok := d.Identity.(*iothub.Device); ok && !deprovision.PutDeviceReads(d, etag) && cur.DeviceID == d.DeviceID {
		body := *cur
		body.Status, body.StatusReason = hubStatus(d.Enabled), d.StatusReason
		match := azcore.ETag(etag)
		r, err := c.CreateOrUpdateDevice(ctx, body, &iothub.CreateOrUpdateDeviceOptions{IfMatch: &match})
		if err != nil {
			return nil, mapError(err, "updating device %s in %s", d.DeviceID, d.Hub)
		}
		return deviceFromHub(c.HostName(), &r.Device), nil
	}
	var lastErr error
	for range updateAttempts {
		cur, err := c.GetDevice(ctx, d.DeviceID, nil)
		if err != nil {
			return nil, mapError(err, "reading device %s in %s to update it", d.DeviceID, d.Hub)
		}
		body := cur.Device
		body.Status, body.StatusReason = hubStatus(d.Enabled), d.StatusReason
		match := azcore.ETag(etag)
		if etag == string(azcore.ETagAny) {
			match = azcore.ETag(cur.ETag)
		}
		r, err := c.CreateOrUpdateDevice(ctx, body, &iothub.CreateOrUpdateDeviceOptions{IfMatch: &match})
		if err == nil {
			return deviceFromHub(c.HostName(), &r.Device), nil
		}
		lastErr = mapError(err, "updating device %s in %s", d.DeviceID, d.Hub)
		if etag != string(azcore.ETagAny) || !iothub.IsPreconditionFailed(err) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// DeleteDevice deletes a device identity (etag "" = unconditional).
func (h *HubDevices) DeleteDevice(ctx context.Context, hub, deviceID, etag string) error {
	c, err := h.client(hub)
	if err != nil {
		return err
	}
	_, err = c.DeleteDevice(ctx, deviceID, &iothub.DeleteDeviceOptions{IfMatch: ifMatch(etag)})
	return mapError(err, "deleting device %s in %s", deviceID, hub)
}

// Bulk disables or deletes up to 100 devices of one hub in one registry call, with one
// result per item in the order given.
//
// Disable uses importMode "update" with status disabled: no etag is needed and repeating it
// is harmless. The hub replaces the identity, and by its specification an update without
// authentication gets new SAS keys; that is acceptable for the group-wide revocations this
// serves (DPS rewrites the identity whenever the device provisions again) but makes a bulk
// disable unfit for a reversible single-device block, which PutDevice serves.
// Delete uses importMode "delete"; a device that is already gone counts as deleted.
func (h *HubDevices) Bulk(ctx context.Context, hub string, mode deprovision.BulkMode, items []deprovision.BulkItem) ([]deprovision.BulkItemResult, error) {
	c, err := h.client(hub)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, nil
	}
	if len(items) > iothub.MaxBulkItems {
		return nil, fmt.Errorf("bulk %s in %s: %d devices, at most %d a call", mode, hub, len(items), iothub.MaxBulkItems)
	}
	body := make([]iothub.ExportImportDevice, len(items))
	for i, it := range items {
		switch mode {
		case deprovision.BulkDisable:
			body[i] = iothub.ExportImportDevice{ID: it.DeviceID, ImportMode: iothub.ImportModeUpdate, Status: iothub.DeviceStatusDisabled, StatusReason: it.StatusReason}
		case deprovision.BulkDelete:
			body[i] = iothub.ExportImportDevice{ID: it.DeviceID, ImportMode: iothub.ImportModeDelete}
		default:
			return nil, fmt.Errorf("bulk in %s: unknown mode %q", hub, mode)
		}
	}
	r, err := c.BulkUpdate(ctx, body, nil)
	if err != nil {
		return nil, mapError(err, "bulk %s of %d devices in %s", mode, len(items), hub)
	}
	failed := make(map[string]iothub.DeviceRegistryOperationError, len(r.Errors))
	for _, e := range r.Errors {
		failed[e.DeviceID] = e
	}
	out := make([]deprovision.BulkItemResult, len(items))
	for i, it := range items {
		out[i].DeviceID = it.DeviceID
		e, ok := failed[it.DeviceID]
		if !ok {
			continue
		}
		if mode == deprovision.BulkDelete && e.ErrorCode == iothub.ErrorCodeDeviceNotFound {
			continue
		}
		out[i].Err = bulkItemError(mode, hub, e)
	}
	if !r.IsSuccessful && len(r.Errors) == 0 {
		return out, fmt.Errorf("bulk %s in %s: the hub reported failure without per-device errors", mode, hub)
	}
	return out, nil
}

// bulkItemError classifies one device's failure as the engine's error kinds.
func bulkItemError(mode deprovision.BulkMode, hub string, e iothub.DeviceRegistryOperationError) error {
	err := fmt.Errorf("bulk %s of device %s in %s: %s: %s", mode, e.DeviceID, hub, e.ErrorCode, e.ErrorStatus)
	switch e.ErrorCode {
	case iothub.ErrorCodeDeviceNotFound:
		return fmt.Errorf("%w: %w", deprovision.ErrNotFound, err)
	case iothub.ErrorCodeDeviceAlreadyExists:
		return fmt.Errorf("%w: %w", deprovision.ErrConflict, err)
	case iothub.ErrorCodePreconditionFailed, iothub.ErrorCodeEtagDoesNotMatch:
		return fmt.Errorf("%w: %w", deprovision.ErrPreconditionFailed, err)
	case iothub.ErrorCodeThrottlingException, "ThrottleBacklogLimitExceeded", "ThrottlingBacklogTimeout", "ServerError", "ServiceUnavailable", "RequestTimedOut", "GenericServerError", "GenericServiceUnavailable", "GenericTimeout":
		return deprovision.Transient(err)
	}
	return err
}

func hubStatus(enabled bool) iothub.DeviceStatus {
	if enabled {
		return iothub.DeviceStatusEnabled
	}
	return iothub.DeviceStatusDisabled
}

func deviceFromHub(host string, d *iothub.Device) *deprovision.Device {
	out := &deprovision.Device{
		Hub:          host,
		DeviceID:     d.DeviceID,
		Enabled:      d.Status != iothub.DeviceStatusDisabled,
		StatusReason: d.StatusReason,
		ETag:         d.ETag,
	}
	whole := *d
	out.Identity = &whole // written back by PutDevice without another read
	if d.Authentication != nil {
		out.AuthType = string(d.Authentication.Type)
	}
	return out
}

package adapter

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
// Disable writes each item's identity (BulkItem.Device, as GetDevice or Identities read it)
// back with importMode "updateIfMatchETag", status disabled and the item's status reason:
// an update item replaces the identity, and by the registry's specification an item without
// authentication gets SAS with new keys, without capabilities none, without scopes none
// (reference/specs/iothub-service.json, ExportImportDevice). So the item carries the
// identity's authentication (keys or thumbprints), capabilities and scopes, and the etag of
// the read guards it: a device changed since fails with EtagDoesNotMatch
// (deprovision.ErrPreconditionFailed), to be read and written again. A SAS identity without
// its keys is refused here rather than given new ones.
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
			item, err := disableItem(it)
			if err != nil {
				return nil, fmt.Errorf("bulk disable in %s: %w", hub, err)
			}
			body[i] = item
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

// disableItem is the update item that disables it.Device and keeps the rest of its identity.
func disableItem(it deprovision.BulkItem) (iothub.ExportImportDevice, error) {
	var cur *iothub.Device
	if it.Device != nil {
		cur, _ = it.Device.Identity.(*iothub.Device)
	}
	if cur == nil || cur.DeviceID != it.DeviceID || cur.ETag == "" {
		return iothub.ExportImportDevice{}, fmt.Errorf("device %s: a disable needs the identity as read, with its etag (an update replaces the whole identity)", it.DeviceID)
	}
	a := cur.Authentication
	if a == nil || a.Type == "" || a.Type == iothub.AuthenticationTypeSAS {
		if a == nil || a.SymmetricKey == nil || a.SymmetricKey.PrimaryKey == "" || a.SymmetricKey.SecondaryKey == "" {
			return iothub.ExportImportDevice{}, fmt.Errorf("device %s: a SAS identity must be written back with its keys, or the hub gives it new ones", it.DeviceID)
		}
	}
	return iothub.ExportImportDevice{ID: it.DeviceID, ETag: cur.ETag, ImportMode: iothub.ImportModeUpdateIfMatchETag,
		Status: iothub.DeviceStatusDisabled, StatusReason: it.StatusReason, Authentication: a,
		Capabilities: cur.Capabilities, DeviceScope: cur.DeviceScope, ParentScopes: cur.ParentScopes}, nil
}

// Identities reads up to 100 devices with one query ("SELECT * FROM devices WHERE deviceId
// IN [...]", the query language's list operator): the hub's query budget, not the identity
// registry's. A twin carries the identity's authentication type and thumbprints, capabilities,
// scopes, status and the device's etag (deviceEtag), but no keys. A device id holding a
// quote, which a query string cannot carry, is read with GetDevice instead.
func (h *HubDevices) Identities(ctx context.Context, hub string, deviceIDs []string) ([]*deprovision.Device, error) {
	c, err := h.client(hub)
	if err != nil {
		return nil, err
	}
	if len(deviceIDs) > iothub.MaxBulkItems {
		return nil, fmt.Errorf("reading devices in %s: %d devices, at most %d a call", hub, len(deviceIDs), iothub.MaxBulkItems)
	}
	var quoted []string
	var out []*deprovision.Device
	for _, id := range deviceIDs {
		if strings.ContainsAny(id, `'"\`) {
			d, err := h.GetDevice(ctx, hub, id)
			if err == nil {
				out = append(out, d)
			} else if !errors.Is(err, deprovision.ErrNotFound) {
				return nil, err
			}
			continue
		}
		quoted = append(quoted, "'"+id+"'")
	}
	if len(quoted) == 0 {
		return out, nil
	}
	q := "SELECT * FROM devices WHERE deviceId IN [" + strings.Join(quoted, ", ") + "]"
	p := c.NewQueryDevicesPager(q, &iothub.QueryDevicesOptions{PageSize: int32(iothub.MaxBulkItems)})
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapError(err, "querying %d devices in %s", len(quoted), hub)
		}
		for i := range page.Twins {
			out = append(out, deviceFromTwin(c.HostName(), &page.Twins[i]))
		}
	}
	return out, nil
}

// deviceFromTwin is the identity a twin shows: everything an update item must carry but keys.
func deviceFromTwin(host string, t *iothub.Twin) *deprovision.Device {
	id := &iothub.Device{DeviceID: t.DeviceID, ETag: t.DeviceETag, Status: t.Status, StatusReason: t.StatusReason,
		Authentication: &iothub.AuthenticationMechanism{Type: t.AuthenticationType, X509Thumbprint: t.X509Thumbprint},
		Capabilities:   t.Capabilities, DeviceScope: t.DeviceScope, ParentScopes: t.ParentScopes}
	return &deprovision.Device{Hub: host, DeviceID: t.DeviceID, Enabled: t.Status != iothub.DeviceStatusDisabled,
		StatusReason: t.StatusReason, AuthType: string(t.AuthenticationType), ETag: t.DeviceETag, Identity: id}
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
	if a := d.Authentication; a != nil {
		out.AuthType = string(a.Type)
		if k := a.SymmetricKey; k != nil && (a.Type == iothub.AuthenticationTypeSAS || a.Type == "") {
			out.Keys = deprovision.SymmetricKeys{Primary: k.PrimaryKey, Secondary: k.SecondaryKey}
		}
	}
	return out
}

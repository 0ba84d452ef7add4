package iothub

import (
	"context"
	"fmt"
	"net/http"

	"dpsdeprov/azure/internal/rest"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// MaxBulkItems is the most devices one bulk registry operation may carry.
const MaxBulkItems = 100

// GetDeviceOptions holds optional parameters of [Client.GetDevice].
type GetDeviceOptions struct{}

// GetDeviceResponse is the answer of [Client.GetDevice].
type GetDeviceResponse struct {
	Device
}

// GetDevice reads a device identity; [IsNotFound] is true for a missing one.
func (c *Client) GetDevice(ctx context.Context, deviceID string, _ *GetDeviceOptions) (out GetDeviceResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.GetDevice")
	defer func() { endSpan(err) }()
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodGet, Path: "/devices/" + rest.Escape(deviceID), Idempotent: true, OK: []int{http.StatusOK}}, &out.Device)
	return out, err
}

// CreateOrUpdateDeviceOptions holds optional parameters of [Client.CreateOrUpdateDevice].
type CreateOrUpdateDeviceOptions struct {
	// IfMatch nil creates only (409 DeviceAlreadyExists if the device exists);
	// azcore.ETagAny replaces unconditionally; an etag replaces only that version (412
	// otherwise). The value is sent quoted, as the hub requires.
	IfMatch *azcore.ETag
}

// CreateOrUpdateDeviceResponse is the answer of [Client.CreateOrUpdateDevice].
type CreateOrUpdateDeviceResponse struct {
	Device
}

// CreateOrUpdateDevice writes device under its DeviceID. An update replaces the whole
// identity: send back what GetDevice returned, changed, so keys are kept.
func (c *Client) CreateOrUpdateDevice(ctx context.Context, device Device, options *CreateOrUpdateDeviceOptions) (out CreateOrUpdateDeviceResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.CreateOrUpdateDevice")
	defer func() { endSpan(err) }()
	if device.DeviceID == "" {
		return out, fmt.Errorf("iothub: device has no deviceId")
	}
	var ifMatch *azcore.ETag
	if options != nil {
		ifMatch = options.IfMatch
	}
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodPut, Path: "/devices/" + rest.Escape(device.DeviceID), Body: device, IfMatch: ifMatch,
		Idempotent: rest.IdempotentWrite(ifMatch), OK: []int{http.StatusOK, http.StatusCreated}}, &out.Device)
	return out, err
}

// DeleteDeviceOptions holds optional parameters of [Client.DeleteDevice].
type DeleteDeviceOptions struct {
	// IfMatch nil deletes unconditionally (the client sends "*", since a missing If-Match is
	// not documented to be unconditional); an etag deletes only that version.
	IfMatch *azcore.ETag
}

// DeleteDeviceResponse is the answer of [Client.DeleteDevice].
type DeleteDeviceResponse struct{}

// DeleteDevice deletes a device identity and its twin.
func (c *Client) DeleteDevice(ctx context.Context, deviceID string, options *DeleteDeviceOptions) (out DeleteDeviceResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.DeleteDevice")
	defer func() { endSpan(err) }()
	ifMatch := azcore.ETagAny
	if options != nil && options.IfMatch != nil {
		ifMatch = *options.IfMatch
	}
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodDelete, Path: "/devices/" + rest.Escape(deviceID), IfMatch: &ifMatch,
		Idempotent: rest.IdempotentDelete(&ifMatch), OK: []int{http.StatusNoContent, http.StatusOK}}, nil)
	return out, err
}

// BulkUpdateOptions holds optional parameters of [Client.BulkUpdate].
type BulkUpdateOptions struct{}

// BulkUpdateResponse is the answer of [Client.BulkUpdate]: IsSuccessful and, per failed
// device, an error.
type BulkUpdateResponse struct {
	BulkRegistryOperationResult
}

// BulkUpdate applies up to [MaxBulkItems] registry operations (each device once; modes may
// be mixed) in one call. The hub answers 200 or, when items failed, 400 with the same
// result body: both return a nil error and the per-item errors in the response. Every device
// counts against the hub's identity-registry throttle. It is retried only when throttled.
func (c *Client) BulkUpdate(ctx context.Context, devices []ExportImportDevice, _ *BulkUpdateOptions) (out BulkUpdateResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.BulkUpdate")
	defer func() { endSpan(err) }()
	if n := len(devices); n == 0 || n > MaxBulkItems {
		return out, fmt.Errorf("iothub: a bulk registry operation takes 1 to %d devices, not %d", MaxBulkItems, n)
	}
	seen := make(map[string]bool, len(devices))
	for i, d := range devices {
		if d.ID == "" || d.ImportMode == "" {
			return out, fmt.Errorf("iothub: bulk item %d needs an id and an importMode", i)
		}
		key := d.ID + "/" + d.ModuleID
		if seen[key] {
			return out, fmt.Errorf("iothub: device %q appears more than once in a bulk operation", d.ID)
		}
		seen[key] = true
	}
	resp, err := c.conn.Do(ctx, rest.Request{Method: http.MethodPost, Path: "/devices", Body: devices, OK: []int{http.StatusOK, http.StatusBadRequest}})
	if err != nil {
		return out, err
	}
	if resp.StatusCode == http.StatusBadRequest {
		// A 400 is a bulk result only when its body is one; otherwise it is a plain error.
		body, err := runtime.Payload(resp)
		if err != nil {
			return out, err
		}
		if !isBulkResult(body) {
			return out, newResponseError(resp)
		}
	}
	err = runtime.UnmarshalAsJSON(resp, &out.BulkRegistryOperationResult)
	return out, err
}

// QueryDevicesOptions holds optional parameters of [Client.NewQueryDevicesPager].
type QueryDevicesOptions struct {
	// PageSize asks for at most this many twins a page (x-ms-max-item-count).
	PageSize int32
	// ContinuationToken resumes a query after the page that returned it.
	ContinuationToken string
}

// QueryDevicesResponse is one page of [Client.NewQueryDevicesPager].
type QueryDevicesResponse struct {
	Twins []Twin
	// ContinuationToken resumes after this page; "" on the last page.
	ContinuationToken string
}

// NewQueryDevicesPager pages through the twins that query selects, such as
// "SELECT * FROM devices WHERE status = 'enabled'". Queries have their own, lower,
// throttle.
func (c *Client) NewQueryDevicesPager(query string, options *QueryDevicesOptions) *runtime.Pager[QueryDevicesResponse] {
	q := rest.Query{Path: "/devices/query", Body: &rest.QuerySpecification{Query: query}}
	if options != nil {
		q.PageSize, q.ContinuationToken = options.PageSize, options.ContinuationToken
	}
	return rest.NewQueryPager(c.conn, q, func(twins []Twin, next string) QueryDevicesResponse {
		return QueryDevicesResponse{Twins: twins, ContinuationToken: next}
	}, func(p QueryDevicesResponse) string { return p.ContinuationToken })
}

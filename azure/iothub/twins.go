package iothub

import (
	"context"
	"net/http"

	"dpsdeprov/azure/internal/rest"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// GetTwinOptions holds optional parameters of [Client.GetTwin].
type GetTwinOptions struct{}

// GetTwinResponse is the answer of [Client.GetTwin].
type GetTwinResponse struct {
	Twin
}

// GetTwin reads a device's twin (Devices_GetTwin); [IsNotFound] is true for a missing device.
// Twin reads have their own throttle (100 a second for an S1 hub, not the identity registry's
// 100 a minute), and the service connect permission, not registry read.
func (c *Client) GetTwin(ctx context.Context, deviceID string, _ *GetTwinOptions) (GetTwinResponse, error) {
	var out GetTwinResponse
	resp, err := c.conn.Do(ctx, rest.Request{Method: http.MethodGet, Path: "/twins/" + rest.Escape(deviceID), Idempotent: true, OK: []int{http.StatusOK}})
	if err != nil {
		return out, err
	}
	err = runtime.UnmarshalAsJSON(resp, &out.Twin)
	return out, err
}

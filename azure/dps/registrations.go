package dps

import (
	"context"
	"net/http"

	"dpsdeprov/azure/internal/rest"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// GetRegistrationStateOptions holds optional parameters of [Client.GetRegistrationState].
type GetRegistrationStateOptions struct{}

// GetRegistrationStateResponse is the answer of [Client.GetRegistrationState].
type GetRegistrationStateResponse struct {
	DeviceRegistrationState
}

// GetRegistrationState reads the registration state of a device: the hub it was assigned to
// and its device id there. [IsNotFound] is true when the device never registered.
func (c *Client) GetRegistrationState(ctx context.Context, registrationID string, _ *GetRegistrationStateOptions) (out GetRegistrationStateResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.GetRegistrationState")
	defer func() { endSpan(err) }()
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodGet, Path: "/registrations/" + rest.Escape(registrationID), Idempotent: true, OK: []int{http.StatusOK}}, &out.DeviceRegistrationState)
	return out, err
}

// DeleteRegistrationStateOptions holds optional parameters of [Client.DeleteRegistrationState].
type DeleteRegistrationStateOptions struct {
	// IfMatch nil deletes unconditionally; an etag deletes only that version.
	IfMatch *azcore.ETag
}

// DeleteRegistrationStateResponse is the answer of [Client.DeleteRegistrationState].
type DeleteRegistrationStateResponse struct{}

// DeleteRegistrationState deletes a device's registration record (it does not touch the
// hub's device identity).
func (c *Client) DeleteRegistrationState(ctx context.Context, registrationID string, options *DeleteRegistrationStateOptions) (out DeleteRegistrationStateResponse, err error) {
	ctx, endSpan := c.conn.StartSpan(ctx, "Client.DeleteRegistrationState")
	defer func() { endSpan(err) }()
	var ifMatch *azcore.ETag
	if options != nil {
		ifMatch = options.IfMatch
	}
	_, err = c.conn.Send(ctx, rest.Request{Method: http.MethodDelete, Path: "/registrations/" + rest.Escape(registrationID), IfMatch: ifMatch,
		Idempotent: rest.IdempotentDelete(ifMatch), OK: []int{http.StatusNoContent, http.StatusOK}}, nil)
	return out, err
}

// QueryRegistrationStatesResponse is one page of [Client.NewQueryRegistrationStatesPager].
type QueryRegistrationStatesResponse struct {
	RegistrationStates []DeviceRegistrationState
	// ContinuationToken resumes after this page; "" on the last page.
	ContinuationToken string
}

// NewQueryRegistrationStatesPager pages through the registration states of an enrollment
// group's devices. The request has no body, as in the service's specification.
func (c *Client) NewQueryRegistrationStatesPager(enrollmentGroupID string, options *QueryOptions) *runtime.Pager[QueryRegistrationStatesResponse] {
	return rest.NewQueryPager(c.conn, options.query("/registrations/"+rest.Escape(enrollmentGroupID)+"/query", nil),
		func(items []DeviceRegistrationState, next string) QueryRegistrationStatesResponse {
			return QueryRegistrationStatesResponse{RegistrationStates: items, ContinuationToken: next}
		}, func(p QueryRegistrationStatesResponse) string { return p.ContinuationToken })
}

// Package dps is a client for the Azure IoT Hub Device Provisioning Service (DPS) service API
// (api-version 2021-10-01): individual enrollments, enrollment groups, device registration
// states, bulk operations and queries. It is built on azcore like the Azure SDK for Go
// clients: a [Client] with an options struct per method, response structs, [runtime.Pager]
// for queries and *azcore.ResponseError for service errors.
//
// Authentication is either a Microsoft Entra ID credential ([NewClient], scope
// https://azure-devices-provisioning.net/.default; a managed identity in production) or a
// shared access policy connection string ([NewClientFromConnectionString]), whose SAS token
// the client signs and refreshes before it expires.
//
// Retries use azcore's retry policy (429 and Retry-After honoured). Idempotent operations
// (reads, queries, unconditional deletes and "If-Match: *" writes) are retried on every
// retriable status and on connection errors; the others (create-only and etag-conditional
// writes, conditional deletes, bulk operations) are retried only on 429, where the service
// rejected the request without applying it.
package dps

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"dpsdeprov/azure/internal/rest"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

const (
	// APIVersion is the DPS service API version the client speaks.
	APIVersion = "2021-10-01"
	// Scope is the Entra ID scope of the DPS service API.
	Scope = "https://azure-devices-provisioning.net/.default"

	moduleName    = "dpsdeprov/azure/dps"
	moduleVersion = "v0.1.0"
)

// ClientOptions configures a [Client]. The embedded azcore.ClientOptions set the transport,
// retries, logging and telemetry as for any Azure SDK client.
type ClientOptions struct {
	azcore.ClientOptions
	// SASTokenTTL is the lifetime of the SAS tokens [NewClientFromConnectionString] signs
	// (sas.DefaultTTL when zero); a token is replaced before it expires.
	SASTokenTTL time.Duration
}

// Client calls the DPS service API of one DPS instance. It is safe for concurrent use.
type Client struct {
	conn *rest.Conn
}

// service is what the DPS service API differs in from the hub's.
var service = rest.Service{
	Name: "dps", Module: moduleName, Version: moduleVersion, APIVersion: APIVersion,
	AllowedHeaders: []string{"x-ms-error-code"},
	// DPS etags are sent exactly as received (the service's own quoting included).
	IfMatch:  func(e azcore.ETag) string { return string(e) },
	NewError: newResponseError,
}

// NewClient returns a client for the DPS instance at endpoint (such as
// "https://mydps.azure-devices-provisioning.net") that authenticates with an Entra ID
// credential, for example azidentity.NewManagedIdentityCredential.
func NewClient(endpoint string, cred azcore.TokenCredential, options *ClientOptions) (*Client, error) {
	if options == nil {
		options = &ClientOptions{}
	}
	conn, err := rest.NewWithCredential(service, endpoint, cred, Scope, options.ClientOptions)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// NewClientFromConnectionString returns a client that authenticates with the shared access
// policy in a DPS service connection string
// ("HostName=...;SharedAccessKeyName=...;SharedAccessKey=...").
func NewClientFromConnectionString(connectionString string, options *ClientOptions) (*Client, error) {
	if options == nil {
		options = &ClientOptions{}
	}
	conn, err := rest.NewFromConnectionString(service, connectionString, options.SASTokenTTL, options.ClientOptions)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn}, nil
}

// Endpoint returns the client's endpoint, "https://{host}".
func (c *Client) Endpoint() string { return c.conn.Endpoint() }

// newResponseError builds the *azcore.ResponseError of a failed call; its ErrorCode is the
// service's six-digit code, from the x-ms-error-code header or the body's errorCode.
func newResponseError(resp *http.Response) error {
	code := resp.Header.Get("x-ms-error-code")
	if code == "" {
		if body, err := runtime.Payload(resp); err == nil {
			var d struct {
				ErrorCode json.RawMessage `json:"errorCode"`
			}
			if json.Unmarshal(body, &d) == nil && len(d.ErrorCode) > 0 {
				code = strings.Trim(string(d.ErrorCode), `"`)
			}
		}
	}
	return runtime.NewResponseErrorWithErrorCode(resp, code)
}

// IsNotFound reports whether err is a 404 answer: the enrollment, group or registration
// state does not exist.
func IsNotFound(err error) bool { return rest.HasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is a 409 answer, which a create-only write (no If-Match)
// gets when the record already exists.
func IsConflict(err error) bool { return rest.HasStatus(err, http.StatusConflict) }

// IsPreconditionFailed reports whether err is a 412 answer: the If-Match etag is stale.
func IsPreconditionFailed(err error) bool { return rest.HasStatus(err, http.StatusPreconditionFailed) }

// IsThrottled reports whether err is a 429 answer that outlasted the client's retries.
func IsThrottled(err error) bool { return rest.HasStatus(err, http.StatusTooManyRequests) }

// HostName returns the DPS instance's host name, such as "mydps.azure-devices-provisioning.net".
func (c *Client) HostName() string { return c.conn.Host() }

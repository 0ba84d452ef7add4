// Package iothub is a client for the Azure IoT Hub service API's identity registry
// (api-version 2021-04-12): device identities, bulk registry operations and the device
// query. It is built on azcore like the Azure SDK for Go clients; one [Client] serves one hub.
//
// Authentication is either a Microsoft Entra ID credential ([NewClient], scope
// https://iothubs.azure.net/.default; a managed identity in production) or a shared access
// policy connection string ([NewClientFromConnectionString]), whose SAS token the client signs
// and refreshes before it expires.
//
// Retries use azcore's retry policy (429 and Retry-After honoured). Idempotent operations
// (reads, the query, unconditional deletes and "If-Match: *" writes) are retried on every
// retriable status and on connection errors; the others (create-only and etag-conditional
// writes, conditional deletes, bulk operations) are retried only on 429, where the hub
// rejected the request without applying it.
package iothub

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
	// APIVersion is the IoT Hub service API version the client speaks.
	APIVersion = "2021-04-12"
	// Scope is the Entra ID scope of the IoT Hub service API.
	Scope = "https://iothubs.azure.net/.default"

	moduleName    = "dpsdeprov/azure/iothub"
	moduleVersion = "v0.1.0"
)

// Domain is the public IoT Hub DNS suffix, which a hub named without one is given.
const Domain = ".azure-devices.net"

// CanonicalHost names a hub by its lower-case host name: DPS reports a device's hub as
// "hub1.azure-devices.net", events and settings may say "HUB1" or "hub1", and all are one hub.
func CanonicalHost(hub string) string {
	h := strings.ToLower(strings.TrimSpace(hub))
	if h != "" && !strings.Contains(h, ".") {
		h += Domain
	}
	return h
}

// ClientOptions configures a [Client]. The embedded azcore.ClientOptions set the transport,
// retries, logging and telemetry as for any Azure SDK client.
type ClientOptions struct {
	azcore.ClientOptions
	// SASTokenTTL is the lifetime of the SAS tokens [NewClientFromConnectionString] signs
	// (sas.DefaultTTL when zero); a token is replaced before it expires.
	SASTokenTTL time.Duration
}

// Client calls the identity registry of one IoT hub. It is safe for concurrent use.
type Client struct {
	conn *rest.Conn
}

// service is what the hub's registry API differs in from DPS's.
var service = rest.Service{
	Name: "iothub", Module: moduleName, Version: moduleVersion, APIVersion: APIVersion,
	AllowedHeaders: []string{"iothub-errorcode"},
	IfMatch:        quoteETag,
	NewError:       newResponseError,
}

// NewClient returns a client for the hub at endpoint (such as
// "https://myhub.azure-devices.net") that authenticates with an Entra ID credential.
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
// policy in a hub service connection string. Device CRUD and bulk operations need
// RegistryRead/RegistryWrite; the device query also needs ServiceConnect (e.g. iothubowner).
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

// HostName returns the hub's host name, such as "myhub.azure-devices.net".
func (c *Client) HostName() string { return c.conn.Host() }

// quoteETag wraps an etag in double quotes unless it already is: the hub's JSON etags are
// unquoted, and an unquoted If-Match has been seen to be rejected or silently ignored.
func quoteETag(e azcore.ETag) string {
	s := string(e)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s
	}
	return `"` + s + `"`
}

// newResponseError builds the *azcore.ResponseError of a failed call; its ErrorCode is the
// hub's error name (such as "DeviceNotFound"), from the iothub-errorcode header, the nested
// JSON in the body's Message, or the legacy "ErrorCode:Name;text" Message.
func newResponseError(resp *http.Response) error {
	code := resp.Header.Get("iothub-errorcode")
	if code == "" {
		if body, err := runtime.Payload(resp); err == nil {
			code = string(errorCodeFromBody(body))
		}
	}
	return runtime.NewResponseErrorWithErrorCode(resp, code)
}

func errorCodeFromBody(body []byte) ErrorCode {
	var outer struct {
		Message   string    `json:"Message"`
		ErrorCode ErrorCode `json:"errorCode"`
	}
	if json.Unmarshal(body, &outer) != nil {
		return ""
	}
	if outer.ErrorCode != "" {
		return outer.ErrorCode
	}
	msg := strings.TrimSpace(outer.Message)
	if strings.HasPrefix(msg, "{") {
		var inner struct {
			ErrorCode ErrorCode `json:"errorCode"`
		}
		if json.Unmarshal([]byte(msg), &inner) == nil {
			return inner.ErrorCode
		}
		return ""
	}
	if rest, ok := strings.CutPrefix(msg, "ErrorCode:"); ok {
		name, _, _ := strings.Cut(rest, ";")
		return ErrorCode(strings.TrimSpace(name))
	}
	return ""
}

// IsNotFound reports whether err is a 404 answer (DeviceNotFound).
func IsNotFound(err error) bool { return rest.HasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is a 409 answer (DeviceAlreadyExists on a create-only write).
func IsConflict(err error) bool { return rest.HasStatus(err, http.StatusConflict) }

// IsPreconditionFailed reports whether err is a 412 answer: the If-Match etag is stale.
func IsPreconditionFailed(err error) bool { return rest.HasStatus(err, http.StatusPreconditionFailed) }

// IsThrottled reports whether err is a 429 answer that outlasted the client's retries.
func IsThrottled(err error) bool { return rest.HasStatus(err, http.StatusTooManyRequests) }

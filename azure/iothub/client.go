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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"dpsdeprov/azure/sas"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
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
	endpoint     string
	host         string
	pl           runtime.Pipeline
	noBlindRetry policy.RetryOptions
}

// NewClient returns a client for the hub at endpoint (such as
// "https://myhub.azure-devices.net") that authenticates with an Entra ID credential.
func NewClient(endpoint string, cred azcore.TokenCredential, options *ClientOptions) (*Client, error) {
	if cred == nil {
		return nil, errors.New("iothub: credential is nil")
	}
	return newClient(endpoint, runtime.NewBearerTokenPolicy(cred, []string{Scope}, nil), options)
}

// NewClientFromConnectionString returns a client that authenticates with the shared access
// policy in a hub service connection string. Device CRUD and bulk operations need
// RegistryRead/RegistryWrite; the device query also needs ServiceConnect (e.g. iothubowner).
func NewClientFromConnectionString(connectionString string, options *ClientOptions) (*Client, error) {
	cs, err := sas.ParseConnectionString(connectionString)
	if err != nil {
		return nil, fmt.Errorf("iothub: %w", err)
	}
	var ttl time.Duration
	if options != nil {
		ttl = options.SASTokenTTL
	}
	p, err := sas.NewPolicy(cs, &sas.PolicyOptions{TTL: ttl})
	if err != nil {
		return nil, fmt.Errorf("iothub: %w", err)
	}
	return newClient("https://"+cs.HostName, p, options)
}

func newClient(endpoint string, auth policy.Policy, options *ClientOptions) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("iothub: endpoint %q: %w", endpoint, err)
	}
	if u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("iothub: endpoint %q must be https://{host} with no path or query", endpoint)
	}
	if options == nil {
		options = &ClientOptions{}
	}
	co := options.ClientOptions
	pl := runtime.NewPipeline(moduleName, moduleVersion, runtime.PipelineOptions{
		APIVersion:             runtime.APIVersionOptions{Name: "api-version", Location: runtime.APIVersionLocationQueryParam},
		PerRetry:               []policy.Policy{auth},
		AllowedHeaders:         []string{"iothub-errorcode", "x-ms-continuation", "x-ms-item-type", "x-ms-max-item-count", "If-Match", "Retry-After"},
		AllowedQueryParameters: []string{"api-version"},
		Tracing:                runtime.TracingOptions{Namespace: "Microsoft.Devices"},
	}, &co)
	nb := co.Retry
	nb.ShouldRetry = func(resp *http.Response, err error) bool {
		return err == nil && resp != nil && resp.StatusCode == http.StatusTooManyRequests
	}
	return &Client{endpoint: "https://" + u.Host, host: u.Host, pl: pl, noBlindRetry: nb}, nil
}

// Endpoint returns the client's endpoint, "https://{host}".
func (c *Client) Endpoint() string { return c.endpoint }

// HostName returns the hub's host name, such as "myhub.azure-devices.net".
func (c *Client) HostName() string { return c.host }

type request struct {
	method     string
	path       string
	body       any
	ifMatch    *azcore.ETag
	header     map[string]string
	idempotent bool
	ok         []int
}

func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	if !r.idempotent {
		ctx = policy.WithRetryOptions(ctx, c.noBlindRetry)
	}
	req, err := runtime.NewRequest(ctx, r.method, c.endpoint+r.path)
	if err != nil {
		return nil, err
	}
	q := req.Raw().URL.Query()
	q.Set("api-version", APIVersion)
	req.Raw().URL.RawQuery = q.Encode()
	req.Raw().Header.Set("Accept", "application/json")
	if r.ifMatch != nil {
		req.Raw().Header.Set("If-Match", quoteETag(*r.ifMatch))
	}
	for k, v := range r.header {
		req.Raw().Header.Set(k, v)
	}
	if r.body != nil {
		if err := runtime.MarshalAsJSON(req, r.body); err != nil {
			return nil, err
		}
	}
	resp, err := c.pl.Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, r.ok...) {
		return nil, newResponseError(resp)
	}
	return resp, nil
}

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

func escape(id string) string { return url.PathEscape(id) }

func hasStatus(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

// IsNotFound reports whether err is a 404 answer (DeviceNotFound).
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is a 409 answer (DeviceAlreadyExists on a create-only write).
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

// IsPreconditionFailed reports whether err is a 412 answer: the If-Match etag is stale.
func IsPreconditionFailed(err error) bool { return hasStatus(err, http.StatusPreconditionFailed) }

// IsThrottled reports whether err is a 429 answer that outlasted the client's retries.
func IsThrottled(err error) bool { return hasStatus(err, http.StatusTooManyRequests) }

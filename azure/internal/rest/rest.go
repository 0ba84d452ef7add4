// Package rest is the plumbing the DPS and IoT Hub clients share: endpoint checks, the azcore
// pipeline with its authentication policy, the retry rule for calls that are not safe to
// repeat, and one request/response round trip. What differs between the two services (how
// an If-Match etag is written, where the error code is) is passed in by each client.
package rest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"dpsdeprov/azure/sas"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// Service describes one REST service for [New].
type Service struct {
	// Name prefixes errors, e.g. "dps".
	Name string
	// Module names the client in azcore's telemetry.
	Module, Version string
	// APIVersion is sent as the api-version query parameter of every call.
	APIVersion string
	// AllowedHeaders are response and request headers azcore may log besides its defaults.
	AllowedHeaders []string
	// IfMatch writes an etag as the service expects it in an If-Match header.
	IfMatch func(azcore.ETag) string
	// NewError builds the *azcore.ResponseError of an unexpected status, with the service's
	// error code.
	NewError func(*http.Response) error
}

// Conn is a service endpoint with its pipeline. It is safe for concurrent use.
type Conn struct {
	svc      Service
	endpoint string
	host     string
	pl       runtime.Pipeline
	// noBlindRetry is the retry configuration of calls that are not safe to repeat.
	noBlindRetry policy.RetryOptions
}

// New checks endpoint ("https://{host}", nothing else) and builds the pipeline with auth as
// its per-retry policy, so a refreshed token signs every attempt.
func New(svc Service, endpoint string, auth policy.Policy, co azcore.ClientOptions) (*Conn, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("%s: endpoint %q: %w", svc.Name, endpoint, err)
	}
	if u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("%s: endpoint %q must be https://{host} with no path or query", svc.Name, endpoint)
	}
	pl := runtime.NewPipeline(svc.Module, svc.Version, runtime.PipelineOptions{
		APIVersion:             runtime.APIVersionOptions{Name: "api-version", Location: runtime.APIVersionLocationQueryParam},
		PerRetry:               []policy.Policy{auth},
		AllowedHeaders:         append([]string{"x-ms-continuation", "x-ms-item-type", "x-ms-max-item-count", "If-Match", "Retry-After"}, svc.AllowedHeaders...),
		AllowedQueryParameters: []string{"api-version"},
		Tracing:                runtime.TracingOptions{Namespace: "Microsoft.Devices"},
	}, &co)
	nb := co.Retry
	nb.ShouldRetry = func(resp *http.Response, err error) bool {
		// Only a throttled request is known not to have been applied.
		return err == nil && resp != nil && resp.StatusCode == http.StatusTooManyRequests
	}
	return &Conn{svc: svc, endpoint: "https://" + u.Host, host: u.Host, pl: pl, noBlindRetry: nb}, nil
}

// NewFromConnectionString builds a Conn that signs with the shared access policy of a
// service connection string, with SAS tokens of the given lifetime (sas.DefaultTTL if zero).
func NewFromConnectionString(svc Service, connectionString string, ttl time.Duration, co azcore.ClientOptions) (*Conn, error) {
	cs, err := sas.ParseConnectionString(connectionString)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", svc.Name, err)
	}
	p, err := sas.NewTokenPolicy(cs, &sas.TokenPolicyOptions{TTL: ttl})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", svc.Name, err)
	}
	return New(svc, "https://"+cs.HostName, p, co)
}

// NewWithCredential builds a Conn that authenticates with an Entra ID credential for scope.
func NewWithCredential(svc Service, endpoint string, cred azcore.TokenCredential, scope string, co azcore.ClientOptions) (*Conn, error) {
	if cred == nil {
		return nil, fmt.Errorf("%s: credential is nil", svc.Name)
	}
	return New(svc, endpoint, runtime.NewBearerTokenPolicy(cred, []string{scope}, nil), co)
}

// Endpoint returns "https://{host}".
func (c *Conn) Endpoint() string { return c.endpoint }

// Host returns the service's host name.
func (c *Conn) Host() string { return c.host }

// Request describes one call.
type Request struct {
	Method string
	// Path is already escaped (see [Escape]).
	Path string
	// Body is marshalled as JSON; nil for none.
	Body    any
	IfMatch *azcore.ETag
	Header  map[string]string
	// Idempotent calls get azcore's full retry; the others are retried only on 429.
	Idempotent bool
	// OK lists the statuses that are answers rather than errors.
	OK []int
}

// Do sends r and returns the response when its status is one of r.OK; any other status is
// the service's error.
func (c *Conn) Do(ctx context.Context, r Request) (*http.Response, error) {
	if !r.Idempotent {
		ctx = policy.WithRetryOptions(ctx, c.noBlindRetry)
	}
	req, err := runtime.NewRequest(ctx, r.Method, c.endpoint+r.Path)
	if err != nil {
		return nil, err
	}
	q := req.Raw().URL.Query()
	q.Set("api-version", c.svc.APIVersion)
	req.Raw().URL.RawQuery = q.Encode()
	req.Raw().Header.Set("Accept", "application/json")
	if r.IfMatch != nil {
		req.Raw().Header.Set("If-Match", c.svc.IfMatch(*r.IfMatch))
	}
	for k, v := range r.Header {
		req.Raw().Header.Set(k, v)
	}
	if r.Body != nil {
		if err := runtime.MarshalAsJSON(req, r.Body); err != nil {
			return nil, err
		}
	}
	resp, err := c.pl.Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, r.OK...) {
		return nil, c.svc.NewError(resp)
	}
	return resp, nil
}

// IdempotentWrite reports whether a write with this If-Match may be repeated safely: only an
// unconditional replace ("*") can; a create-only write (no If-Match) or an etag-conditional
// one would answer 409 or 412 on a repeat after an unnoticed success.
func IdempotentWrite(ifMatch *azcore.ETag) bool {
	return ifMatch != nil && *ifMatch == azcore.ETagAny
}

// IdempotentDelete reports whether a delete may be repeated safely: an unconditional one can
// (a repeat answers 404, which callers treat as done); a conditional one cannot.
func IdempotentDelete(ifMatch *azcore.ETag) bool {
	return ifMatch == nil || *ifMatch == azcore.ETagAny
}

// Escape escapes an id for use as one path segment.
func Escape(id string) string { return url.PathEscape(id) }

// HasStatus reports whether err is an *azcore.ResponseError with the given status.
func HasStatus(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

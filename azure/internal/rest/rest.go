// Package rest is the plumbing the DPS and IoT Hub clients share, built as the Azure SDK for
// Go builds its generated clients: an azcore.Client (its pipeline with the authentication
// policy, and its tracer, under the Microsoft.Devices tracing namespace), a span per method
// ([Conn.StartSpan]), the retry rule for calls that are not safe to repeat, one
// request/response round trip, and the query pager both services' queries use. What differs
// between the two services (how an If-Match etag is written, where the error code is) is
// passed in by each client.
package rest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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

// Conn is a service endpoint with its azcore.Client. It is safe for concurrent use.
type Conn struct {
	svc      Service
	endpoint string
	host     string
	client   *azcore.Client
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
	client, err := azcore.NewClient(svc.Module, svc.Version, runtime.PipelineOptions{
		APIVersion:             runtime.APIVersionOptions{Name: "api-version", Location: runtime.APIVersionLocationQueryParam},
		PerRetry:               []policy.Policy{auth},
		AllowedHeaders:         append([]string{"x-ms-continuation", "x-ms-item-type", "x-ms-max-item-count", "If-Match", "Retry-After"}, svc.AllowedHeaders...),
		AllowedQueryParameters: []string{"api-version"},
		Tracing:                runtime.TracingOptions{Namespace: TracingNamespace},
	}, &co)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", svc.Name, err)
	}
	nb := co.Retry
	nb.ShouldRetry = func(resp *http.Response, err error) bool {
		// Only a throttled request is known not to have been applied.
		return err == nil && resp != nil && resp.StatusCode == http.StatusTooManyRequests
	}
	return &Conn{svc: svc, endpoint: "https://" + u.Host, host: u.Host, client: client, noBlindRetry: nb}, nil
}

// TracingNamespace is the az.namespace attribute of every span of both clients: the Azure
// resource provider of DPS and IoT Hub.
const TracingNamespace = "Microsoft.Devices"

// StartSpan starts the span of one client method, named as the Azure SDK names a method's
// span ("Client.GetDevice"), with the client's tracer; the HTTP spans of the method's calls
// are its children. Call the returned function with the method's error when it returns.
// Without a tracer provider in the client options it costs nothing.
func (c *Conn) StartSpan(ctx context.Context, name string) (context.Context, func(error)) {
	ctx = context.WithValue(ctx, runtime.CtxAPINameKey{}, name)
	return runtime.StartSpan(ctx, name, c.client.Tracer(), nil)
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
	resp, err := c.client.Pipeline().Do(req)
	if err != nil {
		return nil, err
	}
	if !runtime.HasStatusCode(resp, r.OK...) {
		return nil, c.svc.NewError(resp)
	}
	return resp, nil
}

// Send sends r as [Conn.Do] does and unmarshals the JSON answer into out (nil: the answer has
// no body to read).
func (c *Conn) Send(ctx context.Context, r Request, out any) (*http.Response, error) {
	resp, err := c.Do(ctx, r)
	if err != nil || out == nil {
		return resp, err
	}
	return resp, runtime.UnmarshalAsJSON(resp, out)
}

// QuerySpecification is the body of a query operation.
type QuerySpecification struct {
	Query string `json:"query"`
}

// Query describes one of the services' query operations for [NewQueryPager]: a POST whose
// pages are chained by the x-ms-continuation header.
type Query struct {
	// Path is already escaped.
	Path string
	// Body is the request body; nil for none (DPS's registration query has none).
	Body any
	// PageSize asks for at most this many items a page (x-ms-max-item-count); 0 leaves it to
	// the service.
	PageSize int32
	// ContinuationToken resumes the query after the page that returned it.
	ContinuationToken string
}

// NewQueryPager returns the pager of q. Each page's items (a JSON array) and the token of the
// next page become a P with page; next reads the token back from a P ("" on the last page).
// Each page is a span of the client's tracer, as azcore's pagers make it.
func NewQueryPager[T, P any](c *Conn, q Query, page func(items []T, next string) P, next func(P) string) *runtime.Pager[P] {
	return runtime.NewPager(runtime.PagingHandler[P]{
		More: func(p P) bool { return next(p) != "" },
		Fetcher: func(ctx context.Context, prev *P) (P, error) {
			var zero P
			token := q.ContinuationToken
			if prev != nil {
				token = next(*prev)
			}
			h := map[string]string{}
			if q.PageSize > 0 {
				h["x-ms-max-item-count"] = strconv.Itoa(int(q.PageSize))
			}
			if token != "" {
				h["x-ms-continuation"] = token
			}
			var items []T
			resp, err := c.Send(ctx, Request{Method: http.MethodPost, Path: q.Path, Body: q.Body, Header: h, Idempotent: true, OK: []int{http.StatusOK}}, &items)
			if err != nil {
				return zero, err
			}
			return page(items, resp.Header.Get("x-ms-continuation")), nil
		},
		Tracer: c.client.Tracer(),
	})
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

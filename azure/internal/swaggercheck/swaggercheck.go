// Package swaggercheck checks the requests the clients send against the services' Swagger 2.0
// (OpenAPI 2) descriptions, with kin-openapi: the description is converted to OpenAPI 3
// (openapi2conv), each request is routed to its operation (the method and path exist, with
// path templates) and validated (openapi3filter: required and typed parameters, enum values,
// the JSON body against its schema, no read-only field, no body where the operation declares
// none). Two rules are the check's own, since a client must not send what the service does
// not know: every query parameter and API header must be declared, and a body object may hold
// only the properties its schema declares (unless the schema says additionalProperties). The
// clients' tests record every request they send with [Recorder] and check them all, so a
// field name or parameter the service does not know fails a test.
package swaggercheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Spec is a loaded Swagger 2.0 document, converted to OpenAPI 3 and routed.
type Spec struct {
	Name   string
	doc    *openapi3.T
	router routers.Router
}

// Load reads a Swagger 2.0 JSON file.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc2 openapi2.T
	if err := doc2.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	doc, err := openapi2conv.ToV3(&doc2)
	if err != nil {
		return nil, fmt.Errorf("converting %s to OpenAPI 3: %w", path, err)
	}
	// The description names a placeholder host ("your-dps.azure-devices-provisioning.net"):
	// route by path, whatever the instance.
	doc.Servers = nil
	closeObjects(doc)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("routing %s: %w", path, err)
	}
	return &Spec{Name: path, doc: doc, router: router}, nil
}

// closeObjects makes every object schema that declares properties, and says nothing of
// additional ones, refuse undeclared properties: JSON Schema allows them by default, and a
// client that sends a misspelt field would pass.
func closeObjects(doc *openapi3.T) {
	no := false
	seen := map[*openapi3.Schema]bool{}
	var walk func(*openapi3.SchemaRef)
	walk = func(r *openapi3.SchemaRef) {
		if r == nil || r.Value == nil || seen[r.Value] {
			return
		}
		s := r.Value
		seen[s] = true
		if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
			s.AdditionalProperties.Has = &no
		}
		for _, p := range s.Properties {
			walk(p)
		}
		walk(s.Items)
		walk(s.AdditionalProperties.Schema)
		for _, l := range []openapi3.SchemaRefs{s.AllOf, s.AnyOf, s.OneOf} {
			for _, x := range l {
				walk(x)
			}
		}
	}
	for _, s := range doc.Components.Schemas {
		walk(s)
	}
	for _, b := range doc.Components.RequestBodies {
		if b.Value != nil {
			for _, m := range b.Value.Content {
				walk(m.Schema)
			}
		}
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for _, m := range op.RequestBody.Value.Content {
					walk(m.Schema)
				}
			}
		}
	}
}

// Operations lists the operationId of every operation of the description.
func (s *Spec) Operations() []string {
	var out []string
	for _, item := range s.doc.Paths.Map() {
		for _, op := range item.Operations() {
			out = append(out, op.OperationID)
		}
	}
	slices.Sort(out)
	return out
}

// Request is one recorded request.
type Request struct {
	Method string
	URL    *url.URL
	Header http.Header
	Body   []byte
}

// String names the request for failure messages.
func (r Request) String() string { return r.Method + " " + r.URL.Path + "?" + r.URL.RawQuery }

// standardHeaders are transport and pipeline headers that no API description declares.
var standardHeaders = []string{
	"Authorization", "Accept", "Accept-Encoding", "Content-Type", "Content-Length",
	"User-Agent", "X-Ms-Client-Request-Id", "Traceparent", "Tracestate",
}

// Check validates one request and returns its operationId and every problem found.
func (s *Spec) Check(r Request) (string, []error) {
	hr, err := http.NewRequest(r.Method, r.URL.String(), bytes.NewReader(r.Body))
	if err != nil {
		return "", []error{fmt.Errorf("%s: %w", r, err)}
	}
	hr.Header = r.Header.Clone()
	route, vars, err := s.router.FindRoute(hr)
	switch {
	case errors.Is(err, routers.ErrMethodNotAllowed):
		return "", []error{fmt.Errorf("%s: method %s is not declared for path %s", r, r.Method, r.URL.Path)}
	case err != nil:
		return "", []error{fmt.Errorf("%s: path %s matches no path of the spec: %w", r, r.URL.Path, err)}
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{r}, a...)...))
	}
	err = openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
		Request: hr, PathParams: vars, Route: route,
		Options: &openapi3filter.Options{MultiError: true, RejectWhenRequestBodyNotSpecified: true, SkipSettingDefaults: true,
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	})
	var me openapi3.MultiError
	switch {
	case errors.As(err, &me):
		for _, e := range me {
			bad("%s", describe(e))
		}
	case err != nil:
		bad("%s", describe(err))
	}
	declared := func(in, name string) bool {
		for _, params := range []openapi3.Parameters{route.PathItem.Parameters, route.Operation.Parameters} {
			if params.GetByInAndName(in, name) != nil {
				return true
			}
			for _, p := range params {
				if p.Value != nil && p.Value.In == in && strings.EqualFold(p.Value.Name, name) {
					return true
				}
			}
		}
		return false
	}
	for name := range r.URL.Query() {
		if !declared(openapi3.ParameterInQuery, name) {
			bad("query parameter %s is not declared", name)
		}
	}
	for name := range r.Header {
		if !slices.ContainsFunc(standardHeaders, func(h string) bool { return strings.EqualFold(h, name) }) && !declared(openapi3.ParameterInHeader, name) {
			bad("header %s is not declared", name)
		}
	}
	return route.Operation.OperationID, errs
}

// describe says what a validation error is about in one line: kin-openapi's own text of a
// schema error carries the whole schema.
func describe(err error) string {
	where := "body"
	var re *openapi3filter.RequestError
	if errors.As(err, &re) && re.Parameter != nil {
		where = re.Parameter.In + " parameter " + re.Parameter.Name
	}
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		if p := se.JSONPointer(); len(p) > 0 {
			where += " ." + strings.Join(p, ".")
		}
		return where + ": " + se.Reason
	}
	if re != nil {
		reason := re.Reason
		if re.Err != nil && !strings.Contains(reason, re.Err.Error()) {
			reason = strings.TrimPrefix(reason+": "+re.Err.Error(), ": ")
		}
		return where + ": " + reason
	}
	return err.Error()
}

// Recorder is an azcore per-retry policy that records every request it sees. Put it in
// ClientOptions.PerRetryPolicies, which run after the client's authentication policy, so
// the recorded headers are those sent on the wire.
type Recorder struct {
	mu   sync.Mutex
	reqs []Request
}

// Do implements policy.Policy.
func (rec *Recorder) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	var body []byte
	if req.Body() != nil {
		b, err := io.ReadAll(req.Body())
		if err != nil {
			return nil, err
		}
		body = b
		if err := req.RewindBody(); err != nil {
			return nil, err
		}
	}
	u := *raw.URL
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, Request{Method: raw.Method, URL: &u, Header: raw.Header.Clone(), Body: body})
	rec.mu.Unlock()
	return req.Next()
}

// Requests returns what was recorded so far.
func (rec *Recorder) Requests() []Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.reqs)
}

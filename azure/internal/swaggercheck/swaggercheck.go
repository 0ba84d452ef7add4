// Package swaggercheck checks HTTP requests against a Swagger 2.0 (OpenAPI 2) description:
// the method and path exist (with path templates), every query parameter and API header is
// declared and the required ones are present, enum values are valid, and the JSON body
// matches the referenced definition (types, required fields, enums, no undeclared or
// read-only fields). The clients' tests record every request they send with [Recorder] and
// check them all, so a field name or parameter the service does not know fails a test.
package swaggercheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Spec is a loaded Swagger 2.0 document.
type Spec struct {
	Name        string
	Paths       map[string]map[string]json.RawMessage
	Parameters  map[string]*Parameter
	Definitions map[string]*Schema
}

// Parameter is a Swagger parameter.
type Parameter struct {
	Ref      string  `json:"$ref"`
	Name     string  `json:"name"`
	In       string  `json:"in"`
	Required bool    `json:"required"`
	Type     string  `json:"type"`
	Enum     []any   `json:"enum"`
	Schema   *Schema `json:"schema"`
	Format   string  `json:"format"`
	Items    *Schema `json:"items"`
	Default  any     `json:"default"`
}

// Schema is the subset of a Swagger schema the check understands.
type Schema struct {
	Ref                  string             `json:"$ref"`
	Type                 string             `json:"type"`
	Format               string             `json:"format"`
	Enum                 []any              `json:"enum"`
	Required             []string           `json:"required"`
	Properties           map[string]*Schema `json:"properties"`
	AdditionalProperties json.RawMessage    `json:"additionalProperties"`
	Items                *Schema            `json:"items"`
	ReadOnly             bool               `json:"readOnly"`
}

type operation struct {
	OperationID string       `json:"operationId"`
	Parameters  []*Parameter `json:"parameters"`
}

// Load reads a Swagger 2.0 JSON file.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	s.Name = path
	return &s, nil
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

func (s *Spec) resolveParam(p *Parameter) *Parameter {
	if p.Ref != "" {
		if r := s.Parameters[strings.TrimPrefix(p.Ref, "#/parameters/")]; r != nil {
			return r
		}
	}
	return p
}

// match finds the operation for method and path, preferring the template with the most
// literal segments (so /enrollments/query wins over /enrollments/{id}).
func (s *Spec) match(method, path string) (string, *operation, map[string]string, error) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	best, bestLit := "", -1
	var bestVars map[string]string
	pathExists := false
	for tmpl, ops := range s.Paths {
		ts := strings.Split(strings.Trim(tmpl, "/"), "/")
		if len(ts) != len(segs) {
			continue
		}
		vars, lit, ok := map[string]string{}, 0, true
		for i, t := range ts {
			seg, err := url.PathUnescape(segs[i])
			if err != nil {
				return "", nil, nil, fmt.Errorf("path segment %q is not valid escaping", segs[i])
			}
			if strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") {
				if seg == "" {
					ok = false
					break
				}
				vars[t[1:len(t)-1]] = seg
				continue
			}
			if t != segs[i] {
				ok = false
				break
			}
			lit++
		}
		if !ok {
			continue
		}
		pathExists = true
		if _, has := ops[strings.ToLower(method)]; !has {
			continue
		}
		if lit > bestLit {
			best, bestLit, bestVars = tmpl, lit, vars
		}
	}
	if best == "" {
		if pathExists {
			return "", nil, nil, fmt.Errorf("method %s is not declared for path %s", method, path)
		}
		return "", nil, nil, fmt.Errorf("path %s matches no path of the spec", path)
	}
	var op operation
	if err := json.Unmarshal(s.Paths[best][strings.ToLower(method)], &op); err != nil {
		return "", nil, nil, err
	}
	return best, &op, bestVars, nil
}

// Check validates one request and returns its operationId and every problem found.
func (s *Spec) Check(r Request) (string, []error) {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{r}, a...)...))
	}
	_, op, vars, err := s.match(r.Method, r.URL.EscapedPath())
	if err != nil {
		return "", []error{fmt.Errorf("%s: %w", r, err)}
	}
	params := make([]*Parameter, 0, len(op.Parameters))
	for _, p := range op.Parameters {
		params = append(params, s.resolveParam(p))
	}
	q := r.URL.Query()
	var bodyParam *Parameter
	for _, p := range params {
		switch p.In {
		case "path":
			if vars[p.Name] == "" && p.Required {
				bad("path parameter %s is empty", p.Name)
			}
		case "query":
			v, ok := q[p.Name]
			if !ok && p.Required {
				bad("required query parameter %s is missing", p.Name)
			}
			if ok {
				checkValue(p, v[0], bad)
			}
		case "header":
			v := r.Header.Get(p.Name)
			if v == "" && p.Required {
				bad("required header %s is missing", p.Name)
			}
			if v != "" {
				checkValue(p, v, bad)
			}
		case "body":
			bodyParam = p
		}
	}
	for name := range q {
		if !slices.ContainsFunc(params, func(p *Parameter) bool { return p.In == "query" && p.Name == name }) {
			bad("query parameter %s is not declared", name)
		}
	}
	for name := range r.Header {
		if slices.ContainsFunc(standardHeaders, func(h string) bool { return strings.EqualFold(h, name) }) {
			continue
		}
		if !slices.ContainsFunc(params, func(p *Parameter) bool { return p.In == "header" && strings.EqualFold(p.Name, name) }) {
			bad("header %s is not declared", name)
		}
	}
	body := bytes.TrimSpace(r.Body)
	switch {
	case bodyParam == nil && len(body) > 0:
		bad("sends a body but the operation declares none")
	case bodyParam != nil && len(body) == 0 && bodyParam.Required:
		bad("the required body %s is missing", bodyParam.Name)
	case bodyParam != nil && len(body) > 0:
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			bad("body Content-Type is %q, not application/json", ct)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			bad("body is not JSON: %v", err)
			break
		}
		for _, e := range s.validate(bodyParam.Schema, v, "body") {
			bad("%s", e)
		}
	}
	return op.OperationID, errs
}

func checkValue(p *Parameter, v string, bad func(string, ...any)) {
	if len(p.Enum) > 0 && !slices.ContainsFunc(p.Enum, func(e any) bool { return fmt.Sprint(e) == v }) {
		bad("%s %s=%q is not one of %v", p.In, p.Name, v, p.Enum)
	}
	if p.Type == "integer" {
		var n int64
		if _, err := fmt.Sscan(v, &n); err != nil {
			bad("%s %s=%q is not an integer", p.In, p.Name, v)
		}
	}
}

func (s *Spec) deref(sc *Schema) *Schema {
	for sc != nil && sc.Ref != "" {
		sc = s.Definitions[strings.TrimPrefix(sc.Ref, "#/definitions/")]
	}
	return sc
}

// validate checks a decoded JSON value against a request schema.
func (s *Spec) validate(sc *Schema, v any, at string) []string {
	sc = s.deref(sc)
	if sc == nil {
		return nil
	}
	var out []string
	if len(sc.Enum) > 0 && !slices.ContainsFunc(sc.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		out = append(out, fmt.Sprintf("%s = %v is not one of %v", at, v, sc.Enum))
	}
	typ := sc.Type
	if typ == "" && sc.Properties != nil {
		typ = "object"
	}
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return append(out, fmt.Sprintf("%s is %T, want an object", at, v))
		}
		for _, r := range sc.Required {
			if _, ok := m[r]; !ok {
				out = append(out, fmt.Sprintf("%s lacks the required field %s", at, r))
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, ok := sc.Properties[k]
			if !ok {
				if len(sc.AdditionalProperties) == 0 || string(sc.AdditionalProperties) == "false" {
					if sc.Properties != nil {
						out = append(out, fmt.Sprintf("%s has the undeclared field %s", at, k))
					}
				}
				continue
			}
			if ps.ReadOnly || s.deref(ps).ReadOnly {
				out = append(out, fmt.Sprintf("%s sends the read-only field %s", at, k))
			}
			out = append(out, s.validate(ps, m[k], at+"."+k)...)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return append(out, fmt.Sprintf("%s is %T, want an array", at, v))
		}
		for i, e := range a {
			out = append(out, s.validate(sc.Items, e, fmt.Sprintf("%s[%d]", at, i))...)
		}
	case "string":
		if _, ok := v.(string); !ok {
			out = append(out, fmt.Sprintf("%s is %T, want a string", at, v))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			out = append(out, fmt.Sprintf("%s is %T, want a boolean", at, v))
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != float64(int64(f)) {
			out = append(out, fmt.Sprintf("%s is %v, want an integer", at, v))
		}
	case "number":
		if _, ok := v.(float64); !ok {
			out = append(out, fmt.Sprintf("%s is %T, want a number", at, v))
		}
	}
	return out
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

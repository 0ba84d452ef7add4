// Package recorded replays HTTP exchanges that Microsoft's SDK test suites recorded against
// the real IoT Hub and DPS (test-proxy session records, as in the shared reference
// recordings) to the project's clients: a [Transport] answers each request with the next
// recorded answer, so that a contract test can check that the clients decode what the
// services really send and classify what they really refuse.
package recorded

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
)

// Entry is one recorded exchange.
type Entry struct {
	Method string
	URL    *url.URL
	// RequestHeader holds the recorded request's If-Match, x-ms-continuation and
	// x-ms-max-item-count.
	RequestHeader http.Header
	RequestBody   []byte // nil: none
	Status        int
	Header        http.Header
	Body          []byte // nil: none
}

// Load reads a session record, leaving out the calls that are not to the services (the Azure
// AD token calls of the Python recordings).
func Load(path string) ([]Entry, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rec struct {
		Entries []struct {
			RequestURI      string                     `json:"RequestUri"`
			RequestMethod   string                     `json:"RequestMethod"`
			RequestHeaders  map[string]json.RawMessage `json:"RequestHeaders"`
			RequestBody     json.RawMessage            `json:"RequestBody"`
			StatusCode      int                        `json:"StatusCode"`
			ResponseHeaders map[string]json.RawMessage `json:"ResponseHeaders"`
			ResponseBody    json.RawMessage            `json:"ResponseBody"`
		} `json:"Entries"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []Entry
	for i, e := range rec.Entries {
		u, err := url.Parse(e.RequestURI)
		if err != nil {
			return nil, fmt.Errorf("%s entry %d: %w", path, i, err)
		}
		if strings.Contains(u.Host, "login.microsoftonline.com") {
			continue
		}
		en := Entry{Method: e.RequestMethod, URL: u, RequestHeader: http.Header{}, Status: e.StatusCode, Header: http.Header{}}
		for k, v := range e.RequestHeaders {
			var s string
			if json.Unmarshal(v, &s) == nil {
				en.RequestHeader.Set(k, s)
			}
		}
		for k, v := range e.ResponseHeaders {
			var s string
			if json.Unmarshal(v, &s) == nil {
				en.Header.Set(k, s)
			}
		}
		if en.RequestBody, err = body(e.RequestBody); err != nil {
			return nil, fmt.Errorf("%s entry %d request: %w", path, i, err)
		}
		if en.Body, err = body(e.ResponseBody); err != nil {
			return nil, fmt.Errorf("%s entry %d response: %w", path, i, err)
		}
		out = append(out, en)
	}
	return out, nil
}

// body reads a recorded body: null (none), a JSON value, or a string holding the body; the
// .NET recorder writes an empty body as [].
func body(raw json.RawMessage) ([]byte, error) {
	t := bytes.TrimSpace(raw)
	switch {
	case len(t) == 0 || string(t) == "null" || string(t) == "[]":
		return nil, nil
	case t[0] == '"':
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
	return t, nil
}

// Transport answers every request with the recorded answer it is given by [Transport.Expect]
// and records what the client sent. It satisfies azcore's policy.Transporter.
type Transport struct {
	mu   sync.Mutex
	want *Entry
	sent *http.Request
	body []byte
}

// Expect sets the exchange the next request must be.
func (t *Transport) Expect(e *Entry) {
	t.mu.Lock()
	t.want, t.sent, t.body = e, nil, nil
	t.mu.Unlock()
}

// Sent returns the last request the client sent and its body.
func (t *Transport) Sent() (*http.Request, []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sent, t.body
}

// Do answers req with the expected entry's recorded answer, or fails when req is not the
// recorded request (another method or path).
func (t *Transport) Do(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b []byte
	if req.Body != nil {
		b, _ = io.ReadAll(req.Body)
	}
	t.sent, t.body = req, b
	e := t.want
	if e == nil {
		return nil, fmt.Errorf("recorded: no answer expected for %s %s", req.Method, req.URL.Path)
	}
	if req.Method != e.Method || !strings.EqualFold(strings.TrimSuffix(req.URL.EscapedPath(), "/"), strings.TrimSuffix(e.URL.EscapedPath(), "/")) {
		return nil, fmt.Errorf("recorded: the client sent %s %s where the recording has %s %s", req.Method, req.URL.EscapedPath(), e.Method, e.URL.EscapedPath())
	}
	return &http.Response{
		StatusCode:    e.Status,
		Status:        fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status)),
		Header:        e.Header.Clone(),
		Body:          io.NopCloser(bytes.NewReader(e.Body)),
		ContentLength: int64(len(e.Body)),
		Request:       req,
	}, nil
}

// Keys lists the paths of every non-null value of a JSON document ("a.b", "[].c" for the
// elements of an array).
func Keys(doc []byte) ([]string, error) {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	walk(v, "", set)
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

func walk(v any, prefix string, set map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e == nil {
				continue
			}
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			set[p] = true
			walk(e, p, set)
		}
	case []any:
		for _, e := range x {
			walk(e, prefix+"[]", set)
		}
	}
}

// Lost returns the keys of recorded that a model decoded from it and encoded again no
// longer has: what the client drops. A zero value (0, false, "", [], {}) the model leaves out
// when encoding is not lost: decoding gives it back. Keys under a name in unmodelled (the
// last segment of the path, such as "configurations") are fields the caller knows the
// model does not declare, and are not reported.
func Lost(recorded []byte, model any, unmodelled ...string) ([]string, error) {
	var doc any
	if err := json.Unmarshal(recorded, &doc); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	walkFilled(doc, "", set)
	want := make([]string, 0, len(set))
	for k := range set {
		want = append(want, k)
	}
	sort.Strings(want)
	again, err := json.Marshal(model)
	if err != nil {
		return nil, err
	}
	got, err := Keys(again)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, k := range got {
		have[k] = true
	}
	var lost []string
next:
	for _, k := range want {
		if have[k] {
			continue
		}
		for _, seg := range strings.Split(strings.ReplaceAll(k, "[]", ""), ".") {
			for _, u := range unmodelled {
				if seg == u {
					continue next
				}
			}
		}
		lost = append(lost, k)
	}
	return lost, nil
}

// walkFilled is walk over the values that are not zero.
func walkFilled(v any, prefix string, set map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if isZero(e) {
				continue
			}
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			set[p] = true
			walkFilled(e, p, set)
		}
	case []any:
		for _, e := range x {
			walkFilled(e, prefix+"[]", set)
		}
	}
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case float64:
		return x == 0
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// Package recorded reads the HTTP exchanges that Microsoft's SDK test suites recorded
// against the real IoT Hub and DPS (test-proxy session records: the shared reference
// recordings, read where they lie and never copied into the project), for the tests that
// hold the project to them: the emulator's replay, and the clients' contract tests, to which
// a [Transport] answers each request with its recorded answer.
package recorded

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"dpsdeprov/internal/testenv"
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

// Set is the exchanges of one recording.
type Set struct {
	Name    string // the recording's folder and file name without .json, e.g. "dps/x"
	Entries []Entry
	Skipped int // calls that are not to the services (Azure AD), left out of Entries
}

// Sets loads the shared reference recordings of service ("dps", "iothub" or "" for both),
// or skips the test, saying why, where they are not beside the checkout.
func Sets(tb testing.TB, service string) []Set {
	tb.Helper()
	dir := testenv.SharedReference(tb, "recordings")
	pattern := filepath.Join(dir, "*", "*.json")
	if service != "" {
		pattern = filepath.Join(dir, service, "*.json")
	}
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		tb.Fatalf("no recordings match %s (%v)", pattern, err)
	}
	sort.Strings(files)
	out := make([]Set, 0, len(files))
	for _, f := range files {
		entries, skipped, err := Load(f)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, Set{Name: filepath.Base(filepath.Dir(f)) + "/" + strings.TrimSuffix(filepath.Base(f), ".json"), Entries: entries, Skipped: skipped})
	}
	return out
}

// Load reads a session record, leaving out the calls that are not to the services (the Azure
// AD token calls of the Python recordings), which it counts.
func Load(path string) ([]Entry, int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
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
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	var out []Entry
	skipped := 0
	for i, e := range rec.Entries {
		u, err := url.Parse(e.RequestURI)
		if err != nil {
			return nil, 0, fmt.Errorf("%s entry %d: %w", path, i, err)
		}
		if strings.Contains(u.Host, "login.microsoftonline.com") {
			skipped++
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
		if en.RequestBody, err = Body(e.RequestBody); err != nil {
			return nil, 0, fmt.Errorf("%s entry %d request: %w", path, i, err)
		}
		if en.Body, err = Body(e.ResponseBody); err != nil {
			return nil, 0, fmt.Errorf("%s entry %d response: %w", path, i, err)
		}
		out = append(out, en)
	}
	return out, skipped, nil
}

// Body reads a recorded body: null (none), a JSON value, or a string holding the body; the
// .NET recorder writes an empty body as [].
func Body(raw json.RawMessage) ([]byte, error) {
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
	return Paths(v, func(v any) bool { return v != nil }), nil
}

// Paths lists the paths of the values of a decoded JSON document that keep says to keep
// (and of everything under them).
func Paths(v any, keep func(any) bool) []string {
	set := map[string]bool{}
	walk(v, "", keep, set)
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func walk(v any, prefix string, keep func(any) bool, set map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if !keep(e) {
				continue
			}
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			set[p] = true
			walk(e, p, keep, set)
		}
	case []any:
		for _, e := range x {
			walk(e, prefix+"[]", keep, set)
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
	want := Paths(doc, func(v any) bool { return !isZero(v) })
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

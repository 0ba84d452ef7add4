package devhost

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// DefaultHostVersion is the host version devhost announces in X-Azure-Functions-HostVersion and
// User-Agent: the host release the project's reference notes were read from.
const DefaultHostVersion = "4.1037.0.0"

// Invocation is one call of a function, built as the host builds it (its
// ScriptInvocationContextExtensions.ToHttpScriptInvocationContext).
type Invocation struct {
	// Function is the function's name, which is also the URL path the handler is called on.
	Function string
	// ID is the invocation id sent in X-Azure-Functions-InvocationId.
	ID string
	// Data holds one value per input binding, already encoded as the host encodes it.
	Data map[string]json.RawMessage
	// Metadata holds the trigger's binding data and "sys", already encoded.
	Metadata map[string]json.RawMessage
}

// Body returns the request body the host sends: {"Data":{…},"Metadata":{…}}.
func (inv *Invocation) Body() ([]byte, error) {
	return marshalHost(struct {
		Data     map[string]json.RawMessage `json:"Data"`
		Metadata map[string]json.RawMessage `json:"Metadata"`
	}{inv.Data, inv.Metadata})
}

// Result is a handler's answer to an invocation. Property names are matched
// case-insensitively, as the host's deserializer does.
type Result struct {
	Outputs     map[string]json.RawMessage `json:"Outputs"`
	Logs        []string                   `json:"Logs"`
	ReturnValue json.RawMessage            `json:"ReturnValue"`
}

// newInvocation starts an invocation of f with the "sys" metadata entry the WebJobs SDK adds
// to every binding context (SystemBindingData): MethodName, UtcNow with seven fractional digits
// and a Z, and RandGuid.
func newInvocation(f *Function, now time.Time) *Invocation {
	sys, _ := marshalHost(struct {
		MethodName string `json:"MethodName"`
		UtcNow     string `json:"UtcNow"`
		RandGuid   string `json:"RandGuid"`
	}{f.Name, now.UTC().Format("2006-01-02T15:04:05.0000000Z"), newGUID()})
	return &Invocation{
		Function: f.Name,
		ID:       newGUID(),
		Data:     map[string]json.RawMessage{},
		Metadata: map[string]json.RawMessage{"sys": sys},
	}
}

// setMetadata adds a binding-data entry the way the host does: null values are dropped, and so
// are keys ending in "trigger" (their value is already in Data).
func (inv *Invocation) setMetadata(key string, v json.RawMessage) {
	if v == nil || string(v) == "null" || strings.HasSuffix(strings.ToLower(key), "trigger") {
		return
	}
	// The SDK's binding data is a case-insensitive dictionary: a later key that differs only in
	// case replaces the value and keeps the first spelling (derived from the WebJobs SDK's
	// binding data, not observed on a live host).
	for k := range inv.Metadata {
		if strings.EqualFold(k, key) {
			inv.Metadata[k] = v
			return
		}
	}
	inv.Metadata[key] = v
}

// hostString encodes a .NET string value as the host does: JsonConvert.SerializeObject(value)
// put into the body as a string, so the wire form is a JSON string holding a JSON string literal.
func hostString(s string) json.RawMessage {
	inner, _ := marshalHost(s)
	out, _ := marshalHost(string(inner))
	return out
}

// hostToken encodes a JSON value the host holds as a JToken: an object stays an object; any
// other value (string, number, bool, array) is serialized and sent as a string (the host's
// GetHttpScriptInvocationContextValue).
func hostToken(v json.RawMessage) (json.RawMessage, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		return nil, nil
	}
	if v[0] == '{' {
		return compactHost(v)
	}
	c, err := compactHost(v)
	if err != nil {
		return nil, err
	}
	return marshalHost(string(c))
}

// hostTimeOffset formats a DateTimeOffset as the host's re-parse of ToString() leaves it: whole
// seconds and a +00:00 offset.
func hostTimeOffset(t time.Time) json.RawMessage {
	b, _ := marshalHost(t.UTC().Format("2006-01-02T15:04:05-07:00"))
	return b
}

// marshalHost marshals like Newtonsoft does by default: no HTML escaping of <, > and &.
func marshalHost(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func compactHost(v json.RawMessage) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newGUID returns a random (version 4) GUID in the lower-case form .NET prints.
func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// InvocationError is a failed invocation: the handler answered with a non-2xx status, an answer
// the host cannot read, or not at all.
type InvocationError struct {
	Function string
	// StatusCode is the handler's HTTP status, or 0 when there was no usable answer.
	StatusCode int
	Err        error
}

func (e *InvocationError) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("invoking %s: handler answered %d: %v", e.Function, e.StatusCode, e.Err)
	}
	return fmt.Sprintf("invoking %s: %v", e.Function, e.Err)
}

func (e *InvocationError) Unwrap() error { return e.Err }

// send posts the invocation to the handler and reads its answer with the host's rules
// (its DefaultHttpWorkerService): a non-2xx status fails the invocation before the body is read; a non-empty
// body must be application/json or text/json; an empty 2xx body is an invocation the real host
// never completes (it waits for functionTimeout), which devhost reports at once as a failure.
func (h *Host) send(ctx context.Context, inv *Invocation) (*Result, error) {
	body, err := inv.Body()
	if err != nil {
		return nil, &InvocationError{Function: inv.Function, Err: fmt.Errorf("encoding the request: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, h.functionTimeout)
	defer cancel()
	if err := h.worker.awaitReady(ctx); err != nil {
		return nil, &InvocationError{Function: inv.Function, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.worker.baseURL()+"/"+inv.Function, bytes.NewReader(body))
	if err != nil {
		return nil, &InvocationError{Function: inv.Function, Err: err}
	}
	h.setHostHeaders(req.Header, inv.ID)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	h.recordSent(inv)
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within functionTimeout %s: %w", h.functionTimeout, err)
		}
		return nil, &InvocationError{Function: inv.Function, Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &InvocationError{Function: inv.Function, StatusCode: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	h.log.Debug("invocation answered", "function", inv.Function, "invocationId", inv.ID, "status", resp.StatusCode, "elapsed", time.Since(start))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The host calls EnsureSuccessStatusCode before it reads the body: Logs are ignored.
		return nil, &InvocationError{Function: inv.Function, StatusCode: resp.StatusCode, Err: errors.New(summarize(raw))}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, &InvocationError{Function: inv.Function, StatusCode: resp.StatusCode,
			Err: errors.New("empty body with a 2xx status: the real host never completes such an invocation (answer at least {})")}
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/json" && mt != "text/json" {
		return nil, &InvocationError{Function: inv.Function, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("Content-Type %q: the host reads only application/json or text/json", resp.Header.Get("Content-Type"))}
	}
	var res Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, &InvocationError{Function: inv.Function, StatusCode: resp.StatusCode, Err: fmt.Errorf("answer is not a JSON object: %w", err)}
	}
	for _, line := range res.Logs {
		h.log.Info(line, "function", inv.Function, "invocationId", inv.ID)
	}
	return &res, nil
}

// setHostHeaders sets the headers the host adds to every request to the handler.
func (h *Host) setHostHeaders(hdr http.Header, invocationID string) {
	hdr.Set("X-Azure-Functions-InvocationId", invocationID)
	hdr.Set("X-Azure-Functions-HostVersion", h.hostVersion)
	hdr.Set("User-Agent", "Azure-Functions-Host/"+h.hostVersion)
}

// summarize shortens a failure body for a log line or an error.
func summarize(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// outputValues returns the values the output bindings receive (the host's
// HttpScriptInvocationResultExtensions): a $return
// binding gets ReturnValue; without one, an object ReturnValue's properties override Outputs.
func outputValues(f *Function, res *Result) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for k, v := range res.Outputs {
		out[k] = v
	}
	rv := bytes.TrimSpace(res.ReturnValue)
	hasReturn := false
	for _, b := range f.Bindings {
		if b.Name == "$return" {
			hasReturn = true
		}
	}
	if hasReturn {
		if len(rv) > 0 && string(rv) != "null" {
			out["$return"] = rv
		}
	} else if len(rv) > 0 && rv[0] == '{' {
		var props map[string]json.RawMessage
		if json.Unmarshal(rv, &props) == nil {
			for k, v := range props {
				out[k] = v
			}
		}
	}
	return out
}

// queueMessages turns an output value into queue message bodies as the host's queue collector
// does (FunctionBinding.BindAsyncCollectorAsync): a non-binary string that is valid
// base64 is decoded first; an object becomes its indented JSON text; an array (or a string
// holding a JSON array) becomes one message per element.
func queueMessages(v json.RawMessage, binary bool) ([][]byte, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		return nil, nil
	}
	switch v[0] {
	case '{':
		return [][]byte{indentJSON(v)}, nil
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(v, &elems); err != nil {
			return nil, err
		}
		var out [][]byte
		for _, e := range elems {
			e = bytes.TrimSpace(e)
			var s string
			switch {
			case len(e) > 0 && e[0] == '"':
				_ = json.Unmarshal(e, &s)
				out = append(out, []byte(s))
			case len(e) > 0 && e[0] == '{':
				out = append(out, indentJSON(e))
			default:
				out = append(out, e)
			}
		}
		return out, nil
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, err
		}
		if !binary {
			if b, err := base64.StdEncoding.Strict().DecodeString(s); err == nil && s != "" {
				// The host hands the decoded bytes to the collector, which writes them as they are.
				return [][]byte{b}, nil
			}
		}
		t := strings.TrimSpace(s)
		if (strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}")) || (strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]")) {
			if json.Valid([]byte(t)) {
				return queueMessages(json.RawMessage(t), binary)
			}
		}
		return [][]byte{[]byte(s)}, nil
	default:
		return [][]byte{v}, nil
	}
}

func indentJSON(v json.RawMessage) []byte {
	var buf bytes.Buffer
	if err := json.Indent(&buf, v, "", "  "); err != nil {
		return v
	}
	return buf.Bytes()
}

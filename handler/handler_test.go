package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"dpsdeprov/deprovision"
)

// fakeEngine stands in for the engine below the handler's own Engine interface, so the
// protocol is tested fast; the real engine is driven by the app's end-to-end tests.
type fakeEngine struct {
	mu        sync.Mutex
	submitted []deprovision.Request
	rejected  map[string]string // event id → reason
	fail      error
	ops       map[string]*deprovision.Operation
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{rejected: map[string]string{}, ops: map[string]*deprovision.Operation{}}
}

func (f *fakeEngine) Submit(ctx context.Context, req deprovision.Request) (*deprovision.Operation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	// Like the engine: one operation per (source, id); a redelivery returns it, and another
	// event reusing the id is journaled as a conflict and runs nothing.
	id := deprovision.OperationID(req.Source, req.EventID)
	if op, ok := f.ops[id]; ok {
		if c, ok := f.conflict(op, req, ""); ok {
			return c, nil
		}
		f.submitted = append(f.submitted, req)
		return op, nil
	}
	f.submitted = append(f.submitted, req)
	st := deprovision.StatusSucceeded
	if req.DryRun {
		st = deprovision.StatusPlanned
	}
	op := &deprovision.Operation{ID: id, Request: req, Status: st}
	f.ops[op.ID] = op
	return op, nil
}

func (f *fakeEngine) Reject(ctx context.Context, req deprovision.Request, reason string) (*deprovision.Operation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	id := deprovision.OperationID(req.Source, req.EventID)
	if op, ok := f.ops[id]; ok {
		if c, ok := f.conflict(op, req, reason); ok {
			return c, nil
		}
		return op, nil
	}
	f.rejected[req.EventID] = reason
	op := &deprovision.Operation{ID: id, Request: req, Status: deprovision.StatusRejected, Reason: reason}
	f.ops[id] = op
	return op, nil
}

// conflict does what the engine does when req reuses the id of stored with other content
// (deprovision.ReplayConflict); f.mu is held.
func (f *fakeEngine) conflict(stored *deprovision.Operation, req deprovision.Request, extra string) (*deprovision.Operation, bool) {
	creq, reason, ok := deprovision.ReplayConflict(stored, req)
	if !ok {
		return nil, false
	}
	if extra != "" {
		reason += "; besides, " + extra
	}
	id := deprovision.OperationID(creq.Source, creq.EventID)
	if op, ok := f.ops[id]; ok {
		return op, true
	}
	f.rejected[creq.EventID] = reason
	op := &deprovision.Operation{ID: id, Request: creq, Status: deprovision.StatusRejected, Reason: reason}
	f.ops[id] = op
	return op, true
}

func (f *fakeEngine) Operation(ctx context.Context, id string) (*deprovision.Operation, []deprovision.StepRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	op, ok := f.ops[id]
	if !ok {
		return nil, nil, fmt.Errorf("operation %s: %w", id, deprovision.ErrNotFound)
	}
	return op, []deprovision.StepRecord{{OperationID: id, Index: 0, Kind: deprovision.StepDisableEnrollment, Target: "dps/enrollments/x", Outcome: deprovision.StepDone, HTTPStatus: 200}}, nil
}

func (f *fakeEngine) DeviceHistory(ctx context.Context, rid string) (*deprovision.DeviceState, []deprovision.OperationSummary, error) {
	return nil, nil, fmt.Errorf("device %s: %w", rid, deprovision.ErrNotFound)
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

type recordingCleaner struct{ got []TimerInfo }

func (r *recordingCleaner) Run(ctx context.Context, t TimerInfo) (string, error) {
	r.got = append(r.got, t)
	return "resumed 0 operations", nil
}

type recordingWorker struct {
	got  []QueueMessage
	fail error
}

func (r *recordingWorker) Apply(ctx context.Context, m QueueMessage) error {
	r.got = append(r.got, m)
	return r.fail
}

func newTestServer(t *testing.T, eng *fakeEngine, o Options) *httptest.Server {
	t.Helper()
	o.Engine = eng
	if o.Clock == nil {
		o.Clock = fixedClock(time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC))
	}
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// post sends an invocation as the host does and checks what the host requires of every answer.
func post(t *testing.T, srv *httptest.Server, function string, body []byte) (int, result) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/"+function, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", "11111111-2222-3333-4444-555555555555")
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1037.0.0")
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1037.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q: the host fails any invocation answered with another type", ct)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		t.Fatal("empty body: the host would wait for the function timeout")
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return resp.StatusCode, r
}

func TestReadinessProbe(t *testing.T) {
	srv := newTestServer(t, newFakeEngine(), Options{})
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || len(b) == 0 {
		t.Fatalf("GET / = %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}

func TestDeviceEventsBothSchemas(t *testing.T) {
	for _, name := range []string{"eventgrid.json", "cloudevent.json"} {
		t.Run(name, func(t *testing.T) {
			eng := newFakeEngine()
			srv := newTestServer(t, eng, Options{})
			status, r := post(t, srv, FunctionDeviceEvents, fixture(t, name))
			if status != 200 {
				t.Fatalf("status %d, logs %v", status, r.Logs)
			}
			if len(eng.submitted) != 1 {
				t.Fatalf("submitted %d, rejected %v", len(eng.submitted), eng.rejected)
			}
			req := eng.submitted[0]
			if req.RegistrationID != "sensor-042" || req.EventID == "" || req.Source == "" {
				t.Fatalf("request = %+v", req)
			}
			if len(r.Logs) == 0 || !strings.Contains(r.Logs[0], "sensor-042") {
				t.Fatalf("logs = %v", r.Logs)
			}
		})
	}
}

func TestDeviceEventAsStringAndArray(t *testing.T) {
	var env struct {
		Data map[string]json.RawMessage
	}
	_ = json.Unmarshal(fixture(t, "cloudevent.json"), &env)
	ev := env.Data["event"]
	asString, _ := json.Marshal(string(ev))
	asArray := fmt.Sprintf(`[%s,%s]`, ev, bytes.Replace(ev, []byte(`"b0e7a1f2`), []byte(`"second`), 1))
	arrayString, _ := json.Marshal(asArray)
	for name, data := range map[string]string{"string": string(asString), "array": asArray, "array in a string": string(arrayString)} {
		eng := newFakeEngine()
		srv := newTestServer(t, eng, Options{})
		status, r := post(t, srv, FunctionDeviceEvents, []byte(`{"Data":{"event":`+data+`},"Metadata":{}}`))
		want := 1
		if strings.Contains(name, "array") {
			want = 2
		}
		if status != 200 || len(eng.submitted) != want {
			t.Fatalf("%s: status %d, submitted %d, logs %v", name, status, len(eng.submitted), r.Logs)
		}
	}
}

func TestDeviceEventTransientFailsInvocation(t *testing.T) {
	eng := newFakeEngine()
	eng.fail = deprovision.Transient(errors.New("journal unavailable"))
	srv := newTestServer(t, eng, Options{})
	status, _ := post(t, srv, FunctionDeviceEvents, fixture(t, "eventgrid.json"))
	if status < 300 {
		t.Fatalf("status %d: a transient failure must fail the invocation so Event Grid redelivers", status)
	}
}

func TestDeviceEventPermanentIsJournaledAnd2xx(t *testing.T) {
	cases := map[string]struct{ event, wantID, want string }{
		"unknown type":  {`{"specversion":"1.0","type":"device-exploded","source":"/s","id":"x1","data":{"registrationId":"a"}}`, "x1", "not a deprovisioning event type"},
		"unreadable CE": {`{"specversion":"1.0","source":"/s","id":"x2"}`, "x2", "type"},
		"not an event":  {`"just text"`, "sha256-", "neither a JSON object"},
		"no id at all":  {`{"specversion":"1.0","type":"device-lost","source":"/s"}`, "sha256-", "id"},
	}
	for name, c := range cases {
		eng := newFakeEngine()
		srv := newTestServer(t, eng, Options{})
		status, r := post(t, srv, FunctionDeviceEvents, []byte(`{"Data":{"event":`+c.event+`},"Metadata":{}}`))
		if status != 200 {
			t.Fatalf("%s: status %d", name, status)
		}
		if len(eng.submitted) != 0 || len(eng.rejected) != 1 {
			t.Fatalf("%s: submitted %d, rejected %v", name, len(eng.submitted), eng.rejected)
		}
		for id, reason := range eng.rejected {
			if !strings.HasPrefix(id, c.wantID) || !strings.Contains(reason, c.want) {
				t.Fatalf("%s: rejected %s for %q", name, id, reason)
			}
		}
		if len(r.Logs) == 0 || !strings.Contains(r.Logs[0], "rejected") {
			t.Fatalf("%s: logs %v", name, r.Logs)
		}
	}
	// The same unreadable bytes, delivered twice, land on the same operation key.
	eng := newFakeEngine()
	srv := newTestServer(t, eng, Options{})
	for range 2 {
		post(t, srv, FunctionDeviceEvents, []byte(`{"Data":{"event":"garbage"},"Metadata":{}}`))
	}
	if len(eng.rejected) != 1 {
		t.Fatalf("redelivery made %d keys", len(eng.rejected))
	}
}

func TestGroupWorkAndCleanup(t *testing.T) {
	eng := newFakeEngine()
	w := &recordingWorker{}
	cl := &recordingCleaner{}
	srv := newTestServer(t, eng, Options{GroupWorker: w, Cleaner: cl})
	if status, r := post(t, srv, FunctionGroupWork, fixture(t, "queue.json")); status != 200 || len(w.got) != 1 {
		t.Fatalf("group work: %d %v", status, r.Logs)
	}
	if string(w.got[0].Body) != `{"operationId":"op-1","page":3}` {
		t.Fatalf("body %s", w.got[0].Body)
	}
	w.fail = deprovision.Transient(errors.New("hub throttled"))
	if status, _ := post(t, srv, FunctionGroupWork, fixture(t, "queue.json")); status < 300 {
		t.Fatalf("transient group work answered %d", status)
	}
	// A permanent failure fails the invocation too, so the message ends in the poison queue
	// rather than being completed unapplied.
	w.fail = errors.New("group gone")
	if status, _ := post(t, srv, FunctionGroupWork, fixture(t, "queue.json")); status < 300 {
		t.Fatalf("permanent group work answered %d", status)
	}
	bad := []byte(`{"Data":{"message":"\"not json\""},"Metadata":{"DequeueCount":"1","Id":"\"m\""}}`)
	w.fail = nil
	if status, _ := post(t, srv, FunctionGroupWork, bad); status != 200 {
		t.Fatalf("text message answered %d (the worker decides what text means)", status)
	}
	if status, r := post(t, srv, FunctionCleanup, fixture(t, "timer.json")); status != 200 || len(cl.got) != 1 || !strings.Contains(strings.Join(r.Logs, " "), "resumed") {
		t.Fatalf("cleanup: %d %v", status, r.Logs)
	}
}

// httpRes decodes the `res` output of an Operations invocation.
func httpRes(t *testing.T, r result) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(r.Outputs[BindingResult])
	var res httpResponse
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Headers["Content-Type"] == "" || !strings.HasPrefix(res.Headers["Content-Type"], "application/json") {
		t.Fatalf("res headers %v: the host defaults to text/plain", res.Headers)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(res.Body), &body); err != nil {
		t.Fatalf("res body %q: %v", res.Body, err)
	}
	return res.StatusCode, body
}

func TestOperationsPostIsDryRunByDefault(t *testing.T) {
	eng := newFakeEngine()
	srv := newTestServer(t, eng, Options{})
	status, r := post(t, srv, FunctionOperations, fixture(t, "http-post.json"))
	if status != 200 {
		t.Fatalf("invocation status %d", status)
	}
	code, body := httpRes(t, r)
	if code != 200 || body["status"] != string(deprovision.StatusPlanned) || body["dryRun"] != true {
		t.Fatalf("res %d %v", code, body)
	}
	if len(eng.submitted) != 1 || !eng.submitted[0].DryRun || eng.submitted[0].Source != APISource {
		t.Fatalf("submitted %+v", eng.submitted)
	}
	// "dryRun": false runs it; then GET the operation by route and by query.
	real := bytes.Replace(fixture(t, "http-post.json"), []byte(`\"reason\":\"audit finding\"`), []byte(`\"reason\":\"audit finding\",\"dryRun\":false,\"id\":\"req-7\"`), 1)
	_, r = post(t, srv, FunctionOperations, real)
	code, body = httpRes(t, r)
	if code != 200 || body["status"] != string(deprovision.StatusSucceeded) {
		t.Fatalf("res %d %v", code, body)
	}
	opID := body["operationId"].(string)
	get := bytes.ReplaceAll(fixture(t, "http-get.json"), []byte("OPID"), []byte(opID))
	_, r = post(t, srv, FunctionOperations, get)
	code, body = httpRes(t, r)
	if code != 200 || body["operationId"] != opID || len(body["journal"].([]any)) != 1 {
		t.Fatalf("GET res %d %v", code, body)
	}
	q := `{"Data":{"req":{"Url":"http://x/api/deprovision","Method":"GET","Query":{"operation":"nope"},"Headers":{},"Identities":[]}},"Metadata":{}}`
	_, r = post(t, srv, FunctionOperations, []byte(q))
	if code, _ = httpRes(t, r); code != 404 {
		t.Fatalf("unknown operation: %d", code)
	}
	q = `{"Data":{"req":{"Url":"http://x/api/deprovision","Method":"GET","Query":{"device":"sensor-9"},"Headers":{},"Identities":[]}},"Metadata":{}}`
	_, r = post(t, srv, FunctionOperations, []byte(q))
	if code, _ = httpRes(t, r); code != 404 {
		t.Fatalf("unknown device: %d", code)
	}
	bad := `{"Data":{"req":{"Method":"POST","Query":{},"Headers":{},"Body":"{\"registrationId\":\"a\"}"}},"Metadata":{}}`
	_, r = post(t, srv, FunctionOperations, []byte(bad))
	if code, body = httpRes(t, r); code != 400 || !strings.Contains(body["error"].(string), "intent") {
		t.Fatalf("no intent: %d %v", code, body)
	}
}

func TestUnknownFunctionAnswersJSON(t *testing.T) {
	srv := newTestServer(t, newFakeEngine(), Options{})
	resp, err := http.Post(srv.URL+"/Nope", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// The HTTP request object's body arrives as a string (the host's form); a body already parsed
// into an object, and the whole request held in a string, are accepted too.
func TestOperationsRequestForms(t *testing.T) {
	eng := newFakeEngine()
	srv := newTestServer(t, eng, Options{})
	obj := `{"Url":"http://x/api/deprovision/requests","Method":"POST","Query":{},"Headers":{},"Params":{"kind":"requests"},"Body":{"intent":"lost","registrationId":"sensor-1"}}`
	asString, _ := json.Marshal(obj)
	for name, req := range map[string]string{"body as object": obj, "request as string": string(asString)} {
		_, r := post(t, srv, FunctionOperations, []byte(`{"Data":{"req":`+req+`},"Metadata":{}}`))
		if code, body := httpRes(t, r); code != 200 || body["registrationId"] != "sensor-1" || body["dryRun"] != true {
			t.Fatalf("%s: %d %v", name, code, body)
		}
	}
}

type panickyCleaner struct{}

func (panickyCleaner) Run(context.Context, TimerInfo) (string, error) { panic("boom") }

func TestPanicAnswersJSON500(t *testing.T) {
	srv := newTestServer(t, newFakeEngine(), Options{Cleaner: panickyCleaner{}})
	if status, _ := post(t, srv, FunctionCleanup, fixture(t, "timer.json")); status != http.StatusInternalServerError {
		t.Fatalf("status %d", status)
	}
}

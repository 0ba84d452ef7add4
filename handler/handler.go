// Package handler speaks the Azure Functions custom-handler protocol: it decodes the host's
// invocation envelopes (Event Grid events in either schema, queue messages, timer info, HTTP
// requests), turns events into deprovisioning requests, hands them to the engine, and answers
// the host in the only form it accepts: `Content-Type: application/json` and a non-empty body.
//
// Failure semantics (docs/app.md): a transient failure answers non-2xx, so the invocation fails
// and Event Grid (or the queue) delivers again; a permanent one is journaled as rejected and
// answered 2xx, so nothing is retried in vain and nothing is dropped silently.
package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"

	"dpsdeprov/deprovision"
	"dpsdeprov/internal/hostlog"
)

// Function (folder) names and their binding names, as in each function.json.
const (
	FunctionDeviceEvents = "DeviceEvents"
	FunctionGroupWork    = "GroupWork"
	// FunctionBurstWork carries out the revocations a burst deferred (burst.go).
	FunctionBurstWork  = "BurstWork"
	FunctionCleanup    = "Cleanup"
	FunctionOperations = "Operations"
	// FunctionSignedInOperations serves the Operations routes to signed-in callers (auth.go).
	FunctionSignedInOperations = "SignedInOperations"

	BindingEvent   = "event"
	BindingMessage = "message"
	BindingTimer   = "timer"
	BindingRequest = "req"
	BindingResult  = "res"
)

// Engine is what the handler needs of the deprovisioning engine; *deprovision.Engine
// satisfies it.
type Engine interface {
	// Submit starts or resumes the operation of req. A refusal comes back as an operation
	// with status rejected; an error is a failure to decide (transient when IsTransient). A
	// request reusing the (source, id) of another event comes back as its own rejected
	// conflict operation (deprovision.ReplayConflict), whose ID is not OperationID(source, id).
	Submit(ctx context.Context, req deprovision.Request) (*deprovision.Operation, error)
	// Reject journals req as rejected for reason, before policy ever sees it (a conflict too,
	// as for Submit).
	Reject(ctx context.Context, req deprovision.Request, reason string) (*deprovision.Operation, error)
	// Operation returns an operation and its step records (ErrNotFound when unknown).
	Operation(ctx context.Context, id string) (*deprovision.Operation, []deprovision.StepRecord, error)
	// DeviceHistory returns a device's journal row (nil when never touched) and its operations.
	DeviceHistory(ctx context.Context, registrationID string) (*deprovision.DeviceState, []deprovision.OperationSummary, error)
}

// GroupWorker applies one message of group-wide work (a batch of group members).
type GroupWorker interface {
	Apply(ctx context.Context, msg QueueMessage) error
}

// Cleaner runs the scheduled cleanup (resuming stopped operations, and more in later issues).
type Cleaner interface {
	Run(ctx context.Context, t TimerInfo) (string, error)
}

// Options configure a Handler. Engine and Admission are required; a nil GroupWorker or Cleaner
// makes its function answer that it is not configured (a failed invocation).
type Options struct {
	Engine      Engine
	GroupWorker GroupWorker
	Cleaner     Cleaner
	Admission   Admission
	Logger      *slog.Logger
	Clock       deprovision.Clock
	// MaxBodyBytes bounds an invocation body (default 4 MiB: Event Grid events are at most 1 MB).
	MaxBodyBytes int64
	// Lifecycle keeps what IoT Hub lifecycle events say (last seen, delete confirmations);
	// nil acknowledges them without recording.
	Lifecycle LifecycleRecorder
	// Access says who may call the Operations endpoints and do what (auth.go); the zero
	// value is an app without App Service authentication.
	Access Access
	// Failures journals an event whose handling panicked as a failed operation, so that the
	// invocation still succeeds and the event is not delivered again into the same panic;
	// nil fails the invocation instead.
	Failures FailureRecorder
	// MaxConcurrentEvents bounds how many events of one invocation's event array are handled
	// at once (default 8). The host sends one event per invocation; an array comes only from
	// a binding with cardinality "many", or from something posting to the handler directly.
	MaxConcurrentEvents int
}

// Handler is the custom handler's http.Handler.
type Handler struct {
	o   Options
	mux *http.ServeMux
}

// New returns the custom handler.
func New(o Options) (*Handler, error) {
	if o.Engine == nil {
		return nil, errors.New("handler: Options.Engine is required")
	}
	if o.Admission.Events.byKey == nil {
		o.Admission.Events = DefaultEventTypes()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = deprovision.SystemClock{}
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	o.Access = o.Access.withDefaults()
	if o.MaxConcurrentEvents <= 0 {
		o.MaxConcurrentEvents = 8
	}
	h := &Handler{o: o, mux: http.NewServeMux()}
	// The host probes GET / until anything answers, then pings it for status (the host's
	// DefaultHttpWorkerService.IsWorkerReady and HttpWorkerChannel.GetWorkerStatusAsync).
	h.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	h.mux.HandleFunc("POST /"+FunctionDeviceEvents, h.invoke(FunctionDeviceEvents, h.deviceEvents))
	h.mux.HandleFunc("POST /"+FunctionGroupWork, h.invoke(FunctionGroupWork, h.groupWork))
	h.mux.HandleFunc("POST /"+FunctionBurstWork, h.invoke(FunctionBurstWork, h.burstWork))
	h.mux.HandleFunc("POST /"+FunctionCleanup, h.invoke(FunctionCleanup, h.cleanup))
	h.mux.HandleFunc("POST /"+FunctionOperations, h.invoke(FunctionOperations, h.operations))
	h.mux.HandleFunc("POST /"+FunctionSignedInOperations, h.invoke(FunctionSignedInOperations, h.signedInOperations))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no function answers %s %s", r.Method, r.URL.Path)})
	})
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// result is the host's invocation response: {"Outputs":…,"Logs":…,"ReturnValue":…}.
type result struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// call is one invocation in progress: its envelope, its log lines and its outputs.
type call struct {
	id      string
	inv     invocation
	log     *slog.Logger
	mu      sync.Mutex
	lines   []string
	outputs map[string]any
}

// logf records a line for the host (Logs, shown under the function in Application Insights)
// and for the process log.
func (c *call) logf(level slog.Level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.log.Log(context.Background(), level, msg)
	c.mu.Lock()
	c.lines = append(c.lines, msg)
	c.mu.Unlock()
}

// note records text for the host (Logs, shown under the function in Application Insights)
// and a structured line for the process log: msg, a short fixed message to query on, with
// attrs, text as detail, and what ctx says of the event (withEvent). The process log is what
// docs/app.md's queries read.
func (c *call) note(ctx context.Context, level slog.Level, text, msg string, attrs ...any) {
	c.log.Log(ctx, level, msg, append(attrs, "detail", text)...)
	c.mu.Lock()
	c.lines = append(c.lines, text)
	c.mu.Unlock()
}

// maxLogValue bounds each identity value withEvent puts on log lines: a refused event's fields
// may be long, and a log line need only find them.
const maxLogValue = 256

// withEvent returns ctx carrying what identifies req on every log line written with it (the
// engine's too): its operation, event, source, device or group, and intent.
func withEvent(ctx context.Context, req deprovision.Request) context.Context {
	return hostlog.With(ctx,
		"operation", deprovision.OperationID(req.Source, req.EventID),
		"event", cut(req.EventID, maxLogValue), "source", cut(req.Source, maxLogValue),
		"device", cut(req.RegistrationID, maxLogValue), "group", cut(req.EnrollmentGroupID, maxLogValue),
		"intent", string(req.Intent))
}

// invocationFunc handles one decoded invocation; a non-nil error fails it (non-2xx).
type invocationFunc func(ctx context.Context, c *call) error

// run calls f, turning a panic into a failed invocation: the host then gets a JSON 500 it
// can log, instead of a dropped connection.
func (c *call) run(ctx context.Context, f invocationFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("invocation panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error: %v", p)
		}
	}()
	return f(ctx, c)
}

func (h *Handler) invoke(function string, f invocationFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := &call{id: r.Header.Get("X-Azure-Functions-InvocationId"), outputs: map[string]any{}}
		c.log = h.o.Logger.With("function", function, "invocationId", c.id)
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes))
		if err == nil {
			err = json.Unmarshal(body, &c.inv)
			if err != nil {
				err = fmt.Errorf("the invocation body is not the host's {\"Data\":…,\"Metadata\":…} JSON: %w", err)
			}
		}
		if err == nil {
			err = c.run(r.Context(), f)
		}
		status := http.StatusOK
		if err != nil {
			// Any non-2xx fails the invocation; its Logs are ignored by the host, so the
			// process log carries the reason. A transient failure is a warning: the same
			// invocation comes again (Event Grid, the queue) and usually succeeds.
			status = http.StatusInternalServerError
			level := slog.LevelError
			if deprovision.IsTransient(err) {
				level = slog.LevelWarn
			}
			c.note(r.Context(), level, fmt.Sprintf("invocation failed: %v", err), "invocation failed", "error", err.Error(), "transient", deprovision.IsTransient(err))
		}
		c.mu.Lock()
		res := result{Outputs: c.outputs, Logs: c.lines}
		if res.Logs == nil {
			res.Logs = []string{}
		}
		c.mu.Unlock()
		writeJSON(w, status, res)
	}
}

// writeJSON answers with an explicit JSON content type: net/http would sniff JSON as
// text/plain, and the host fails an invocation answered text/plain (its formatter reads
// application/json and text/json only).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil || len(b) == 0 {
		b = []byte(`{}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// deviceEvents handles one Event Grid invocation. The value is normally one event object; a
// JSON string holding it, or an array of events (cardinality "many"), is accepted too.
func (h *Handler) deviceEvents(ctx context.Context, c *call) error {
	raw, err := c.inv.binding(BindingEvent)
	if err != nil {
		return h.rejectUnreadable(ctx, c, nil, err)
	}
	doc, err := decodeJSON(raw)
	if err != nil {
		return h.rejectUnreadable(ctx, c, raw, fmt.Errorf("the event: %w", err))
	}
	if doc[0] != '[' {
		return h.handleEvent(ctx, c, doc)
	}
	var events []json.RawMessage
	if err := json.Unmarshal(doc, &events); err != nil {
		return h.rejectUnreadable(ctx, c, doc, fmt.Errorf("the event array: %w", err))
	}
	// The host runs events concurrently; so do we, at most MaxConcurrentEvents at a time, and
	// the invocation fails if any failed transiently (the whole batch is redelivered, and
	// finished operations are not redone). A panic in one event is handled in handleEvent and
	// never takes the others down.
	return each(ctx, len(events), h.o.MaxConcurrentEvents, "event", func(i int) error {
		return h.handleEvent(ctx, c, events[i])
	})
}

// each runs f(0) … f(n−1) concurrently, at most limit at a time, and joins their errors; one
// not started because ctx ended fails naming what it is. f handles its own panics.
func each(ctx context.Context, n, limit int, what string, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	slots := make(chan struct{}, max(1, limit))
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			errs[i] = fmt.Errorf("%s %d of %d not started: %w", what, i+1, n, ctx.Err())
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// rejectUnreadable journals an invocation whose event cannot be found at all, keyed by a hash
// of what was posted (or the invocation id), so that it is not dropped silently.
func (h *Handler) rejectUnreadable(ctx context.Context, c *call, raw []byte, cause error) error {
	id := "invocation-" + c.id
	if len(raw) > 0 {
		id = fallbackID(raw)
	}
	req := deprovision.Request{EventID: id, Source: "unknown-source", EventTime: h.o.Clock.Now()}
	return h.journalRejection(ctx, c, req, cause.Error())
}

// journalRejection journals req as rejected for reason. An event reusing the id of another
// is journaled by the engine as a conflict under its own name (deprovision.ReplayConflict),
// and logged with that operation's reason.
func (h *Handler) journalRejection(ctx context.Context, c *call, req deprovision.Request, reason string) error {
	op, err := h.o.Engine.Reject(ctx, boundRejected(req), reason)
	if err != nil {
		if deprovision.IsTransient(err) {
			return fmt.Errorf("journaling the rejection of event %s from %s: %w", req.EventID, req.Source, err)
		}
		// Not even the journal takes it: fail the invocation so that Event Grid keeps it
		// (and dead-letters it in the end) rather than lose it here.
		return fmt.Errorf("journaling the rejection of event %s from %s (%s): %w", req.EventID, req.Source, reason, err)
	}
	if op.ID != deprovision.OperationID(req.Source, req.EventID) {
		reason = op.Reason // a conflict: the engine's reason says with what
	}
	c.note(ctx, slog.LevelWarn, fmt.Sprintf("event %s from %s rejected: %s (operation %s)", req.EventID, req.Source, reason, op.ID),
		"event rejected", "operation", op.ID, "status", op.Status, "reason", reason)
	return nil
}

// handleEvent handles one event. A panic anywhere below it is recovered here and journaled
// as a failed operation of the event (see Options.Failures), under the identity read so far.
func (h *Handler) handleEvent(ctx context.Context, c *call, raw json.RawMessage) (err error) {
	now := h.o.Clock.Now()
	// req is what is known of the event, filled in as it is read.
	req := deprovision.Request{EventID: fallbackID(raw), Source: "unknown-source", EventTime: now}
	defer func() {
		if p := recover(); p != nil {
			err = h.journalPanic(ctx, c, req, p)
		}
	}()
	ev, err := DecodeEvent(raw)
	if strings.TrimSpace(ev.ID) != "" {
		req.EventID = ev.ID
	}
	if strings.TrimSpace(ev.Source) != "" {
		req.Source = ev.Source
	}
	req.EventType = ev.Type
	ctx = withEvent(ctx, req)
	if err != nil {
		return h.journalRejection(ctx, c, req, err.Error())
	}
	if IsLifecycleEvent(ev.Type) {
		return h.lifecycle(ctx, c, ev)
	}
	norm, rej := h.o.Admission.Normalize(ev, now)
	if strings.TrimSpace(norm.Source) == "" {
		norm.Source = "unknown-source"
	}
	req = norm
	ctx = withEvent(ctx, req)
	if rej != nil {
		return h.journalRejection(ctx, c, req, rej.Reason)
	}
	return h.submit(ctx, c, req)
}

// journalPanic journals the event whose handling panicked with p as a failed operation and
// logs the stack. Without Options.Failures, or when the journal fails, the invocation fails
// (and is delivered again).
func (h *Handler) journalPanic(ctx context.Context, c *call, req deprovision.Request, p any) error {
	c.log.ErrorContext(ctx, "event handling panicked", "panic", redact(abbreviate(fmt.Sprint(p), 500)), "stack", string(debug.Stack()))
	reason := fmt.Sprintf("internal error while handling the event: %s; the handler stopped here (its log has the stack) and what was done before is in the steps: a person must look at this device", redact(abbreviate(fmt.Sprint(p), 200)))
	if h.o.Failures == nil {
		return fmt.Errorf("event %s from %s: %s", req.EventID, req.Source, reason)
	}
	op, err := h.o.Failures.RecordFailure(context.WithoutCancel(ctx), boundRejected(req), reason)
	if err != nil {
		return fmt.Errorf("journaling the failure of event %s from %s (%s): %w", req.EventID, req.Source, reason, err)
	}
	c.note(ctx, slog.LevelError, fmt.Sprintf("event %s from %s failed: %s (operation %s %s)", req.EventID, req.Source, reason, op.ID, op.Status),
		"event failed", "operation", op.ID, "status", op.Status)
	return nil
}

// submit hands req to the engine and logs the outcome. Only a transient failure is returned.
func (h *Handler) submit(ctx context.Context, c *call, req deprovision.Request) error {
	op, err := h.o.Engine.Submit(ctx, req)
	if err != nil {
		if deprovision.IsTransient(err) {
			return fmt.Errorf("event %s from %s (%s %s): %w", req.EventID, req.Source, req.Intent, subjectOf(req), err)
		}
		return h.journalRejection(ctx, c, req, err.Error())
	}
	if op.ID != deprovision.OperationID(req.Source, req.EventID) {
		// The id was already another event's: the engine journaled this one as a conflict.
		c.note(ctx, slog.LevelWarn, fmt.Sprintf("event %s from %s rejected: %s (operation %s)", req.EventID, req.Source, op.Reason, op.ID),
			"event rejected", "operation", op.ID, "status", op.Status, "reason", op.Reason)
		return nil
	}
	reason := ""
	if op.Reason != "" {
		reason = ": " + op.Reason
	}
	c.note(ctx, statusLevel(op.Status), fmt.Sprintf("event %s from %s: %s %s → operation %s %s%s", req.EventID, req.Source, req.Intent, subjectOf(req), op.ID, op.Status, reason),
		"event handled", "operation", op.ID, "status", op.Status, "reason", op.Reason)
	return nil
}

// statusLevel is the log level of an operation that reached status: a failure is an error (a
// device may be left half done, and an alert on errors should fire), a refusal or an operation
// held for a person's approval a warning, the rest information.
func statusLevel(s deprovision.Status) slog.Level {
	switch s {
	case deprovision.StatusFailed:
		return slog.LevelError
	case deprovision.StatusRejected, deprovision.StatusAwaitingApproval:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

func subjectOf(req deprovision.Request) string {
	if req.RegistrationID != "" {
		return "device " + req.RegistrationID
	}
	return "group " + req.EnrollmentGroupID
}

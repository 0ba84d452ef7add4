package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"dpsdeprov/deprovision"
	"dpsdeprov/opsapi"
	"dpsdeprov/outcome"
)

// APISource is the source of requests posted to the Operations endpoint; list it in an
// ALLOWED_SOURCES_* setting to let callers of the endpoint ask for that intent.
const APISource = "urn:dpsdeprov:operations-api"

// httpRequest is the host's HTTP request object in payload mode (built by the host's
// GetRequestAsJObject: Url, Method, Query, Headers, Params, Body).
type httpRequest struct {
	URL    string             `json:"Url"`
	Method string             `json:"Method"`
	Query  map[string]flexStr `json:"Query"`
	Params map[string]flexStr `json:"Params"`
	// Headers map names to arrays of values (a plain string is taken too).
	Headers map[string]flexStrs `json:"Headers"`
	Body    json.RawMessage     `json:"Body"`
}

// flexStr is a string value that may arrive double-encoded or as another JSON scalar.
type flexStr string

// UnmarshalJSON reads a string at any encoding level; other values leave it empty.
func (s *flexStr) UnmarshalJSON(b []byte) error {
	t, err := decodeText(b)
	if err != nil {
		return nil
	}
	*s = flexStr(t)
	return nil
}

func (r *httpRequest) param(names ...string) string {
	for _, n := range names {
		for _, m := range []map[string]flexStr{r.Params, r.Query} {
			for k, v := range m {
				if strings.EqualFold(k, n) && v != "" {
					return string(v)
				}
			}
		}
	}
	return ""
}

// body returns the request body text: the host sends it as a string; an object (some host
// versions parse JSON bodies) is taken as its JSON text.
func (r *httpRequest) body() []byte {
	b := bytes.TrimSpace(r.Body)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return nil
	}
	if b[0] == '{' || b[0] == '[' {
		return b
	}
	s, err := decodeText(b)
	if err != nil {
		return nil
	}
	return []byte(s)
}

// httpResponse is the `res` output, which the host's HTTP binding turns into the response: it writes body raw and
// defaults to text/plain, so the content type is set here.
type httpResponse struct {
	StatusCode int               `json:"statusCode"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
}

func (c *call) respond(status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	c.mu.Lock()
	c.outputs[BindingResult] = httpResponse{StatusCode: status, Headers: map[string]string{"Content-Type": "application/json; charset=utf-8"}, Body: string(b)}
	c.mu.Unlock()
}

// apiError is the body of every answer that is not a view (opsapi.Error).
type apiError opsapi.Error

// operations serves the Operations function, reached with a function key: GET an operation,
// GET a device's history, POST a request (a dry run unless the body says "dryRun": false).
// Route: deprovision/{kind?}/{id?}. Who may do what is auth.go's.
func (h *Handler) operations(ctx context.Context, c *call) error {
	return h.serveOperations(ctx, c, true)
}

// signedInOperations serves the SignedInOperations function: the same routes under
// signed-in/deprovision/, for callers that App Service authentication signed in (no key).
func (h *Handler) signedInOperations(ctx context.Context, c *call) error {
	return h.serveOperations(ctx, c, false)
}

// serveOperations serves both; viaKey is true for the function the host guards with a key.
func (h *Handler) serveOperations(ctx context.Context, c *call, viaKey bool) error {
	raw, err := c.inv.binding(BindingRequest)
	if err != nil {
		c.respond(http.StatusBadRequest, apiError{err.Error()})
		return nil
	}
	doc, err := decodeJSON(raw)
	var r httpRequest
	if err == nil {
		err = json.Unmarshal(doc, &r)
	}
	if err != nil {
		c.respond(http.StatusBadRequest, apiError{"the HTTP request object cannot be read: " + err.Error()})
		return nil
	}
	kind := strings.ToLower(r.param("kind"))
	id := r.param("id")
	method := strings.ToUpper(r.Method)
	var who caller
	if method == http.MethodGet || method == http.MethodPost {
		who = h.identify(&r, viaKey)
		if !h.admit(ctx, c, who, actionOf(method, kind), method+" "+r.route()) {
			return nil
		}
	}
	switch method {
	case http.MethodGet:
		switch {
		case kind == "operations" && id != "", r.param("operation") != "":
			if id == "" || kind != "operations" {
				id = r.param("operation")
			}
			h.getOperation(ctx, c, id)
		case kind == "devices" && id != "", r.param("device") != "":
			if id == "" || kind != "devices" {
				id = r.param("device")
			}
			h.getDevice(ctx, c, id)
		case kind == "findings":
			h.getFindings(ctx, c, &r) // the cleanup's findings (cleanup.go)
		default:
			c.respond(http.StatusBadRequest, apiError{"ask for GET deprovision/operations/{id} (or ?operation=ID), GET deprovision/devices/{registrationId} (or ?device=ID) or GET deprovision/findings"})
		}
	case http.MethodPost:
		if kind == "cleanup" {
			c.logf(slog.LevelInfo, "cleanup pass %s run by hand by %s", id, who.describe())
			h.postCleanup(ctx, c, id, r.body())
			return nil
		}
		if kind == "approvals" || kind == "denials" {
			h.approve(ctx, c, &r, id, kind == "denials", who)
			return nil
		}
		if kind != "" && kind != "requests" {
			c.respond(http.StatusNotFound, apiError{fmt.Sprintf("POST goes to deprovision/requests, deprovision/approvals/{operationId} or deprovision/denials/{operationId}, not deprovision/%s", kind)})
			return nil
		}
		h.postRequest(ctx, c, r.body(), who)
	default:
		c.respond(http.StatusMethodNotAllowed, apiError{fmt.Sprintf("method %s is not served; use GET or POST", r.Method)})
	}
	return nil
}

func (c *call) respondError(what string, err error) {
	switch {
	case errors.Is(err, deprovision.ErrNotFound):
		c.respond(http.StatusNotFound, apiError{what + ": not found"})
	case deprovision.IsTransient(err):
		c.note(context.Background(), slog.LevelWarn, fmt.Sprintf("%s: %v", what, err), "operations request failed", "error", err.Error(), "transient", true)
		c.respond(http.StatusServiceUnavailable, apiError{what + ": the journal is not available; try again"})
	default:
		c.note(context.Background(), slog.LevelError, fmt.Sprintf("%s: %v", what, err), "operations request failed", "error", err.Error())
		c.respond(http.StatusInternalServerError, apiError{what + ": " + err.Error()})
	}
}

// The views the Operations function answers with are defined in package opsapi, which its
// client and the dpsdeprov command share.
type (
	// OperationView is the answer to GET deprovision/operations/{id}.
	OperationView = opsapi.Operation
	// StepView is one journaled step.
	StepView = opsapi.Step
	// DeviceView is the answer to GET deprovision/devices/{registrationId}.
	DeviceView = opsapi.Device
	// DeviceStateView is the state this system left a device in.
	DeviceStateView = opsapi.DeviceState
	// OperationHistoryView is one line of a device's history.
	OperationHistoryView = opsapi.OperationHistory
)

func (h *Handler) getOperation(ctx context.Context, c *call, id string) {
	op, steps, err := h.o.Engine.Operation(ctx, id)
	if err != nil {
		c.respondError("operation "+id, err)
		return
	}
	c.respond(http.StatusOK, opsapi.NewOperation(op, steps))
}

func (h *Handler) getDevice(ctx context.Context, c *call, rid string) {
	ds, hist, err := h.o.Engine.DeviceHistory(ctx, rid)
	if err != nil && !errors.Is(err, deprovision.ErrNotFound) {
		c.respondError("device "+rid, err)
		return
	}
	v := opsapi.NewDevice(rid, ds, hist)
	if v.State == nil && len(v.Operations) == 0 {
		c.respond(http.StatusNotFound, apiError{fmt.Sprintf("device %s: this system has no record of it", rid)})
		return
	}
	c.respond(http.StatusOK, v)
}

// postRequest submits a request from the body: the event data fields (eventFields), plus
// `intent` (or an event `type`), an optional `id` that makes the request idempotent, and
// `dryRun` (default true: a POST changes nothing unless it says "dryRun": false).
func (h *Handler) postRequest(ctx context.Context, c *call, body []byte, who caller) {
	if len(body) == 0 {
		c.respond(http.StatusBadRequest, apiError{"the request body is empty; post a JSON object such as {\"intent\":\"compromised\",\"registrationId\":\"sensor-042\"}"})
		return
	}
	f, err := parseFields(body)
	if err != nil {
		c.respond(http.StatusBadRequest, apiError{err.Error()})
		return
	}
	var extra struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &extra)
	now := h.o.Clock.Now()
	req := deprovision.Request{EventID: extra.ID, Source: APISource, EventTime: now, SubmittedBy: who.who}
	if req.EventID == "" {
		req.EventID = "http-" + c.id
	}
	switch {
	case f.Intent != "":
		in, ok := ParseIntent(f.Intent)
		if !ok {
			c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("intent %q is not one of %s", f.Intent, intentList())})
			return
		}
		req.Intent, req.EventType = in, "intent:"+string(in)
	case f.Type != "":
		in, ok := h.o.Admission.Events.Intent(f.Type)
		if !ok {
			c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("type %q is not a deprovisioning event type (known: %s)", f.Type, strings.Join(h.o.Admission.Events.Known(), ", "))})
			return
		}
		req.Intent, req.EventType = in, f.Type
	default:
		c.respond(http.StatusBadRequest, apiError{"the request names no intent: add \"intent\" (" + intentList() + ")"})
		return
	}
	dry := f.DryRun == nil || *f.DryRun
	req, rej := h.o.Admission.build(req, f, dry, now)
	ctx = withEvent(ctx, req)
	// An `id` reused with other content (a dry run, then the same id with "dryRun": false) is
	// a conflict: the engine journals it as rejected under its own id and returns that
	// operation, answered 422 like any rejection. The real run needs a new id.
	var op *deprovision.Operation
	if rej != nil {
		op, err = h.o.Engine.Reject(ctx, boundRejected(req), rej.Reason)
	} else {
		op, err = h.o.Engine.Submit(ctx, req)
	}
	if err != nil {
		c.respondError("request "+req.EventID, err)
		return
	}
	status := http.StatusOK
	switch {
	case op.Status == deprovision.StatusRejected:
		status = http.StatusUnprocessableEntity
	case !op.Status.Terminal():
		status = http.StatusAccepted
	}
	c.note(ctx, statusLevel(op.Status), fmt.Sprintf("request %s (%s %s, dry run %t) by %s → operation %s %s", req.EventID, req.Intent, subjectOf(req), req.DryRun, who.describe(), op.ID, op.Status),
		"request handled", "operation", op.ID, "status", op.Status, "reason", op.Reason, "dryRun", req.DryRun, "by", who.describe())
	c.respond(status, outcome.Summarize(op))
}

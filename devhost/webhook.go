package devhost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Event Grid webhook headers and event types (the Event Grid extension's HttpRequestProcessor).
const (
	headerEventType     = "aeg-event-type"
	eventTypeValidation = "SubscriptionValidation"
	eventTypeNotify     = "Notification"
	eventTypeUnsub      = "Unsubscribe"
	validationEventType = "Microsoft.EventGrid.SubscriptionValidationEvent"
)

// serveEventGridWebhook is the Event Grid extension's webhook, as HttpRequestProcessor and
// EventGridExtensionConfigProvider.ProcessAsync answer it: the validation handshakes are answered
// here and never reach the handler; a notification is split into one concurrent invocation per
// event; 202 when all succeed, 500 with the first failure otherwise.
func (h *Host) serveEventGridWebhook(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		// CloudEvents abuse protection: allow the requesting origin when it is an Event Grid host.
		origin := r.Header.Get("WebHook-Request-Origin")
		if !strings.HasSuffix(strings.ToLower(origin), "eventgrid.azure.net") {
			origin = "eventgrid.azure.net"
		}
		w.Header().Set("WebHook-Allowed-Origin", origin)
		w.WriteHeader(http.StatusOK)
		return
	}
	name := r.URL.Query().Get("functionName")
	f := h.app.Function(name)
	if f == nil || !f.isTrigger(TypeEventGridTrigger) || f.Disabled {
		http.Error(w, fmt.Sprintf("cannot find function: '%s'", name), http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	events, err := splitEvents(body)
	kind := r.Header.Get(headerEventType)
	switch {
	case strings.EqualFold(kind, eventTypeValidation):
		if err != nil || len(events) == 0 {
			http.Error(w, "validation request without an event: "+errString(err), http.StatusBadRequest)
			return
		}
		code, err := validationCode(events[0])
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.log.Info("Event Grid subscription validated", "function", f.Name)
		writeJSON(w, http.StatusOK, map[string]string{"validationResponse": code})
	case strings.EqualFold(kind, eventTypeUnsub):
		w.WriteHeader(http.StatusAccepted)
	case strings.EqualFold(kind, eventTypeNotify):
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := h.invokeEvents(r.Context(), f, events); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		http.Error(w, fmt.Sprintf("%s header must be %s, %s or %s; got %q", headerEventType,
			eventTypeNotify, eventTypeValidation, eventTypeUnsub, kind), http.StatusBadRequest)
	}
}

func errString(err error) string {
	if err == nil {
		return "empty body"
	}
	return err.Error()
}

// splitEvents parses a webhook body: an array of events, or one event that is wrapped into an
// array. Each event must be a JSON object.
func splitEvents(body []byte) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, fmt.Errorf("empty body")
	}
	var events []json.RawMessage
	if body[0] == '[' {
		if err := json.Unmarshal(body, &events); err != nil {
			return nil, fmt.Errorf("body is not a JSON array of events: %w", err)
		}
	} else {
		events = []json.RawMessage{body}
	}
	for i, e := range events {
		e = bytes.TrimSpace(e)
		if len(e) == 0 || e[0] != '{' || !json.Valid(e) {
			return nil, fmt.Errorf("event %d is not a JSON object", i)
		}
		events[i] = e
	}
	return events, nil
}

// validationCode reads data.validationCode of a validation event: data is an object in the Event
// Grid schema and a string holding JSON in the CloudEvents handshake the extension accepts.
func validationCode(event json.RawMessage) (string, error) {
	var ev struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(event, &ev); err != nil {
		return "", fmt.Errorf("validation event: %w", err)
	}
	data := bytes.TrimSpace(ev.Data)
	if len(data) > 0 && data[0] == '"' {
		var s string
		_ = json.Unmarshal(data, &s)
		data = []byte(s)
	}
	var d struct {
		ValidationCode string `json:"validationCode"`
	}
	if err := json.Unmarshal(data, &d); err != nil || d.ValidationCode == "" {
		return "", fmt.Errorf("validation event has no data.validationCode")
	}
	return d.ValidationCode, nil
}

// eventInvocation builds the invocation for one Event Grid event: the event unchanged as an
// object in Data[<binding name>] (a key given twice merged as the host's parser merges it, see
// lastWins), and Metadata {"data": <event data>, "sys"}.
func (h *Host) eventInvocation(f *Function, event json.RawMessage) (*Invocation, error) {
	inv := newInvocation(f, time.Now())
	event, err := lastWins(event)
	if err != nil {
		return nil, err
	}
	obj, err := compactHost(event)
	if err != nil {
		return nil, err
	}
	inv.Data[f.Trigger.Name] = obj
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(event, &fields); err != nil {
		return nil, err
	}
	if d, ok := fields["data"]; ok {
		enc, err := hostToken(d)
		if err != nil {
			return nil, err
		}
		inv.setMetadata("data", enc)
	}
	return inv, nil
}

// invokeEvents invokes f once per event, all at once, and returns the first failure.
func (h *Host) invokeEvents(ctx context.Context, f *Function, events []json.RawMessage) error {
	errs := make([]error, len(events))
	var wg sync.WaitGroup
	for i, e := range events {
		inv, err := h.eventInvocation(f, e)
		if err != nil {
			errs[i] = err
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The request's context ends if the caller (Event Grid) gives up; the host keeps the
			// invocation running regardless, so devhost does too.
			_, errs[i] = h.run(context.WithoutCancel(ctx), f, inv)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// serveAdminInvoke runs a non-HTTP function by hand, as POST /admin/functions/<name> with
// {"input": "..."} does on the real host: 202 at once, the invocation runs in the background.
// The input is the event JSON for an Event Grid function and is ignored for a timer.
func (h *Host) serveAdminInvoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	f := h.app.Function(r.PathValue("name"))
	if f == nil {
		http.Error(w, fmt.Sprintf("cannot find function: '%s'", r.PathValue("name")), http.StatusNotFound)
		return
	}
	var body struct {
		Input string `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil && err != io.EOF {
		http.Error(w, "body must be {\"input\": \"...\"}: "+err.Error(), http.StatusBadRequest)
		return
	}
	var inv *Invocation
	switch {
	case f.isTrigger(TypeEventGridTrigger):
		events, err := splitEvents([]byte(body.Input))
		if err != nil || len(events) != 1 {
			http.Error(w, "input must be one Event Grid event as a JSON string: "+errString(err), http.StatusBadRequest)
			return
		}
		if inv, err = h.eventInvocation(f, events[0]); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	case f.isTrigger(TypeTimerTrigger):
		t := h.timerFor(f)
		if t == nil {
			http.Error(w, "timer is not running", http.StatusConflict)
			return
		}
		go t.fire(time.Now(), false)
		w.WriteHeader(http.StatusAccepted)
		return
	default:
		http.Error(w, fmt.Sprintf("devhost runs %s functions by hand only through their trigger", f.Trigger.Type), http.StatusBadRequest)
		return
	}
	go func() { _, _ = h.run(h.ctx, f, inv) }()
	w.WriteHeader(http.StatusAccepted)
}

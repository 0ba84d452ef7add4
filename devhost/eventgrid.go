package devhost

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultRetrySchedule is Event Grid's delivery retry schedule (best effort, without its jitter):
// 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, then hourly. One version of the delivery-and-retry
// page lists 3 h, 6 h and 12 h steps after the first hour instead; hourly is the reading under
// which the default of 30 attempts fits the default 24-hour time to live.
var DefaultRetrySchedule = []time.Duration{
	10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour,
}

// Event Grid's defaults for a subscription's retry policy.
const (
	DefaultMaxDeliveryAttempts = 30
	DefaultEventTTL            = 24 * time.Hour
	// maxPublishBytes is the topic's limit for one publish request (and one event).
	maxPublishBytes = 1 << 20
	// responseTimeout is how long Event Grid waits for the endpoint before it counts a failure.
	responseTimeout = 30 * time.Second
	// apiVersion is the publish API version azeventgrid uses.
	apiVersion = "2018-01-01"
)

// EventGridOptions configure the Event Grid topic stand-in.
type EventGridOptions struct {
	// Addr is the HTTPS listen address; default "127.0.0.1:0" (a free port).
	Addr string
	// Topics are the custom topics to serve.
	Topics []TopicOptions
	// Key is the topics' access key (base64, as Azure issues them); a random one when empty.
	Key string
	// HostNames are extra DNS names for the server certificate (127.0.0.1 and localhost are always
	// in it), for clients that keep a real topic host name and redirect the connection.
	HostNames []string
	// CAFile, if set, receives the PEM of the CA that signed the server certificate.
	CAFile string
	// RetrySchedule replaces [DefaultRetrySchedule]; its last step repeats.
	RetrySchedule []time.Duration
	// TimeScale multiplies every delay of the retry policy, the event time to live and the
	// status-specific minimum delays, so that a day of retries can be watched in seconds; default 1.
	TimeScale float64
	// MaxDeliveryAttempts defaults to 30; EventTTL to 24 h (before TimeScale).
	MaxDeliveryAttempts int
	EventTTL            time.Duration
	// DeadLetterFile, if set, receives events that are given up on, one JSON object a line;
	// without it they are dropped (and logged), as Event Grid does without a dead-letter destination.
	DeadLetterFile string
	// OnDelivery, if set, is called after every delivery attempt. It must not block.
	OnDelivery func(DeliveryAttempt)
	// OnReceive, if set, is called with every event a topic without subscriptions receives.
	OnReceive func(topic string, event json.RawMessage)
}

// TopicOptions name a topic and the eventGridTrigger functions subscribed to it.
type TopicOptions struct {
	Name string
	// Subscribers are function names; a topic without subscribers keeps what it receives.
	Subscribers []string
}

// DeliveryAttempt is one attempt to deliver an event to a subscription.
type DeliveryAttempt struct {
	Topic, Subscription, EventID string
	// Attempt counts from 1.
	Attempt    int
	StatusCode int
	Err        error
	// Done is true when no further attempt follows: delivered, or dead-lettered/dropped.
	Done, Delivered bool
	// NextAttempt is the delay before the next attempt when Done is false.
	NextAttempt time.Duration
}

type eventGrid struct {
	h       *Host
	opts    EventGridOptions
	key     []byte
	keyText string
	ca      []byte
	srv     *http.Server
	ln      net.Listener
	addr    string
	topics  map[string]*topic
	client  *http.Client
	pending atomic.Int64
	dlMu    sync.Mutex
}

type topic struct {
	name     string
	subs     []string
	mu       sync.Mutex
	received []json.RawMessage
}

func (t *topic) resourceID() string {
	return "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/devhost/providers/Microsoft.EventGrid/topics/" + t.name
}

// newEventGrid checks the options, makes the key and the TLS certificate, writes the CA file and
// opens the listener; it runs before the handler starts, so that the handler can read the CA
// file and reach the topics from its first moment.
func newEventGrid(h *Host, opts EventGridOptions) (*eventGrid, error) {
	eg := &eventGrid{h: h, opts: opts, topics: map[string]*topic{}, client: &http.Client{Timeout: responseTimeout}}
	if eg.opts.TimeScale <= 0 {
		eg.opts.TimeScale = 1
	}
	if len(eg.opts.RetrySchedule) == 0 {
		eg.opts.RetrySchedule = DefaultRetrySchedule
	}
	if eg.opts.MaxDeliveryAttempts <= 0 {
		eg.opts.MaxDeliveryAttempts = DefaultMaxDeliveryAttempts
	}
	if eg.opts.MaxDeliveryAttempts > 30 {
		return nil, fmt.Errorf("event grid: MaxDeliveryAttempts %d: Event Grid allows 1 to 30", eg.opts.MaxDeliveryAttempts)
	}
	if eg.opts.EventTTL <= 0 {
		eg.opts.EventTTL = DefaultEventTTL
	}
	eg.keyText = opts.Key
	if eg.keyText == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		eg.keyText = base64.StdEncoding.EncodeToString(b)
	}
	key, err := base64.StdEncoding.DecodeString(eg.keyText)
	if err != nil {
		return nil, errors.New("event grid: the topic key must be base64, as Azure issues them")
	}
	eg.key = key
	for _, to := range opts.Topics {
		name := strings.ToLower(to.Name)
		if name == "" || strings.ContainsAny(name, "/?#. ") {
			return nil, fmt.Errorf("event grid: topic name %q: letters, digits and hyphens only", to.Name)
		}
		for _, s := range to.Subscribers {
			f := h.app.Function(s)
			if f == nil || !f.isTrigger(TypeEventGridTrigger) {
				return nil, fmt.Errorf("event grid: topic %s: subscriber %q is not an eventGridTrigger function of the app", to.Name, s)
			}
		}
		eg.topics[name] = &topic{name: name, subs: to.Subscribers}
	}
	cert, caPEM, err := selfSigned(opts.HostNames)
	if err != nil {
		return nil, err
	}
	eg.ca = caPEM
	if opts.CAFile != "" {
		if err := os.WriteFile(opts.CAFile, caPEM, 0o644); err != nil {
			return nil, fmt.Errorf("event grid: writing CA file: %w", err)
		}
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("event grid: listening on %s: %w", addr, err)
	}
	eg.addr = ln.Addr().String()
	eg.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	return eg, nil
}

// serve serves the topics and subscribes each subscriber after the validation handshakes.
func (eg *eventGrid) serve(ctx context.Context) error {
	h := eg.h
	mux := http.NewServeMux()
	mux.HandleFunc("POST /topics/{topic}/api/events", eg.servePublish)
	mux.HandleFunc("POST /api/events", eg.servePublish)
	mux.HandleFunc("GET /topics/{topic}/events", eg.serveReceived)
	eg.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := eg.srv.Serve(eg.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.fail(fmt.Errorf("event grid listener: %w", err))
		}
	}()
	// Creating a subscription to a webhook makes Event Grid validate the endpoint first; devhost
	// does the same for each subscriber, with both handshakes the Functions extension answers.
	for _, t := range eg.topics {
		for _, s := range t.subs {
			if err := eg.validate(ctx, s); err != nil {
				return fmt.Errorf("event grid: subscribing %s to topic %s: %w", s, t.name, err)
			}
		}
	}
	h.log.Info("event grid topics ready", "url", "https://"+eg.addr, "topics", len(eg.topics))
	return nil
}

// validate runs the subscription validation handshakes against a function's webhook: the Event
// Grid schema's SubscriptionValidation event and the CloudEvents OPTIONS request.
func (eg *eventGrid) validate(ctx context.Context, function string) error {
	code := newGUID()
	ev, _ := marshalHost([]map[string]any{{
		"id": newGUID(), "topic": "", "subject": "", "eventType": validationEventType,
		"eventTime": time.Now().UTC().Format(time.RFC3339Nano), "metadataVersion": "1", "dataVersion": "2",
		"data": map[string]string{"validationCode": code},
	}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, eg.h.WebhookURL(function), bytes.NewReader(ev))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(headerEventType, eventTypeValidation)
	resp, err := eg.client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		ValidationResponse string `json:"validationResponse"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || got.ValidationResponse != code {
		return fmt.Errorf("validation handshake failed: %d %s", resp.StatusCode, summarize(body))
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodOptions, eg.h.WebhookURL(function), nil)
	req.Header.Set("WebHook-Request-Origin", "eventgrid.azure.net")
	resp, err = eg.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("WebHook-Allowed-Origin") == "" {
		return fmt.Errorf("CloudEvents abuse-protection handshake failed: %d", resp.StatusCode)
	}
	return nil
}

func (eg *eventGrid) close() {
	if eg.srv == nil && eg.ln != nil {
		_ = eg.ln.Close()
	}
	if eg.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = eg.srv.Shutdown(sctx)
		cancel()
	}
}

// EventGridURL is the topics' base URL (https://127.0.0.1:<port>), or "" without topics.
func (h *Host) EventGridURL() string {
	if h.eg == nil {
		return ""
	}
	return "https://" + h.eg.addr
}

// TopicEndpoint is the publish endpoint of a topic, the URL to give azeventgrid.NewClient….
func (h *Host) TopicEndpoint(name string) string {
	if h.eg == nil {
		return ""
	}
	return "https://" + h.eg.addr + "/topics/" + strings.ToLower(name) + "/api/events"
}

// TopicKey is the topics' access key.
func (h *Host) TopicKey() string {
	if h.eg == nil {
		return ""
	}
	return h.eg.keyText
}

// EventGridCA is the PEM of the CA that signed the topics' server certificate.
func (h *Host) EventGridCA() []byte {
	if h.eg == nil {
		return nil
	}
	return h.eg.ca
}

// Received returns the events a topic without subscriptions has received, oldest first.
func (h *Host) Received(topicName string) []json.RawMessage {
	if h.eg == nil {
		return nil
	}
	t := h.eg.topics[strings.ToLower(topicName)]
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]json.RawMessage(nil), t.received...)
}

// PendingDeliveries is the number of event deliveries still being attempted or waiting to retry.
func (h *Host) PendingDeliveries() int {
	if h.eg == nil {
		return 0
	}
	return int(h.eg.pending.Load())
}

// publishError is an Event Grid error answer.
func publishError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (eg *eventGrid) topicFor(r *http.Request) *topic {
	if name := r.PathValue("topic"); name != "" {
		return eg.topics[strings.ToLower(name)]
	}
	// A client that keeps the real host name (<topic>.<region>-1.eventgrid.azure.net) is routed
	// by the host name's first label.
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	first, _, _ := strings.Cut(host, ".")
	return eg.topics[strings.ToLower(first)]
}

// servePublish accepts a publish request as a custom topic does (POST …/api/events?api-version=
// 2018-01-01): authenticated, at most 1 MB, Event Grid schema (an array) with application/json,
// or CloudEvents 1.0 with application/cloudevents-batch+json (an array) or
// application/cloudevents+json (one event). It answers 200 with an empty body.
func (eg *eventGrid) servePublish(w http.ResponseWriter, r *http.Request) {
	t := eg.topicFor(r)
	if t == nil {
		publishError(w, http.StatusNotFound, "NotFound", "no such topic; publish to /topics/<name>/api/events")
		return
	}
	if err := eg.authorize(r); err != nil {
		publishError(w, http.StatusUnauthorized, "Unauthorized", err.Error())
		return
	}
	if v := r.URL.Query().Get("api-version"); v != apiVersion {
		publishError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("api-version must be %s (got %q)", apiVersion, v))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPublishBytes+1))
	if err != nil {
		publishError(w, http.StatusBadRequest, "BadRequest", "reading body: "+err.Error())
		return
	}
	if len(body) > maxPublishBytes {
		publishError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "the request exceeds 1 MB")
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var events []json.RawMessage
	var cloud bool
	switch mt {
	case "application/cloudevents-batch+json", "application/cloudevents+json":
		cloud = true
		events, err = parseCloudEvents(body, mt == "application/cloudevents+json")
	default:
		events, err = parseGridEvents(body, t)
	}
	if err != nil {
		publishError(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	publishTime := time.Now().UTC()
	for _, e := range events {
		if len(t.subs) == 0 {
			t.mu.Lock()
			t.received = append(t.received, e)
			t.mu.Unlock()
			eg.h.log.Info("topic received", "topic", t.name, "event", eventSummary(e))
			if eg.opts.OnReceive != nil {
				eg.opts.OnReceive(t.name, e)
			}
			continue
		}
		for _, s := range t.subs {
			eg.pending.Add(1)
			eg.h.wg.Add(1)
			go func() {
				defer eg.h.wg.Done()
				defer eg.pending.Add(-1)
				eg.deliver(t, s, e, cloud, publishTime)
			}()
		}
	}
	w.WriteHeader(http.StatusOK)
}

// eventSummary is a short, secret-free description of an event for the log.
func eventSummary(e json.RawMessage) string {
	var ev struct {
		ID, Type, EventType, Subject string
	}
	_ = json.Unmarshal(e, &ev)
	typ := ev.EventType
	if typ == "" {
		typ = ev.Type
	}
	return fmt.Sprintf("%s %s (id %s)", typ, ev.Subject, ev.ID)
}

// authorize checks aeg-sas-key (header or query) or an aeg-sas-token / Authorization:
// SharedAccessSignature token.
func (eg *eventGrid) authorize(r *http.Request) error {
	if k := r.Header.Get("aeg-sas-key"); k != "" || r.URL.Query().Get("aeg-sas-key") != "" {
		if k == "" {
			k = r.URL.Query().Get("aeg-sas-key")
		}
		if hmac.Equal([]byte(k), []byte(eg.keyText)) {
			return nil
		}
		return errors.New("the aeg-sas-key does not match the topic's key")
	}
	tok := r.Header.Get("aeg-sas-token")
	if a := r.Header.Get("Authorization"); tok == "" && strings.HasPrefix(a, "SharedAccessSignature ") {
		tok = strings.TrimPrefix(a, "SharedAccessSignature ")
	}
	if tok == "" {
		return errors.New("send the topic key in aeg-sas-key, or a SAS token in aeg-sas-token")
	}
	return eg.checkSAS(tok)
}

// checkSAS verifies an Event Grid SAS token "r={resource}&e={expiry}&s={signature}", where the
// signature is base64(HMAC-SHA256(base64decode(key), "r=…&e=…")) over the token's own encoded
// text, and the expiry is a US-format date ("1/2/2026 3:04:05 PM +00:00").
func (eg *eventGrid) checkSAS(tok string) error {
	i := strings.LastIndex(tok, "&s=")
	if i < 0 || !strings.HasPrefix(tok, "r=") || !strings.Contains(tok[:i], "&e=") {
		return errors.New("SAS token must be r=<resource>&e=<expiry>&s=<signature>")
	}
	unsigned, sigEnc := tok[:i], tok[i+3:]
	sig, err := url.QueryUnescape(sigEnc)
	if err != nil {
		return errors.New("SAS token signature is not URL-encoded")
	}
	m := hmac.New(sha256.New, eg.key)
	m.Write([]byte(unsigned))
	want := base64.StdEncoding.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return errors.New("SAS token signature does not match the topic's key")
	}
	vals, err := url.ParseQuery(unsigned)
	if err != nil {
		return errors.New("SAS token is not URL-encoded")
	}
	exp, err := parseSASExpiry(vals.Get("e"))
	if err != nil {
		return err
	}
	if time.Now().After(exp) {
		return fmt.Errorf("SAS token expired at %s", exp.Format(time.RFC3339))
	}
	res, err := url.Parse(vals.Get("r"))
	if err != nil || !strings.HasSuffix(strings.TrimSuffix(res.Path, "/"), "/api/events") {
		return errors.New("SAS token resource must be the topic's …/api/events endpoint")
	}
	return nil
}

func parseSASExpiry(s string) (time.Time, error) {
	for _, layout := range []string{"1/2/2006 3:04:05 PM -07:00", "1/2/2006 3:04:05 PM", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("SAS token expiry %q: want M/d/yyyy h:mm:ss tt +00:00", s)
}

// parseGridEvents checks an Event Grid schema publish body and stamps what the service stamps:
// topic, metadataVersion "1", and an empty dataVersion when absent.
func parseGridEvents(body []byte, t *topic) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '[' {
		return nil, errors.New("an Event Grid schema publish body must be a JSON array of events (for CloudEvents, send Content-Type application/cloudevents-batch+json)")
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("body is not an array of event objects: %w", err)
	}
	out := make([]json.RawMessage, 0, len(raw))
	for i, e := range raw {
		if _, ok := e["specversion"]; ok {
			if _, ok := e["eventType"]; !ok {
				return nil, fmt.Errorf("event %d looks like a CloudEvent: send it with Content-Type application/cloudevents-batch+json", i)
			}
		}
		for _, k := range []string{"id", "subject", "eventType", "eventTime"} {
			var s string
			if v, ok := e[k]; !ok || json.Unmarshal(v, &s) != nil || s == "" {
				return nil, fmt.Errorf("event %d: required string property %q is missing or empty", i, k)
			}
		}
		var et string
		_ = json.Unmarshal(e["eventTime"], &et)
		if _, err := time.Parse(time.RFC3339Nano, et); err != nil {
			return nil, fmt.Errorf("event %d: eventTime %q is not an ISO 8601 time", i, et)
		}
		if v, ok := e["topic"]; ok && string(v) != "null" {
			var s string
			_ = json.Unmarshal(v, &s)
			if s != "" && !strings.EqualFold(s, t.resourceID()) {
				return nil, fmt.Errorf("event %d: topic %q does not match the topic published to (%s)", i, s, t.resourceID())
			}
		}
		e["topic"], _ = marshalHost(t.resourceID())
		e["metadataVersion"] = json.RawMessage(`"1"`)
		if _, ok := e["dataVersion"]; !ok {
			e["dataVersion"] = json.RawMessage(`""`)
		}
		b, err := marshalHost(e)
		if err != nil {
			return nil, err
		}
		if len(b) > maxPublishBytes {
			return nil, fmt.Errorf("event %d exceeds 1 MB", i)
		}
		out = append(out, b)
	}
	return out, nil
}

// parseCloudEvents checks CloudEvents 1.0 (structured JSON): specversion "1.0", id, source, type.
// The events are kept byte for byte as published.
func parseCloudEvents(body []byte, single bool) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	var events []json.RawMessage
	if single {
		events = []json.RawMessage{body}
	} else if err := json.Unmarshal(body, &events); err != nil || len(body) == 0 || body[0] != '[' {
		return nil, errors.New("a CloudEvents batch must be a JSON array of events")
	}
	for i, e := range events {
		var ev map[string]json.RawMessage
		if err := json.Unmarshal(e, &ev); err != nil {
			return nil, fmt.Errorf("cloud event %d is not a JSON object", i)
		}
		var sv string
		_ = json.Unmarshal(ev["specversion"], &sv)
		if sv != "1.0" {
			return nil, fmt.Errorf("cloud event %d: specversion must be \"1.0\"", i)
		}
		for _, k := range []string{"id", "source", "type"} {
			var s string
			if json.Unmarshal(ev[k], &s) != nil || s == "" {
				return nil, fmt.Errorf("cloud event %d: required attribute %q is missing or empty", i, k)
			}
		}
		events[i], _ = compactHost(e)
	}
	return events, nil
}

// deliver delivers one event to one subscription until it succeeds or Event Grid would give up.
func (eg *eventGrid) deliver(t *topic, sub string, event json.RawMessage, cloud bool, published time.Time) {
	ctx := eg.h.ctx
	ttl := eg.scale(eg.opts.EventTTL)
	var id string
	var idObj struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(event, &idObj)
	id = idObj.ID
	for attempt := 1; ; attempt++ {
		status, err := eg.post(ctx, sub, event, cloud, attempt)
		if ctx.Err() != nil {
			return
		}
		rec := DeliveryAttempt{Topic: t.name, Subscription: sub, EventID: id, Attempt: attempt, StatusCode: status, Err: err}
		if err == nil && status >= 200 && status <= 204 {
			rec.Done, rec.Delivered = true, true
			eg.report(rec)
			return
		}
		reason := ""
		delay := eg.retryDelay(attempt, status)
		switch {
		case status == 400 || status == 413 || status == 401 || status == 403:
			reason = "NonRetriableStatusCode" // devhost's name; Event Grid does not retry these for webhooks
		case attempt >= eg.opts.MaxDeliveryAttempts:
			reason = "MaxDeliveryAttemptsExceeded"
		case time.Since(published)+delay > ttl:
			// Event Grid checks the time to live at the next scheduled attempt.
			reason = "TimeToLiveExceeded"
		}
		if reason != "" {
			// Dead-lettered before it is reported done: whoever sees it done finds the record.
			eg.deadLetter(t, sub, event, reason, attempt, status, err, published)
			rec.Done = true
			eg.report(rec)
			return
		}
		rec.NextAttempt = delay
		eg.report(rec)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

func (eg *eventGrid) report(a DeliveryAttempt) {
	l := eg.h.log.With("topic", a.Topic, "subscription", a.Subscription, "eventId", a.EventID, "attempt", a.Attempt, "status", a.StatusCode)
	switch {
	case a.Delivered:
		l.Debug("event delivered")
	case a.Done:
		l.Warn("event delivery given up", "err", a.Err)
	default:
		l.Info("event delivery failed; will retry", "in", a.NextAttempt, "err", a.Err)
	}
	if eg.opts.OnDelivery != nil {
		eg.opts.OnDelivery(a)
	}
}

func (eg *eventGrid) scale(d time.Duration) time.Duration {
	return time.Duration(float64(d) * eg.opts.TimeScale)
}

// retryDelay is the wait before attempt+1: the schedule's step, but at least the minimum Event
// Grid applies to the failure's status (404: 5 min, 408: 2 min, 503: 30 s, others 10 s).
func (eg *eventGrid) retryDelay(attempt, status int) time.Duration {
	s := eg.opts.RetrySchedule
	d := s[min(attempt-1, len(s)-1)]
	floor := 10 * time.Second
	switch status {
	case 404:
		floor = 5 * time.Minute
	case 408:
		floor = 2 * time.Minute
	case 503:
		floor = 30 * time.Second
	}
	return eg.scale(max(d, floor))
}

// post sends one delivery attempt as Event Grid does: Event Grid schema events as a one-element
// array with application/json, CloudEvents as one structured event with
// application/cloudevents+json, and the aeg-* headers.
func (eg *eventGrid) post(ctx context.Context, sub string, event json.RawMessage, cloud bool, attempt int) (int, error) {
	body := append(append([]byte("["), event...), ']')
	ct := "application/json"
	if cloud {
		body = event
		ct = "application/cloudevents+json; charset=utf-8"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, eg.h.WebhookURL(sub), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set(headerEventType, eventTypeNotify)
	req.Header.Set("aeg-subscription-name", strings.ToUpper(sub))
	req.Header.Set("aeg-delivery-count", strconv.Itoa(attempt-1))
	if !cloud {
		req.Header.Set("aeg-data-version", gridField(event, "dataVersion"))
		req.Header.Set("aeg-metadata-version", "1")
	}
	resp, err := eg.client.Do(req)
	if err != nil {
		return 0, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 204 {
		return resp.StatusCode, errors.New(summarize(msg))
	}
	return resp.StatusCode, nil
}

func gridField(event json.RawMessage, k string) string {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(event, &m)
	var s string
	_ = json.Unmarshal(m[k], &s)
	return s
}

// lastOutcome names a failed attempt's outcome the way dead-letter records do.
func lastOutcome(status int, err error) string {
	switch {
	case status == 400:
		return "BadRequest"
	case status == 401 || status == 403:
		return "Unauthorized"
	case status == 404:
		return "NotFound"
	case status == 408, status == 0 && err != nil && strings.Contains(err.Error(), "Timeout"):
		return "TimedOut"
	case status == 413:
		return "RequestEntityTooLarge"
	case status == 503:
		return "Busy"
	default:
		return "GenericError"
	}
}

// deadLetter appends the event with Event Grid's dead-letter properties to the dead-letter file,
// or drops it (logged) when there is none.
func (eg *eventGrid) deadLetter(t *topic, sub string, event json.RawMessage, reason string, attempts, status int, err error, published time.Time) {
	if eg.opts.DeadLetterFile == "" {
		eg.h.log.Warn("event dropped (no dead-letter file)", "topic", t.name, "subscription", sub, "reason", reason, "event", eventSummary(event))
		return
	}
	var rec map[string]json.RawMessage
	_ = json.Unmarshal(event, &rec)
	set := func(k string, v any) { rec[k], _ = marshalHost(v) }
	set("deadLetterReason", reason)
	set("deliveryAttempts", attempts)
	set("lastDeliveryOutcome", lastOutcome(status, err))
	set("lastHttpStatusCode", status)
	set("publishTime", published.Format(time.RFC3339Nano))
	set("lastDeliveryAttemptTime", time.Now().UTC().Format(time.RFC3339Nano))
	set("devhostTopic", t.name)
	set("devhostSubscription", sub)
	line, _ := marshalHost(rec)
	eg.dlMu.Lock()
	defer eg.dlMu.Unlock()
	f, ferr := os.OpenFile(eg.opts.DeadLetterFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if ferr != nil {
		eg.h.log.Error("writing dead-letter file", "err", ferr)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(line, '\n'))
	eg.h.log.Warn("event dead-lettered", "topic", t.name, "subscription", sub, "reason", reason, "event", eventSummary(event))
}

// serveReceived lists what a topic without subscriptions received, as a JSON array.
func (eg *eventGrid) serveReceived(w http.ResponseWriter, r *http.Request) {
	t := eg.topics[strings.ToLower(r.PathValue("topic"))]
	if t == nil {
		publishError(w, http.StatusNotFound, "NotFound", "no such topic")
		return
	}
	t.mu.Lock()
	events := append([]json.RawMessage{}, t.received...)
	t.mu.Unlock()
	writeJSON(w, http.StatusOK, events)
}

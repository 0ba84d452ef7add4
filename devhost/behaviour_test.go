package devhost

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/internal/testenv"
)

const eventFunction = `{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"event"}]}`

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startHost starts devhost on app with the given script and options.
func startHost(t *testing.T, app *testApp, sc script, extra map[string]string, opts Options) *Host {
	t.Helper()
	loaded, err := LoadApp(app.dir)
	if err != nil {
		t.Fatal(err)
	}
	opts.Settings = app.settings(sc, extra)
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	h, err := Start(context.Background(), loaded, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// deliveries collects delivery attempts.
type deliveries struct {
	mu sync.Mutex
	a  []DeliveryAttempt
}

func (d *deliveries) add(a DeliveryAttempt) { d.mu.Lock(); d.a = append(d.a, a); d.mu.Unlock() }

func (d *deliveries) forEvent(id string) []DeliveryAttempt {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []DeliveryAttempt
	for _, a := range d.a {
		if a.EventID == id {
			out = append(out, a)
		}
	}
	return out
}

func eventGridClient(t *testing.T, h *Host, topicName string) *azeventgrid.Client {
	t.Helper()
	c, err := azeventgrid.NewClientWithSharedKeyCredential(h.TopicEndpoint(topicName), azcore.NewKeyCredential(h.TopicKey()),
		&azeventgrid.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: topicClient(h)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A failed invocation makes the webhook answer 500, Event Grid redelivers on its (compressed)
// schedule until the handler succeeds, and an event that keeps failing is dead-lettered after
// the maximum number of attempts.
func TestEventGridRedeliversThenDeadLetters(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"DeviceEvents": eventFunction})
	var d deliveries
	dl := filepath.Join(t.TempDir(), "deadletter.jsonl")
	h := startHost(t, app, script{
		"DeviceEvents:flaky":  {{Status: 500, ContentType: "application/json", Body: `{"error":"transient"}`}, {Status: 503, ContentType: "text/plain", Body: "busy"}, {Status: 200, ContentType: "application/json", Body: `{}`}},
		"DeviceEvents:doomed": {{Status: 500, ContentType: "application/json", Body: `{}`}},
	}, nil, Options{EventGrid: &EventGridOptions{
		Topics:              []TopicOptions{{Name: "device-events", Subscribers: []string{"DeviceEvents"}}},
		TimeScale:           0.001,
		MaxDeliveryAttempts: 4,
		DeadLetterFile:      dl,
		OnDelivery:          d.add,
	}})
	c := eventGridClient(t, h, "device-events")
	ctx := context.Background()
	_, err := c.PublishCloudEvents(ctx, []messaging.CloudEvent{
		{ID: "ev-flaky", Source: "/test", Type: "device-lost", SpecVersion: "1.0", Subject: to.Ptr("devices/flaky"), Data: map[string]string{"registrationId": "flaky"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PublishEvents(ctx, []azeventgrid.Event{{
		ID: to.Ptr("ev-doomed"), Subject: to.Ptr("devices/doomed"), EventType: to.Ptr("device-lost"), EventTime: to.Ptr(time.Now()),
		DataVersion: to.Ptr("1.0"), Data: map[string]string{"registrationId": "doomed"},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "flaky event delivered", func() bool {
		a := d.forEvent("ev-flaky")
		return len(a) > 0 && a[len(a)-1].Done
	})
	got := d.forEvent("ev-flaky")
	if len(got) != 3 || got[0].StatusCode != 500 || got[1].StatusCode != 500 || !got[2].Delivered {
		t.Fatalf("flaky deliveries = %+v, want 500, 500, delivered", got)
	}
	invs := app.invocations(t, "DeviceEvents")
	var flaky int
	for _, r := range invs {
		var b struct {
			Data struct {
				Event map[string]any `json:"event"`
			}
			Metadata map[string]any
		}
		_ = json.Unmarshal(r.Body, &b)
		if b.Data.Event["id"] == "ev-flaky" {
			flaky++
			if b.Data.Event["specversion"] != "1.0" || b.Data.Event["source"] != "/test" {
				t.Errorf("CloudEvent not delivered unchanged: %v", b.Data.Event)
			}
			if d, _ := b.Metadata["data"].(map[string]any); d["registrationId"] != "flaky" {
				t.Errorf("Metadata.data = %v", b.Metadata["data"])
			}
		}
	}
	if flaky != 3 {
		t.Errorf("handler saw the flaky event %d times, want 3 (each redelivery invokes again)", flaky)
	}

	waitFor(t, "doomed event given up", func() bool {
		a := d.forEvent("ev-doomed")
		return len(a) > 0 && a[len(a)-1].Done
	})
	if a := d.forEvent("ev-doomed"); len(a) != 4 || a[3].Delivered {
		t.Fatalf("doomed deliveries = %+v, want 4 failed attempts", a)
	}
	lines := readLines(t, dl)
	if len(lines) != 1 {
		t.Fatalf("dead-letter file has %d lines, want 1", len(lines))
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["id"] != "ev-doomed" || rec["deadLetterReason"] != "MaxDeliveryAttemptsExceeded" || rec["deliveryAttempts"] != float64(4) ||
		rec["lastDeliveryOutcome"] != "GenericError" || rec["lastHttpStatusCode"] != float64(500) {
		t.Errorf("dead-letter record = %v", rec)
	}
	if h.PendingDeliveries() != 0 {
		t.Errorf("pending deliveries = %d after both events finished", h.PendingDeliveries())
	}
}

func readLines(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func webhookPost(t *testing.T, h *Host, fn, eventType, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.WebhookURL(fn), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if eventType != "" {
		req.Header.Set("aeg-event-type", eventType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The webhook answers the handshakes itself, splits batches into concurrent invocations, and
// answers 202 only when every invocation succeeded.
func TestWebhookProtocol(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"DeviceEvents": eventFunction})
	h := startHost(t, app, script{
		"DeviceEvents:failing-event": {{Status: 500, ContentType: "application/json", Body: `{}`}},
		"DeviceEvents:plaintext":     {{Status: 200, ContentType: "text/plain", Body: `{"Outputs":{}}`}},
		"DeviceEvents:empty":         {{Status: 200, ContentType: "application/json", Body: ``}},
	}, nil, Options{})

	code, body := webhookPost(t, h, "DeviceEvents", "SubscriptionValidation",
		`[{"id":"1","topic":"t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2024-05-01T12:00:00Z","data":{"validationCode":"abc-123"},"dataVersion":"2","metadataVersion":"1"}]`)
	if code != 200 || !strings.Contains(body, `"validationResponse":"abc-123"`) {
		t.Errorf("Event Grid schema handshake: %d %s", code, body)
	}
	code, body = webhookPost(t, h, "DeviceEvents", "SubscriptionValidation",
		`{"specversion":"1.0","id":"2","source":"s","type":"Microsoft.EventGrid.SubscriptionValidationEvent","data":"{\"validationCode\":\"ce-456\"}"}`)
	if code != 200 || !strings.Contains(body, `"validationResponse":"ce-456"`) {
		t.Errorf("CloudEvents handshake: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodOptions, h.WebhookURL("DeviceEvents"), nil)
	req.Header.Set("WebHook-Request-Origin", "eventgrid.azure.net")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("WebHook-Allowed-Origin") != "eventgrid.azure.net" {
		t.Errorf("OPTIONS: %d, WebHook-Allowed-Origin %q", resp.StatusCode, resp.Header.Get("WebHook-Allowed-Origin"))
	}
	if n := len(app.invocations(t, "DeviceEvents")); n != 0 {
		t.Errorf("handshakes reached the handler %d times; the host answers them itself", n)
	}
	if code, _ := webhookPost(t, h, "DeviceEvents", "", `[{"id":"x"}]`); code != 400 {
		t.Errorf("no aeg-event-type: %d, want 400", code)
	}
	if code, body := webhookPost(t, h, "NoSuchFunction", "Notification", `[{"id":"x"}]`); code != 404 || !strings.Contains(body, "cannot find function: 'NoSuchFunction'") {
		t.Errorf("unknown function: %d %s", code, body)
	}
	if code, _ := webhookPost(t, h, "DeviceEvents", "Unsubscribe", `[]`); code != 202 {
		t.Errorf("Unsubscribe: %d, want 202", code)
	}

	ev := func(id string) string {
		return `{"id":"` + id + `","topic":"t","subject":"s","eventType":"device-lost","eventTime":"2024-05-01T12:00:00Z","data":{"n":"` + id + `"},"dataVersion":"1","metadataVersion":"1"}`
	}
	if code, body := webhookPost(t, h, "DeviceEvents", "Notification", "["+ev("a1")+","+ev("a2")+","+ev("a3")+"]"); code != 202 {
		t.Errorf("batch of good events: %d %s, want 202", code, body)
	}
	if code, _ := webhookPost(t, h, "DeviceEvents", "Notification", ev("single")); code != 202 {
		t.Errorf("single object body: %d, want 202 (wrapped into an array)", code)
	}
	if code, _ := webhookPost(t, h, "DeviceEvents", "Notification", "["+ev("b1")+","+ev("failing-event")+","+ev("b3")+"]"); code != 500 {
		t.Errorf("batch with a failing event: %d, want 500", code)
	}
	if code, _ := webhookPost(t, h, "DeviceEvents", "Notification", "["+ev("plaintext")+"]"); code != 500 {
		t.Errorf("handler answering text/plain: %d, want 500 (the host cannot read it)", code)
	}
	if code, _ := webhookPost(t, h, "DeviceEvents", "Notification", "["+ev("empty")+"]"); code != 500 {
		t.Errorf("handler answering an empty 2xx: %d, want a failure", code)
	}
	seen := map[string]int{}
	for _, r := range app.invocations(t, "DeviceEvents") {
		var b struct {
			Data struct{ Event struct{ ID string } }
		}
		_ = json.Unmarshal(r.Body, &b)
		seen[b.Data.Event.ID]++
		// The envelope rules hold for every invocation, with or without the shared reference.
		checkEnvelope(t, r, "DeviceEvents")
		body := decodeBody(t, r)
		meta := body["Metadata"].(map[string]any)
		blankSys(t, meta, "DeviceEvents")
		if len(meta) != 2 || meta["data"] == nil {
			t.Errorf("Event Grid Metadata = %v, want exactly data and sys", meta)
		}
	}
	for _, id := range []string{"a1", "a2", "a3", "single", "b1", "failing-event", "b3", "plaintext", "empty"} {
		if seen[id] != 1 {
			t.Errorf("event %s invoked %d times, want once (one invocation per event)", id, seen[id])
		}
	}
}

// sasToken builds an Event Grid SAS token as the .NET SDK's EventGridSasBuilder does.
func sasToken(endpoint, key string, expires time.Time) string {
	res := url.QueryEscape(endpoint + "?api-version=2018-01-01")
	exp := url.QueryEscape(expires.UTC().Format("1/2/2006 3:04:05 PM -07:00"))
	unsigned := "r=" + res + "&e=" + exp
	k, _ := base64.StdEncoding.DecodeString(key)
	m := hmac.New(sha256.New, k)
	m.Write([]byte(unsigned))
	return unsigned + "&s=" + url.QueryEscape(base64.StdEncoding.EncodeToString(m.Sum(nil)))
}

// The topic accepts what Event Grid accepts and refuses the rest with a clear error; a topic
// without subscribers keeps what it receives.
func TestTopicPublishRules(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"DeviceEvents": eventFunction})
	var mu sync.Mutex
	var received []string
	h := startHost(t, app, nil, nil, Options{EventGrid: &EventGridOptions{
		Topics:    []TopicOptions{{Name: "events", Subscribers: []string{"DeviceEvents"}}, {Name: "outcomes"}},
		OnReceive: func(topic string, e json.RawMessage) { mu.Lock(); received = append(received, topic); mu.Unlock() },
	}})
	good := []byte(`[{"id":"1","subject":"devices/a","eventType":"device-lost","eventTime":"2024-05-01T12:00:00Z","data":{}}]`)
	cases := []struct {
		name, ct string
		body     []byte
		hdr      map[string]string
		want     int
		msg      string
	}{
		{"no credentials", "application/json", good, nil, 401, "aeg-sas-key"},
		{"wrong key", "application/json", good, map[string]string{"aeg-sas-key": base64.StdEncoding.EncodeToString([]byte("wrong"))}, 401, "does not match"},
		{"SAS token", "application/json", good, map[string]string{"aeg-sas-token": sasToken(h.TopicEndpoint("outcomes"), h.TopicKey(), time.Now().Add(time.Hour))}, 200, ""},
		{"SAS in Authorization", "application/json", good, map[string]string{"Authorization": "SharedAccessSignature " + sasToken(h.TopicEndpoint("outcomes"), h.TopicKey(), time.Now().Add(time.Hour))}, 200, ""},
		{"expired SAS token", "application/json", good, map[string]string{"aeg-sas-token": sasToken(h.TopicEndpoint("outcomes"), h.TopicKey(), time.Now().Add(-time.Minute))}, 401, "expired"},
		{"SAS signed with another key", "application/json", good, map[string]string{"aeg-sas-token": sasToken(h.TopicEndpoint("outcomes"), base64.StdEncoding.EncodeToString([]byte("other-key")), time.Now().Add(time.Hour))}, 401, "signature"},
		{"missing eventType", "application/json", []byte(`[{"id":"1","subject":"s","eventTime":"2024-05-01T12:00:00Z","data":{}}]`), map[string]string{"aeg-sas-key": h.TopicKey()}, 400, `eventType`},
		{"single object, not array", "application/json", good[1 : len(good)-1], map[string]string{"aeg-sas-key": h.TopicKey()}, 400, "JSON array"},
		{"CloudEvents sent as application/json", "application/json", []byte(`[{"specversion":"1.0","id":"1","source":"s","type":"t"}]`), map[string]string{"aeg-sas-key": h.TopicKey()}, 400, "cloudevents-batch+json"},
		{"CloudEvents batch", "application/cloudevents-batch+json; charset=utf-8", []byte(`[{"specversion":"1.0","id":"2","source":"s","type":"t","data":{"x":1}}]`), map[string]string{"aeg-sas-key": h.TopicKey()}, 200, ""},
		{"single CloudEvent", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"3","source":"s","type":"t"}`), map[string]string{"aeg-sas-key": h.TopicKey()}, 200, ""},
		{"CloudEvent without source", "application/cloudevents-batch+json", []byte(`[{"specversion":"1.0","id":"4","type":"t"}]`), map[string]string{"aeg-sas-key": h.TopicKey()}, 400, `source`},
		{"over 1 MB", "application/json", []byte(`[{"id":"1","subject":"s","eventType":"t","eventTime":"2024-05-01T12:00:00Z","data":"` + strings.Repeat("x", 1<<20) + `"}]`), map[string]string{"aeg-sas-key": h.TopicKey()}, 413, ""},
	}
	for _, c := range cases {
		code, body := publishRaw(t, h, "outcomes", c.ct, c.body, c.hdr)
		if code != c.want || !strings.Contains(body, c.msg) {
			t.Errorf("%s: %d %s, want %d mentioning %q", c.name, code, body, c.want, c.msg)
		}
	}
	// No api-version: refused.
	req, _ := http.NewRequest(http.MethodPost, h.TopicEndpoint("outcomes"), strings.NewReader(string(good)))
	req.Header.Set("aeg-sas-key", h.TopicKey())
	resp, err := topicClient(h).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("publish without api-version: %d, want 400", resp.StatusCode)
	}
	got := h.Received("outcomes")
	if len(got) != 4 {
		t.Fatalf("outcomes topic kept %d events, want 4 (2 by SAS, 2 CloudEvents)", len(got))
	}
	var first map[string]any
	_ = json.Unmarshal(got[0], &first)
	if first["topic"] != "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/devhost/providers/Microsoft.EventGrid/topics/outcomes" ||
		first["metadataVersion"] != "1" || first["dataVersion"] != "" {
		t.Errorf("stamped event = %v", first)
	}
	resp, err = topicClient(h).Get(h.EventGridURL() + "/topics/outcomes/events")
	if err != nil {
		t.Fatal(err)
	}
	var listed []json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&listed)
	resp.Body.Close()
	if len(listed) != 4 {
		t.Errorf("GET /topics/outcomes/events listed %d events, want 4", len(listed))
	}
	mu.Lock()
	if len(received) != 4 {
		t.Errorf("OnReceive called %d times, want 4", len(received))
	}
	mu.Unlock()
}

// A queue message whose invocation keeps failing is retried with a growing dequeue count and then
// moved to the poison queue; a message that is not base64 goes there at once; a successful
// invocation's queue output is written as the host writes it.
func TestQueueRetriesAndPoison(t *testing.T) {
	az := testenv.SharedAzurite(t)
	queue := testenv.UniqueName("work")
	out := testenv.UniqueName("out")
	app := newTestApp(t, `,"extensions":{"queues":{"maxDequeueCount":3,"visibilityTimeout":"00:00:00","maxPollingInterval":"00:00:00.200","batchSize":4}}`,
		map[string]string{"Work": `{"bindings":[{"type":"queueTrigger","direction":"in","name":"msg","queueName":"%WORK_QUEUE%","connection":"Storage"},` +
			`{"type":"queue","direction":"out","name":"next","queueName":"` + out + `"}]}`})
	ctx := context.Background()
	qc, err := azqueue.NewQueueClientFromConnectionString(az.ConnectionString(), queue, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qc.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	startHost(t, app, script{
		"Work:always-fails": {{Status: 500, ContentType: "application/json", Body: `{}`}},
		"Work:works":        {{Status: 200, ContentType: "application/json", Body: `{"Outputs":{"next":{"step":2,"ok":true}},"Logs":[],"ReturnValue":null}`}},
	}, map[string]string{"Storage": az.ConnectionString(), "AzureWebJobsStorage": az.ConnectionString(), "WORK_QUEUE": queue}, Options{})
	for _, m := range []string{"always-fails", "works"} {
		if _, err := qc.EnqueueMessage(ctx, base64.StdEncoding.EncodeToString([]byte(m)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := qc.EnqueueMessage(ctx, "not base64!", nil); err != nil {
		t.Fatal(err)
	}
	poison, _ := azqueue.NewQueueClientFromConnectionString(az.ConnectionString(), queue+"-poison", nil)
	var poisoned []string
	waitFor(t, "two poison messages", func() bool {
		resp, err := poison.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(10))})
		if err != nil {
			return false
		}
		poisoned = poisoned[:0]
		for _, m := range resp.Messages {
			poisoned = append(poisoned, *m.MessageText)
		}
		return len(poisoned) == 2
	})
	want := map[string]bool{base64.StdEncoding.EncodeToString([]byte("always-fails")): true, "not base64!": true}
	for _, p := range poisoned {
		if !want[p] {
			t.Errorf("unexpected poison message %q", p)
		}
	}
	var counts []string
	for _, r := range app.invocations(t, "Work") {
		var b struct {
			Data     map[string]string
			Metadata map[string]any
		}
		_ = json.Unmarshal(r.Body, &b)
		if b.Data["msg"] == `"always-fails"` {
			counts = append(counts, b.Metadata["DequeueCount"].(string))
		}
		if strings.Contains(b.Data["msg"], "base64") {
			t.Errorf("a message that is not base64 reached the handler")
		}
	}
	if strings.Join(counts, ",") != "1,2,3" {
		t.Errorf("DequeueCount of the failing message's invocations = %v, want 1,2,3 (maxDequeueCount 3)", counts)
	}
	props, err := qc.PeekMessages(ctx, nil)
	if err != nil || len(props.Messages) != 0 {
		t.Errorf("work queue not empty after processing: %v %v", props.Messages, err)
	}
	oc, _ := azqueue.NewQueueClientFromConnectionString(az.ConnectionString(), out, nil)
	var outMsgs []string
	waitFor(t, "output message", func() bool {
		resp, err := oc.PeekMessages(ctx, nil)
		if err != nil || len(resp.Messages) == 0 {
			return false
		}
		b, _ := base64.StdEncoding.DecodeString(*resp.Messages[0].MessageText)
		outMsgs = append(outMsgs, string(b))
		return true
	})
	if outMsgs[0] != "{\n  \"step\": 2,\n  \"ok\": true\n}" {
		t.Errorf("output message = %q, want the object's indented JSON text", outMsgs[0])
	}
}

// A timer that fires every second runs repeatedly, with ScheduleStatus null (the host turns the
// schedule monitor off for schedules more frequent than a minute) and only sys in Metadata.
func TestTimerFiresFromNCRONTAB(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"Tick": `{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"%TICK%"}]}`})
	startHost(t, app, nil, map[string]string{"TICK": "*/1 * * * * *"}, Options{})
	invs := app.waitInvocations(t, "Tick", 2)
	for _, r := range invs[:2] {
		var b map[string]map[string]json.RawMessage
		_ = json.Unmarshal(r.Body, &b)
		if string(b["Data"]["timer"]) != `{"IsPastDue":false,"Schedule":{"AdjustForDST":true},"ScheduleStatus":null}` {
			t.Errorf("timer Data = %s", b["Data"]["timer"])
		}
		if len(b["Metadata"]) != 1 || b["Metadata"]["sys"] == nil {
			t.Errorf("timer Metadata = %v, want only sys", b["Metadata"])
		}
	}
}

// The handler is started with the host's environment in the app root, and app settings reach it.
func TestHandlerEnvironment(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"DeviceEvents": eventFunction})
	startHost(t, app, nil, map[string]string{"ORDERS_QUEUE": "orders"}, Options{})
	reqs := app.requests(t)
	if len(reqs) == 0 || reqs[0].Method != "START" {
		t.Fatal("handler did not record its start")
	}
	env := reqs[0].Env
	if env["FUNCTIONS_CUSTOMHANDLER_PORT"] == "" || env["FUNCTIONS_CUSTOMHANDLER_PORT"] != env["FUNCTIONS_HTTPWORKER_PORT"] {
		t.Errorf("port variables: %v", env)
	}
	if !guidRE.MatchString(env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"]) || env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"] != env["FUNCTIONS_HTTPWORKER_ID"] {
		t.Errorf("worker id variables: %v", env)
	}
	if env["FUNCTIONS_APP_ROOT_PATH"] != app.dir || env["cwd"] != app.dir {
		t.Errorf("app root %q, cwd %q, want %q", env["FUNCTIONS_APP_ROOT_PATH"], env["cwd"], app.dir)
	}
	if env["ORDERS_QUEUE"] != "orders" {
		t.Errorf("app setting did not reach the handler: %v", env)
	}
}

// An HTTP function's res output becomes the response; a failed invocation is a 500.
func TestHTTPTriggerOutput(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"Operations": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","methods":["get"],"route":"deprovision/{kind?}/{id?}"},{"type":"http","direction":"out","name":"res"}]}`})
	h := startHost(t, app, script{
		"Operations":        {{Status: 200, ContentType: "application/json", Body: `{"Outputs":{"res":{"statusCode":201,"headers":{"Content-Type":"application/json"},"body":"{\"id\":42}"}}}`}},
		"Operations:broken": {{Status: 500, ContentType: "application/json", Body: `{}`}},
	}, nil, Options{})
	resp, err := http.Get(h.URL() + "/api/deprovision/operations/op1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Content-Type") != "application/json" || string(b) != `{"id":42}` {
		t.Errorf("response %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	r := app.waitInvocations(t, "Operations", 1)[0]
	var body struct {
		Data     map[string]map[string]any
		Metadata map[string]any
	}
	_ = json.Unmarshal(r.Body, &body)
	if p, _ := body.Data["req"]["Params"].(map[string]any); p["kind"] != "operations" || p["id"] != "op1" {
		t.Errorf("route params = %v", body.Data["req"]["Params"])
	}
	if body.Metadata["kind"] != `"operations"` {
		t.Errorf("Metadata.kind = %v, want double-encoded", body.Metadata["kind"])
	}
	resp, err = http.Get(h.URL() + "/api/deprovision/broken")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Errorf("failed invocation answered %d, want 500", resp.StatusCode)
	}
	resp, err = http.Post(h.URL()+"/api/deprovision", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("POST to a GET-only function answered %d, want 404", resp.StatusCode)
	}
}

// A handler that exits is started again, as the host does; after three exits within 30 minutes
// the host gives up.
func TestHandlerRestartedAfterCrash(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"DeviceEvents": eventFunction})
	h := startHost(t, app, script{"DeviceEvents:crash-now": {{Status: -1}}}, nil, Options{})
	starts := func() int {
		n := 0
		for _, r := range app.requests(t) {
			if r.Method == "START" {
				n++
			}
		}
		return n
	}
	ev := func(id string) string {
		return `[{"id":"` + id + `","topic":"t","subject":"s","eventType":"device-lost","eventTime":"2024-05-01T12:00:00Z","data":{},"dataVersion":"1","metadataVersion":"1"}]`
	}
	if code, _ := webhookPost(t, h, "DeviceEvents", "Notification", ev("crash-now")); code != 500 {
		t.Errorf("invocation that crashed the handler answered %d, want 500", code)
	}
	waitFor(t, "the handler to be started again", func() bool { return starts() == 2 })
	waitFor(t, "the restarted handler to serve", func() bool {
		code, _ := webhookPost(t, h, "DeviceEvents", "Notification", ev("after-restart"))
		return code == 202
	})
	_, _ = webhookPost(t, h, "DeviceEvents", "Notification", ev("crash-now"))
	waitFor(t, "the third start", func() bool { return starts() == 3 })
	// The third crash must come once the handler serves again: one that comes while the host
	// still waits for GET / is a failed start, which the host reports as that instead.
	waitFor(t, "the third handler to serve", func() bool {
		code, _ := webhookPost(t, h, "DeviceEvents", "Notification", ev("after-second-restart"))
		return code == 202
	})
	_, _ = webhookPost(t, h, "DeviceEvents", "Notification", ev("crash-now"))
	select {
	case <-h.Failed():
		if !strings.Contains(h.Err().Error(), "3 times") {
			t.Errorf("host failed with %v", h.Err())
		}
	case <-time.After(testenv.HungAfter):
		t.Fatal("the host kept going after three handler exits")
	}
}

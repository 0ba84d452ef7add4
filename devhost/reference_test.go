package devhost

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/internal/testenv"
)

// These tests pin devhost's invocations to the request examples of the project's reference on
// the custom-handler protocol (read from the shared reference folder, so that a change there
// shows here). Every value the host makes up per invocation (sys.UtcNow, sys.RandGuid, queue
// message ids and times, timer times) is checked against its format and then blanked on both
// sides; everything else must be equal.

var (
	guidRE        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	utcNowRE      = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$`)
	offsetTimeRE  = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$`)
	timerStatusRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?\+00:00$`)
)

// referenceExample returns the reference's JSON request example that contains marker.
func referenceExample(t *testing.T, marker string) map[string]any {
	t.Helper()
	p := testenv.SharedReference(t, "functions-custom-handler.md")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(b), "```json\n")
	for _, part := range parts[1:] {
		block, _, _ := strings.Cut(part, "```")
		if strings.Contains(block, marker) && strings.Contains(block, `"Data"`) {
			var v map[string]any
			if err := json.Unmarshal([]byte(block), &v); err != nil {
				t.Fatalf("reference example with %s is not JSON: %v", marker, err)
			}
			return v
		}
	}
	t.Fatalf("reference has no request example containing %s", marker)
	return nil
}

// checkEnvelope checks the request line and the host's headers of an invocation.
func checkEnvelope(t *testing.T, r recorded, fn string) {
	t.Helper()
	if r.Method != http.MethodPost || r.Path != "/"+fn || r.Query != "" {
		t.Errorf("request line %s %s?%s, want POST /%s", r.Method, r.Path, r.Query, fn)
	}
	want := map[string]string{
		"Content-Type":                  "application/json; charset=utf-8",
		"X-Azure-Functions-Hostversion": DefaultHostVersion,
		"User-Agent":                    "Azure-Functions-Host/" + DefaultHostVersion,
	}
	for k, v := range want {
		if got := r.Headers[k]; got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if id := r.Headers["X-Azure-Functions-Invocationid"]; !guidRE.MatchString(id) {
		t.Errorf("X-Azure-Functions-InvocationId %q is not a GUID", id)
	}
}

// blankSys checks "sys" and blanks its per-invocation values.
func blankSys(t *testing.T, meta map[string]any, fn string) {
	t.Helper()
	sys, ok := meta["sys"].(map[string]any)
	if !ok {
		t.Fatalf("Metadata.sys missing or not an object: %v", meta["sys"])
	}
	if len(sys) != 3 || sys["MethodName"] != fn {
		t.Errorf("sys = %v, want exactly MethodName=%s, UtcNow, RandGuid", sys, fn)
	}
	if s, _ := sys["UtcNow"].(string); !utcNowRE.MatchString(s) {
		t.Errorf("sys.UtcNow %q: want seven fractional digits and Z", s)
	}
	if s, _ := sys["RandGuid"].(string); !guidRE.MatchString(s) {
		t.Errorf("sys.RandGuid %q is not a GUID", s)
	}
	sys["UtcNow"], sys["RandGuid"] = "*", "*"
}

// blankRef blanks the reference example's own sys values (examples may elide them).
func blankRef(meta any) {
	if sys, ok := meta.(map[string]any)["sys"].(map[string]any); ok {
		sys["UtcNow"], sys["RandGuid"] = "*", "*"
	}
}

func decodeBody(t *testing.T, r recorded) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("invocation body is not a JSON object: %v", err)
	}
	if len(v) != 2 || v["Data"] == nil || v["Metadata"] == nil {
		t.Fatalf("invocation body keys: want exactly Data and Metadata, got %v", keys(v))
	}
	return v
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func assertEqualJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		w, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("%s differs from the reference\n got: %s\nwant: %s", what, g, w)
	}
}

func TestInvocationsMatchReferenceExamples(t *testing.T) {
	az := testenv.SharedAzurite(t)
	queue := testenv.UniqueName("orders")
	app := newTestApp(t, "", map[string]string{
		"OnOrderEvent": `{"bindings":[{"type":"eventGridTrigger","direction":"in","name":"eventGridEvent"}]}`,
		"Cleanup":      `{"bindings":[{"type":"timerTrigger","direction":"in","name":"myTimer","schedule":"0 */5 * * * *","runOnStartup":true,"useMonitor":true}]}`,
		"ProcessOrder": `{"bindings":[{"type":"queueTrigger","direction":"in","name":"myQueueItem","queueName":"%ORDERS_QUEUE%","connection":"AzureWebJobsStorage"}]}`,
		"orders":       `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"function","methods":["get","post"],"route":"orders/{id}"},{"type":"http","direction":"out","name":"res"}]}`,
	})
	loaded, err := LoadApp(app.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	qc, err := azqueue.NewQueueClientFromConnectionString(az.ConnectionString(), queue, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qc.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	h, err := Start(ctx, loaded, Options{
		Settings:  app.settings(nil, map[string]string{"AzureWebJobsStorage": az.ConnectionString(), "ORDERS_QUEUE": queue}),
		Addr:      "127.0.0.1:0",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		EventGrid: &EventGridOptions{Topics: []TopicOptions{{Name: "orders", Subscribers: []string{"OnOrderEvent"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	t.Run("eventGridTrigger", func(t *testing.T) {
		want := referenceExample(t, `"eventGridEvent"`)
		event := want["Data"].(map[string]any)["eventGridEvent"].(map[string]any)
		refTopic := event["topic"]
		pub := map[string]any{}
		for k, v := range event {
			if k != "topic" && k != "metadataVersion" { // both are stamped by the topic
				pub[k] = v
			}
		}
		publishGrid(t, h, "orders", []any{pub})
		r := app.waitInvocations(t, "OnOrderEvent", 1)[0]
		checkEnvelope(t, r, "OnOrderEvent")
		got := decodeBody(t, r)
		ev := got["Data"].(map[string]any)["eventGridEvent"].(map[string]any)
		if ev["topic"] != "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/devhost/providers/Microsoft.EventGrid/topics/orders" {
			t.Errorf("topic stamped as %v", ev["topic"])
		}
		ev["topic"] = refTopic
		blankSys(t, got["Metadata"].(map[string]any), "OnOrderEvent")
		blankRef(want["Metadata"].(map[string]any))
		assertEqualJSON(t, "Event Grid invocation", got, want)
	})

	t.Run("timerTrigger", func(t *testing.T) {
		want := referenceExample(t, `"myTimer"`)
		r := app.waitInvocations(t, "Cleanup", 1)[0]
		checkEnvelope(t, r, "Cleanup")
		got := decodeBody(t, r)
		for _, v := range []map[string]any{got, want} {
			st, ok := v["Data"].(map[string]any)["myTimer"].(map[string]any)["ScheduleStatus"].(map[string]any)
			if !ok {
				t.Fatalf("ScheduleStatus is not an object: %v", v["Data"])
			}
			for _, k := range []string{"Last", "Next", "LastUpdated"} {
				if s, _ := st[k].(string); !timerStatusRE.MatchString(s) {
					t.Errorf("ScheduleStatus.%s = %q", k, s)
				}
				st[k] = "*"
			}
		}
		blankSys(t, got["Metadata"].(map[string]any), "Cleanup")
		blankRef(want["Metadata"].(map[string]any))
		assertEqualJSON(t, "timer invocation", got, want)
	})

	t.Run("queueTrigger", func(t *testing.T) {
		want := referenceExample(t, `"myQueueItem"`)
		text := `{"orderId":42}`
		if _, err := qc.EnqueueMessage(ctx, base64.StdEncoding.EncodeToString([]byte(text)), nil); err != nil {
			t.Fatal(err)
		}
		r := app.waitInvocations(t, "ProcessOrder", 1)[0]
		checkEnvelope(t, r, "ProcessOrder")
		got := decodeBody(t, r)
		for _, v := range []map[string]any{got, want} {
			m := v["Metadata"].(map[string]any)
			for _, k := range []string{"ExpirationTime", "InsertionTime", "NextVisibleTime"} {
				if s, _ := m[k].(string); !offsetTimeRE.MatchString(s) {
					t.Errorf("Metadata.%s = %q, want whole seconds and +00:00", k, s)
				}
				m[k] = "*"
			}
			for _, k := range []string{"Id", "PopReceipt"} {
				var inner string
				if s, _ := m[k].(string); json.Unmarshal([]byte(s), &inner) != nil || inner == "" {
					t.Errorf("Metadata.%s = %q, want a double-encoded string", k, m[k])
				}
				m[k] = "*"
			}
		}
		blankSys(t, got["Metadata"].(map[string]any), "ProcessOrder")
		blankRef(want["Metadata"].(map[string]any))
		assertEqualJSON(t, "queue invocation", got, want)
	})

	t.Run("httpTrigger", func(t *testing.T) {
		want := referenceExample(t, `"req"`)
		req, _ := http.NewRequest(http.MethodPost, h.URL()+"/api/orders/42?verbose=1", strings.NewReader(`{"qty":2}`))
		req.Host = "localhost:7071"
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		r := app.waitInvocations(t, "orders", 1)[0]
		checkEnvelope(t, r, "orders")
		got := decodeBody(t, r)
		// The client adds headers the example does not show (User-Agent, Content-Length, …): the
		// example's headers must be there with the same values; the rest is not compared.
		gotReq := got["Data"].(map[string]any)["req"].(map[string]any)
		wantReq := want["Data"].(map[string]any)["req"].(map[string]any)
		subsetHeaders(t, "Data.req.Headers", gotReq, wantReq)
		gm, wm := got["Metadata"].(map[string]any), want["Metadata"].(map[string]any)
		subsetHeaders(t, "Metadata.Headers", gm, wm)
		blankSys(t, gm, "orders")
		blankRef(wm)
		assertEqualJSON(t, "http invocation", got, want)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d with no res output, want 200", resp.StatusCode)
		}
	})
}

// subsetHeaders checks that want's Headers are in got's, then makes them equal.
func subsetHeaders(t *testing.T, what string, got, want map[string]any) {
	t.Helper()
	gh, _ := got["Headers"].(map[string]any)
	wh, _ := want["Headers"].(map[string]any)
	for k, v := range wh {
		if !reflect.DeepEqual(gh[k], v) {
			t.Errorf("%s[%s] = %v, want %v", what, k, gh[k], v)
		}
	}
	got["Headers"] = wh
}

// publishGrid publishes Event Grid schema events to a topic with the topic key.
func publishGrid(t *testing.T, h *Host, topicName string, events []any) {
	t.Helper()
	b, _ := json.Marshal(events)
	status, body := publishRaw(t, h, topicName, "application/json", b, map[string]string{"aeg-sas-key": h.TopicKey()})
	if status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, body)
	}
}

func publishRaw(t *testing.T, h *Host, topicName, contentType string, body []byte, headers map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.TopicEndpoint(topicName)+"?api-version=2018-01-01", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := topicClient(h).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(rb)
}

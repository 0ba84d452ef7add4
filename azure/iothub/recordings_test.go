package iothub_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"dpsdeprov/azure/iothub"
	"dpsdeprov/internal/recorded"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// TestDecodesRecordedAnswers feeds the client what IoT Hub really answered, as recorded by
// the .NET SDK's tests (the shared reference recordings), call by call: the client must send
// the recorded call, decode every answer without losing a field the hub filled, and classify
// every refusal by its status and error name, whatever the shape of the error body. Calls
// the client does not make (twins) are left out. No emulator is involved.
func TestDecodesRecordedAnswers(t *testing.T) {
	calls := 0
	for _, set := range recorded.Sets(t, "iothub") {
		t.Run(set.Name, func(t *testing.T) {
			for i := range set.Entries {
				if checkHubCall(t, &set.Entries[i]) {
					calls++
				}
			}
		})
	}
	t.Logf("%d recorded calls decoded", calls)
}

// TestClassifiesRecordedErrors: error answers of the hub restated from recordings beyond the
// shared set, in both body shapes, decode to the recorded error name and status class.
func TestClassifiesRecordedErrors(t *testing.T) {
	for _, c := range []struct {
		source, method, path, header string
		status                       int
		body, want                   string
	}{{
		// Azure/azure-sdk-for-net, sdk/iot/Azure.IoT.Hub.Service/tests/SessionRecords/
		// DevicesClientTests/DevicesClient_UpdateDevice_EtagDoesNotMatch.json @ 541b29a5.
		source: "UpdateDevice_EtagDoesNotMatch", method: http.MethodPut, path: "/devices/UpdateWithETag", header: "PreconditionFailed", status: 412,
		body: `{"Message":"ErrorCode:PreconditionFailed;Precondition failed: Device version did not match, existingVersion:2 newVersion:1","ExceptionMessage":"Tracking ID:e4a9-G:12-TimeStamp:07/07/2021 20:45:26"}`,
		want: "PreconditionFailed",
	}, {
		// The same error without the header: the name is read from the legacy Message.
		source: "UpdateDevice_EtagDoesNotMatch, body only", method: http.MethodPut, path: "/devices/UpdateWithETag", status: 412,
		body: `{"Message":"ErrorCode:PreconditionFailed;Precondition failed","ExceptionMessage":"Tracking ID:x"}`,
		want: "PreconditionFailed",
	}, {
		// The current shape (azure-iot-sdk-csharp #3442), without the header.
		source: "nested Message", method: http.MethodGet, path: "/devices/missing", status: 404,
		body: `{"Message":"{\"errorCode\":404001,\"trackingId\":\"t\",\"message\":\"Device not found\",\"info\":{},\"timestampUtc\":\"2024-01-01T00:00:00Z\"}","ExceptionMessage":""}`,
		want: "DeviceNotFound",
	}, {
		// The backlog refusal recorded in Azure-Samples/Iot-Telemetry-Simulator #39.
		source: "ThrottlingBacklogTimeout", method: http.MethodGet, path: "/devices/d", header: "ThrottlingBacklogTimeout", status: 429,
		body: `{"Message":"ErrorCode:ThrottlingBacklogTimeout;The request has been throttled. Wait 10 seconds and try again. Operation type: CRUD","ExceptionMessage":"Tracking ID:55f0-G:0-TimeStamp:10/12/2021 07:18:02"}`,
		want: "ThrottlingBacklogTimeout",
	}} {
		u, _ := url.Parse("https://FakeHost.net" + c.path + "?api-version=2020-03-13")
		h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
		if c.header != "" {
			h.Set("iothub-errorcode", c.header)
		}
		e := &recorded.Entry{Method: c.method, URL: u, RequestHeader: http.Header{}, Status: c.status, Header: h, Body: []byte(c.body)}
		if c.method == http.MethodPut {
			e.RequestHeader.Set("If-Match", `"MzQzMDYwMzU2"`)
			e.RequestBody = []byte(`{"deviceId":"UpdateWithETag","status":"enabled"}`)
		}
		t.Run(c.source, func(t *testing.T) { checkHubCall(t, e) })
	}
}

var legacyName = regexp.MustCompile(`ErrorCode:([A-Za-z]+);`)

// recordedHubCode is the error name of a recorded hub error.
func recordedHubCode(e *recorded.Entry) string {
	if c := e.Header.Get("iothub-errorcode"); c != "" {
		return c
	}
	var b struct{ Message string }
	_ = json.Unmarshal(e.Body, &b)
	if m := legacyName.FindStringSubmatch(b.Message); m != nil {
		return m[1]
	}
	var inner struct{ ErrorCode int64 }
	if json.Unmarshal([]byte(b.Message), &inner) == nil && inner.ErrorCode == 404001 {
		return "DeviceNotFound"
	}
	return ""
}

// checkHubCall replays one recorded call and reports whether the client makes it.
func checkHubCall(t *testing.T, e *recorded.Entry) bool {
	t.Helper()
	tr := &recorded.Transport{}
	c, err := iothub.NewClientFromConnectionString("HostName="+e.URL.Host+";SharedAccessKeyName=iothubowner;SharedAccessKey=Kg==",
		&iothub.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	tr.Expect(e)
	label := e.Method + " " + e.URL.Path
	model, err := callHub(context.Background(), c, e)
	if errors.Is(err, errNotAClientCall) {
		return false
	}
	sent, sentBody := tr.Sent()
	if sent == nil {
		t.Fatalf("%s: the client sent nothing (%v)", label, err)
	}
	// The hub takes If-Match quoted ("\"*\"" or "\"<etag>\"") or as a bare "*".
	if want := strings.Trim(e.RequestHeader.Get("If-Match"), `"`); want != "" && strings.Trim(sent.Header.Get("If-Match"), `"`) != want {
		t.Errorf("%s: If-Match %q, the recorded client sent %q", label, sent.Header.Get("If-Match"), e.RequestHeader.Get("If-Match"))
	}
	if e.Method == http.MethodPost && strings.HasSuffix(e.URL.Path, "/devices") {
		var items []map[string]any
		if json.Unmarshal(sentBody, &items) != nil || len(items) == 0 {
			t.Errorf("%s: the bulk body sent is not an array: %s", label, sentBody)
		}
	}
	if e.Status >= 300 && !(e.Status == 400 && isBulk(e)) {
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != e.Status {
			t.Fatalf("%s: recorded %d, the client returned %v", label, e.Status, err)
		}
		if want := recordedHubCode(e); re.ErrorCode != want {
			t.Errorf("%s: error code %q, recorded %q", label, re.ErrorCode, want)
		}
		classified := map[int]bool{404: iothub.IsNotFound(err), 409: iothub.IsConflict(err), 412: iothub.IsPreconditionFailed(err), 429: iothub.IsThrottled(err)}
		for st, got := range classified {
			if got != (st == e.Status) {
				t.Errorf("%s: classified as %d = %v for a recorded %d", label, st, got, e.Status)
			}
		}
		return true
	}
	if err != nil {
		t.Fatalf("%s: recorded %d, the client failed: %v", label, e.Status, err)
	}
	if e.Body == nil || model == nil {
		return true
	}
	// The hub's twins carry "configurations" (the automatic device configurations applied to
	// the device), which the 2021-04-12 spec's Twin does not declare and the project does
	// not use.
	lost, err := recorded.Lost(e.Body, model, "configurations")
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Errorf("%s: the client drops %v of the recorded answer %s", label, lost, e.Body)
	}
	return true
}

func isBulk(e *recorded.Entry) bool {
	return e.Method == http.MethodPost && strings.HasSuffix(strings.TrimSuffix(e.URL.Path, "/"), "/devices")
}

var errNotAClientCall = errors.New("not a call the client makes")

// callHub makes the client call that sends the recorded request and returns what it decoded.
func callHub(ctx context.Context, c *iothub.Client, e *recorded.Entry) (any, error) {
	segs := strings.Split(strings.Trim(e.URL.EscapedPath(), "/"), "/")
	if !strings.EqualFold(segs[0], "devices") {
		return nil, errNotAClientCall // twins, modules, jobs: not the client's
	}
	id := ""
	if len(segs) > 1 {
		id, _ = url.PathUnescape(segs[1])
	}
	var ifMatch *azcore.ETag
	// "" is how the .NET client asks for a create; this client sends no If-Match for it.
	if v := strings.Trim(e.RequestHeader.Get("If-Match"), `"`); v != "" {
		m := azcore.ETag(v)
		ifMatch = &m
	}
	switch {
	case len(segs) == 1 && e.Method == http.MethodPost:
		var items []iothub.ExportImportDevice
		if err := json.Unmarshal(e.RequestBody, &items); err != nil {
			return nil, err
		}
		r, err := c.BulkUpdate(ctx, items, nil)
		return &r.BulkRegistryOperationResult, err
	case len(segs) == 2 && segs[1] == "query":
		var q struct{ Query string }
		_ = json.Unmarshal(e.RequestBody, &q)
		page, err := c.NewQueryDevicesPager(q.Query, &iothub.QueryDevicesOptions{ContinuationToken: e.RequestHeader.Get("x-ms-continuation")}).NextPage(ctx)
		return page.Twins, err
	case len(segs) == 2 && e.Method == http.MethodGet:
		r, err := c.GetDevice(ctx, id, nil)
		return &r.Device, err
	case len(segs) == 2 && e.Method == http.MethodPut:
		var d iothub.Device
		if err := json.Unmarshal(e.RequestBody, &d); err != nil {
			return nil, err
		}
		r, err := c.CreateOrUpdateDevice(ctx, d, &iothub.CreateOrUpdateDeviceOptions{IfMatch: ifMatch})
		return &r.Device, err
	case len(segs) == 2 && e.Method == http.MethodDelete:
		_, err := c.DeleteDevice(ctx, id, &iothub.DeleteDeviceOptions{IfMatch: ifMatch})
		return nil, err
	}
	return nil, errNotAClientCall
}

package handler

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"dpsdeprov/deprovision"
)

func TestDecodeTextEncodingLevels(t *testing.T) {
	cases := []struct {
		name, raw, want string
	}{
		{"host double encoding (reference 2.2)", `"\"hello\""`, "hello"},
		{"docs single encoding", `"hello"`, "hello"},
		{"sender serialised once more", `"\"\\\"hello\\\"\""`, "hello"},
		{"number as string in Metadata", `"1"`, "1"},
		{"number as number (docs sample)", `1`, "1"},
		{"text that only starts with a quote", `"\"quoted\" and more"`, `"quoted" and more`},
		{"JSON text double encoded", `"\"{\\\"a\\\":1}\""`, `{"a":1}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := decodeText(json.RawMessage(c.raw))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("decodeText(%s) = %q, want %q", c.raw, got, c.want)
			}
		})
	}
	if _, err := decodeText(json.RawMessage(`null`)); err == nil {
		t.Fatal("null decoded without error")
	}
}

func TestDecodeJSONForms(t *testing.T) {
	obj := `{"id":"1","eventType":"x"}`
	enc1, _ := json.Marshal(obj)
	enc2, _ := json.Marshal(string(enc1))
	for name, raw := range map[string]string{"object": obj, "string holding it": string(enc1), "string holding that": string(enc2)} {
		got, err := decodeJSON(json.RawMessage(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(got) != obj {
			t.Fatalf("%s: got %s", name, got)
		}
	}
	if _, err := decodeJSON(json.RawMessage(`"plain text"`)); err == nil || !strings.Contains(err.Error(), "neither a JSON object") {
		t.Fatalf("plain text: err = %v", err)
	}
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func envelope(t *testing.T, name string) invocation {
	t.Helper()
	var inv invocation
	if err := json.Unmarshal(fixture(t, name), &inv); err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestQueueMessageFromReferenceEnvelope(t *testing.T) {
	inv := envelope(t, "queue.json")
	m, err := decodeQueueMessage(&inv)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Body) != `{"operationId":"op-1","page":3}` {
		t.Fatalf("body = %s", m.Body)
	}
	if m.ID != "a0004923-f050-417a-9742-6d7c7b984134" || m.PopReceipt != "AgAAAAMAAAAAAAAA8d5gQex+2AE=" || m.DequeueCount != 1 {
		t.Fatalf("metadata = %+v", m)
	}
	if !m.InsertionTime.Equal(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)) || !m.ExpirationTime.Equal(time.Date(2024, 5, 8, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("times = %v %v", m.InsertionTime, m.ExpirationTime)
	}
}

func TestQueueMessageOtherForms(t *testing.T) {
	body := `{"operationId":"op-1"}`
	single, _ := json.Marshal(body)
	cases := map[string]string{
		// The docs' sample: message text single-encoded, DequeueCount a number, Id unquoted.
		"docs form": `{"Data":{"message":` + string(single) + `},"Metadata":{"DequeueCount":2,"Id":"abc"}}`,
		// dataType "binary": base64 of the bytes.
		"binary": `{"Data":{"message":"eyJvcGVyYXRpb25JZCI6Im9wLTEifQ=="},"Metadata":{"DequeueCount":"2","Id":"\"abc\""}}`,
	}
	for name, env := range cases {
		var inv invocation
		if err := json.Unmarshal([]byte(env), &inv); err != nil {
			t.Fatal(err)
		}
		m, err := decodeQueueMessage(&inv)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(m.Body) != body || m.DequeueCount != 2 || m.ID != "abc" {
			t.Fatalf("%s: %+v body %s", name, m, m.Body)
		}
	}
	var inv invocation
	_ = json.Unmarshal([]byte(`{"Data":{"message":"\"x\""},"Metadata":{"DequeueCount":"many"}}`), &inv)
	if _, err := decodeQueueMessage(&inv); err == nil || !strings.Contains(err.Error(), "DequeueCount") {
		t.Fatalf("bad DequeueCount: err = %v", err)
	}
}

func TestTimerInfoForms(t *testing.T) {
	inv := envelope(t, "timer.json")
	ti, err := decodeTimer(&inv)
	if err != nil {
		t.Fatal(err)
	}
	if ti.ScheduleStatus == nil || !ti.ScheduleStatus.Next.Equal(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)) || bool(ti.IsPastDue) || !bool(ti.Schedule.AdjustForDST) {
		t.Fatalf("timer = %+v", ti)
	}
	// Monitoring off: ScheduleStatus null; times without zone; the whole value as a string.
	for name, env := range map[string]string{
		"null status": `{"Data":{"timer":{"Schedule":{"AdjustForDST":false},"ScheduleStatus":null,"IsPastDue":true}}}`,
		"as string":   `{"Data":{"timer":"{\"Schedule\":{\"AdjustForDST\":false},\"ScheduleStatus\":{\"Last\":\"2024-05-01T11:55:00\",\"Next\":\"2024-05-01T12:00:00Z\",\"LastUpdated\":\"2024-05-01T11:55:00.1234567\"},\"IsPastDue\":true}"}}`,
	} {
		var inv invocation
		if err := json.Unmarshal([]byte(env), &inv); err != nil {
			t.Fatal(err)
		}
		ti, err := decodeTimer(&inv)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bool(ti.IsPastDue) {
			t.Fatalf("%s: IsPastDue lost", name)
		}
		if name == "as string" && !ti.ScheduleStatus.Last.Equal(time.Date(2024, 5, 1, 11, 55, 0, 0, time.UTC)) {
			t.Fatalf("%s: Last = %v", name, ti.ScheduleStatus.Last)
		}
	}
}

func TestDecodeEventBothSchemas(t *testing.T) {
	eg := envelope(t, "eventgrid.json")
	ev, err := DecodeEvent(eg.Data["event"])
	if err != nil {
		t.Fatal(err)
	}
	if ev.Schema != SchemaEventGrid || ev.ID != "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66" || !strings.HasSuffix(ev.Source, "/topics/security") || ev.Type != "Contoso.Devices.DeviceCompromised" {
		t.Fatalf("event grid event = %+v", ev)
	}
	if ev.Time.Nanosecond() != 123456700 {
		t.Fatalf("eventTime = %v", ev.Time)
	}
	ce := envelope(t, "cloudevent.json")
	ev, err = DecodeEvent(ce.Data["event"])
	if err != nil {
		t.Fatal(err)
	}
	if ev.Schema != SchemaCloudEvents || ev.Source != "/assets/inventory" || ev.Subject != "devices/sensor-042" {
		t.Fatalf("cloud event = %+v", ev)
	}
	f, err := parseFields(ev.Data)
	if err != nil || f.RegistrationID != "sensor-042" || f.Action != "disable" {
		t.Fatalf("fields = %+v, %v", f, err)
	}
}

func TestDecodeEventDataForms(t *testing.T) {
	want := "sensor-7"
	cases := map[string]string{
		"EG data as string":     `{"id":"1","topic":"/t","subject":"s","eventType":"device-lost","eventTime":"2024-05-01T12:00:00Z","data":"{\"registrationId\":\"sensor-7\"}","dataVersion":"1"}`,
		"CE data_base64":        `{"specversion":"1.0","type":"device-lost","source":"/s","id":"1","data_base64":"eyJyZWdpc3RyYXRpb25JZCI6InNlbnNvci03In0="}`,
		"CE data as string":     `{"specversion":"1.0","type":"device-lost","source":"/s","id":"1","data":"{\"registrationId\":\"sensor-7\"}"}`,
		"CE numeric-looking id": `{"specversion":"1.0","type":"device-lost","source":"/s","id":"1","data":{"REGISTRATIONID":"sensor-7"}}`,
		"CE id only in subject": `{"specversion":"1.0","type":"device-lost","source":"/s","id":"1","subject":"registrations/sensor-7"}`,
	}
	for name, raw := range cases {
		ev, err := DecodeEvent(json.RawMessage(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p := Admission{Events: DefaultEventTypes()}
		req, rej := p.Normalize(ev, time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC))
		if rej != nil {
			t.Fatalf("%s: rejected: %s", name, rej.Reason)
		}
		if req.RegistrationID != want || req.Intent != deprovision.IntentLost {
			t.Fatalf("%s: request = %+v", name, req)
		}
	}
}

func TestDecodeEventErrorsKeepIdentity(t *testing.T) {
	cases := map[string]struct{ raw, id, source, msg string }{
		"CE without type": {`{"specversion":"1.0","source":"/s","id":"e1"}`, "e1", "/s", "type"},
		"CE bad time":     {`{"specversion":"1.0","type":"device-lost","source":"/s","id":"e2","time":"yesterday"}`, "e2", "/s", "time"},
		"CE 0.3":          {`{"specversion":"0.3","type":"device-lost","source":"/s","id":"e3"}`, "e3", "/s", "specversion"},
		"EG without time": {`{"id":"e4","topic":"/t","eventType":"device-lost","subject":"x","data":{}}`, "e4", "/t", "eventTime"},
		"neither schema":  {`{"id":"e5","source":"/s"}`, "e5", "/s", "neither schema"},
	}
	for name, c := range cases {
		ev, err := DecodeEvent(json.RawMessage(c.raw))
		if err == nil {
			t.Fatalf("%s: decoded without error", name)
		}
		if ev.ID != c.id || ev.Source != c.source || !strings.Contains(err.Error(), c.msg) {
			t.Fatalf("%s: event %+v, err %v", name, ev, err)
		}
	}
}

func TestEventTypeMapping(t *testing.T) {
	m, err := ParseEventTypes("Acme.Asset.Disposed=retired, breach=Compromised")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]deprovision.Intent{
		"device-compromised":                deprovision.IntentCompromised,
		"DEVICE_COMPROMISED":                deprovision.IntentCompromised,
		"DeviceCompromised":                 deprovision.IntentCompromised,
		"device.compromised":                deprovision.IntentCompromised,
		"Contoso.Devices.DeviceCompromised": deprovision.IntentCompromised,
		"Contoso.Devices.device-stolen":     deprovision.IntentStolen,
		"deviceFound":                       deprovision.IntentRecovered,
		"EnrollmentGroupCompromised":        deprovision.IntentGroupCompromised,
		"Contoso.enrollment_group_retired":  deprovision.IntentGroupRetired,
		"acme.asset.disposed":               deprovision.IntentRetired,
		"Contoso.Breach":                    deprovision.IntentCompromised,
	}
	for typ, want := range cases {
		got, ok := m.Intent(typ)
		if !ok || got != want {
			t.Errorf("Intent(%q) = %q, %v; want %q", typ, got, ok, want)
		}
	}
	for _, typ := range []string{"Contoso.NotADevice.Compromised", "device", "compromised", "", "Contoso.DeviceCompromisedLater"} {
		if got, ok := m.Intent(typ); ok {
			t.Errorf("Intent(%q) = %q; want no match", typ, got)
		}
	}
	for _, bad := range []string{"x", "x=", "x=exploded"} {
		if _, err := ParseEventTypes(bad); err == nil {
			t.Errorf("ParseEventTypes(%q) accepted", bad)
		}
	}
}

func TestNormalizeRejections(t *testing.T) {
	now := time.Date(2024, 5, 3, 12, 0, 0, 0, time.UTC)
	p := Admission{
		Events:         DefaultEventTypes(),
		AllowedSources: map[deprovision.Intent][]string{deprovision.IntentCompromised: {"/topics/security"}},
		MaxEventAge:    24 * time.Hour,
	}
	ev := func(typ, source string, at time.Time, data string) Event {
		return Event{ID: "e", Source: source, Type: typ, Time: at, Data: json.RawMessage(data)}
	}
	cases := map[string]struct {
		ev   Event
		want string
	}{
		"unknown type":       {ev("device-exploded", "/s", now, `{"registrationId":"a"}`), "not a deprovisioning event type"},
		"source not allowed": {ev("device-compromised", "/topics/other", now, `{"registrationId":"a"}`), "ALLOWED_SOURCES_COMPROMISED"},
		"too old":            {ev("device-lost", "/s", now.Add(-48*time.Hour), `{"registrationId":"a"}`), "MAX_EVENT_AGE"},
		"no registration id": {ev("device-lost", "/s", now, `{"deviceId":"a"}`), "registration id"},
		"no group":           {ev("enrollment-group-retired", "/s", now, `{}`), "enrollmentGroupId"},
		"bad action":         {ev("device-lost", "/s", now, `{"registrationId":"a","action":"explode"}`), "action"},
		"moved no target":    {ev("device-moved", "/s", now, `{"registrationId":"a"}`), "targetHub"},
		"id with slash":      {ev("device-lost", "/s", now, `{"registrationId":"a/b"}`), "registrationId"},
		"object field":       {ev("device-lost", "/s", now, `{"registrationId":{"x":1}}`), "registrationId is a JSON object"},
		"not a PEM":          {ev("device-lost", "/s", now, `{"registrationId":"a","certificate":"MIIB"}`), "PEM"},
		"no source":          {ev("device-lost", "", now, `{"registrationId":"a"}`), "no source"},
		"bad dryRun":         {ev("device-lost", "/s", now, `{"registrationId":"a","dryRun":"maybe"}`), "dryRun"},
	}
	for name, c := range cases {
		req, rej := p.Normalize(c.ev, now)
		if rej == nil {
			t.Errorf("%s: accepted: %+v", name, req)
			continue
		}
		if !strings.Contains(rej.Reason, c.want) {
			t.Errorf("%s: reason %q lacks %q", name, rej.Reason, c.want)
		}
		if req.EventID != "e" {
			t.Errorf("%s: identity lost: %+v", name, req)
		}
	}
	req, rej := p.Normalize(ev("device-compromised", "/topics/security/", now, `{"registrationId":"a","dryRun":"true","iotHub":"h.azure-devices.net"}`), now)
	if rej != nil || !req.DryRun || req.Hub != "h.azure-devices.net" {
		t.Fatalf("allowed event: %+v %v", req, rej)
	}
	p.DryRun = true
	req, _ = p.Normalize(ev("device-lost", "/s", now, `{"registrationId":"a","dryRun":false}`), now)
	if !req.DryRun {
		t.Fatal("an event turned the global dry run off")
	}
}

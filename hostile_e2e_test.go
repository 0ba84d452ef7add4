package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/devhost"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/apptest"
	"dpsdeprov/internal/testenv"
)

// hostileEvent is one file of handler/testdata/hostile (described in handler/hostile_test.go,
// which runs the same corpus in process).
type hostileEvent struct {
	name   string
	Expect string `json:"expect"`
	// ExpectThroughHost, when set, is what the reason says once a host has parsed the event:
	// the host's Json.NET keeps the last of a key given twice (devhost/lastwins.go), so the
	// handler never sees that duplicate.
	ExpectThroughHost string            `json:"expectThroughHost"`
	Event             json.RawMessage   `json:"event"`
	EventText         *string           `json:"eventText"`
	Before            []json.RawMessage `json:"before"`
}

func loadHostileCorpus(t *testing.T, now time.Time, uid string) []hostileEvent {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("handler", "testdata", "hostile", "*.json"))
	if err != nil || len(files) < 60 {
		t.Fatalf("the hostile corpus has %d events (at least 60 are required): %v", len(files), err)
	}
	r := strings.NewReplacer("{{now}}", now.UTC().Format(time.RFC3339Nano), "{{old}}", now.Add(-30*24*time.Hour).UTC().Format(time.RFC3339),
		"{{future}}", now.Add(365*24*time.Hour).UTC().Format(time.RFC3339), "{{uid}}", uid)
	var out []hostileEvent
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var e hostileEvent
		if err := json.Unmarshal([]byte(r.Replace(string(b))), &e); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		e.name = strings.TrimSuffix(filepath.Base(f), ".json")
		out = append(out, e)
	}
	return out
}

// hostBody wraps an event value as the host does for the DeviceEvents function.
func hostBody(t *testing.T, event json.RawMessage, text *string) []byte {
	t.Helper()
	if text != nil {
		event, _ = json.Marshal(*text)
	}
	if len(event) == 0 {
		event = json.RawMessage("null")
	}
	b, err := json.Marshal(map[string]any{
		"Data":     map[string]json.RawMessage{"event": event},
		"Metadata": map[string]any{"sys": map[string]string{"MethodName": "DeviceEvents", "UtcNow": time.Now().UTC().Format(time.RFC3339Nano), "RandGuid": "6795274a-8fd2-4061-8bfa-54ee3929dbcd"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var rejectedOperation = regexp.MustCompile(`rejected: .*\(operation (op-[0-9a-f]+)\)`)

// The hostile corpus through the real binary, the real engine, a journal in Azurite and the
// emulator: each event is answered 2xx, journaled as rejected with a reason that says what
// is wrong, and makes no call to DPS or a hub.
func TestHostileCorpusEndToEnd(t *testing.T) {
	r := newRig(t, 1, map[string]string{
		"ALLOWED_SOURCES_COMPROMISED": "/security/tooling, " + egTopic,
		"ALLOWED_SOURCES_SOLD":        "/assets/inventory",
	})
	now := time.Now()
	events := loadHostileCorpus(t, now, testenv.UniqueName("h"))
	big := map[string]any{"specversion": "1.0", "type": "device-compromised", "source": "/security/tooling", "id": "hostile-oversize",
		"time": now.UTC().Format(time.RFC3339), "data": map[string]string{"registrationId": r.device(0), "padding": strings.Repeat("A", 1<<20)}}
	bigJSON, _ := json.Marshal(big)
	events = append(events, hostileEvent{name: "oversize", Expect: "Event Grid delivers events of at most", Event: bigJSON})

	calls := func() int64 {
		var n int64
		for _, o := range r.emu.Stats().Operations {
			n += o.Calls
		}
		return n
	}
	for _, e := range events {
		t.Run(e.name, func(t *testing.T) {
			for _, b := range e.Before {
				if status, res := r.app.invoke(t, "DeviceEvents", hostBody(t, b, nil)); status != 200 {
					t.Fatalf("the event before answered %d: %v", status, res.Logs)
				}
			}
			before := calls()
			status, res := r.app.invoke(t, "DeviceEvents", hostBody(t, e.Event, e.EventText))
			if status < 200 || status > 299 {
				t.Fatalf("answered %d: Event Grid would retry a hostile event; logs %v", status, res.Logs)
			}
			if after := calls(); after != before {
				t.Fatalf("the event made %d calls to DPS or a hub: %+v", after-before, r.emu.Stats().Operations)
			}
			m := rejectedOperation.FindStringSubmatch(strings.Join(res.Logs, "\n"))
			if m == nil {
				t.Fatalf("no rejection in the invocation's logs: %q", res.Logs)
			}
			op, err := r.journal.GetOperation(context.Background(), m[1])
			if err != nil {
				t.Fatalf("rejection %s is not in the journal: %v", m[1], err)
			}
			if op.Status != deprovision.StatusRejected || !strings.Contains(op.Reason, e.Expect) {
				t.Fatalf("journaled %s (%q); want rejected saying %q", op.Status, op.Reason, e.Expect)
			}
		})
	}
}

// No secret reaches a log line, a journal row or an outcome event: not the app's own keys
// (DPS, hubs, storage, outcome topic), not a group's symmetric key or a key derived from it,
// and not the secrets that events carry by mistake or by malice.
func TestNoSecretLeaks(t *testing.T) {
	r := newRig(t, 1, map[string]string{"ALLOWED_SOURCES_COMPROMISED": "/security/tooling, " + egTopic})
	info := r.emu.Info()
	seeded, err := r.emu.Seed(emulator.SeedSpec{Prefix: testenv.UniqueName("sec"), Registrations: 2})
	if err != nil {
		t.Fatal(err)
	}
	group := seeded.Groups[0]
	member := group.ID + "-d0"
	mac := hmac.New(sha256.New, mustBase64(t, group.PrimaryKey))
	mac.Write([]byte(member))
	derived := base64.StdEncoding.EncodeToString(mac.Sum(nil))

	sig := "c2lnbmF0dXJlLW9mLWEtc2FzLXRva2VuLWZvci10ZXN0cw"
	eventKey := "ZXZlbnQta2V5LXRoYXQtbXVzdC1uZXZlci1iZS1zdG9yZWQ="
	sas := "SharedAccessSignature sr=hub1.azure-devices.net&sig=" + sig + "&se=1999999999&skn=iothubowner"
	conn := "HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + eventKey
	secrets := map[string]string{
		"event SAS signature": sig, "event key": strings.TrimRight(eventKey, "="),
		"group key": strings.TrimRight(group.PrimaryKey, "="), "derived device key": strings.TrimRight(derived, "="),
		"outcome topic key": "outcome-topic-key", "storage account key": connectionValue(t, sharedAzurite(t).ConnectionString(), "AccountKey"),
		"DPS key": connectionValue(t, info.DPS.ConnectionString, "SharedAccessKey"),
	}
	for _, h := range info.Hubs {
		secrets["hub key "+h.Name] = connectionValue(t, h.ConnectionString, "SharedAccessKey")
	}

	ce := func(id, typ, source string, data map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"specversion": "1.0", "type": typ, "source": source, "id": id,
			"time": time.Now().UTC().Format(time.RFC3339Nano), "data": data})
		return hostBody(t, b, nil)
	}
	var logs []string
	send := func(body []byte) {
		status, res := r.app.invoke(t, "DeviceEvents", body)
		if status != 200 {
			t.Fatalf("answered %d: %v", status, res.Logs)
		}
		logs = append(logs, res.Logs...)
	}
	// Accepted, with secrets pasted into the reason.
	send(ce("sec-1", "device-compromised", "/security/tooling", map[string]any{"registrationId": r.device(0), "reason": "token " + sas + " and " + conn}))
	// A move of a symmetric-key group member: the engine reads the group key to derive the
	// member's key for its new enrollment.
	current, _ := r.hubDevice(t, member)
	target := info.Hubs[0].Host
	if strings.EqualFold(current, target) {
		target = info.Hubs[1].Host
	}
	send(ce("sec-2", "device-moved", "/assets/inventory", map[string]any{"registrationId": member, "enrollmentGroupId": group.ID, "targetHub": target, "reason": "moved; key " + eventKey}))
	// Rejected, with secrets in the fields.
	send(ce("sec-3", "device-compromised", "/security/tooling", map[string]any{"registrationId": r.device(0), "deviceId": "SharedAccessKey=" + eventKey}))
	send(ce("sec-4", "device-compromised", sas, map[string]any{"registrationId": r.device(0)}))
	send(ce("sec-5", "device-compromised", "/security/tooling", map[string]any{"registrationId": sas}))
	send(ce(conn, "device-lost", "/assets/inventory", map[string]any{"registrationId": r.device(0)}))
	send(ce("sec-7", "device-lost", "/assets/inventory", map[string]any{"registrationId": r.device(0), "certificate": "-----BEGIN PRIVATE KEY-----\n" + eventKey + "\n-----END PRIVATE KEY-----\n"}))
	send(ce("sec-8", "device-lost", "/assets/inventory", map[string]any{"registrationId": r.device(0), "reason": strings.Repeat("x", 2000) + sas}))
	// And through the Operations endpoint.
	post, _ := json.Marshal(map[string]any{"intent": "lost", "registrationId": r.device(0), "reason": conn, "dryRun": true})
	body, _ := json.Marshal(map[string]any{"Data": map[string]any{"req": map[string]any{"Url": "http://localhost/api/operations", "Method": "POST", "Query": map[string]string{}, "Params": map[string]string{}, "Body": string(post)}}, "Metadata": map[string]any{}})
	status, res := r.app.invoke(t, "Operations", body)
	if status != 200 {
		t.Fatalf("Operations answered %d: %v", status, res.Logs)
	}
	logs = append(logs, res.Logs...)
	logs = append(logs, string(res.Outputs["res"]))

	// Let the outcome events of every operation arrive.
	r.topic.waitFor(t, deprovision.OperationID("/security/tooling", "sec-1"))
	r.topic.waitFor(t, deprovision.OperationID("/assets/inventory", "sec-2"))

	// The move must really have run, or the derived key was never at risk.
	if op, steps := r.operation(t, "/assets/inventory", "sec-2"); op.Status != deprovision.StatusSucceeded || len(steps) == 0 {
		t.Fatalf("the move of %s ended %s (%s) with %d steps", member, op.Status, op.Reason, len(steps))
	}
	haystacks := map[string]string{"handler log": r.app.log(), "invocation logs": strings.Join(logs, "\n")}
	r.topic.mu.Lock()
	ev, _ := json.Marshal(r.topic.events)
	r.topic.mu.Unlock()
	haystacks["outcome events"] = string(ev)
	svc, err := aztables.NewServiceClientFromConnectionString(sharedAzurite(t).ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var rows strings.Builder
	tables := svc.NewListTablesPager(nil)
	for tables.More() {
		page, err := tables.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range page.Tables {
			entities := svc.NewClient(*tb.Name).NewListEntitiesPager(nil)
			for entities.More() {
				p, err := entities.NextPage(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range p.Entities {
					rows.Write(e)
					rows.WriteByte('\n')
				}
			}
		}
	}
	haystacks["journal rows"] = rows.String()
	if rows.Len() == 0 || !strings.Contains(rows.String(), "sec-1") {
		t.Fatal("the journal scan found no rows: the scan itself is broken")
	}
	for where, text := range haystacks {
		for what, s := range secrets {
			if s == "" {
				t.Fatalf("secret %s is empty", what)
			}
			// Stored JSON may escape + and / differently; look for a long plain prefix too.
			probe := s
			if len(probe) > 16 {
				probe = strings.NewReplacer("+", "", "/", "").Replace(s)[:16]
			}
			if strings.Contains(text, s) || (len(s) > 16 && strings.Contains(text, probe)) {
				i := strings.Index(text, probe)
				lo, hi := max(0, i-120), min(len(text), i+120)
				t.Errorf("%s appears in the %s: …%s…", what, where, text[lo:hi])
			}
		}
	}
}

func mustBase64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// connectionValue returns one key's value from a connection string.
func connectionValue(t *testing.T, cs, key string) string {
	t.Helper()
	for _, part := range strings.Split(cs, ";") {
		if k, v, ok := strings.Cut(part, "="); ok && strings.EqualFold(k, key) {
			return v
		}
	}
	t.Fatalf("no %s in the connection string", key)
	return ""
}

// devhostRig is the real handler binary behind devhost, over Azurite and the emulator, as the
// Functions host would run it, with the journal opened beside it.
type devhostRig struct {
	host    *devhost.Host
	emu     *emulator.Emulator
	ops     *aztables.Client
	journal deprovision.Journal
}

func newDevhostRig(t *testing.T) *devhostRig {
	t.Helper()
	az := sharedAzurite(t)
	emu := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	info := emu.Info()
	prefix := testenv.UniqueName("hostile")
	settings := apptest.Settings(az, info, prefix)
	settings["ALLOWED_SOURCES_COMPROMISED"] = "/security/tooling, " + egTopic
	settings["ALLOWED_SOURCES_SOLD"] = "/assets/inventory"
	host, _ := apptest.Start(t, ".", handlerBin, settings, nil)
	svc, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.New(context.Background(), svc, journal.Options{TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return &devhostRig{host: host, emu: emu, ops: svc.NewClient(prefix + "ops"), journal: j}
}

// rejected lists the journal's rejected operations by id, with their reasons.
func (r *devhostRig) rejected(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	pager := r.ops.NewListEntitiesPager(nil)
	for pager.More() {
		p, err := pager.NextPage(context.Background())
		var re *azcore.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return m // the handler creates its tables as it starts
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range p.Entities {
			var e struct{ PartitionKey, RowKey, Status, Reason string }
			if json.Unmarshal(raw, &e) == nil && e.RowKey == "op" && e.Status == string(deprovision.StatusRejected) {
				m[e.PartitionKey] = e.Reason
			}
		}
	}
	return m
}

// calls counts the calls made to DPS and the hubs.
func (r *devhostRig) calls() int64 {
	var n int64
	for _, o := range r.emu.Stats().Operations {
		n += o.Calls
	}
	return n
}

// deliver posts events as Event Grid does: a JSON array (or, for a truncated delivery, the
// text as it is), and returns the status the host answered.
func (r *devhostRig) deliver(t *testing.T, event json.RawMessage, text *string) int {
	t.Helper()
	if len(event) == 0 {
		event = json.RawMessage("null")
	}
	body := append(append([]byte("["), event...), ']')
	if text != nil {
		body = []byte(*text)
	}
	req, _ := http.NewRequest(http.MethodPost, r.host.WebhookURL("DeviceEvents"), bytes.NewReader(body))
	req.Header.Set("aeg-event-type", "Notification")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The hostile corpus through devhost, the local stand-in for the Functions host: each event is
// posted to the Event Grid webhook as Event Grid delivers it, and the handler binary behind
// devhost runs it over the real engine, Azurite and the emulator. Events that are JSON objects
// are answered 2xx, journaled as rejected with the expected reason (or, for a key given twice,
// the reason left once the host kept the last value), and make no call to DPS or a hub. The
// others (numbers, text, truncated JSON) cannot come through Event Grid, which refuses them at
// publish time; the host's webhook refuses them too (400) without invoking the handler.
func TestHostileCorpusThroughDevhost(t *testing.T) {
	r := newDevhostRig(t)
	now := time.Now()
	events := loadHostileCorpus(t, now, testenv.UniqueName("dh"))
	objects := 0
	for _, e := range events {
		t.Run(e.name, func(t *testing.T) {
			for _, b := range e.Before {
				if status := r.deliver(t, b, nil); status/100 != 2 {
					t.Fatalf("the event before answered %d", status)
				}
			}
			isObject := e.EventText == nil && len(bytes.TrimSpace(e.Event)) > 0 && bytes.TrimSpace(e.Event)[0] == '{'
			was, before := r.rejected(t), r.calls()
			status := r.deliver(t, e.Event, e.EventText)
			if after := r.calls(); after != before {
				t.Fatalf("the event made %d calls to DPS or a hub", after-before)
			}
			if !isObject {
				if status != http.StatusBadRequest {
					t.Fatalf("the webhook answered %d to a non-object; the host answers 400", status)
				}
				return
			}
			objects++
			if status/100 != 2 {
				t.Fatalf("answered %d: Event Grid would retry a hostile event", status)
			}
			want := e.Expect
			if e.ExpectThroughHost != "" {
				want = e.ExpectThroughHost
			}
			var found []string
			for id, reason := range r.rejected(t) {
				if _, old := was[id]; !old {
					found = append(found, reason)
					if strings.Contains(reason, want) {
						return
					}
				}
			}
			t.Fatalf("no new rejection saying %q; new rejections: %q", want, found)
		})
	}
	if objects < 60 {
		t.Fatalf("only %d hostile JSON-object events went through devhost; at least 60 are required", objects)
	}
}

// cutField matches what the journal keeps of a field cut to its bound (handler/bound.go).
var cutField = regexp.MustCompile(`…\[(\d+) characters cut, sha256:([0-9a-f]{64})\]$`)

// Events up to Event Grid's 1 MB that put it all in one field (the 300,000-character reason of
// the issue, and each other field) are answered 2xx through devhost and journaled rejected,
// in Azurite, with the field cut to its bound and the cut named by its length and SHA-256.
func TestOversizedFieldsJournaledBoundedThroughDevhost(t *testing.T) {
	r := newDevhostRig(t)
	uid := testenv.UniqueName("big")
	const near1MB = 1_000_000 - 4096 // the event's JSON is at most 1 MB with its envelope
	pad := func(s string, n int) string { return strings.Repeat(s, n/len(s)) }
	type field struct {
		name  string
		value string
		get   func(deprovision.Request) string
		limit int
	}
	fields := []field{
		{"reason", pad("r", 300_000), func(q deprovision.Request) string { return q.Reason }, 1024},
		{"reason", pad("é", near1MB/2), func(q deprovision.Request) string { return q.Reason }, 1024},
		{"registrationId", pad("sensor", near1MB), func(q deprovision.Request) string { return q.RegistrationID }, 1024},
		{"deviceId", pad("d\u0001", near1MB/4), func(q deprovision.Request) string { return q.DeviceID }, 1024},
		{"iotHub", pad("hub.", near1MB), func(q deprovision.Request) string { return q.Hub }, 1024},
		{"certificate", "-----BEGIN CERTIFICATE-----\n" + pad("QUJD", near1MB), func(q deprovision.Request) string { return q.CertificatePEM }, 60 << 10},
		{"certificate", pad("\u0007", near1MB/6), func(q deprovision.Request) string { return q.CertificatePEM }, 4096},
	}
	for i, f := range fields {
		t.Run(fmt.Sprintf("%s-%d", f.name, i), func(t *testing.T) {
			id := fmt.Sprintf("%s-%d", uid, i)
			data := map[string]any{"registrationId": "sensor-a", f.name: f.value}
			ev, err := json.Marshal(map[string]any{"specversion": "1.0", "type": "device-lost", "source": "/assets/inventory", "id": id,
				"time": time.Now().UTC().Format(time.RFC3339), "data": data})
			if err != nil {
				t.Fatal(err)
			}
			if len(ev) > 1_000_000 {
				t.Fatalf("the test event is %d bytes, over Event Grid's 1 MB", len(ev))
			}
			before := r.calls()
			if status := r.deliver(t, ev, nil); status/100 != 2 {
				t.Fatalf("answered %d to a %d-byte event: Event Grid would retry it for 24 hours", status, len(ev))
			}
			if r.calls() != before {
				t.Fatal("the oversized event made calls to DPS or a hub")
			}
			op, err := r.journal.GetOperation(context.Background(), deprovision.OperationID("/assets/inventory", id))
			if err != nil {
				t.Fatalf("the %d-byte event is not in the journal: %v", len(ev), err)
			}
			if op.Status != deprovision.StatusRejected {
				t.Fatalf("journaled %s (%s), want rejected", op.Status, op.Reason)
			}
			kept := f.get(op.Request)
			if n := len([]rune(kept)); n > f.limit {
				t.Fatalf("the journal kept %d characters of %s; the bound is %d", n, f.name, f.limit)
			}
			m := cutField.FindStringSubmatch(kept)
			if m == nil {
				t.Fatalf("%s was not cut with a marker: …%q", f.name, kept[max(0, len(kept)-100):])
			}
			sent := f.value
			prefix := cutField.ReplaceAllString(kept, "")
			cutPart := strings.TrimPrefix(sent, prefix)
			if !strings.HasPrefix(sent, prefix) || m[1] != strconv.Itoa(len([]rune(cutPart))) || m[2] != fmt.Sprintf("%x", sha256.Sum256([]byte(cutPart))) {
				t.Fatalf("the marker %q does not name what was cut (%d characters)", m[0], len([]rune(cutPart)))
			}
		})
	}
}

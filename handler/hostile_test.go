package handler

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"dpsdeprov/deprovision"
)

// hostileCase is one file of testdata/hostile: a malformed or hostile event and a fragment
// of the reason it must be rejected for. The root package's hostile_e2e_test.go runs the same
// files through the real binary, the real engine, Azurite and the emulator.
type hostileCase struct {
	Name        string
	Description string `json:"description"`
	// Expect is a fragment of the rejection reason.
	Expect string `json:"expect"`
	// Event is the value of the event binding; EventText, when set, is sent instead as a JSON
	// string holding that text (how truncated JSON can reach the handler at all).
	Event     json.RawMessage `json:"event"`
	EventText *string         `json:"eventText"`
	// Before are events delivered first (for replays).
	Before []json.RawMessage `json:"before"`
}

// loadHostile reads the corpus with its placeholders filled: {{now}}, {{old}} (30 days ago),
// {{future}} (a year ahead) and {{uid}} (unique to this run).
func loadHostile(t *testing.T, now time.Time, uid string) []hostileCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "hostile", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no hostile corpus: %v", err)
	}
	r := strings.NewReplacer("{{now}}", now.UTC().Format(time.RFC3339Nano), "{{old}}", now.Add(-30*24*time.Hour).UTC().Format(time.RFC3339),
		"{{future}}", now.Add(365*24*time.Hour).UTC().Format(time.RFC3339), "{{uid}}", uid)
	var cases []hostileCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c hostileCase
		if err := json.Unmarshal([]byte(r.Replace(string(b))), &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c.Name = strings.TrimSuffix(filepath.Base(f), ".json")
		if c.Expect == "" {
			t.Fatalf("%s has no expect", f)
		}
		cases = append(cases, c)
	}
	return cases
}

// hostileEnvelope wraps an event value into the host's invocation body: the event as it
// came, in Data["event"], and its data in Metadata.
func hostileEnvelope(t *testing.T, event json.RawMessage, text *string) []byte {
	t.Helper()
	if text != nil {
		b, _ := json.Marshal(*text)
		event = b
	}
	if len(event) == 0 {
		event = json.RawMessage("null")
	}
	env := map[string]any{
		"Data":     map[string]json.RawMessage{BindingEvent: event},
		"Metadata": map[string]any{"sys": map[string]string{"MethodName": FunctionDeviceEvents, "UtcNow": "2024-05-01T12:00:00.5012345Z", "RandGuid": "6795274a-8fd2-4061-8bfa-54ee3929dbcd"}},
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// oversizeEvent is an event just over Event Grid's 1 MB limit, made here rather than committed.
func oversizeEvent(now time.Time, uid string) json.RawMessage {
	ev := map[string]any{"specversion": "1.0", "type": "device-compromised", "source": "/security/tooling", "id": "hostile-oversize-" + uid,
		"time": now.UTC().Format(time.RFC3339), "data": map[string]string{"registrationId": "sensor-a", "padding": strings.Repeat("A", MaxEventBytes)}}
	b, _ := json.Marshal(ev)
	return b
}

var operationInLog = regexp.MustCompile(`rejected: .*\(operation (op-[0-9a-f]+)\)`)

func hostileAdmission() Admission {
	return Admission{
		Events: DefaultEventTypes(),
		AllowedSources: map[deprovision.Intent][]string{
			deprovision.IntentCompromised: {"/security/tooling", "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventGrid/topics/security"},
			deprovision.IntentSold:        {"/assets/inventory"},
		},
		MaxEventAge: 48 * time.Hour,
		Hubs:        []string{"hub1.azure-devices.net", "hub2.azure-devices.net"},
	}
}

// Every hostile event is answered 2xx, journaled as rejected with a reason holding the
// expected words, and never reaches the engine as a request to carry out.
func TestHostileCorpus(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)
	cases := loadHostile(t, now, "inproc")
	if len(cases) < 60 {
		t.Fatalf("the corpus has %d events; at least 60 are required", len(cases))
	}
	cases = append(cases, hostileCase{Name: "oversize", Expect: "Event Grid delivers events of at most 1048576 bytes", Event: oversizeEvent(now, "inproc")})
	eng := newFakeEngine()
	srv := newTestServer(t, eng, Options{Admission: hostileAdmission(), Clock: fixedClock(now)})
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			for _, b := range c.Before {
				if status, res := post(t, srv, FunctionDeviceEvents, hostileEnvelope(t, b, nil)); status != 200 {
					t.Fatalf("the event before answered %d: %v", status, res.Logs)
				}
			}
			eng.mu.Lock()
			submitted := len(eng.submitted)
			eng.mu.Unlock()
			status, res := post(t, srv, FunctionDeviceEvents, hostileEnvelope(t, c.Event, c.EventText))
			if status != 200 {
				t.Fatalf("answered %d (Event Grid would retry a hostile event): %v", status, res.Logs)
			}
			eng.mu.Lock()
			defer eng.mu.Unlock()
			if len(eng.submitted) != submitted {
				t.Fatalf("the event reached the engine: %+v", eng.submitted[submitted:])
			}
			m := operationInLog.FindStringSubmatch(strings.Join(res.Logs, "\n"))
			if m == nil {
				t.Fatalf("no rejection in the logs: %q", res.Logs)
			}
			op := eng.ops[m[1]]
			if op == nil || op.Status != deprovision.StatusRejected {
				t.Fatalf("operation %s is not journaled as rejected: %+v", m[1], op)
			}
			if !strings.Contains(op.Reason, c.Expect) {
				t.Fatalf("reason %q does not say %q", op.Reason, c.Expect)
			}
			if strings.TrimSpace(op.Request.EventID) == "" || strings.TrimSpace(op.Request.Source) == "" {
				t.Fatalf("rejection journaled without identity: %+v", op.Request)
			}
		})
	}
}

package scenario_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
)

func (e *env) policyServer(p handler.Admission) *httptest.Server {
	e.t.Helper()
	p.Events = handler.DefaultEventTypes()
	h, err := handler.New(handler.Options{Engine: e.engine(nil), Admission: p, Clock: e.clock})
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	e.t.Cleanup(srv.Close)
	return srv
}

// TestEventPolicyGuardrails checks the guardrails that act before the engine, through the
// real handler against the emulator and a journal in Azurite: a source not allowed for the
// intent, an event older than MAX_EVENT_AGE and DRY_RUN each leave DPS and the hubs untouched
// (the emulator counts no write), and each event is journaled.
func TestEventPolicyGuardrails(t *testing.T) {
	e := newFaultEnv(t)
	key := randomKey()
	e.individualSK("pg-1", key)
	hub := e.mustProvision("pg-1", skCred(key))
	now := e.clock.Now()
	allow := map[deprovision.Intent][]string{deprovision.IntentCompromised: {"/security"}, deprovision.IntentSold: {"/asset"}}
	strict := e.policyServer(handler.Admission{AllowedSources: allow, MaxEventAge: 48 * time.Hour})
	dry := e.policyServer(handler.Admission{DryRun: true})
	e.em.ResetStats()

	cases := []struct {
		name   string
		srv    *httptest.Server
		req    deprovision.Request
		at     time.Time
		status deprovision.Status
		reason string
	}{
		{"asset management says compromised", strict, deprovision.Request{EventID: "a1", Source: "/asset", Intent: deprovision.IntentCompromised, RegistrationID: "pg-1"}, now, deprovision.StatusRejected, "ALLOWED_SOURCES_COMPROMISED"},
		{"security tooling says sold", strict, deprovision.Request{EventID: "s1", Source: "/security", Intent: deprovision.IntentSold, RegistrationID: "pg-1"}, now, deprovision.StatusRejected, "ALLOWED_SOURCES_SOLD"},
		{"too old", strict, deprovision.Request{EventID: "s2", Source: "/security", Intent: deprovision.IntentCompromised, RegistrationID: "pg-1"}, now.Add(-49 * time.Hour), deprovision.StatusRejected, "MAX_EVENT_AGE"},
		{"dry run everywhere", dry, deprovision.Request{EventID: "d1", Source: "/asset", Intent: deprovision.IntentSold, RegistrationID: "pg-1"}, now, deprovision.StatusPlanned, "dry run"},
	}
	for _, c := range cases {
		if _, err := deliverEvent(t, c.srv, eventFor(c.req, c.at)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		op, _, err := e.engine(nil).Operation(t.Context(), deprovision.OperationID(c.req.Source, "evt-"+c.req.EventID))
		if err != nil {
			t.Fatalf("%s: not journaled: %v", c.name, err)
		}
		if op.Status != c.status || !strings.Contains(op.Reason, c.reason) {
			t.Fatalf("%s: %s %q, want %s naming %q", c.name, op.Status, op.Reason, c.status, c.reason)
		}
	}
	if w := e.writes(); w != 0 {
		t.Fatalf("refused and dry-run events made %d writes: %v", w, e.writesByOp())
	}
	if d := e.device(hub, "pg-1"); d == nil || d.Status != "enabled" {
		t.Fatalf("device after refused events: %+v", d)
	}
	// The allowed source goes through.
	ok := deprovision.Request{EventID: "s3", Source: "/security", Intent: deprovision.IntentCompromised, RegistrationID: "pg-1"}
	if _, err := deliverEvent(t, strict, eventFor(ok, now)); err != nil {
		t.Fatal(err)
	}
	disabledIn(t, e, hub, "pg-1", "compromised")
}

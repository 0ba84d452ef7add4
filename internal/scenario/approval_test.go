package scenario_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
)

// guardedServer serves the real handler over an engine with guardrails and the Table budget.
func (e *env) guardedServer(g deprovision.Guardrails) *httptest.Server {
	e.t.Helper()
	b, err := journal.NewBudget(e.t.Context(), e.tbl, e.jopts)
	if err != nil {
		e.t.Fatal(err)
	}
	d := e.ports
	d.Budget = b
	eng := deprovision.NewEngine(d, deprovision.Config{LeaseDuration: time.Minute, GroupPageSize: 2, Guard: g})
	h, err := handler.New(handler.Options{Engine: eng, Admission: handler.Admission{Events: handler.DefaultEventTypes()}, Clock: e.clock})
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	e.t.Cleanup(srv.Close)
	return srv
}

// operationsCall invokes the Operations function as the host does and returns the `res`
// output's status and body.
func operationsCall(t *testing.T, srv *httptest.Server, method, kind, id string, headers map[string][]string, body any) (int, map[string]any) {
	t.Helper()
	req := map[string]any{"Url": "https://app/api/deprovision/" + kind + "/" + id, "Method": method, "Query": map[string]string{},
		"Headers": headers, "Params": map[string]string{"kind": kind, "id": id}, "Identities": []any{}}
	if body != nil {
		b, _ := json.Marshal(body)
		req["Body"] = string(b)
	}
	inv, _ := json.Marshal(map[string]any{"Data": map[string]any{"req": req}, "Metadata": map[string]any{}})
	resp, err := http.Post(srv.URL+"/"+handler.FunctionOperations, "application/json", bytes.NewReader(inv))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Outputs map[string]struct {
			StatusCode int    `json:"statusCode"`
			Body       string `json:"body"`
		}
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("invocation answer %s: %v", b, err)
	}
	res := out.Outputs[handler.BindingResult]
	var m map[string]any
	if err := json.Unmarshal([]byte(res.Body), &m); err != nil {
		t.Fatalf("res body %q: %v", res.Body, err)
	}
	return res.StatusCode, m
}

// TestGroupAboveTheLimitWaitsForApproval: a group-compromised event for a group above
// MAX_GROUP_DEVICES, delivered through the handler, changes nothing in DPS or the hubs (the
// emulator's counters say so), answers 2xx to every redelivery, and runs only once a person
// approves it through the Operations endpoint.
func TestGroupAboveTheLimitWaitsForApproval(t *testing.T) {
	e := newFaultEnv(t)
	key := randomKey()
	e.groupSK("ap-g", key)
	members := e.skMembers("ap-g", key, 5)
	srv := e.guardedServer(deprovision.Guardrails{MaxGroupDevices: 4, MaxDestructivePerHour: 100})
	e.em.ResetStats()

	req := deprovision.Request{EventID: "ap", Source: "/security", Intent: deprovision.IntentGroupCompromised, EnrollmentGroupID: "ap-g", Reason: "CA key leaked"}
	ev := eventFor(req, e.clock.Now().Add(-time.Minute))
	opID := deprovision.OperationID(req.Source, "evt-ap")
	for i := range 3 {
		if n, err := deliverEvent(t, srv, ev); err != nil || n != 1 {
			t.Fatalf("delivery %d of the held event: %d attempts, %v (a held operation answers 2xx at once)", i+1, n, err)
		}
	}
	if w := e.writes(); w != 0 {
		t.Fatalf("the held group operation made %d writes to DPS and the hubs: %v", w, e.writesByOp())
	}
	status, body := operationsCall(t, srv, "GET", "operations", opID, nil, nil)
	if status != http.StatusOK || body["status"] != string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("GET the held operation: %d %v", status, body)
	}
	if g := e.group("ap-g"); g.ProvisioningStatus != dps.ProvisioningStatusEnabled {
		t.Fatal("the group was disabled before approval")
	}

	status, body = operationsCall(t, srv, "POST", "approvals", opID, map[string][]string{"X-MS-CLIENT-PRINCIPAL-NAME": {"secops@contoso.com"}},
		map[string]any{"reason": "confirmed CA compromise, INC-2041"})
	if status != http.StatusAccepted || body["status"] != string(deprovision.StatusRunning) {
		t.Fatalf("approval: %d %v; want the group running, fanned out to the GroupWork queue", status, body)
	}
	e.groupWork(nil)
	if status, body = operationsCall(t, srv, "GET", "operations", opID, nil, nil); body["status"] != string(deprovision.StatusSucceeded) {
		t.Fatalf("after the GroupWork messages: %d %v", status, body)
	}
	if g := e.group("ap-g"); g.ProvisioningStatus != dps.ProvisioningStatusDisabled {
		t.Fatal("the approved group compromise left the group enabled")
	}
	for id, hub := range members {
		if d := e.device(hub, id); d == nil || d.Status != iothub.DeviceStatusDisabled {
			t.Fatalf("member %s after approval: %+v", id, d)
		}
	}
	_, steps, err := e.engine(nil).Operation(t.Context(), opID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 || steps[0].Kind != deprovision.StepApproval || steps[0].Target != "secops@contoso.com (claimed, not verified, from the X-MS-CLIENT-PRINCIPAL-NAME header with App Service authentication off)" {
		t.Fatalf("the approval is not journaled first: %+v", steps)
	}
	before := e.writes()
	if n, err := deliverEvent(t, srv, ev); err != nil || n != 1 || e.writes() != before {
		t.Fatalf("redelivery after approval: %d attempts, %v, writes %d → %d", n, err, before, e.writes())
	}
}

// TestDestructiveBudgetAcrossInstances: two app instances share the hourly budget in Table
// Storage; the operation beyond it waits for approval, a compromised device does not.
func TestDestructiveBudgetAcrossInstances(t *testing.T) {
	e := newFaultEnv(t)
	hubs := map[string]string{}
	keys := map[string]string{}
	for _, id := range []string{"bd-1", "bd-2", "bd-3", "bd-4"} {
		keys[id] = randomKey()
		e.individualSK(id, keys[id])
		hubs[id] = e.mustProvision(id, skCred(keys[id]))
	}
	g := deprovision.Guardrails{MaxDestructivePerHour: 2}
	a, b := e.guardedServer(g), e.guardedServer(g)
	at := e.clock.Now().Add(-time.Minute)
	for i, id := range []string{"bd-1", "bd-2"} {
		if _, err := deliverEvent(t, []*httptest.Server{a, b}[i], eventFor(request("sold-"+id, deprovision.IntentSold, id, 0), at)); err != nil {
			t.Fatal(err)
		}
	}
	e.em.ResetStats()
	held := request("sold-bd-3", deprovision.IntentSold, "bd-3", 0)
	if _, err := deliverEvent(t, b, eventFor(held, at)); err != nil {
		t.Fatal(err)
	}
	if w := e.writes(); w != 0 {
		t.Fatalf("the third sale in the hour wrote %d times", w)
	}
	if e.enrollment("bd-3") == nil || e.device(hubs["bd-3"], "bd-3") == nil {
		t.Fatal("the held sale changed the device")
	}
	if _, err := deliverEvent(t, a, eventFor(request("cmp-bd-4", deprovision.IntentCompromised, "bd-4", 0), at)); err != nil {
		t.Fatal(err)
	}
	disabledIn(t, e, hubs["bd-4"], "bd-4", "compromised")
	heldID := deprovision.OperationID("/scenario", "evt-sold-bd-3")
	status, body := operationsCall(t, a, "GET", "operations", heldID, nil, nil)
	if status != http.StatusOK || body["status"] != string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("the third sale: %d %v", status, body)
	}
	if status, body = operationsCall(t, a, "POST", "approvals", heldID, nil, map[string]any{"approvedBy": "asset-desk", "reason": "bulk resale batch 7"}); status != http.StatusOK || body["status"] != string(deprovision.StatusSucceeded) {
		t.Fatalf("approval: %d %v", status, body)
	}
	if e.enrollment("bd-3") != nil || e.device(hubs["bd-3"], "bd-3") != nil {
		t.Fatal("the approved sale left the enrollment or the identity")
	}
	e.mustNotProvision("bd-3", skCred(keys["bd-3"]))
}

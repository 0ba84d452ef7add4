package handler

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// httpInvocation builds an Operations invocation as the host sends it.
func httpInvocation(t *testing.T, method, kind, id string, headers map[string][]string, body any) []byte {
	t.Helper()
	b, _ := json.Marshal(body)
	req := map[string]any{"Url": "https://app/api/deprovision/" + kind + "/" + id, "Method": method, "Query": map[string]string{},
		"Headers": headers, "Params": map[string]string{"kind": kind, "id": id}, "Identities": []any{}, "Body": string(b)}
	if body == nil {
		delete(req, "Body")
	}
	inv, _ := json.Marshal(map[string]any{"Data": map[string]any{"req": req}, "Metadata": map[string]any{}})
	return inv
}

// hostQueue is the GroupWork queue as the Functions host serves it: the fan-out enqueues each
// batch as azure/workqueue writes it (JSON, base64), and deliver invokes the handler's
// GroupWork function with every message, as the queue trigger does, until none is left.
type hostQueue struct {
	mu    sync.Mutex
	texts []string
}

func (q *hostQueue) Enqueue(_ context.Context, b *deprovision.WorkBatch) error {
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.texts = append(q.texts, base64.StdEncoding.EncodeToString(body))
	return nil
}

func (q *hostQueue) deliver(t *testing.T, srv *httptest.Server) {
	t.Helper()
	q.mu.Lock()
	texts := q.texts
	q.texts = nil
	q.mu.Unlock()
	for i, text := range texts {
		// The host double-encodes the message text (a .NET string) and the string metadata.
		inner, _ := json.Marshal(text)
		id, _ := json.Marshal(fmt.Sprintf("msg-%d", i))
		inv, _ := json.Marshal(map[string]any{"Data": map[string]any{BindingMessage: string(inner)},
			"Metadata": map[string]any{"DequeueCount": "1", "Id": string(id)}})
		if status, r := post(t, srv, FunctionGroupWork, inv); status != http.StatusOK {
			t.Fatalf("GroupWork message %d: %d %+v", i, status, r)
		}
	}
}

func TestApprovalEndpointRunsAHeldGroupOperation(t *testing.T) {
	dps, hubs, j := fake.NewDPS(), fake.NewHubDevices("hub1.azure-devices.net"), fake.NewJournal()
	dps.AddGroup(deprovision.Group{ID: "cams", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "c2VjcmV0")
	for _, id := range []string{"cam-1", "cam-2", "cam-3"} {
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: "hub1.azure-devices.net"}, "cams")
		hubs.AddDevice(deprovision.Device{Hub: "hub1.azure-devices.net", DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	q := &hostQueue{}
	eng := deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j, Logger: slog.New(slog.DiscardHandler), Work: q},
		deprovision.Config{Guard: deprovision.Guardrails{MaxGroupDevices: 2}})
	h, err := New(Options{Engine: eng, GroupWorker: &EngineGroupWorker{Engine: eng}, Admission: Admission{Events: DefaultEventTypes()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	call := func(inv []byte) (int, map[string]any) {
		t.Helper()
		status, r := post(t, srv, FunctionOperations, inv)
		if status != http.StatusOK {
			t.Fatalf("invocation answered %d", status)
		}
		return httpRes(t, r)
	}

	status, body := call(httpInvocation(t, "POST", "requests", "", nil, map[string]any{"id": "cams-ca-leak", "intent": "group-compromised", "enrollmentGroupId": "cams", "dryRun": false}))
	if status != http.StatusAccepted || body["status"] != string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("group above the limit: %d %v", status, body)
	}
	id, _ := body["operationId"].(string)
	if id == "" {
		t.Fatalf("no operation id in %v", body)
	}
	if len(hubs.Writes)+len(dps.Writes) != 0 {
		t.Fatalf("held operation wrote: %v %v", dps.Writes, hubs.Writes)
	}

	if status, body = call(httpInvocation(t, "POST", "approvals", id, nil, map[string]any{"reason": "CA key leaked"})); status != http.StatusBadRequest || !strings.Contains(body["error"].(string), "approver") {
		t.Fatalf("approval without an approver: %d %v", status, body)
	}
	if status, body = call(httpInvocation(t, "POST", "approvals", id, map[string][]string{"X-MS-CLIENT-PRINCIPAL-NAME": {"alice@contoso.com"}}, map[string]any{})); status != http.StatusBadRequest || !strings.Contains(body["error"].(string), "reason") {
		t.Fatalf("approval without a reason: %d %v", status, body)
	}
	if len(hubs.Writes)+len(dps.Writes) != 0 {
		t.Fatal("a refused approval ran the operation")
	}
	// Without App Service authentication a principal header is whatever the caller typed:
	// neither it nor the body's name is journaled as verified.
	status, body = call(httpInvocation(t, "POST", "approvals", id, map[string][]string{"X-MS-CLIENT-PRINCIPAL-NAME": {"alice@contoso.com"}},
		map[string]any{"approvedBy": "mallory", "reason": "CA key leaked (INC-9)"}))
	if status != http.StatusAccepted || body["status"] != string(deprovision.StatusRunning) {
		t.Fatalf("approval: %d %v; want the group running, fanned out to the GroupWork queue", status, body)
	}
	q.deliver(t, srv)
	for _, id := range []string{"cam-1", "cam-2", "cam-3"} {
		if d, _ := hubs.Device("hub1.azure-devices.net", id); d.Enabled {
			t.Errorf("%s still enabled after the approved group compromise", id)
		}
	}
	status, body = call(httpInvocation(t, "GET", "operations", id, nil, nil))
	rec, _ := json.Marshal(body["journal"])
	if status != http.StatusOK || body["status"] != string(deprovision.StatusSucceeded) || !strings.Contains(string(rec), "mallory (request body, claimed, not verified)") ||
		!strings.Contains(string(rec), "INC-9") || strings.Contains(string(rec), "alice") || strings.Contains(string(rec), "verified by") {
		t.Fatalf("the journal does not show the approval: %d %s", status, rec)
	}

	if status, _ = call(httpInvocation(t, "POST", "approvals", id, nil, map[string]any{"approvedBy": "bob", "reason": "again"})); status != http.StatusOK {
		t.Fatalf("second approval of an approved operation: %d", status)
	}
	if status, _ = call(httpInvocation(t, "POST", "approvals", "op-unknown", nil, map[string]any{"approvedBy": "bob", "reason": "x"})); status != http.StatusNotFound {
		t.Fatalf("approval of an unknown operation: %d", status)
	}
	// A second held operation, denied: it ends rejected and nothing runs.
	status, body = call(httpInvocation(t, "POST", "requests", "", nil, map[string]any{"id": "cams-again", "intent": "group-retired", "enrollmentGroupId": "cams", "dryRun": false}))
	if body["status"] != string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("second group operation: %d %v", status, body)
	}
	before := len(hubs.Writes) + len(dps.Writes)
	status, body = call(httpInvocation(t, "POST", "denials", body["operationId"].(string), nil, map[string]any{"deniedBy": "bob", "reason": "duplicate of INC-9"}))
	if status != http.StatusOK || body["status"] != string(deprovision.StatusRejected) || !strings.Contains(body["reason"].(string), "denied by bob") {
		t.Fatalf("denial: %d %v", status, body)
	}
	if len(hubs.Writes)+len(dps.Writes) != before {
		t.Fatal("a denied operation wrote")
	}
	status, body = call(httpInvocation(t, "POST", "requests", "", nil, map[string]any{"id": "dry", "intent": "group-compromised", "enrollmentGroupId": "cams"}))
	if body["status"] != string(deprovision.StatusPlanned) {
		t.Fatalf("dry run: %d %v", status, body)
	}
	if status, _ = call(httpInvocation(t, "POST", "approvals", body["operationId"].(string), nil, map[string]any{"approvedBy": "bob", "reason": "x"})); status != http.StatusConflict {
		t.Fatalf("approval of a dry run: %d, want 409", status)
	}
}

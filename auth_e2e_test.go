package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/deprovision"
	"dpsdeprov/devhost"
	"dpsdeprov/emulator"
	"dpsdeprov/handler"
	"dpsdeprov/internal/apptest"
	"dpsdeprov/internal/testenv"
)

// authStack is the handler binary behind devhost, over Azurite and the emulator, with a group
// of four devices above the group guardrail (MAX_GROUP_DEVICES=2), so that group operations are
// held for approval.
type authStack struct {
	host  *devhost.Host
	ops   *aztables.Client
	group string
	out   *testenv.Output
}

// Test identities and their bearer tokens; the app registration's roles as docs/deploy.md
// declares them.
var (
	idReader   = devhost.Identity{ObjectID: "11111111-0000-4000-8000-000000000001", Name: "rita.reader@contoso.com", Roles: []string{handler.RoleReader}}
	idOperator = devhost.Identity{ObjectID: "22222222-0000-4000-8000-000000000002", Name: "otto.operator@contoso.com", Roles: []string{handler.RoleOperator}}
	idApprover = devhost.Identity{ObjectID: "33333333-0000-4000-8000-000000000003", Name: "april.approver@contoso.com", Roles: []string{handler.RoleApprover}}
	// alice may do everything; four eyes still stops her approving her own operation.
	idAlice = devhost.Identity{ObjectID: "44444444-0000-4000-8000-000000000004", Name: "alice@contoso.com", Roles: handler.Roles}
	idNone  = devhost.Identity{ObjectID: "55555555-0000-4000-8000-000000000005", Name: "nora.norole@contoso.com"}
	tokens  = map[string]devhost.Identity{"t-reader": idReader, "t-operator": idOperator, "t-approver": idApprover, "t-alice": idAlice, "t-none": idNone}
)

func startAuthStack(t *testing.T, auth *devhost.AuthOptions) *authStack {
	t.Helper()
	az := sharedAzurite(t)
	emu := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	info := emu.Info()
	prefix := testenv.UniqueName("auth")
	seed := testenv.UniqueName("grp")
	if _, err := emu.Seed(emulator.SeedSpec{Prefix: seed, Registrations: 4}); err != nil {
		t.Fatal(err)
	}
	settings := apptest.Settings(az, info, prefix)
	settings["MAX_GROUP_DEVICES"] = "2"
	host, out := apptest.Start(t, ".", handlerBin, settings, auth)
	svc, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &authStack{host: host, ops: svc.NewClient(prefix + "ops"), group: seed + "-g0", out: out}
}

// call sends an Operations request through devhost: path under /api/, the bearer token
// (none when ""), extra headers and a JSON body.
func (s *authStack) call(t *testing.T, method, path, token string, headers map[string]string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.host.URL()+"/api/"+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// refusals lists the journal's rejected operations of the Operations API: id → reason.
func (s *authStack) refusals(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	pager := s.ops.NewListEntitiesPager(nil)
	for pager.More() {
		p, err := pager.NextPage(context.Background())
		var re *azcore.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range p.Entities {
			var e struct{ PartitionKey, RowKey, Status, Reason string }
			if json.Unmarshal(raw, &e) == nil && e.RowKey == "op" && e.Status == string(deprovision.StatusRejected) && strings.Contains(e.Reason, " refused") {
				m[e.PartitionKey] = e.Reason
			}
		}
	}
	return m
}

// journaled reports whether a refusal journaled since before contains every one of parts.
func journaled(before, now map[string]string, parts ...string) bool {
next:
	for id, reason := range now {
		if _, old := before[id]; old {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(reason, p) {
				continue next
			}
		}
		return true
	}
	return false
}

// With App Service authentication off (no front), principal headers are the caller's words:
// an approval and a request carrying them are journaled as claimed, never as verified, and the
// signed-in endpoint refuses everyone (401, journaled).
func TestForgedPrincipalHeadersAreNotTrustedWithAuthenticationOff(t *testing.T) {
	s := startAuthStack(t, nil)
	forged := idAlice.Name
	headers := map[string]string{handler.HeaderClientPrincipalName: forged, handler.HeaderClientPrincipalID: idAlice.ObjectID, handler.HeaderClientPrincipalIDP: "aad"}

	status, body := s.call(t, "POST", "deprovision/requests", "", headers, map[string]any{"intent": "group-retired", "enrollmentGroupId": s.group, "dryRun": false})
	if status != http.StatusAccepted || body["status"] != string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("group request: %d %v", status, body)
	}
	opID := body["operationId"].(string)
	status, view := s.call(t, "GET", "deprovision/operations/"+opID, "", nil, nil)
	if sub, _ := view["submittedBy"].(map[string]any); status != 200 || sub["verified"] != false || sub["name"] != forged {
		t.Fatalf("the forged submitter is journaled as %v (%d)", view["submittedBy"], status)
	}
	// The same forged name approves: nothing proves who either was, so four eyes cannot apply,
	// and the journal says so.
	// The approved group runs through the GroupWork queue: 202 while its batches are applied.
	status, body = s.call(t, "POST", "deprovision/approvals/"+opID, "", headers, map[string]any{"reason": "INC-7"})
	if status != http.StatusOK && status != http.StatusAccepted {
		t.Fatalf("approval: %d %v", status, body)
	}
	_, view = s.call(t, "GET", "deprovision/operations/"+opID, "", nil, nil)
	journal, _ := json.Marshal(view["journal"])
	if !strings.Contains(string(journal), forged+" (object id "+idAlice.ObjectID+", identity provider aad, claimed, not verified") || strings.Contains(string(journal), "verified by") {
		t.Fatalf("the approval is not journaled as claimed: %s", journal)
	}

	before := s.refusals(t)
	if status, body = s.call(t, "GET", "signed-in/deprovision/operations/"+opID, "", headers, nil); status != http.StatusUnauthorized ||
		!strings.Contains(fmt.Sprint(body["error"]), "WEBSITE_AUTH_ENABLED") {
		t.Fatalf("signed-in endpoint without authentication: %d %v", status, body)
	}
	if !journaled(before, s.refusals(t), "401") {
		t.Fatal("the refusal is not journaled")
	}
}

// With devhost fronting the app as App Service authentication does, each role does exactly its
// part through the signed-in endpoint; a caller without a sign-in gets 401, one without the
// role 403 naming it, the function key alone only reads; forged headers are stripped, so the
// journal names the signed-in caller; an operation's submitter cannot approve it (409) and
// another approver can, journaled with the verified object id, name and identity provider.
// Every refusal is journaled.
func TestSignedInRolesAndFourEyesThroughDevhost(t *testing.T) {
	s := startAuthStack(t, &devhost.AuthOptions{Identities: tokens})

	// A held operation to decide on, submitted by alice.
	status, body := s.call(t, "POST", "signed-in/deprovision/requests", "t-alice", nil,
		map[string]any{"id": "grp-leak", "intent": "group-compromised", "enrollmentGroupId": s.group, "dryRun": false})
	if status != http.StatusAccepted || body["status"] != string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("alice's group request: %d %v", status, body)
	}
	held := body["operationId"].(string)

	type check struct {
		name, method, path, token string
		body                      any
		want                      int
		journal                   []string // what the journaled refusal says
	}
	forbidden := func(id devhost.Identity, role string) []string { return []string{"403", id.ObjectID, role} }
	checks := []check{
		{"reader reads", "GET", "signed-in/deprovision/operations/" + held, "t-reader", nil, 200, nil},
		{"reader cannot submit", "POST", "signed-in/deprovision/requests", "t-reader", map[string]any{"intent": "lost", "registrationId": s.group + "-d0"}, 403, forbidden(idReader, handler.RoleOperator)},
		{"reader cannot approve", "POST", "signed-in/deprovision/approvals/" + held, "t-reader", map[string]any{"reason": "x"}, 403, forbidden(idReader, handler.RoleApprover)},
		{"operator submits a dry run", "POST", "signed-in/deprovision/requests", "t-operator", map[string]any{"intent": "lost", "registrationId": s.group + "-d0"}, 200, nil},
		{"operator cannot read", "GET", "signed-in/deprovision/operations/" + held, "t-operator", nil, 403, forbidden(idOperator, handler.RoleReader)},
		{"operator cannot approve", "POST", "signed-in/deprovision/approvals/" + held, "t-operator", map[string]any{"reason": "x"}, 403, forbidden(idOperator, handler.RoleApprover)},
		{"approver cannot read", "GET", "signed-in/deprovision/devices/" + s.group + "-d0", "t-approver", nil, 403, forbidden(idApprover, handler.RoleReader)},
		{"approver cannot submit", "POST", "signed-in/deprovision/cleanup/drift", "t-approver", nil, 403, forbidden(idApprover, handler.RoleOperator)},
		{"no role, no read", "GET", "signed-in/deprovision/operations/" + held, "t-none", nil, 403, forbidden(idNone, handler.RoleReader)},
		{"no sign-in", "GET", "signed-in/deprovision/operations/" + held, "", nil, 401, []string{"401"}},
		{"the key alone reads", "GET", "deprovision/operations/" + held, "", nil, 200, nil},
		{"the key alone cannot submit", "POST", "deprovision/requests", "", map[string]any{"intent": "lost", "registrationId": s.group + "-d0"}, 401, []string{"401", "FUNCTION_KEY_ACCESS=read"}},
		{"the key alone cannot approve", "POST", "deprovision/approvals/" + held, "", map[string]any{"approvedBy": "someone", "reason": "x"}, 401, []string{"401"}},
		{"the submitter cannot approve", "POST", "signed-in/deprovision/approvals/" + held, "t-alice", map[string]any{"reason": "mine"}, 409, []string{"409", idAlice.ObjectID, held, "four eyes"}},
	}
	for _, c := range checks {
		before := s.refusals(t)
		// Every call also carries forged principal headers, which the front strips.
		status, body := s.call(t, c.method, c.path, c.token, map[string]string{handler.HeaderClientPrincipalName: "mallory", handler.HeaderClientPrincipalID: idAlice.ObjectID}, c.body)
		if status != c.want {
			t.Errorf("%s: %d %v, want %d", c.name, status, body, c.want)
			continue
		}
		if c.want == http.StatusForbidden && !strings.Contains(fmt.Sprint(body["error"]), c.journal[2]) {
			t.Errorf("%s: the 403 %q does not name the missing role %s", c.name, body["error"], c.journal[2])
		}
		if c.journal != nil && !journaled(before, s.refusals(t), c.journal...) {
			t.Errorf("%s: no journaled refusal says %q (journal: %v)", c.name, c.journal, s.refusals(t))
		}
	}
	// The dry run the operator submitted names the operator, whatever the forged headers said.
	_, view := s.call(t, "GET", "deprovision/operations/"+deprovision.OperationID(handler.APISource, "grp-leak"), "t-reader", nil, nil)
	if sub, _ := view["submittedBy"].(map[string]any); sub["objectId"] != idAlice.ObjectID || sub["verified"] != true {
		t.Fatalf("alice's request is journaled as submitted by %v", view["submittedBy"])
	}

	// Another approver approves; the operation runs, and the journal names her as verified.
	status, body = s.call(t, "POST", "signed-in/deprovision/approvals/"+held, "t-approver", map[string]string{handler.HeaderClientPrincipalName: "mallory"},
		map[string]any{"approvedBy": "mallory", "reason": "CA key leak confirmed, INC-2041"})
	if (status != http.StatusOK && status != http.StatusAccepted) || body["status"] == string(deprovision.StatusAwaitingApproval) {
		t.Fatalf("april's approval: %d %v", status, body)
	}
	_, view = s.call(t, "GET", "signed-in/deprovision/operations/"+held, "t-reader", nil, nil)
	journal, _ := json.Marshal(view["journal"])
	want := idApprover.Name + " (object id " + idApprover.ObjectID + ", identity provider aad, verified by App Service authentication)"
	if !strings.Contains(string(journal), want) || strings.Contains(string(journal), "mallory") {
		t.Fatalf("the approval is journaled as %s, want %q", journal, want)
	}
}

// testCredential stands in for azidentity's credentials in the operator CLI's sign-in path: it
// hands out the test token of one identity, for the app's scope only.
type testCredential struct {
	token, scope string
	asked        []string
}

func (c *testCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.asked = append(c.asked, o.Scopes...)
	if len(o.Scopes) != 1 || o.Scopes[0] != c.scope {
		return azcore.AccessToken{}, fmt.Errorf("token asked for scopes %v, want %s", o.Scopes, c.scope)
	}
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// The operator CLI's sign-in path: an azcore pipeline with a bearer token policy for the app's
// scope (api://<client id>/.default, docs/deploy.md) calls the signed-in endpoint, devhost's
// front signs the token's identity in, and the handler serves it by its roles. The credential
// is where azidentity plugs in (DefaultAzureCredential, AzureCLICredential…).
func TestOperatorSignInPathThroughDevhost(t *testing.T) {
	s := startAuthStack(t, &devhost.AuthOptions{Identities: tokens})
	const scope = "api://00000000-0000-0000-0000-00000000c11e/.default"
	for _, c := range []struct {
		token string
		want  int
	}{{"t-reader", http.StatusNotFound}, {"t-operator", http.StatusForbidden}} {
		cred := &testCredential{token: c.token, scope: scope}
		pl := runtime.NewPipeline("dpsdeprov-test", "v0", runtime.PipelineOptions{}, &policy.ClientOptions{
			PerRetryPolicies: []policy.Policy{runtime.NewBearerTokenPolicy(cred, []string{scope}, &policy.BearerTokenOptions{InsecureAllowCredentialWithHTTP: true})},
		})
		req, err := runtime.NewRequest(t.Context(), http.MethodGet, s.host.URL()+"/api/signed-in/deprovision/operations/op-unknown")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := pl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || len(cred.asked) == 0 {
			t.Fatalf("%s: %d %s (scopes asked %v), want %d", c.token, resp.StatusCode, b, cred.asked, c.want)
		}
	}
}

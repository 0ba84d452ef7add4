package handler

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// authRig is the handler over the real engine (fake DPS, hub and journal below the engine's
// ports) with a group above the group guardrail, so that group operations are held.
type authRig struct {
	srv  *httptest.Server
	j    *fake.Journal
	dps  *fake.DPS
	hubs *fake.HubDevices
	// work is the GroupWork queue an approved group fans out to.
	work *hostQueue
	seq  atomic.Int64
	now  time.Time
}

func newAuthRig(t *testing.T, access Access) *authRig {
	t.Helper()
	dps, hubs, j := fake.NewDPS(), fake.NewHubDevices("hub1.azure-devices.net"), fake.NewJournal()
	dps.AddGroup(deprovision.Group{ID: "cams", Attestation: deprovision.AttestationSymmetricKey, Enabled: true}, "c2VjcmV0")
	for _, id := range []string{"cam-1", "cam-2", "cam-3"} {
		dps.AddRegistration(deprovision.Registration{RegistrationID: id, DeviceID: id, AssignedHub: "hub1.azure-devices.net"}, "cams")
		hubs.AddDevice(deprovision.Device{Hub: "hub1.azure-devices.net", DeviceID: id, Enabled: true, AuthType: "sas"})
	}
	var eng *deprovision.Engine
	// One clock for the engine and the handler, fixed inside an hour, so that the hourly
	// refusal record has one id for the whole test.
	now := time.Now().UTC().Truncate(time.Hour).Add(30 * time.Minute)
	work := &hostQueue{}
	eng = deprovision.NewEngine(deprovision.Deps{Enrollments: dps, Registrations: dps, Devices: hubs, Journal: j, Clock: fixedClock(now), Logger: slog.New(slog.DiscardHandler), Work: work},
		deprovision.Config{Guard: deprovision.Guardrails{MaxGroupDevices: 2}})
	h, err := New(Options{Engine: eng, GroupWorker: &EngineGroupWorker{Engine: eng}, Admission: Admission{Events: DefaultEventTypes()}, Access: access, Clock: fixedClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &authRig{srv: srv, j: j, dps: dps, hubs: hubs, work: work, now: now}
}

// reply is one answer of the Operations functions, with the invocation id it was sent under.
type reply struct {
	status int
	body   map[string]any
	invID  string
}

// call invokes function as the host does, with a fresh invocation id.
func (r *authRig) call(t *testing.T, function, method, kind, id string, headers map[string][]string, body any) reply {
	t.Helper()
	inv := httpInvocation(t, method, kind, id, headers, body)
	invID := fmt.Sprintf("00000000-0000-4000-8000-%012d", r.seq.Add(1))
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+"/"+function, bytes.NewReader(inv))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", invID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("invocation answered %d: %s", resp.StatusCode, b)
	}
	var res result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	status, out := httpRes(t, res)
	return reply{status, out, invID}
}

// refusal returns the journaled refusal of the call answered by rep, nil when there is none.
func (r *authRig) refusal(t *testing.T, rep reply) *deprovision.Operation {
	t.Helper()
	op, err := r.j.GetOperation(t.Context(), deprovision.OperationID(APISource, "refused-"+rep.invID))
	if err != nil {
		return nil
	}
	return op
}

// identity is a test identity as App Service authentication would describe it.
type identity struct {
	oid, name string
	roles     []string
}

// headers are the headers App Service authentication sets for id after validating its token
// (Learn, "Work with user identities in Azure App Service authentication"): the mapped
// object id claim, the token's roles claim, and the role_typ the platform names.
func (id identity) headers() map[string][]string {
	claims := []map[string]string{
		{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": id.oid},
		{"typ": "preferred_username", "val": id.name},
	}
	for _, role := range id.roles {
		claims = append(claims, map[string]string{"typ": "roles", "val": role})
	}
	b, _ := json.Marshal(map[string]any{"auth_typ": "aad", "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
		"role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "claims": claims})
	return map[string][]string{
		HeaderClientPrincipal:     {base64.StdEncoding.EncodeToString(b)},
		HeaderClientPrincipalID:   {id.oid},
		HeaderClientPrincipalName: {id.name},
		HeaderClientPrincipalIDP:  {"aad"},
	}
}

// What each role permits, and what the function key alone permits at each access level: the
// issue's table, written out rather than derived from the handler's.
var (
	rolePermits = map[string]string{RoleReader: "read", RoleOperator: "submit", RoleApprover: "decide"}
	keyPermits  = map[KeyAccess][]string{KeyNone: nil, KeyRead: {"read"}, KeyFull: {"read", "submit", "decide"}}
)

// TestEachCallerDoesExactlyItsPart runs every combination of authentication (on, off),
// endpoint (function key, signed-in), function key access, principal (none, or any set of the
// three roles) and action (read, submit, decide), and checks the answer against the table
// above: with authentication off, principal headers are forged and change nothing; a signed-in
// principal does what its roles permit and gets 403 naming the missing role otherwise; nobody
// signed in gets 401 beyond what the key permits (and everything on the signed-in endpoint).
// Every refusal is journaled as a rejected operation naming its status; an admitted call
// reaches the engine.
func TestEachCallerDoesExactlyItsPart(t *testing.T) {
	actions := []struct {
		name       string
		method     string
		kind, id   string
		body       any
		wantStatus int // the engine's answer once admitted
	}{
		{"read", "GET", "operations", "op-unknown", nil, http.StatusNotFound},
		{"submit", "POST", "requests", "", map[string]any{"intent": "group-retired", "enrollmentGroupId": "cams"}, http.StatusOK},
		{"decide", "POST", "approvals", "op-unknown", map[string]any{"approvedBy": "someone", "reason": "INC-1"}, http.StatusNotFound},
	}
	var principals [][]string
	for mask := range 8 {
		var roles []string
		for i, role := range Roles {
			if mask&(1<<i) != 0 {
				roles = append(roles, role)
			}
		}
		principals = append(principals, roles)
	}
	principals = append(principals, nil) // the last one: nobody signed in
	cases := 0
	for _, auth := range []bool{false, true} {
		for _, keyAccess := range []KeyAccess{"", KeyNone, KeyRead, KeyFull} {
			r := newAuthRig(t, Access{Authentication: auth, Key: keyAccess})
			effective := keyAccess
			if effective == "" {
				effective = map[bool]KeyAccess{false: KeyFull, true: KeyRead}[auth]
			}
			for _, viaKey := range []bool{true, false} {
				function := map[bool]string{true: FunctionOperations, false: FunctionSignedInOperations}[viaKey]
				for pi, roles := range principals {
					signedIn := pi < len(principals)-1
					var headers map[string][]string
					who := identity{oid: fmt.Sprintf("00000000-0000-0000-0000-%012d", pi), name: fmt.Sprintf("user%d@contoso.com", pi), roles: roles}
					if signedIn {
						headers = who.headers()
					}
					for _, a := range actions {
						cases++
						name := fmt.Sprintf("auth=%t key=%q endpoint=%s roles=%v signedIn=%t %s", auth, keyAccess, function, roles, signedIn, a.name)
						var want int
						switch {
						case auth && signedIn:
							want = http.StatusForbidden
							for _, role := range roles {
								if rolePermits[role] == a.name {
									want = a.wantStatus
								}
							}
						case !viaKey:
							want = http.StatusUnauthorized
						default:
							want = http.StatusUnauthorized
							for _, p := range keyPermits[effective] {
								if p == a.name {
									want = a.wantStatus
								}
							}
						}
						rep := r.call(t, function, a.method, a.kind, a.id, headers, a.body)
						if rep.status != want {
							t.Errorf("%s: answered %d %v, want %d", name, rep.status, rep.body, want)
							continue
						}
						refused := r.refusal(t, rep)
						switch {
						case want == http.StatusForbidden:
							msg, _ := rep.body["error"].(string)
							if !strings.Contains(msg, "Deprovisioning.") || !strings.Contains(msg, who.name) {
								t.Errorf("%s: 403 %q names no missing role or caller", name, msg)
							}
							fallthrough
						case want == http.StatusUnauthorized:
							if !viaKey && !(auth && signedIn) {
								// Nobody at all: journaled once an hour, not per call.
								refused, _ = r.j.GetOperation(t.Context(), deprovision.OperationID(APISource, "refused-unauthenticated-"+r.now.Format("2006010215")))
							}
							if refused == nil || refused.Status != deprovision.StatusRejected || !strings.Contains(refused.Reason, fmt.Sprint(want)) {
								t.Errorf("%s: refusal %d not journaled: %+v", name, want, refused)
							} else if auth && signedIn && !strings.Contains(refused.Reason, who.oid) {
								t.Errorf("%s: the journaled refusal %q does not name the verified object id", name, refused.Reason)
							}
						default:
							if refused != nil {
								t.Errorf("%s: an admitted call journaled a refusal: %s", name, refused.Reason)
							}
							if a.name == "submit" {
								op, err := r.j.GetOperation(t.Context(), rep.body["operationId"].(string))
								if err != nil {
									t.Fatal(err)
								}
								if sub := op.Request.SubmittedBy; (sub != nil && sub.Verified) != (auth && signedIn) {
									t.Errorf("%s: submitter journaled as %v", name, sub)
								}
							}
						}
					}
				}
			}
		}
	}
	if cases != 2*4*2*9*3 {
		t.Fatalf("ran %d cases", cases)
	}
}

// TestFourEyes: an operation a signed-in person submitted and a guardrail held is not approved
// by that person (409, journaled), nor by the function key alone even where the key may do
// everything (401, journaled); another signed-in approver approves it, and the journal records
// that approver's verified object id, name and identity provider. The submitter may still deny
// an operation of theirs.
func TestFourEyes(t *testing.T) {
	r := newAuthRig(t, Access{Authentication: true, Key: KeyFull})
	alice := identity{"aaaaaaaa-0000-0000-0000-000000000001", "alice@contoso.com", []string{RoleReader, RoleOperator, RoleApprover}}
	bob := identity{"bbbbbbbb-0000-0000-0000-000000000002", "bob@contoso.com", []string{RoleApprover}}
	// Alice again under another name: four eyes compares object ids, not names.
	aliceRenamed := identity{alice.oid, "alice.smith@contoso.com", []string{RoleApprover}}

	held := func(t *testing.T, id string) string {
		t.Helper()
		rep := r.call(t, FunctionSignedInOperations, "POST", "requests", "", alice.headers(),
			map[string]any{"id": id, "intent": "group-compromised", "enrollmentGroupId": "cams", "dryRun": false})
		if rep.status != http.StatusAccepted || rep.body["status"] != string(deprovision.StatusAwaitingApproval) {
			t.Fatalf("group above the limit: %d %v", rep.status, rep.body)
		}
		return rep.body["operationId"].(string)
	}
	opID := held(t, "cams-leak")
	view := r.call(t, FunctionSignedInOperations, "GET", "operations", opID, alice.headers(), nil)
	if sub, _ := view.body["submittedBy"].(map[string]any); sub["objectId"] != alice.oid || sub["verified"] != true || sub["identityProvider"] != "aad" {
		t.Fatalf("GET shows the submitter as %v", view.body["submittedBy"])
	}

	for _, c := range []struct {
		name     string
		function string
		headers  map[string][]string
		want     int
	}{
		{"the submitter", FunctionSignedInOperations, alice.headers(), http.StatusConflict},
		{"the submitter under another name", FunctionSignedInOperations, aliceRenamed.headers(), http.StatusConflict},
		{"the submitter through the key endpoint", FunctionOperations, alice.headers(), http.StatusConflict},
		{"the function key alone, claiming a name", FunctionOperations, nil, http.StatusUnauthorized},
	} {
		rep := r.call(t, c.function, "POST", "approvals", opID, c.headers, map[string]any{"approvedBy": "bob@contoso.com", "reason": "looks fine"})
		if rep.status != c.want {
			t.Fatalf("%s: approval answered %d %v, want %d", c.name, rep.status, rep.body, c.want)
		}
		ref := r.refusal(t, rep)
		if ref == nil || !strings.Contains(ref.Reason, fmt.Sprint(c.want)) || !strings.Contains(ref.Reason, opID) {
			t.Fatalf("%s: refusal not journaled: %+v", c.name, ref)
		}
		if c.want == http.StatusConflict && (ref.Request.SubmittedBy == nil || ref.Request.SubmittedBy.ObjectID != alice.oid || !ref.Request.SubmittedBy.Verified) {
			t.Fatalf("%s: the refusal journals the caller as %v", c.name, ref.Request.SubmittedBy)
		}
	}
	if len(r.hubs.Writes)+len(r.dps.Writes) != 0 {
		t.Fatal("a refused approval ran the operation")
	}

	rep := r.call(t, FunctionSignedInOperations, "POST", "approvals", opID, bob.headers(), map[string]any{"approvedBy": "mallory", "reason": "CA key leak confirmed, INC-2041"})
	if rep.status != http.StatusAccepted || rep.body["status"] != string(deprovision.StatusRunning) {
		t.Fatalf("bob's approval: %d %v; want the group running, fanned out to the GroupWork queue", rep.status, rep.body)
	}
	r.work.deliver(t, r.srv)
	if op, err := r.j.GetOperation(t.Context(), opID); err != nil || op.Status != deprovision.StatusSucceeded {
		t.Fatalf("after the GroupWork messages: %v %v", op, err)
	}
	_, steps, err := deprovision.NewEngine(deprovision.Deps{Journal: r.j}, deprovision.Config{}).Operation(t.Context(), opID)
	if err != nil {
		t.Fatal(err)
	}
	var approval *deprovision.StepRecord
	for i := range steps {
		if steps[i].Kind == deprovision.StepApproval {
			approval = &steps[i]
		}
	}
	want := "bob@contoso.com (object id " + bob.oid + ", identity provider aad, verified by App Service authentication)"
	if approval == nil || approval.Target != want || strings.Contains(approval.Target, "mallory") {
		t.Fatalf("the approval is journaled as %+v, want target %q", approval, want)
	}

	// The submitter may withdraw an operation of theirs.
	opID = held(t, "cams-again")
	rep = r.call(t, FunctionSignedInOperations, "POST", "denials", opID, alice.headers(), map[string]any{"reason": "duplicate of INC-2041"})
	if rep.status != http.StatusOK || rep.body["status"] != string(deprovision.StatusRejected) || !strings.Contains(rep.body["reason"].(string), "denied by alice@contoso.com") {
		t.Fatalf("the submitter's denial: %d %v", rep.status, rep.body)
	}
}

// With App Service authentication on, a principal header the handler cannot read is not a
// sign-in (401), and neither is an identity without an object id, which four eyes could not
// tell apart from another.
func TestUnreadablePrincipalIsNoSignIn(t *testing.T) {
	r := newAuthRig(t, Access{Authentication: true})
	for name, h := range map[string]map[string][]string{
		"not base64":   {HeaderClientPrincipal: {"%%%"}, HeaderClientPrincipalID: {"x"}},
		"not JSON":     {HeaderClientPrincipal: {base64.StdEncoding.EncodeToString([]byte("hello"))}, HeaderClientPrincipalID: {"x"}},
		"no object id": {HeaderClientPrincipalName: {"alice@contoso.com"}, HeaderClientPrincipalIDP: {"aad"}},
		"oversized":    {HeaderClientPrincipal: {strings.Repeat("A", maxPrincipalHeader+4)}},
	} {
		rep := r.call(t, FunctionSignedInOperations, "GET", "operations", "op-x", h, nil)
		if rep.status != http.StatusUnauthorized {
			t.Errorf("%s: %d %v, want 401", name, rep.status, rep.body)
		}
	}
	// The claims alone name the caller when the platform's other headers are absent, and a
	// roles claim holding a JSON array counts each role.
	b, _ := json.Marshal(map[string]any{"auth_typ": "aad", "claims": []map[string]string{
		{"typ": "oid", "val": "cccccccc-0000-0000-0000-000000000003"}, {"typ": "name", "val": "Carol"},
		{"typ": "roles", "val": `["Deprovisioning.Reader","Deprovisioning.Approver"]`}}})
	rep := r.call(t, FunctionSignedInOperations, "GET", "operations", "op-x", map[string][]string{HeaderClientPrincipal: {base64.StdEncoding.EncodeToString(b)}}, nil)
	if rep.status != http.StatusNotFound {
		t.Fatalf("a reader named by claims only: %d %v", rep.status, rep.body)
	}
}

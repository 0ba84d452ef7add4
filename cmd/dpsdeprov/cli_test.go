package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"dpsdeprov/devhost"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/apptest"
	"dpsdeprov/internal/testenv"
)

// handlerBin is the real handler binary, built once for the package's tests.
var handlerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dpsdeprov-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root, err := testenv.RepoRoot()
	if err == nil {
		handlerBin = filepath.Join(dir, "handler")
		build := exec.Command("go", "build", "-o", handlerBin, ".")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		err = build.Run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "building the handler:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	testenv.Main(m)
}

// stack is the local stack `make run` starts: the real handler behind devhost, the journal
// and queues in Azurite, DPS and two hubs in the emulator, seeded with one group.
type stack struct {
	api   string
	group string
	n     int
}

func newStack(t *testing.T, members int, extra map[string]string) *stack {
	t.Helper()
	return newStackWithAuth(t, members, extra, nil)
}

// newStackWithAuth is newStack with devhost fronting the app as App Service authentication
// does, signing in auth's test identities by bearer token.
func newStackWithAuth(t *testing.T, members int, extra map[string]string, auth *devhost.AuthOptions) *stack {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	az := testenv.SharedAzurite(t)
	emu := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1", "hub2"}})
	prefix := testenv.UniqueName("cli")
	seeded, err := emu.Seed(emulator.SeedSpec{Prefix: prefix, Registrations: members})
	if err != nil {
		t.Fatal(err)
	}
	info := emu.Info()
	settings := apptest.Settings(az, info, prefix)
	settings["DRY_RUN"], settings["LOG_LEVEL"], settings["HUB_OPS_PER_MINUTE"] = "false", "info", "6000"
	maps.Copy(settings, extra)
	h, _ := apptest.Start(t, root, handlerBin, settings, auth)
	return &stack{api: h.URL() + "/api", group: seeded.Groups[0].ID, n: members}
}

func (s *stack) member(i int) string { return fmt.Sprintf("%s-d%d", s.group, i) }

// cliRun is one run of the command: its exit status and what it printed.
type cliRun struct {
	code           int
	stdout, stderr string
}

// dpsdeprov runs the command as a person would, against s, with env as the environment.
func (s *stack) dpsdeprov(t *testing.T, env map[string]string, args ...string) cliRun {
	t.Helper()
	var out, errs bytes.Buffer
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["DPSDEPROV_URL"]; !ok {
		env["DPSDEPROV_URL"] = s.api
	}
	code := run(context.Background(), args, &out, &errs, func(k string) string { return env[k] })
	r := cliRun{code: code, stdout: out.String(), stderr: errs.String()}
	t.Logf("dpsdeprov %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

var opID = regexp.MustCompile(`operation (op-[0-9a-f]{32})`)

// A person's way through the CLI against the local stack: a device nobody has asked about,
// a dry run printed as a plan, the real thing, the device's status and its operation in
// full, and the same as JSON for scripts.
func TestOperatorCLIAgainstTheLocalStack(t *testing.T) {
	s := newStack(t, 6, nil)
	dev := s.member(0)

	r := s.dpsdeprov(t, nil, "status", dev)
	if r.code != exitError || !strings.Contains(r.stderr, "no record of it") || !strings.Contains(r.stderr, "dpsdeprov plan lost "+dev) {
		t.Fatalf("status of an untouched device: want exit 1 saying there is no record and what to try")
	}

	r = s.dpsdeprov(t, nil, "plan", "lost", dev, "--reason", "not seen on site since Monday")
	if r.code != exitOK {
		t.Fatal("plan failed")
	}
	for _, want := range []string{"planned", "dry run", "1. dps.", "why: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the plan does not show %q", want)
		}
	}

	r = s.dpsdeprov(t, nil, "apply", "lost", dev, "--reason", "not seen on site since Monday")
	if r.code != exitOK || !strings.Contains(r.stdout, "succeeded") || !strings.Contains(r.stdout, "done") {
		t.Fatal("apply did not succeed with its steps done")
	}
	m := opID.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatal("apply printed no operation id")
	}
	op := m[1]

	r = s.dpsdeprov(t, nil, "status", dev)
	if r.code != exitOK || !strings.Contains(r.stdout, "lost by operation "+op) || !strings.Contains(r.stdout, "latest operation:") {
		t.Fatal("status does not show the device's state and latest operation")
	}

	r = s.dpsdeprov(t, nil, "show", op, "--json")
	var view struct {
		OperationID string `json:"operationId"`
		Status      string `json:"status"`
		Plan        []struct {
			Kind, Reason string
		} `json:"plan"`
		Journal []struct {
			Index   int    `json:"index"`
			Outcome string `json:"outcome"`
		} `json:"journal"`
	}
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &view) != nil {
		t.Fatal("show --json printed no JSON")
	}
	if view.OperationID != op || view.Status != "succeeded" || len(view.Plan) == 0 || len(view.Journal) < len(view.Plan) {
		t.Fatalf("show --json: %+v", view)
	}
	for _, p := range view.Plan {
		if p.Reason == "" {
			t.Errorf("step %s has no reason", p.Kind)
		}
	}

	r = s.dpsdeprov(t, nil, "show", "op-00000000000000000000000000000000")
	if r.code != exitError || !strings.Contains(r.stderr, "not found") || !strings.Contains(r.stderr, "dpsdeprov status") {
		t.Fatal("an unknown operation: want exit 1 saying how to find operations")
	}
	r = s.dpsdeprov(t, nil, "show", "op-00000000000000000000000000000000", "--json")
	var e struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
	if r.code != exitError || json.Unmarshal([]byte(r.stdout), &e) != nil || e.Status != 404 || e.Error == "" {
		t.Fatalf("an unknown operation with --json: want a JSON error with status 404")
	}

	r = s.dpsdeprov(t, nil, "apply", "lost", "sensor/../x")
	if r.code != exitError || !strings.Contains(r.stderr, "refused") || !strings.Contains(r.stdout, "rejected") {
		t.Fatal("a malformed registration id: want the refusal and its reason")
	}
}

// A group operation over the guardrail is held: apply says so (exit 3) and how to approve;
// an approval without an approver says to give --by; with one, the group runs and show
// --watch follows its progress bar to the end. A second held operation is denied.
func TestHeldGroupOperationApprovedAndDeniedThroughTheCLI(t *testing.T) {
	s := newStack(t, 8, map[string]string{"MAX_GROUP_DEVICES": "3"})

	r := s.dpsdeprov(t, nil, "apply", "group-compromised", s.group, "--reason", "CA key leaked")
	if r.code != exitHeld || !strings.Contains(r.stdout, "awaiting-approval") || !strings.Contains(r.stderr, "dpsdeprov approve") {
		t.Fatal("a group over MAX_GROUP_DEVICES: want exit 3, held, with the approve command")
	}
	op := opID.FindStringSubmatch(r.stdout)[1]

	r = s.dpsdeprov(t, nil, "approve", op, "--reason", "INC-2041 confirmed")
	if r.code != exitError || !strings.Contains(r.stderr, "--by") {
		t.Fatal("an approval without an approver: want the hint to give --by")
	}
	r = s.dpsdeprov(t, nil, "approve", op, "--reason", "INC-2041 confirmed", "--by", "alice@contoso.com")
	if r.code != exitOK || !strings.Contains(r.stdout, "alice@contoso.com") {
		t.Fatal("the approval did not go through, or its record is not shown")
	}
	r = s.dpsdeprov(t, nil, "show", op, "--watch", "--interval", "100ms")
	if r.code != exitOK || !strings.Contains(r.stdout, "succeeded") || !strings.Contains(r.stdout, fmt.Sprintf("%d/%d members (100%%)", s.n, s.n)) {
		t.Fatal("show --watch did not follow the group to its end with a full progress bar")
	}
	if r = s.dpsdeprov(t, nil, "approve", op, "--reason", "again", "--by", "alice@contoso.com"); r.code != exitOK {
		t.Fatal("approving twice must be harmless: the second approval returns the operation")
	}

	r = s.dpsdeprov(t, nil, "apply", "group-retired", s.group, "--json")
	var held struct {
		OperationID, Status string
	}
	if r.code != exitHeld || json.Unmarshal([]byte(r.stdout), &held) != nil || held.Status != "awaiting-approval" {
		t.Fatal("the second group operation was not held")
	}
	r = s.dpsdeprov(t, nil, "deny", held.OperationID, "--reason", "retired by mistake", "--by", "bob@contoso.com", "--json")
	if r.code != exitError || !strings.Contains(r.stdout, `"status": "rejected"`) {
		t.Fatal("the denial did not end the operation rejected")
	}
	r = s.dpsdeprov(t, nil, "approve", held.OperationID, "--reason", "changed my mind", "--by", "alice@contoso.com")
	if r.code != exitError || !strings.Contains(r.stderr, "only an operation awaiting approval") || !strings.Contains(r.stderr, "dpsdeprov show "+held.OperationID) {
		t.Fatal("approving a denied operation: want the app's reason and where to look")
	}
}

// What the CLI says when the app answers as the Functions host does to a wrong key (401, no
// body), or is not there at all, and when it is called wrongly. (devhost checks no keys, as
// Core Tools does not, so the 401 comes from a stand-in here.)
func TestCLIErrorsSayWhatToDo(t *testing.T) {
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-functions-key") != "right" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"registrationId":"d","state":null,"operations":[]}`)
	}))
	defer host.Close()
	s := &stack{api: host.URL + "/api"}

	r := s.dpsdeprov(t, map[string]string{"DPSDEPROV_KEY": "wrong"}, "status", "d")
	if r.code != exitError || !strings.Contains(r.stderr, "refused the function key") || !strings.Contains(r.stderr, "az functionapp function keys list") {
		t.Fatal("a wrong key: want what to check and how to list the keys")
	}
	if r = s.dpsdeprov(t, map[string]string{"DPSDEPROV_KEY": "right"}, "status", "d"); r.code != exitOK {
		t.Fatal("the right key in the x-functions-key header was not accepted")
	}
	r = s.dpsdeprov(t, map[string]string{"DPSDEPROV_URL": "https://dpsdeprov-contoso.azurewebsites.net/api"}, "status", "d")
	if r.code != exitUsage || !strings.Contains(r.stderr, "needs a credential") {
		t.Fatal("a remote app without a credential: want the two ways to give one")
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	r = s.dpsdeprov(t, map[string]string{"DPSDEPROV_URL": closed.URL + "/api"}, "show", "op-1")
	if r.code != exitError || !strings.Contains(r.stderr, "cannot reach the app") {
		t.Fatal("an app that is not there: want to be told to check --url")
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"plan", "lost"}, {"approve", "op-1"}} {
		if r = s.dpsdeprov(t, nil, args...); r.code != exitUsage {
			t.Fatalf("dpsdeprov %v: exit %d, want %d (usage)", args, r.code, exitUsage)
		}
	}
}

// The Entra ID path, against the local stack fronted as App Service authentication fronts the
// app (devhost's test identities stand in for Entra ID's tokens): the CLI sends the caller's
// token to the signed-in routes, the app authorizes by app roles, and four eyes hold: the
// operator who applied a held group operation may not approve it, another approver may. The
// CLI says what is missing each time.
func TestCLISignedInWithEntraID(t *testing.T) {
	const (
		reader   = "Deprovisioning.Reader"
		operator = "Deprovisioning.Operator"
		approver = "Deprovisioning.Approver"
	)
	auth := &devhost.AuthOptions{Identities: map[string]devhost.Identity{
		"alice-token": {ObjectID: "00000000-0000-0000-0000-00000000a11c", Name: "alice@contoso.com", Roles: []string{reader, operator, approver}},
		"bob-token":   {ObjectID: "00000000-0000-0000-0000-000000000b0b", Name: "bob@contoso.com", Roles: []string{reader, approver}},
		"carol-token": {ObjectID: "00000000-0000-0000-0000-0000000ca401", Name: "carol@contoso.com", Roles: []string{reader}},
	}}
	s := newStackWithAuth(t, 6, map[string]string{"MAX_GROUP_DEVICES": "3"}, auth)
	as := func(token string) map[string]string {
		return map[string]string{"DPSDEPROV_CREDENTIAL": "token", "DPSDEPROV_ACCESS_TOKEN": token, "DPSDEPROV_SCOPE": "api://dpsdeprov-test/.default"}
	}

	r := s.dpsdeprov(t, as("carol-token"), "apply", "lost", s.member(0), "--reason", "not seen")
	if r.code != exitError || !strings.Contains(r.stderr, operator) || !strings.Contains(r.stderr, "HTTP 403") {
		t.Fatal("a reader applying: want the 403 naming the missing role")
	}
	r = s.dpsdeprov(t, as("nobody-token"), "status", s.member(0))
	if r.code != exitError || !strings.Contains(r.stderr, "refused your Entra ID sign-in") {
		t.Fatal("an unknown token: want the sign-in refused, with what to check")
	}

	r = s.dpsdeprov(t, as("alice-token"), "apply", "group-compromised", s.group, "--reason", "CA key leaked")
	if r.code != exitHeld || !strings.Contains(r.stdout, "asked by") || !strings.Contains(r.stdout, "alice@contoso.com") {
		t.Fatal("alice's group operation: want it held, naming her as the one who asked")
	}
	op := opID.FindStringSubmatch(r.stdout)[1]
	r = s.dpsdeprov(t, as("alice-token"), "approve", op, "--reason", "me again")
	if r.code != exitError || !strings.Contains(r.stderr, "four eyes") {
		t.Fatal("alice approving her own operation: want the four-eyes refusal")
	}
	r = s.dpsdeprov(t, as("bob-token"), "approve", op, "--reason", "INC-2041 confirmed")
	if r.code != exitOK || !strings.Contains(r.stdout, "bob@contoso.com") || !strings.Contains(r.stdout, "verified") {
		t.Fatal("bob's approval, signed in, without --by: want it journaled as verified")
	}
	r = s.dpsdeprov(t, as("carol-token"), "show", op, "--watch", "--interval", "100ms")
	if r.code != exitOK || !strings.Contains(r.stdout, "succeeded") {
		t.Fatal("a reader following the approved group to its end")
	}
}

// The cleanup's findings through the CLI: a hub's only lifecycle event is 100 days old, so a
// stale pass run by hand finds its feed silent; `dpsdeprov findings` prints the fleet-wide
// count of that kind and the finding, --json the app's answer, and a --since it cannot read
// is a usage error.
func TestCleanupFindingsThroughTheCLI(t *testing.T) {
	s := newStack(t, 2, nil)
	base := strings.TrimSuffix(s.api, "/api")
	ev, _ := json.Marshal(map[string]any{"id": "old-1", "topic": "/SUBSCRIPTIONS/x/RESOURCEGROUPS/rg/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/hub1",
		"subject": "devices/" + s.member(0), "eventType": "Microsoft.Devices.DeviceDisconnected",
		"eventTime": time.Now().UTC().Add(-100 * 24 * time.Hour).Format(time.RFC3339Nano), "dataVersion": "", "metadataVersion": "1",
		"data": map[string]any{"hubName": "hub1", "deviceId": s.member(0), "deviceConnectionStateEventInfo": map[string]any{"sequenceNumber": "1"}}})
	in, _ := json.Marshal(map[string]string{"input": string(ev)})
	resp, err := http.Post(base+"/admin/functions/DeviceEvents", "application/json", bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The event is delivered in the background: run the pass until it has seen it.
	testenv.Eventually(t, "the stale pass to find the silent event feed", func() bool {
		resp, err := http.Post(s.api+"/deprovision/cleanup/stale", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		var rep struct {
			Findings []json.RawMessage `json:"findings"`
		}
		err = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		return err == nil && len(rep.Findings) > 0
	})
	r := s.dpsdeprov(t, nil, "findings", "--pass", "stale", "--since", "1h")
	if r.code != exitOK || !strings.Contains(r.stdout, "stale-feed-silent") || !strings.Contains(r.stdout, "refused") {
		t.Fatal("findings does not show the silent feed")
	}
	r = s.dpsdeprov(t, nil, "findings", "--json", "--kind", "stale-feed-silent")
	var f struct {
		Total  int `json:"total"`
		Counts []struct {
			Kind     string `json:"kind"`
			Subjects int    `json:"subjects"`
		} `json:"counts"`
	}
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &f) != nil || f.Total == 0 || len(f.Counts) != 1 || f.Counts[0].Subjects != 1 {
		t.Fatalf("findings --json: %+v", f)
	}
	if r = s.dpsdeprov(t, nil, "findings", "--since", "last week"); r.code != exitUsage || !strings.Contains(r.stderr, "--since") {
		t.Fatal("an unreadable --since: want a usage error naming it")
	}
}

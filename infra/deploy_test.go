package infra

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"dpsdeprov/deprovision"
)

// scripts/deploy.sh (make deploy) is tested offline against a stand-in for the Azure CLI,
// testdata/fakeaz: started as az (and go) from a folder put first on PATH, it keeps what a
// subscription would hold in a JSON state file, records every call, and answers the calls the
// script makes the way az does. Any other call fails, so the script cannot start calling
// something the tests do not see.

const (
	fakeSub   = "00000000-0000-0000-0000-0000000000aa"
	fakeMe    = "11111111-2222-3333-4444-555555555555"
	senderOne = "99999999-8888-7777-6666-555555555555"
)

// azState is the fake subscription's state file (written by testdata/fakeaz, which defines
// what each field means; the test sets some and reads the others).
type azState struct {
	Version       string
	LoggedIn      bool
	Resources     []string
	Groups        map[string]bool
	Deployments   map[string]*fakeDeployment
	DeviceEvents  bool
	Roles         []fakeRole
	RefusePublish int
	NoOperations  bool
	Published     []string
	Calls         [][]string
}

type fakeDeployment struct {
	Template   string
	Parameters map[string]json.RawMessage
	Outputs    map[string]string
}

type fakeRole struct{ ID, Principal, Role, Scope string }

func (s azState) param(dep, name string, v any) {
	if d := s.Deployments[dep]; d != nil {
		_ = json.Unmarshal(d.Parameters[name], v)
	}
}

// dryRunSetting is the DRY_RUN app setting the app's last deployment gave it ("" if none).
func (s azState) dryRunSetting(group string) string {
	var settings []struct{ Name, Value string }
	s.param(group+"/deprov-app", "additionalAppSettings", &settings)
	for _, kv := range settings {
		if kv.Name == "DRY_RUN" {
			return kv.Value
		}
	}
	return ""
}

// deployRig runs scripts/deploy.sh against the fake CLI.
type deployRig struct {
	t     *testing.T
	state string
	bin   string
	zip   string
}

// fakeCLI builds testdata/fakeaz and returns a folder where it answers as az and go.
func fakeCLI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, "fakeaz")
	build := exec.Command("go", "build", "-o", exe, "./testdata/fakeaz/main.go")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the fake Azure CLI: %v\n%s", err, out)
	}
	for _, name := range []string{"az", "go"} {
		if err := os.Symlink(exe, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newDeployRig is a subscription in state s, answered by the fake CLI in bin (an empty
// folder, for tests in which the script must call nothing).
func newDeployRig(t *testing.T, bin string, s azState) *deployRig {
	t.Helper()
	dir := t.TempDir()
	r := &deployRig{t: t, state: filepath.Join(dir, "state.json"), bin: bin, zip: filepath.Join(dir, "dpsdeprov.zip")}
	if s.Groups == nil {
		s.Groups = map[string]bool{}
	}
	if s.Deployments == nil {
		s.Deployments = map[string]*fakeDeployment{}
	}
	r.save(s)
	return r
}

func (r *deployRig) save(s azState) {
	b, _ := json.Marshal(&s)
	if err := os.WriteFile(r.state, b, 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func (r *deployRig) load() azState {
	b, err := os.ReadFile(r.state)
	if err != nil {
		r.t.Fatal(err)
	}
	var s azState
	if err := json.Unmarshal(b, &s); err != nil {
		r.t.Fatal(err)
	}
	return s
}

// run runs the script with env (and PATH leading to the fake), stdin not a terminal, and
// returns its exit status, its output, and the calls it made.
func (r *deployRig) run(env map[string]string) (int, string, [][]string) {
	r.t.Helper()
	before := len(r.load().Calls)
	cmd := exec.Command("bash", "../scripts/deploy.sh")
	cmd.Env = []string{"PATH=" + r.bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"FAKE_AZ_STATE=" + r.state, "POLL_SECONDS=0", "PACKAGE_ZIP=" + r.zip}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatal(err)
	}
	calls := r.load().Calls[before:]
	if strings.Contains(out.String(), "fake az: unexpected call") {
		r.t.Errorf("the script made a call the fake does not know:\n%s", out.String())
	}
	return code, out.String(), calls
}

func dpsID(group string) string {
	return "/subscriptions/" + fakeSub + "/resourceGroups/" + group + "/providers/Microsoft.Devices/provisioningServices/contoso-dps"
}

func hubID(group, name string) string {
	return "/subscriptions/" + fakeSub + "/resourceGroups/" + group + "/providers/Microsoft.Devices/IotHubs/" + name
}

// subscription is the fake subscription of the tests: a DPS and a hub in rg-iot, another hub
// in rg-iot2, nothing of the app yet.
func subscription() azState {
	return azState{Version: "2.67.0", LoggedIn: true,
		Resources: []string{dpsID("rg-iot"), hubID("rg-iot", "contoso-hub-1"), hubID("rg-iot2", "contoso-hub-2")},
		Groups:    map[string]bool{"rg-iot": true, "rg-iot2": true}}
}

func deployEnv(extra ...string) map[string]string {
	env := map[string]string{"RESOURCE_GROUP": "rg-deprov", "LOCATION": "westeurope", "DPS": "contoso-dps",
		"HUBS": "contoso-hub-1, " + hubID("rg-iot2", "contoso-hub-2"), "IOT_RESOURCE_GROUP": "rg-iot"}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// callIndex is the position of the first call whose words start with prefix (-1 if none).
func callIndex(calls [][]string, prefix ...string) int {
	for i, c := range calls {
		if len(c) > len(prefix) && slices.Equal(c[1:1+len(prefix)], prefix) {
			return i
		}
	}
	return -1
}

func countCalls(calls [][]string, prefix ...string) int {
	n := 0
	for _, c := range calls {
		if len(c) > len(prefix) && slices.Equal(c[1:1+len(prefix)], prefix) {
			n++
		}
	}
	return n
}

// Missing or malformed inputs stop the script before it calls anything, each named.
func TestDeployScriptChecksItsInputs(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no resource group", map[string]string{"DPS": "d", "HUBS": "h"}, "RESOURCE_GROUP is required"},
		{"no DPS", deployEnv("DPS", ""), "DPS is required"},
		{"no hubs", deployEnv("HUBS", ""), "HUBS is required"},
		{"bad DRY_RUN", deployEnv("DRY_RUN", "maybe"), `DRY_RUN is "maybe": true or false`},
		{"bad sender", deployEnv("SENDERS", "alice"), `SENDERS: "alice" is not an object id`},
		{"bad hub", deployEnv("HUBS", "hub/../x"), `"hub/../x" is neither a DPS or hub name nor its resource id`},
		{"DRY_RUN among the settings", deployEnv("APP_SETTINGS", "LOG_LEVEL=info;DRY_RUN=false"), "set DRY_RUN with the DRY_RUN variable"},
		{"setting without a value", deployEnv("APP_SETTINGS", "LOG_LEVEL"), `"LOG_LEVEL" is not NAME=VALUE`},
		{"bad group name", deployEnv("RESOURCE_GROUP", "rg deprov"), `RESOURCE_GROUP "rg deprov" is not a resource group name`},
		{"bad client id", deployEnv("AUTH_CLIENT_ID", "my-app"), `AUTH_CLIENT_ID "my-app" is not a client id`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newDeployRig(t, t.TempDir(), subscription())
			code, out, calls := r.run(c.env)
			if code != 2 || !strings.Contains(out, c.want) || !strings.Contains(out, "usage: make deploy") {
				t.Fatalf("exit %d, want 2 saying %q:\n%s", code, c.want, out)
			}
			if len(calls) != 0 {
				t.Fatalf("the script called %v before checking its inputs", calls)
			}
		})
	}
}

// An Azure CLI older than the Flex Consumption commands need, or no sign-in, stops it before
// anything changes.
func TestDeployScriptChecksTheAzureCLI(t *testing.T) {
	bin := fakeCLI(t)
	s := subscription()
	s.Version = "2.59.0"
	r := newDeployRig(t, bin, s)
	if code, out, _ := r.run(deployEnv("YES", "1")); code != 1 || !strings.Contains(out, "Azure CLI 2.59.0 is too old") || !strings.Contains(out, "2.60.0") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	s = subscription()
	s.LoggedIn = false
	r = newDeployRig(t, bin, s)
	if code, out, _ := r.run(deployEnv("YES", "1")); code != 1 || !strings.Contains(out, "az login") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	r = newDeployRig(t, bin, subscription())
	if code, out, _ := r.run(deployEnv("DPS", "other-dps", "YES", "1")); code != 1 || !strings.Contains(out, "DPS "+strings.Replace(dpsID("rg-iot"), "contoso-dps", "other-dps", 1)+" not found") {
		t.Fatalf("an unknown DPS: exit %d:\n%s", code, out)
	}
}

// Without YES=1 and without a terminal to ask on, the script previews and stops: nothing is
// created, not even the resource group.
func TestDeployScriptPreviewsFirst(t *testing.T) {
	bin := fakeCLI(t)
	s := subscription()
	s.Groups["rg-deprov"] = true
	r := newDeployRig(t, bin, s)
	code, out, calls := r.run(deployEnv())
	if code != 3 || !strings.Contains(out, "preview only: nothing was deployed") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if callIndex(calls, "deployment", "group", "what-if") < 0 {
		t.Fatal("no what-if preview")
	}
	for _, c := range calls {
		if slices.Contains(c, "create") || slices.Contains(c, "config-zip") || slices.Contains(c, "delete") {
			t.Fatalf("the preview changed something: %v", c)
		}
	}
}

// The first run creates the group and deploys everything in order, with DRY_RUN true and a
// smoke test whose sender role is gone at the end; a second run converges (previews all three
// templates before changing anything, creates nothing twice, keeps DRY_RUN); DRY_RUN=false
// turns the dry run off, and it stays off on the runs after.
func TestDeployScriptDeploysAndIsSafeToRunAgain(t *testing.T) {
	bin := fakeCLI(t)
	s := subscription()
	s.RefusePublish = 2 // the sender role is not yet effective for the first two tries
	r := newDeployRig(t, bin, s)
	const client = "33333333-4444-5555-6666-777777777777"
	code, out, calls := r.run(deployEnv("YES", "1", "SENDERS", senderOne, "APP_SETTINGS", `LOG_LEVEL=info;EVENT_TYPE_MAP=Contoso.X="y"=lost`, "AUTH_CLIENT_ID", client))
	if code != 0 {
		t.Fatalf("first run: exit %d:\n%s", code, out)
	}
	st := r.load()
	order := []int{
		callIndex(calls, "group", "create"),
		callIndex(calls, "deployment", "group", "create", "-g", "rg-deprov", "-n", "deprov-app"),
		callIndex(calls, "deployment", "group", "create", "-g", "rg-iot", "-n", "deprov-iot-access"),
		callIndex(calls, "deployment", "group", "create", "-g", "rg-iot2", "-n", "deprov-iot-access"),
		callIndex(calls, "functionapp", "deployment", "source", "config-zip"),
		callIndex(calls, "deployment", "group", "what-if", "-g", "rg-deprov", "-n", "deprov-events"),
		callIndex(calls, "deployment", "group", "create", "-g", "rg-deprov", "-n", "deprov-events"),
		callIndex(calls, "role", "assignment", "create"),
		callIndex(calls, "rest", "--method", "get"),
		callIndex(calls, "role", "assignment", "delete"),
	}
	if slices.Contains(order, -1) || !slices.IsSorted(order) {
		t.Fatalf("first run: the steps ran out of order or not at all (positions %v):\n%v", order, calls)
	}
	if got := st.dryRunSetting("rg-deprov"); got != "true" {
		t.Fatalf("first deployment's DRY_RUN = %q, want true", got)
	}
	var settings []struct{ Name, Value string }
	st.param("rg-deprov/deprov-app", "additionalAppSettings", &settings)
	if !slices.Contains(settings, struct{ Name, Value string }{"EVENT_TYPE_MAP", `Contoso.X="y"=lost`}) {
		t.Fatalf("APP_SETTINGS did not reach main.json intact: %+v", settings)
	}
	var authClient string
	if st.param("rg-deprov/deprov-app", "authClientId", &authClient); authClient != client {
		t.Fatalf("main.json got authClientId %q, want %s", authClient, client)
	}
	var hosts []string
	st.param("rg-deprov/deprov-app", "iotHubHostNames", &hosts)
	var dpsHost string
	st.param("rg-deprov/deprov-app", "dpsHostName", &dpsHost)
	if dpsHost != "contoso-dps.azure-devices-provisioning.net" || !slices.Equal(hosts, []string{"contoso-hub-1.azure-devices.net", "contoso-hub-2.azure-devices.net"}) {
		t.Fatalf("main.json got DPS %q and hubs %v", dpsHost, hosts)
	}
	var dpsName string
	var hubs1, hubs2 []string
	st.param("rg-iot/deprov-iot-access", "dpsName", &dpsName)
	st.param("rg-iot/deprov-iot-access", "iotHubNames", &hubs1)
	st.param("rg-iot2/deprov-iot-access", "iotHubNames", &hubs2)
	if dpsName != "contoso-dps" || !slices.Equal(hubs1, []string{"contoso-hub-1"}) || !slices.Equal(hubs2, []string{"contoso-hub-2"}) {
		t.Fatalf("iot-access.json got DPS %q, hubs %v and %v", dpsName, hubs1, hubs2)
	}
	var senders []string
	var lifecycle []struct{ ResourceID, Location string }
	st.param("rg-deprov/deprov-events", "senderPrincipalIds", &senders)
	st.param("rg-deprov/deprov-events", "iotHubs", &lifecycle)
	if !slices.Equal(senders, []string{senderOne}) || len(lifecycle) != 2 || lifecycle[1].ResourceID != hubID("rg-iot2", "contoso-hub-2") {
		t.Fatalf("events.json got senders %v and hubs %+v", senders, lifecycle)
	}
	if len(st.Roles) != 0 {
		t.Fatalf("the smoke test's sender role is still there: %+v", st.Roles)
	}
	if len(st.Published) != 1 {
		t.Fatalf("%d smoke-test events published, want 1", len(st.Published))
	}
	src, id, _ := strings.Cut(st.Published[0], "\x00")
	lookup := calls[callIndex(calls, "rest", "--method", "get")]
	if want := "/api/deprovision/operations/" + deprovision.OperationID(src, id); !strings.HasSuffix(lookup[slices.Index(lookup, "--url")+1], want) {
		t.Fatalf("the smoke test looked for %v; the engine journals the event as %s", lookup, want)
	}
	if !strings.Contains(out, "DRY_RUN is on") || !strings.Contains(out, "journaled as operation op-") {
		t.Fatalf("the first run does not say the smoke test worked and DRY_RUN is on:\n%s", out)
	}

	code, out, calls = r.run(deployEnv("YES", "1", "SENDERS", senderOne))
	if code != 0 {
		t.Fatalf("second run: exit %d:\n%s", code, out)
	}
	firstCreate := callIndex(calls, "deployment", "group", "create")
	for _, g := range [][]string{{"rg-deprov", "deprov-app"}, {"rg-iot", "deprov-iot-access"}, {"rg-iot2", "deprov-iot-access"}, {"rg-deprov", "deprov-events"}} {
		if i := callIndex(calls, "deployment", "group", "what-if", "-g", g[0], "-n", g[1]); i < 0 || i > firstCreate {
			t.Fatalf("second run: %s in %s was not previewed before the first deployment", g[1], g[0])
		}
	}
	if n := countCalls(calls, "group", "create"); n != 0 {
		t.Fatal("second run created the resource group again")
	}
	if st = r.load(); st.dryRunSetting("rg-deprov") != "true" || len(st.Roles) != 0 {
		t.Fatalf("second run: DRY_RUN %q, roles left %+v", st.dryRunSetting("rg-deprov"), st.Roles)
	}

	if code, out, _ = r.run(deployEnv("YES", "1", "DRY_RUN", "false", "SMOKE_TEST", "false")); code != 0 || r.load().dryRunSetting("rg-deprov") != "false" {
		t.Fatalf("DRY_RUN=false: exit %d, DRY_RUN %q:\n%s", code, r.load().dryRunSetting("rg-deprov"), out)
	}
	if code, out, _ = r.run(deployEnv("YES", "1", "SMOKE_TEST", "false")); code != 0 || r.load().dryRunSetting("rg-deprov") != "false" {
		t.Fatalf("a run after DRY_RUN=false turned the dry run back on: exit %d, DRY_RUN %q:\n%s", code, r.load().dryRunSetting("rg-deprov"), out)
	}
}

// The smoke test's sender role is removed whatever happens: when the event never reaches the
// journal, and when a stopped run left one behind. A deployer who is one of SENDERS keeps the
// role: the smoke test is skipped rather than take it away.
func TestDeploySmokeTestNeverLeavesItsSenderRole(t *testing.T) {
	bin := fakeCLI(t)
	s := subscription()
	s.NoOperations = true
	topic := "/subscriptions/" + fakeSub + "/resourceGroups/rg-deprov/providers/Microsoft.EventGrid/topics/dpsdeprov-fake-device-events"
	s.Roles = []fakeRole{{ID: topic + "/providers/Microsoft.Authorization/roleAssignments/left-behind", Principal: fakeMe, Role: roleEventGridDataSender, Scope: topic}}
	r := newDeployRig(t, bin, s)
	code, out, _ := r.run(deployEnv("YES", "1"))
	if code == 0 || !strings.Contains(out, "did not appear in the journal") {
		t.Fatalf("a smoke test that never reaches the journal: exit %d:\n%s", code, out)
	}
	if st := r.load(); len(st.Roles) != 0 {
		t.Fatalf("sender roles left after a failed smoke test: %+v", st.Roles)
	}

	s = subscription()
	s.Roles = []fakeRole{{ID: topic + "/providers/Microsoft.Authorization/roleAssignments/granted-by-template", Principal: fakeMe, Role: roleEventGridDataSender, Scope: topic}}
	r = newDeployRig(t, bin, s)
	code, out, calls := r.run(deployEnv("YES", "1", "SENDERS", fakeMe))
	if code != 0 || !strings.Contains(out, "smoke test skipped") || countCalls(calls, "role", "assignment", "delete") != 0 || len(r.load().Roles) != 1 {
		t.Fatalf("a deployer who is a sender: exit %d, roles %+v:\n%s", code, r.load().Roles, out)
	}
}

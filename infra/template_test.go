package infra

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/azure/journal"
	"dpsdeprov/azure/listings"
	"dpsdeprov/azure/ratelimit"
	"dpsdeprov/config"
	"dpsdeprov/handler"
	"dpsdeprov/internal/pack"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Built-in role definition ids (Azure built-in roles table; see README.md for what each is for).
const (
	roleStorageBlobDataOwner           = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
	roleStorageBlobDataContributor     = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
	roleStorageQueueDataContributor    = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
	roleStorageTableDataContributor    = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
	roleMonitoringMetricsPublisher     = "3913510d-42f4-4e42-8a64-420c390055eb"
	roleEventGridDataSender            = "d5a91429-5739-47e2-a06b-3470a27159e7"
	roleDPSDataContributor             = "dfce44e4-17b7-4bd1-a6d1-04996ec95633"
	roleIoTHubRegistryContributor      = "4ea46cd5-c1b2-4a8e-910b-273211f9ce47"
	roleIoTHubDataReader               = "b447c946-2db7-41ec-983d-d8bf3b1c77e3"
	appInsightsConnectionStringSetting = "APPLICATIONINSIGHTS_CONNECTION_STRING"
)

// grant is one role assignment: who gets which role where.
type grant struct {
	scope, role, principal string
}

func (g grant) String() string {
	return fmt.Sprintf("role %s to %s on %s", g.role, g.principal, g.scope)
}

// grants evaluates the role assignments a template makes.
func grants(t *testing.T, tm *template) []grant {
	t.Helper()
	rs := evaluated(t, tm)
	var out []grant
	prefix := "/subscriptions/" + tm.dep.subscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/"
	for _, r := range rs {
		if r.Type != "Microsoft.Authorization/roleAssignments" {
			continue
		}
		def, _ := r.Properties["roleDefinitionId"].(string)
		role, ok := strings.CutPrefix(def, prefix)
		if !ok {
			t.Errorf("%s: role assignment %s names role %q, not a built-in role of the subscription", tm.name, r.Name, def)
		}
		if pt, _ := r.Properties["principalType"].(string); pt == "" {
			t.Errorf("%s: role assignment for %s has no principalType (needed when the identity was just created)", tm.name, role)
		}
		if r.Scope == "" {
			t.Errorf("%s: role assignment for %s has no scope: it would apply to the whole resource group", tm.name, role)
		}
		principal, _ := r.Properties["principalId"].(string)
		out = append(out, grant{scope: r.Scope, role: role, principal: principal})
	}
	return out
}

func evaluated(t *testing.T, tm *template) []resource {
	t.Helper()
	rs, err := tm.resources()
	if err != nil {
		t.Fatalf("evaluating %s: %v", tm.name, err)
	}
	return rs
}

func mustLoad(t *testing.T, name, params string, overrides map[string]any) *template {
	t.Helper()
	tm, err := loadTemplate(name, params, overrides)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// only returns the one resource of type typ.
func only(t *testing.T, tm *template, rs []resource, typ string) resource {
	t.Helper()
	var found []resource
	for _, r := range rs {
		if r.Type == typ {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s deploys %d resources of type %s, want 1", tm.name, len(found), typ)
	}
	return found[0]
}

func all(rs []resource, typ string) []resource {
	var out []resource
	for _, r := range rs {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func sameGrants(t *testing.T, what string, got, want []grant) {
	t.Helper()
	key := func(g grant) string { return g.String() }
	gs, ws := make([]string, len(got)), make([]string, len(want))
	for i, g := range got {
		gs[i] = key(g)
	}
	for i, w := range want {
		ws[i] = key(w)
	}
	sort.Strings(gs)
	sort.Strings(ws)
	for _, w := range ws {
		if !slices.Contains(gs, w) {
			t.Errorf("%s: missing %s", what, w)
		}
	}
	for _, g := range gs {
		if !slices.Contains(ws, g) {
			t.Errorf("%s: unexpected %s (every grant must be one the app needs)", what, g)
		}
	}
}

// TestMainGrantsTheAppWhatItNeedsOnItsResources checks main.json's role assignments: exactly
// the data roles the app's identity needs on its own storage, monitoring and outcome topic,
// given to the identity the function app runs as.
func TestMainGrantsTheAppWhatItNeedsOnItsResources(t *testing.T) {
	tm := mustLoad(t, "main.json", "main.parameters.json", nil)
	rs := evaluated(t, tm)
	identity := only(t, tm, rs, "Microsoft.ManagedIdentity/userAssignedIdentities")
	storage := only(t, tm, rs, "Microsoft.Storage/storageAccounts")
	insights := only(t, tm, rs, "Microsoft.Insights/components")
	topic := only(t, tm, rs, "Microsoft.EventGrid/topics")
	site := only(t, tm, rs, "Microsoft.Web/sites")

	// The identity that receives the roles is the one the app runs as and names in its settings.
	ids, _ := site.Raw["identity"].(map[string]any)
	uai, _ := ids["userAssignedIdentities"].(map[string]any)
	if ids["type"] != "UserAssigned" || len(uai) != 1 || uai[tm.id(identity)] == nil {
		t.Errorf("the function app's identity is %v, want only the user-assigned identity %s", ids, tm.id(identity))
	}
	want := []grant{
		{tm.id(storage), roleStorageBlobDataOwner, stubPrincipalID},
		{tm.id(storage), roleStorageQueueDataContributor, stubPrincipalID},
		{tm.id(storage), roleStorageTableDataContributor, stubPrincipalID},
		{tm.id(insights), roleMonitoringMetricsPublisher, stubPrincipalID},
		{tm.id(topic), roleEventGridDataSender, stubPrincipalID},
	}
	sameGrants(t, "main.json", grants(t, tm), want)
}

// TestIoTAccessGrantsDPSAndEachHub checks iot-access.json: DPS Data Contributor on the DPS,
// and on each hub Registry Contributor (device CRUD and bulk) plus Data Reader (twin queries)
// unless turned off.
func TestIoTAccessGrantsDPSAndEachHub(t *testing.T) {
	const principal = "00000000-0000-0000-0000-00000000abcd"
	rg := testDeployment.resourceGroupID() + "/providers/"
	hubs := []any{"hub-a", "hub-b", "hub-c"}
	cases := []struct {
		name      string
		overrides map[string]any
		want      []grant
	}{
		{"DPS and three hubs", map[string]any{"principalId": principal, "dpsName": "dps1", "iotHubNames": hubs}, []grant{
			{rg + "Microsoft.Devices/provisioningServices/dps1", roleDPSDataContributor, principal},
			{rg + "Microsoft.Devices/IotHubs/hub-a", roleIoTHubRegistryContributor, principal},
			{rg + "Microsoft.Devices/IotHubs/hub-b", roleIoTHubRegistryContributor, principal},
			{rg + "Microsoft.Devices/IotHubs/hub-c", roleIoTHubRegistryContributor, principal},
			{rg + "Microsoft.Devices/IotHubs/hub-a", roleIoTHubDataReader, principal},
			{rg + "Microsoft.Devices/IotHubs/hub-b", roleIoTHubDataReader, principal},
			{rg + "Microsoft.Devices/IotHubs/hub-c", roleIoTHubDataReader, principal},
		}},
		{"hubs only, no query access", map[string]any{"principalId": principal, "iotHubNames": []any{"hub-a"}, "iotHubQueryAccess": false}, []grant{
			{rg + "Microsoft.Devices/IotHubs/hub-a", roleIoTHubRegistryContributor, principal},
		}},
		{"DPS only", map[string]any{"principalId": principal, "dpsName": "dps1"}, []grant{
			{rg + "Microsoft.Devices/provisioningServices/dps1", roleDPSDataContributor, principal},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tm := mustLoad(t, "iot-access.json", "", c.overrides)
			sameGrants(t, "iot-access.json", grants(t, tm), c.want)
		})
	}

	// The example parameters grant on the hubs that main.parameters.json's app talks to.
	access := mustLoad(t, "iot-access.json", "iot-access.parameters.json", nil)
	app := mustLoad(t, "main.json", "main.parameters.json", nil)
	names, err := access.parameter("iotHubNames")
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := app.parameter("iotHubHostNames")
	if err != nil {
		t.Fatal(err)
	}
	var fromHosts []string
	for _, h := range hosts.([]any) {
		name, _, _ := strings.Cut(h.(string), ".")
		fromHosts = append(fromHosts, name)
	}
	if fmt.Sprint(names) != fmt.Sprint(fromHosts) {
		t.Errorf("iot-access.parameters.json grants on hubs %v, but main.parameters.json's app uses %v", names, fromHosts)
	}
}

// appSettings evaluates main.json's app settings as the app will see them.
func appSettings(t *testing.T, tm *template) map[string]string {
	t.Helper()
	site := only(t, tm, evaluated(t, tm), "Microsoft.Web/sites")
	sc, _ := site.Properties["siteConfig"].(map[string]any)
	list, ok := sc["appSettings"].([]any)
	if !ok {
		t.Fatalf("siteConfig.appSettings evaluates to %T, want an array", sc["appSettings"])
	}
	env := map[string]string{}
	for _, e := range list {
		m, _ := e.(map[string]any)
		name, _ := m["name"].(string)
		value, ok := m["value"].(string)
		if name == "" || !ok {
			t.Fatalf("app setting %v is not a name and a string value", e)
		}
		if _, dup := env[name]; dup {
			t.Errorf("app setting %s is set twice", name)
		}
		env[name] = value
	}
	return env
}

// settingKind says how the deployment treats one of the app's settings.
type settingKind int

const (
	// setByTemplate: main.json sets it.
	setByTemplate settingKind = iota
	// setByPlatform: the Functions host sets it.
	setByPlatform
	// optional: the app's default serves; additionalAppSettings may set it.
	optional
	// secret: a key or connection string, which this deployment never uses.
	secret
	// localOnly: for local runs against emulators; never in Azure.
	localOnly
)

// deploymentView says, for each setting the app reads, how this deployment treats it. The
// names come from the config package's source (configSettings), so a new setting fails
// TestAppSettingsMakeTheHandlerStartWithIdentities until it is accounted for here and, if
// needed, in main.json.
var deploymentView = map[string]settingKind{
	config.SettingPort:            setByPlatform,
	config.SettingLegacyPort:      setByPlatform,
	config.SettingStorage:         setByTemplate,
	config.SettingClientID:        setByTemplate,
	config.SettingDPSEndpoint:     setByTemplate,
	config.SettingDPSCredential:   setByTemplate,
	config.SettingHubs:            setByTemplate,
	config.SettingHubCredential:   setByTemplate,
	config.SettingJournalPrefix:   setByTemplate,
	config.SettingCleanupSchedule: setByTemplate,
	config.SettingOutcomeEndpoint: setByTemplate,
	config.SettingLogLevel:        optional,
	config.SettingEventTypes:      optional,
	config.SettingAllowedSources:  optional,
	config.SettingDryRun:          optional,
	config.SettingMaxEventAge:     optional,
	config.SettingCleanupAge:      optional,
	config.SettingOutcomeSource:   optional,
	config.SettingDPSConnection:   secret,
	config.SettingHubConnection:   secret,
	config.SettingOutcomeKey:      secret,
	config.SettingOutcomeCAFile:   localOnly,
	config.SettingEmulatorAddress: localOnly,
	config.SettingEmulatorCAFile:  localOnly,

	// Guardrails: the defaults fit most fleets; an operator raises or lowers them.
	config.SettingMaxGroupDevices:       optional,
	config.SettingMaxDestructivePerHour: optional,

	// Scale: the hub budget defaults to one S1 unit's; an operator sets it to the hubs' tier.
	// The DPS budget defaults to the documented instance budget and the app's share of it.
	// The dequeue count follows host.json, which the package ships.
	config.SettingHubOpsPerMinute:     optional,
	config.SettingDPSOpsPerMinute:     optional,
	config.SettingDPSOpsShare:         optional,
	config.SettingDPSBulkCost:         optional,
	config.SettingGroupWorkMaxDequeue: optional,

	// Cleanup passes: every one has a default (destructive passes dry-run); an operator opts in.
	config.SettingCleanupBudget:        optional,
	config.SettingCleanupGracePeriod:   optional,
	config.SettingCleanupGraceEscalate: optional,
	config.SettingCleanupGraceDryRun:   optional,
	config.SettingCleanupDriftDryRun:   optional,
	config.SettingCleanupStaleAfter:    optional,
	config.SettingCleanupStaleMax:      optional,
	config.SettingCleanupStaleAllow:    optional,
	config.SettingCleanupStaleDryRun:   optional,
	config.SettingCleanupOrphansDryRun: optional,
	config.SettingCleanupOrphanGroups:  optional,
	// The cleanup's guards (docs/cleanup.md): each has a safe default. CLEANUP_<PASS>_ENABLED,
	// named by a function, is optional too.
	config.SettingCleanupShare:                 optional,
	config.SettingCleanupGroupsRedisable:       optional,
	config.SettingCleanupStaleRunPercent:       optional,
	config.SettingCleanupStaleDayPercent:       optional,
	config.SettingCleanupStaleFeedMaxAge:       optional,
	config.SettingCleanupMaxDestructivePerHour: optional,
	config.SettingCleanupKeepFindings:          optional,
	config.SettingCleanupKeepDeletedSightings:  optional,

	// Access: App Service sets WEBSITE_AUTH_ENABLED itself when authsettingsV2 turns its
	// authentication on (auth_test.go); the function key's reach has a default per mode.
	config.SettingAuthEnabled:       setByPlatform,
	config.SettingFunctionKeyAccess: optional,
}

// configSettings lists the setting names the config package declares: the string constants
// named Setting* in its source.
func configSettings(t *testing.T) []string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(root, "config", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Setting") || !n.IsExported() || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						names = append(names, v)
					}
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("found no Setting* constant in the config package")
	}
	return names
}

// isSet reports whether env sets the setting name, directly or in its identity-based form
// (name__accountName, …).
func isSet(env map[string]string, name string) bool {
	for k := range env {
		if k == name || strings.HasPrefix(k, name+"__") || strings.HasSuffix(name, "_") && strings.HasPrefix(k, name) {
			return true
		}
	}
	return false
}

// TestAppSettingsMakeTheHandlerStartWithIdentities loads main.json's app settings into the
// handler's own configuration: they must be complete, use the managed identity everywhere,
// and carry no secret.
func TestAppSettingsMakeTheHandlerStartWithIdentities(t *testing.T) {
	tm := mustLoad(t, "main.json", "main.parameters.json", nil)
	env := appSettings(t, tm)

	for _, name := range configSettings(t) {
		kind, known := deploymentView[name]
		switch {
		case !known:
			t.Errorf("the app reads setting %s, which this deployment does not account for: set it in main.json or classify it in deploymentView", name)
		case kind == setByTemplate && !isSet(env, name):
			t.Errorf("main.json does not set %s, which the app reads", name)
		case kind != setByTemplate && kind != optional && isSet(env, name):
			t.Errorf("main.json sets %s, which it must leave alone (the platform's, a secret, or local only)", name)
		}
	}
	for _, name := range []string{"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} {
		if _, ok := env[name]; ok {
			t.Errorf("main.json sets %s; a Flex Consumption app takes its runtime from functionAppConfig.runtime", name)
		}
	}

	// The host sets the port; the rest is exactly what the app gets in Azure.
	withPort := map[string]string{config.SettingPort: "40000"}
	for k, v := range env {
		withPort[k] = v
	}
	cfg, err := config.Load(withPort)
	if err != nil {
		t.Fatalf("the handler rejects main.json's app settings:\n%v", err)
	}
	if cfg.DPS.Credential != config.CredentialManagedIdentity || cfg.DPS.ConnectionString != "" {
		t.Errorf("DPS credential = %s, want the managed identity and no connection string", cfg.DPS.Credential)
	}
	if cfg.Hubs.Credential != config.CredentialManagedIdentity || len(cfg.Hubs.ConnectionStrings) != 0 {
		t.Errorf("hub credential = %s, want the managed identity and no connection string", cfg.Hubs.Credential)
	}
	if cfg.Storage.ConnectionString != "" {
		t.Error("storage uses a connection string, want the identity-based form")
	}
	if cfg.ClientID != stubClientID || cfg.Storage.ClientID != stubClientID {
		t.Errorf("client ids: app %q, storage %q; want both the user-assigned identity's %q", cfg.ClientID, cfg.Storage.ClientID, stubClientID)
	}
	if cfg.Outcome.Key != "" {
		t.Error("the outcome topic uses an access key, want the identity")
	}
	if want := stubEndpoint(tm, "Microsoft.EventGrid/topics"); cfg.Outcome.Endpoint != want {
		t.Errorf("outcome endpoint = %q, want the outcome topic's %q", cfg.Outcome.Endpoint, want)
	}
	hosts, _ := tm.parameter("iotHubHostNames")
	if fmt.Sprint(cfg.Hubs.Hosts) != fmt.Sprint(hosts) {
		t.Errorf("hubs = %v, want the iotHubHostNames parameter %v", cfg.Hubs.Hosts, hosts)
	}
	if auth := env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]; auth != "Authorization=AAD;ClientId="+stubClientID {
		t.Errorf("APPLICATIONINSIGHTS_AUTHENTICATION_STRING = %q, want Entra authentication with the app's identity", auth)
	}
}

func stubEndpoint(tm *template, typ string) string {
	rs, _ := tm.resources()
	for _, r := range rs {
		if r.Type == typ {
			v, err := tm.reference(tm.id(r), false)
			if err == nil {
				return v.(map[string]any)["endpoint"].(string)
			}
		}
	}
	return ""
}

// secretValue matches the parts of connection strings and SAS tokens that carry a secret.
var secretValue = regexp.MustCompile(`(?i)(AccountKey|SharedAccessKey|SharedAccessSignature|sig)=|@Microsoft\.KeyVault`)

// secretName matches setting names that announce a secret.
var secretName = regexp.MustCompile(`(?i)(KEY|CONNECTION_?STRING|PASSWORD|SECRET|SAS|TOKEN)`)

// TestNoKeyOrConnectionStringAnywhere checks that nothing in the deployment carries or fetches
// a secret: no list*() key function, no secret-looking setting, no shared-key access left on.
func TestNoKeyOrConnectionStringAnywhere(t *testing.T) {
	templates, parameters := deploymentFiles(t)
	listFn := regexp.MustCompile(`(?i)\blist[a-z]*\(`)
	for _, f := range append(templates, parameters...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := listFn.Find(b); m != nil {
			t.Errorf("%s calls %s…), which reads keys or secrets", f, m)
		}
		if m := secretValue.Find(b); m != nil {
			t.Errorf("%s contains %q, part of a key or connection string", f, m)
		}
	}

	tm := mustLoad(t, "main.json", "main.parameters.json", nil)
	for name := range appSettings(t, tm) {
		// The Application Insights connection string names the component and its ingestion
		// endpoint; it carries no secret, and with local authentication off (checked below)
		// ingestion needs the identity's Entra token.
		if name != appInsightsConnectionStringSetting && secretName.MatchString(name) {
			t.Errorf("app setting %s looks like a key or connection string", name)
		}
	}
	// additionalAppSettings in the example parameters and the user's are held to the same rule.
	extra, err := tm.parameter("additionalAppSettings")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range extra.([]any) {
		if n, _ := e.(map[string]any)["name"].(string); secretName.MatchString(n) {
			t.Errorf("main.parameters.json adds app setting %s, which looks like a key or connection string", n)
		}
	}

	rs := evaluated(t, tm)
	if v := only(t, tm, rs, "Microsoft.Storage/storageAccounts").Properties["allowSharedKeyAccess"]; v != false {
		t.Errorf("storage allowSharedKeyAccess = %v, want false: with identities everywhere, account keys only widen access", v)
	}
	if v := only(t, tm, rs, "Microsoft.Insights/components").Properties["DisableLocalAuth"]; v != true {
		t.Errorf("Application Insights DisableLocalAuth = %v, want true: telemetry must need the identity, not the connection string alone", v)
	}
	ev := mustLoad(t, "events.json", "events.parameters.json", nil)
	for _, tt := range []struct {
		tm *template
		rs []resource
	}{{tm, rs}, {ev, evaluated(t, ev)}} {
		for _, topic := range all(tt.rs, "Microsoft.EventGrid/topics") {
			if topic.Properties["disableLocalAuth"] != true {
				t.Errorf("%s: topic %s accepts access keys (disableLocalAuth is not true)", tt.tm.name, topic.Name)
			}
		}
	}
}

// TestFlexAppRunsTheCustomHandler checks the hosting: a Flex Consumption plan, the custom
// runtime, and the deployment package read from an existing container with the identity.
func TestFlexAppRunsTheCustomHandler(t *testing.T) {
	tm := mustLoad(t, "main.json", "main.parameters.json", nil)
	rs := evaluated(t, tm)
	plan := only(t, tm, rs, "Microsoft.Web/serverfarms")
	sku, _ := plan.Raw["sku"].(map[string]any)
	if sku["name"] != "FC1" || sku["tier"] != "FlexConsumption" || plan.Properties["reserved"] != true {
		t.Errorf("plan sku %v reserved %v, want FC1/FlexConsumption on Linux", sku, plan.Properties["reserved"])
	}
	site := only(t, tm, rs, "Microsoft.Web/sites")
	if site.Raw["kind"] != "functionapp,linux" || site.Properties["serverFarmId"] != tm.id(plan) {
		t.Errorf("site kind %v on %v, want functionapp,linux on %s", site.Raw["kind"], site.Properties["serverFarmId"], tm.id(plan))
	}
	fac, _ := site.Properties["functionAppConfig"].(map[string]any)
	rt, _ := fac["runtime"].(map[string]any)
	if rt["name"] != "custom" || rt["version"] != "1.0" {
		t.Errorf("functionAppConfig.runtime = %v, want custom 1.0", rt)
	}
	dep, _ := fac["deployment"].(map[string]any)
	st, _ := dep["storage"].(map[string]any)
	auth, _ := st["authentication"].(map[string]any)
	identity := only(t, tm, rs, "Microsoft.ManagedIdentity/userAssignedIdentities")
	if auth["type"] != "UserAssignedIdentity" || auth["userAssignedIdentityResourceId"] != tm.id(identity) {
		t.Errorf("deployment storage authentication = %v, want the user-assigned identity", auth)
	}
	storage := only(t, tm, rs, "Microsoft.Storage/storageAccounts")
	url, _ := st["value"].(string)
	container, ok := strings.CutPrefix(url, "https://"+storage.Name+".blob.core.windows.net/")
	if st["type"] != "blobContainer" || !ok || !slices.Contains(containers(tm, rs), container) {
		t.Errorf("deployment storage %v is not a container main.json creates (%v)", st, containers(tm, rs))
	}
}

// containers lists the blob containers main.json creates.
func containers(tm *template, rs []resource) []string {
	var out []string
	for _, r := range all(rs, "Microsoft.Storage/storageAccounts/blobServices/containers") {
		out = append(out, r.Name[strings.LastIndex(r.Name, "/")+1:])
	}
	return out
}

// TestStorageHasWhatTheAppUses checks that main.json creates the queue the GroupWork trigger
// reads (and its poison queue) and exactly the tables the app opens (the journal's, the
// guardrail budget's, the cleanup's and the hub rate limiter's), and that every
// binding's connection is an identity-based one the template sets.
func TestStorageHasWhatTheAppUses(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	app, err := pack.ReadApp(root)
	if err != nil {
		t.Fatal(err)
	}
	tm := mustLoad(t, "main.json", "main.parameters.json", nil)
	rs := evaluated(t, tm)
	env := appSettings(t, tm)
	var queues, tables []string
	for _, r := range all(rs, "Microsoft.Storage/storageAccounts/queueServices/queues") {
		queues = append(queues, r.Name[strings.LastIndex(r.Name, "/")+1:])
	}
	for _, r := range all(rs, "Microsoft.Storage/storageAccounts/tableServices/tables") {
		tables = append(tables, r.Name[strings.LastIndex(r.Name, "/")+1:])
	}

	for _, f := range app.Functions {
		for _, b := range f.Bindings {
			if b.QueueName != "" {
				q := resolveSetting(t, b.QueueName, env)
				for _, want := range []string{q, q + "-poison"} {
					if !slices.Contains(queues, want) {
						t.Errorf("function %s binds queue %s, but main.json creates only %v", f.Name, want, queues)
					}
				}
			}
			if strings.HasPrefix(strings.ToLower(b.Type), "queue") || strings.HasPrefix(strings.ToLower(b.Type), "table") || strings.HasPrefix(strings.ToLower(b.Type), "blob") {
				conn := b.Connection
				if conn == "" {
					conn = config.SettingStorage
				}
				if env[conn+"__accountName"] == "" && env[conn+"__queueServiceUri"] == "" {
					t.Errorf("function %s binding %s uses connection %s, which main.json does not set in identity-based form", f.Name, b.Name, conn)
				}
				if env[conn+"__credential"] != "managedidentity" || env[conn+"__clientId"] != stubClientID {
					t.Errorf("connection %s does not use the user-assigned identity (%s__credential, %s__clientId)", conn, conn, conn)
				}
			}
		}
	}

	// The journal's tables: open the journal the way the app does, with the prefix the
	// template gives it, on Azurite, and compare what it created.
	cfg, err := config.Load(map[string]string{
		config.SettingPort: "40000", config.SettingStorage: "UseDevelopmentStorage=true",
		config.SettingDPSEndpoint: "https://d.example", config.SettingHubs: "h.azure-devices.net",
		config.SettingCleanupSchedule: "0 */5 * * * *", config.SettingJournalPrefix: env[config.SettingJournalPrefix],
	})
	if err != nil {
		t.Fatal(err)
	}
	az := testenv.SharedAzurite(t)
	svc, err := aztables.NewServiceClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests share this Azurite; only this prefix's tables count.
	unique := testenv.UniqueName("infra")
	ctx, opts := context.Background(), journal.Options{TablePrefix: unique + cfg.JournalPrefix}
	if _, err := journal.New(ctx, svc, opts); err != nil {
		t.Fatalf("opening the journal: %v", err)
	}
	if _, err := journal.NewBudget(ctx, svc, opts); err != nil {
		t.Fatalf("opening the guardrail budget: %v", err)
	}
	if _, err := journal.NewHousekeeping(ctx, svc, opts); err != nil {
		t.Fatalf("opening the cleanup tables: %v", err)
	}
	// The hub rate limiter's table: the app names it {prefix}ratelimit when it wires the
	// limiter (package main, which a test cannot import).
	if _, err := ratelimit.CreateTable(ctx, svc, opts.TablePrefix+"ratelimit"); err != nil {
		t.Fatalf("opening the rate limiter's table: %v", err)
	}
	// The instances' shared listings of groups: {prefix}listings, named the same way.
	if _, err := listings.Open(ctx, svc, opts.TablePrefix+"listings", nil); err != nil {
		t.Fatalf("opening the shared listings' table: %v", err)
	}
	var created []string
	pager := svc.NewListTablesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range page.Tables {
			if name, ok := strings.CutPrefix(*tb.Name, unique); ok {
				created = append(created, name)
			}
		}
	}
	sort.Strings(created)
	sort.Strings(tables)
	if len(created) == 0 || !slices.Equal(created, tables) {
		t.Errorf("the app opens tables %v, main.json creates %v", created, tables)
	}
}

// resolveSetting expands a binding value of the form %NAME% from the app settings.
func resolveSetting(t *testing.T, v string, env map[string]string) string {
	t.Helper()
	if len(v) > 2 && strings.HasPrefix(v, "%") && strings.HasSuffix(v, "%") {
		s, ok := env[v[1:len(v)-1]]
		if !ok {
			t.Fatalf("binding value %s names an app setting main.json does not set", v)
		}
		return s
	}
	return v
}

// noHubs leaves out the lifecycle subscriptions (TestLifecycleEventsFeedDeviceEvents checks
// them), so that the inbound subscription's checks see only what belongs to it.
var noHubs = []any{}

// TestEventSubscriptionFeedsDeviceEvents checks events.json: the subscription delivers
// CloudEvents 1.0 to the app's Event Grid-triggered function, one event per call, with retries
// and dead-lettering into the container main.json creates, through a topic identity that
// may write there, filtered to the event types the handler maps.
func TestEventSubscriptionFeedsDeviceEvents(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	app, err := pack.ReadApp(root)
	if err != nil {
		t.Fatal(err)
	}
	eg := app.FunctionsWithTrigger("eventGridTrigger")
	if len(eg) != 1 {
		t.Fatalf("the app has %d Event Grid-triggered functions, want 1", len(eg))
	}
	if eg[0].Name != handler.FunctionDeviceEvents {
		t.Errorf("the Event Grid-triggered function is %s, the handler serves events as %s", eg[0].Name, handler.FunctionDeviceEvents)
	}

	mainT := mustLoad(t, "main.json", "main.parameters.json", nil)
	mainRs := evaluated(t, mainT)
	for _, createTopic := range []bool{true, false} {
		t.Run(fmt.Sprintf("createTopic=%v", createTopic), func(t *testing.T) {
			tm := mustLoad(t, "events.json", "events.parameters.json", map[string]any{"createTopic": createTopic, "iotHubs": noHubs})
			rs := evaluated(t, tm)
			topicName, _ := tm.parameter("topicName")
			topics := all(rs, "Microsoft.EventGrid/topics")
			if createTopic {
				if len(topics) != 1 {
					t.Fatalf("events.json creates %d topics, want 1", len(topics))
				}
				topic := topics[0]
				if topic.Properties["inputSchema"] != "CloudEventSchemaV1_0" {
					t.Errorf("topic input schema = %v, want CloudEventSchemaV1_0", topic.Properties["inputSchema"])
				}
				if id, _ := topic.Raw["identity"].(map[string]any); id["type"] != "SystemAssigned" {
					t.Errorf("topic identity = %v, want SystemAssigned (dead-lettering uses it)", id)
				}
			} else if len(topics) != 0 {
				t.Fatalf("with createTopic false, events.json still creates a topic")
			}

			sub := only(t, tm, rs, "Microsoft.EventGrid/topics/eventSubscriptions")
			if !strings.HasPrefix(sub.Name, topicName.(string)+"/") {
				t.Errorf("subscription %s is not on topic %s", sub.Name, topicName)
			}
			p := sub.Properties
			dest, _ := p["destination"].(map[string]any)
			dp, _ := dest["properties"].(map[string]any)
			appName, _ := tm.parameter("functionAppName")
			wantFn := tm.dep.resourceGroupID() + "/providers/Microsoft.Web/sites/" + appName.(string) + "/functions/" + eg[0].Name
			if dest["endpointType"] != "AzureFunction" || dp["resourceId"] != wantFn {
				t.Errorf("destination = %v, want AzureFunction %s", dest, wantFn)
			}
			if dp["maxEventsPerBatch"] != int64(1) {
				t.Errorf("maxEventsPerBatch = %v, want 1: a failed batch is redelivered whole", dp["maxEventsPerBatch"])
			}
			if p["eventDeliverySchema"] != "CloudEventSchemaV1_0" {
				t.Errorf("eventDeliverySchema = %v, want CloudEventSchemaV1_0", p["eventDeliverySchema"])
			}
			retry, _ := p["retryPolicy"].(map[string]any)
			if n, _ := retry["maxDeliveryAttempts"].(int64); n < 2 {
				t.Errorf("retryPolicy = %v, want retries", retry)
			}
			if ttl, _ := retry["eventTimeToLiveInMinutes"].(int64); ttl != 1440 {
				t.Errorf("event time to live = %v minutes, want 1440: the handler's transient failures rely on 24 h of redelivery", ttl)
			}

			dl, _ := p["deadLetterWithResourceIdentity"].(map[string]any)
			dlIdentity, _ := dl["identity"].(map[string]any)
			dlDest, _ := dl["deadLetterDestination"].(map[string]any)
			dlp, _ := dlDest["properties"].(map[string]any)
			account, _ := tm.parameter("storageAccountName")
			container, _ := dlp["blobContainerName"].(string)
			if dlIdentity["type"] != "SystemAssigned" || dlDest["endpointType"] != "StorageBlob" ||
				dlp["resourceId"] != tm.dep.resourceGroupID()+"/providers/Microsoft.Storage/storageAccounts/"+account.(string) {
				t.Errorf("dead-lettering = %v, want blob storage in the app's account through the topic's identity", dl)
			}
			if !slices.Contains(containers(mainT, mainRs), container) {
				t.Errorf("dead-letter container %q is not one main.json creates (%v)", container, containers(mainT, mainRs))
			}
			if out, _ := mainT.variable("deadLetterContainerName"); out != container {
				t.Errorf("events.json dead-letters to %q, main.json's deadLetterContainerName output is %q", container, out)
			}
			containerID := tm.dep.resourceGroupID() + "/providers/Microsoft.Storage/storageAccounts/" + account.(string) + "/blobServices/default/containers/" + container
			sameGrants(t, "events.json", grants(t, tm), []grant{{containerID, roleStorageBlobDataContributor, "principal-of-" + topicName.(string)}})

			filter, _ := p["filter"].(map[string]any)
			var types []string
			for _, v := range filter["includedEventTypes"].([]any) {
				types = append(types, v.(string))
			}
			sort.Strings(types)
			if known := handler.DefaultEventTypes().Known(); !slices.Equal(types, known) {
				t.Errorf("the subscription delivers event types %v, the handler maps %v", types, known)
			}
		})
	}

	// Senders named by parameter may publish, and nothing else is granted.
	tm := mustLoad(t, "events.json", "events.parameters.json", map[string]any{"senderPrincipalIds": []any{"s1", "s2"}, "iotHubs": noHubs})
	topicName, _ := tm.parameter("topicName")
	account, _ := tm.parameter("storageAccountName")
	rg := tm.dep.resourceGroupID() + "/providers/"
	sameGrants(t, "events.json with senders", grants(t, tm), []grant{
		{rg + "Microsoft.Storage/storageAccounts/" + account.(string) + "/blobServices/default/containers/deadletter", roleStorageBlobDataContributor, "principal-of-" + topicName.(string)},
		{rg + "Microsoft.EventGrid/topics/" + topicName.(string), roleEventGridDataSender, "s1"},
		{rg + "Microsoft.EventGrid/topics/" + topicName.(string), roleEventGridDataSender, "s2"},
	})

	// An empty list delivers every type (the handler records a rejection for each it does not map).
	unfiltered := mustLoad(t, "events.json", "events.parameters.json", map[string]any{"includedEventTypes": []any{}})
	sub := only(t, unfiltered, evaluated(t, unfiltered), "Microsoft.EventGrid/topics/eventSubscriptions")
	if f, _ := sub.Properties["filter"].(map[string]any); f["includedEventTypes"] != nil {
		t.Errorf("with an empty includedEventTypes, the filter is %v, want no type filter", f)
	}
}

// TestParametersFilesMatchTheirTemplates checks what the schemas cannot: each parameters file
// belongs to a template, gives only parameters it declares, each of the declared type, and
// every parameter without a default.
func TestParametersFilesMatchTheirTemplates(t *testing.T) {
	templates, parameters := deploymentFiles(t)
	for _, tmpl := range templates {
		if p := strings.TrimSuffix(tmpl, ".json") + ".parameters.json"; !slices.Contains(parameters, p) {
			t.Errorf("%s has no example parameters file %s", tmpl, p)
		}
	}
	for _, pf := range parameters {
		tmpl := strings.TrimSuffix(pf, ".parameters.json") + ".json"
		if !slices.Contains(templates, tmpl) {
			t.Errorf("%s belongs to no template (%s is missing)", pf, tmpl)
			continue
		}
		tm := mustLoad(t, tmpl, pf, nil)
		decls, _ := tm.doc["parameters"].(map[string]any)
		for name, d := range decls {
			decl, _ := d.(map[string]any)
			v, given := tm.params[name]
			if !given {
				if _, ok := decl["defaultValue"]; !ok {
					t.Errorf("%s does not give %s's parameter %s, which has no default", pf, tmpl, name)
				}
				continue
			}
			if typ, _ := decl["type"].(string); !hasARMType(v, typ) {
				t.Errorf("%s gives %s = %v (%T), but %s declares it %s", pf, name, v, v, tmpl, typ)
			}
		}
	}
}

func hasARMType(v any, typ string) bool {
	switch strings.ToLower(typ) {
	case "string", "securestring":
		_, ok := v.(string)
		return ok
	case "int":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Int64()
		return err == nil
	case "bool":
		_, ok := v.(bool)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "object", "secureobject":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

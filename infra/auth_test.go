package infra

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"dpsdeprov/handler"
)

// authSettings returns main.json's authsettingsV2 resources for the given parameter overrides.
func authSettings(t *testing.T, overrides map[string]any) (*template, []resource) {
	t.Helper()
	tm := mustLoad(t, "main.json", "main.parameters.json", overrides)
	var out []resource
	for _, r := range evaluated(t, tm) {
		if r.Type == "Microsoft.Web/sites/config" && strings.HasSuffix(r.Name, "/authsettingsV2") {
			out = append(out, r)
		}
	}
	return tm, out
}

// output evaluates one of a template's outputs.
func output(t *testing.T, tm *template, name string) any {
	t.Helper()
	outs, _ := tm.doc["outputs"].(map[string]any)
	o, ok := outs[name].(map[string]any)
	if !ok {
		t.Fatalf("%s has no output %s", tm.name, name)
	}
	v, err := tm.value(o["value"], evalCtx{})
	if err != nil {
		t.Fatalf("output %s: %v", name, err)
	}
	return v
}

func at(m map[string]any, path ...string) any {
	var v any = m
	for _, k := range path {
		mm, _ := v.(map[string]any)
		v = mm[k]
	}
	return v
}

// Without an app registration, main.json leaves App Service authentication off (the function
// key is then the only lock, and the handler treats principal headers as claims).
func TestAuthenticationOffWithoutAnAppRegistration(t *testing.T) {
	tm, rs := authSettings(t, nil)
	if id, _ := tm.parameter("authClientId"); id != "" {
		t.Fatalf("main.parameters.json sets authClientId %v; the example deploys without an app registration", id)
	}
	if len(rs) != 0 {
		t.Fatalf("authsettingsV2 deployed without an app registration: %v", rs)
	}
	if on := output(t, tm, "appServiceAuthentication"); on != false {
		t.Errorf("output appServiceAuthentication = %v", on)
	}
}

// With an app registration, main.json turns App Service authentication on with Microsoft
// Entra ID, as the handler expects it (handler/auth.go):
//   - unauthenticated requests go through to the app (AllowAnonymous, requireAuthentication
//     false): the Operations function's key callers, Event Grid's deliveries to
//     /runtime/webhooks/eventgrid (authorized by the eventgrid_extension system key, which
//     callers behind App Service authentication must not lose: users report "Unauthorized"
//     deliveries once authentication is required, azure-functions-eventgrid-extension #103,
//     azure-docs #99036) and the host's /admin endpoints keep working; the handler refuses what
//     needs a sign-in;
//   - those host paths are excluded from authentication all the same, so that switching to
//     Return401 later keeps them working (the host owns /runtime and /admin: azure-functions-
//     host #3460; "/*" matches below a path: azure-docs #86514);
//   - tokens are validated for the app registration (issuer of its tenant, audience its client
//     id or api://<client id>); no client secret, no token store: the app only validates
//     bearer tokens, it signs nobody in through a browser.
func TestAppServiceAuthenticationWithEntraID(t *testing.T) {
	const clientID = "c1c1c1c1-0000-4000-8000-00000000c11e"
	tm, rs := authSettings(t, map[string]any{"authClientId": clientID})
	if len(rs) != 1 {
		t.Fatalf("main.json deploys %d authsettingsV2, want 1", len(rs))
	}
	a := rs[0]
	app, _ := tm.parameter("appName")
	if a.Name != fmt.Sprint(app)+"/authsettingsV2" {
		t.Errorf("authsettingsV2 of %s, want of the app %v", a.Name, app)
	}
	p := a.Properties
	if at(p, "platform", "enabled") != true {
		t.Error("platform.enabled is not true")
	}
	if at(p, "globalValidation", "requireAuthentication") != false || at(p, "globalValidation", "unauthenticatedClientAction") != "AllowAnonymous" {
		t.Errorf("globalValidation = %v, want anonymous requests through to the app", at(p, "globalValidation"))
	}
	excluded, _ := at(p, "globalValidation", "excludedPaths").([]any)
	for _, want := range []string{"/runtime/webhooks/eventgrid", "/admin/*"} {
		if !slices.Contains(excluded, any(want)) {
			t.Errorf("excludedPaths %v lacks %s", excluded, want)
		}
	}
	for _, e := range excluded {
		if s := fmt.Sprint(e); strings.HasPrefix(s, "/api") || s == "/*" || s == "/" {
			t.Errorf("excludedPaths %v exclude the app's own routes (%s)", excluded, s)
		}
	}
	if at(p, "httpSettings", "requireHttps") != true {
		t.Error("httpSettings.requireHttps is not true")
	}
	aad, _ := at(p, "identityProviders", "azureActiveDirectory").(map[string]any)
	if aad["enabled"] != true || at(aad, "registration", "clientId") != clientID {
		t.Errorf("azureActiveDirectory = %v", aad)
	}
	if issuer := at(aad, "registration", "openIdIssuer"); issuer != "https://login.microsoftonline.com/"+stubTenantID+"/v2.0" {
		t.Errorf("openIdIssuer = %v, want the v2.0 issuer of the subscription's tenant", issuer)
	}
	audiences, _ := at(aad, "validation", "allowedAudiences").([]any)
	if !slices.Contains(audiences, any(clientID)) || !slices.Contains(audiences, any("api://"+clientID)) {
		t.Errorf("allowedAudiences = %v, want the client id and api://<client id>", audiences)
	}
	if s := at(aad, "registration", "clientSecretSettingName"); s != nil {
		t.Errorf("a client secret setting %v: validating bearer tokens needs no secret", s)
	}
	if at(p, "login", "tokenStore", "enabled") != false {
		t.Errorf("tokenStore = %v, want off", at(p, "login", "tokenStore"))
	}
	if on := output(t, tm, "appServiceAuthentication"); on != true {
		t.Errorf("output appServiceAuthentication = %v", on)
	}
	// The platform, not the template, says authentication is on.
	if env := appSettings(t, tm); isSet(env, "WEBSITE_AUTH_ENABLED") {
		t.Error("main.json sets WEBSITE_AUTH_ENABLED; App Service sets it when authentication is on, and only then may the handler trust the principal headers")
	}
}

// The appRoles output is what the operator puts on the app registration (docs/deploy.md): the
// three roles the handler checks, in its order, each a Microsoft Graph appRole (Learn, "appRole
// resource type") assignable to users, groups and applications, with a stable id.
func TestAppRolesMatchTheHandler(t *testing.T) {
	roles := func(overrides map[string]any) []any {
		tm := mustLoad(t, "main.json", "main.parameters.json", overrides)
		v, ok := output(t, tm, "appRoles").([]any)
		if !ok {
			t.Fatal("output appRoles is not an array")
		}
		return v
	}
	got := roles(nil)
	if len(got) != len(handler.Roles) {
		t.Fatalf("appRoles declares %d roles, the handler checks %v", len(got), handler.Roles)
	}
	guid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	// Graph: value at most 120 characters, no spaces, not starting with a dot.
	value := regexp.MustCompile(`^[^.\s][^\s]{0,119}$`)
	ids := map[any]bool{}
	for i, r := range got {
		m, _ := r.(map[string]any)
		if m["value"] != handler.Roles[i] || !value.MatchString(fmt.Sprint(m["value"])) {
			t.Errorf("role %d is %v, want %s", i, m["value"], handler.Roles[i])
		}
		if !guid.MatchString(fmt.Sprint(m["id"])) || ids[m["id"]] {
			t.Errorf("role %v id %v is not a unique GUID", m["value"], m["id"])
		}
		ids[m["id"]] = true
		members, _ := m["allowedMemberTypes"].([]any)
		if m["isEnabled"] != true || !slices.Contains(members, any("User")) || !slices.Contains(members, any("Application")) ||
			m["displayName"] == "" || m["description"] == "" {
			t.Errorf("role %v = %v", m["value"], m)
		}
	}
	// The ids stay the same from one deployment to the next, whatever the parameters: Graph
	// takes an id change for another role.
	other := roles(map[string]any{"appName": "another-app", "authClientId": "c2c2c2c2-0000-4000-8000-00000000c11e"})
	for i := range got {
		if got[i].(map[string]any)["id"] != other[i].(map[string]any)["id"] {
			t.Errorf("role %d's id changes with the parameters", i)
		}
	}
}

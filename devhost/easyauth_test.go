package devhost

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

const opsFunction = `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","methods":["get","post"],"route":"deprovision/{kind?}/{id?}"},{"type":"http","direction":"out","name":"res"}]}`

var okAnswer = script{"Operations": {{Status: 200, ContentType: "application/json", Body: `{"Outputs":{"res":{"statusCode":200,"body":"{}"}}}`}}}

// get calls the Operations route with the given headers and returns the status.
func get(t *testing.T, h *Host, headers map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.URL()+"/api/deprovision/operations/op1", nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// requestHeaders returns the headers of the HTTP request object of a recorded invocation.
func requestHeaders(t *testing.T, r recorded) map[string][]string {
	t.Helper()
	var body struct {
		Data map[string]struct{ Headers map[string][]string }
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	return body.Data["req"].Headers
}

func header(hs map[string][]string, name string) string {
	for k, v := range hs {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// With the authentication front, a caller's own principal headers never reach the app, a known
// bearer token becomes the headers App Service sets, an unknown one is refused before the host,
// and the handler runs with WEBSITE_AUTH_ENABLED=True.
func TestAuthFrontSignsInAndStripsForgedHeaders(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"Operations": opsFunction})
	auth := &AuthOptions{Identities: map[string]Identity{
		"token-alice": {ObjectID: "aaaaaaaa-0000-0000-0000-000000000001", Name: "alice@contoso.com", Roles: []string{"Deprovisioning.Approver", "Deprovisioning.Reader"}},
	}}
	h := startHost(t, app, okAnswer, map[string]string{settingAuthEnabled: "false"}, Options{Auth: auth})
	forged := map[string]string{"X-MS-CLIENT-PRINCIPAL-NAME": "mallory", "X-MS-CLIENT-PRINCIPAL-ID": "forged", "x-ms-client-principal": "e30=", "X-MS-TOKEN-AAD-ACCESS-TOKEN": "forged"}

	if status := get(t, h, forged); status != 200 {
		t.Fatalf("anonymous call answered %d", status)
	}
	hs := requestHeaders(t, app.waitInvocations(t, "Operations", 1)[0])
	for name := range forged {
		if v := header(hs, name); v != "" {
			t.Errorf("forged header %s reached the app: %q", name, v)
		}
	}

	withToken := map[string]string{"Authorization": "Bearer token-alice"}
	for k, v := range forged {
		withToken[k] = v
	}
	if status := get(t, h, withToken); status != 200 {
		t.Fatalf("signed-in call answered %d", status)
	}
	hs = requestHeaders(t, app.waitInvocations(t, "Operations", 2)[1])
	if header(hs, "X-MS-CLIENT-PRINCIPAL-ID") != "aaaaaaaa-0000-0000-0000-000000000001" || header(hs, "X-MS-CLIENT-PRINCIPAL-NAME") != "alice@contoso.com" ||
		header(hs, "X-MS-CLIENT-PRINCIPAL-IDP") != "aad" || header(hs, "X-MS-TOKEN-AAD-ACCESS-TOKEN") != "" {
		t.Fatalf("signed-in headers %v", hs)
	}
	raw, err := base64.StdEncoding.DecodeString(header(hs, "X-MS-CLIENT-PRINCIPAL"))
	if err != nil {
		t.Fatal(err)
	}
	var cp struct {
		AuthType string `json:"auth_typ"`
		RoleType string `json:"role_typ"`
		Claims   []struct{ Typ, Val string }
	}
	if err := json.Unmarshal(raw, &cp); err != nil {
		t.Fatal(err)
	}
	roles := 0
	for _, c := range cp.Claims {
		if c.Typ == "roles" {
			roles++
		}
	}
	if cp.AuthType != "aad" || cp.RoleType == "" || roles != 2 {
		t.Fatalf("X-MS-CLIENT-PRINCIPAL = %s", raw)
	}

	if status := get(t, h, map[string]string{"Authorization": "Bearer not-a-test-token"}); status != http.StatusUnauthorized {
		t.Fatalf("unknown token answered %d, want 401", status)
	}
	if n := len(app.invocations(t, "Operations")); n != 2 {
		t.Fatalf("the unknown token reached the app (%d invocations)", n)
	}
	if env := app.requests(t)[0].Env; env[settingAuthEnabled] != "True" {
		t.Errorf("handler started with %s=%q, want True", settingAuthEnabled, env[settingAuthEnabled])
	}
}

// Without the front, devhost is the host without App Service authentication: headers pass as
// the caller sent them (the app must not trust them), and WEBSITE_AUTH_ENABLED never reaches
// the handler, not even from the app settings.
func TestNoAuthFrontPassesHeadersAndNeverClaimsAuthentication(t *testing.T) {
	app := newTestApp(t, "", map[string]string{"Operations": opsFunction})
	h := startHost(t, app, okAnswer, map[string]string{settingAuthEnabled: "True"}, Options{})
	if status := get(t, h, map[string]string{"X-MS-CLIENT-PRINCIPAL-NAME": "mallory", "Authorization": "Bearer anything"}); status != 200 {
		t.Fatalf("answered %d", status)
	}
	hs := requestHeaders(t, app.waitInvocations(t, "Operations", 1)[0])
	if header(hs, "X-MS-CLIENT-PRINCIPAL-NAME") != "mallory" {
		t.Errorf("headers %v: without authentication devhost passes what the caller sent", hs)
	}
	if env := app.requests(t)[0].Env; env[settingAuthEnabled] != "" {
		t.Errorf("handler started with %s=%q without the authentication front", settingAuthEnabled, env[settingAuthEnabled])
	}
}

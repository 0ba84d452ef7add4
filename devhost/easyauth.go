package devhost

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// AuthOptions make devhost front the app as App Service authentication ("Easy Auth") fronts
// a function app with Microsoft Entra ID as its provider and unauthenticated requests let
// through to the app (unauthenticatedClientAction AllowAnonymous), which is how the app's
// infra/main.json configures it:
//
//   - every request loses the X-MS-CLIENT-PRINCIPAL* and X-MS-TOKEN-* headers its caller sent:
//     "External requests aren't allowed to set these headers, so they're present only if App
//     Service sets them" (Learn, "Work with user identities in Azure App Service
//     authentication");
//   - a request with "Authorization: Bearer <token>" naming one of Identities gets the headers
//     App Service sets for a signed-in caller (same page): X-MS-CLIENT-PRINCIPAL (base64 JSON of
//     auth_typ, claims, name_typ, role_typ), X-MS-CLIENT-PRINCIPAL-ID, -NAME and -IDP;
//   - a bearer token that names no identity is answered 401 without reaching the host. Whether
//     App Service rejects an invalid token when anonymous requests are allowed is not in the
//     project's references (UNCONFIRMED); refusing it is the safe reading;
//   - the handler is started with WEBSITE_AUTH_ENABLED=True, which App Service injects when
//     its authentication is on (Learn, "Environment variables and app settings in Azure App
//     Service"). Without AuthOptions devhost never passes that variable to the handler, even
//     from the app settings: it is the platform's to set, not the app's.
//
// The tokens are opaque test strings, not JWTs: there is no Entra ID here to sign one.
type AuthOptions struct {
	// Identities are the test identities, by the bearer token that signs each in.
	Identities map[string]Identity `json:"identities"`
	// IdentityProvider is what X-MS-CLIENT-PRINCIPAL-IDP and auth_typ say; default "aad".
	IdentityProvider string `json:"identityProvider,omitempty"`
}

// Identity is a test identity: what Entra ID would put in its token for the app.
type Identity struct {
	// ObjectID is the caller's object id (claim oid).
	ObjectID string `json:"objectId"`
	// Name is its user principal name or email (claim preferred_username).
	Name string `json:"name"`
	// Roles are the app roles assigned to it (claim roles).
	Roles []string `json:"roles,omitempty"`
}

// LoadAuthOptions reads AuthOptions from a JSON file:
// {"identities": {"<token>": {"objectId": "…", "name": "…", "roles": ["…"]}}}.
func LoadAuthOptions(path string) (*AuthOptions, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the test identities: %w", err)
	}
	var a AuthOptions
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%s: not {\"identities\": {\"<token>\": {\"objectId\", \"name\", \"roles\"}}}: %w", path, err)
	}
	if err := a.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &a, nil
}

func (a *AuthOptions) check() error {
	if len(a.Identities) == 0 {
		return fmt.Errorf("no test identity")
	}
	for token, id := range a.Identities {
		if token == "" || strings.ContainsAny(token, " \t\r\n") {
			return fmt.Errorf("token %q: a bearer token is one word", token)
		}
		if id.ObjectID == "" {
			return fmt.Errorf("the identity of token %s… has no objectId", token[:min(4, len(token))])
		}
	}
	return nil
}

func (a *AuthOptions) idp() string {
	if a.IdentityProvider != "" {
		return a.IdentityProvider
	}
	return "aad"
}

// Headers App Service authentication owns.
const (
	headerPrincipal     = "X-MS-CLIENT-PRINCIPAL"
	headerPrincipalID   = "X-MS-CLIENT-PRINCIPAL-ID"
	headerPrincipalName = "X-MS-CLIENT-PRINCIPAL-NAME"
	headerPrincipalIDP  = "X-MS-CLIENT-PRINCIPAL-IDP"
	settingAuthEnabled  = "WEBSITE_AUTH_ENABLED"
)

// Claim types as App Service passes them for Entra ID: the object id under its mapped URI, the
// others under the token's own names (the page above: claims "go through a default
// claims-mapping process, so some might have different names").
const (
	claimObjectID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
	nameClaimType = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
	roleClaimType = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
)

// front wraps next with the authentication front, when there is one.
func (h *Host) front(next http.Handler) http.Handler {
	a := h.opts.Auth
	if a == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name := range r.Header {
			u := strings.ToUpper(name)
			if strings.HasPrefix(u, headerPrincipal) || strings.HasPrefix(u, "X-MS-TOKEN-") {
				r.Header.Del(name)
			}
		}
		scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			next.ServeHTTP(w, r) // anonymous: the app decides
			return
		}
		id, known := a.Identities[strings.TrimSpace(token)]
		if !known {
			w.Header().Set("WWW-Authenticate", `Bearer realm="devhost", error="invalid_token"`)
			http.Error(w, "the bearer token names no test identity", http.StatusUnauthorized)
			return
		}
		claims := []map[string]string{
			{"typ": claimObjectID, "val": id.ObjectID},
			{"typ": "name", "val": id.Name},
			{"typ": "preferred_username", "val": id.Name},
		}
		for _, role := range id.Roles {
			claims = append(claims, map[string]string{"typ": "roles", "val": role})
		}
		b, _ := json.Marshal(map[string]any{"auth_typ": a.idp(), "claims": claims, "name_typ": nameClaimType, "role_typ": roleClaimType})
		r.Header.Set(headerPrincipal, base64.StdEncoding.EncodeToString(b))
		r.Header.Set(headerPrincipalID, id.ObjectID)
		r.Header.Set(headerPrincipalName, id.Name)
		r.Header.Set(headerPrincipalIDP, a.idp())
		next.ServeHTTP(w, r)
	})
}

// handlerAuthEnv is the handler's WEBSITE_AUTH_ENABLED: "True" when devhost fronts it with
// authentication, absent otherwise.
func (h *Host) handlerAuthEnv() []string {
	if h.opts.Auth == nil {
		return nil
	}
	return []string{settingAuthEnabled + "=True"}
}

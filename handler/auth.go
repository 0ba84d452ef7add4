package handler

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/opsapi"
)

// Who may do what on the Operations endpoints (docs/app.md, "Who may do what").
//
// Two functions serve the same routes. Operations (authLevel function) is reached only with a
// function key, which the host checks. SignedInOperations (authLevel anonymous) is for callers
// that App Service authentication signed in: Microsoft documents that when App Service
// authentication secures a function app, the HTTP functions' authorization level should be
// anonymous (Learn, "Azure Functions HTTP trigger", "Secure an HTTP endpoint in production"),
// since a signed-in caller holds no key. The handler is the lock of that function: it serves
// a verified principal and nobody else.
//
// A principal is verified only when the platform says App Service authentication fronts the
// app (WEBSITE_AUTH_ENABLED, config.SettingAuthEnabled): App Service then sets the
// X-MS-CLIENT-PRINCIPAL headers from the validated token and drops any a caller sent ("External
// requests aren't allowed to set these headers, so they're present only if App Service sets
// them": Learn, "Work with user identities in Azure App Service authentication"). The Functions
// host makes the same check before it builds an identity from the header
// (azure-functions-host, AuthenticationLevelHandler). With authentication off the headers are
// whatever the caller typed: they are journaled as claimed, never trusted.

// Routes of the two Operations functions under the host's route prefix (/api/): a client signs
// in and calls RouteSignedIn, or holds the function key and calls RouteKey.
const (
	RouteKey      = opsapi.RouteKey
	RouteSignedIn = opsapi.RouteSignedIn
)

// App roles of the app registration (docs/deploy.md says how to declare and assign them).
const (
	// RoleReader reads operations, devices and findings.
	RoleReader = "Deprovisioning.Reader"
	// RoleOperator submits requests (dry runs and real ones) and runs cleanup passes.
	RoleOperator = "Deprovisioning.Operator"
	// RoleApprover approves or denies operations held by a guardrail.
	RoleApprover = "Deprovisioning.Approver"
)

// Roles lists the app roles in the order docs/deploy.md and infra/main.json declare them.
var Roles = []string{RoleReader, RoleOperator, RoleApprover}

// Headers App Service authentication sets on a signed-in request (Learn, "Work with user
// identities in Azure App Service authentication").
const (
	HeaderClientPrincipal     = "X-MS-CLIENT-PRINCIPAL"
	HeaderClientPrincipalID   = "X-MS-CLIENT-PRINCIPAL-ID"
	HeaderClientPrincipalName = "X-MS-CLIENT-PRINCIPAL-NAME"
	HeaderClientPrincipalIDP  = "X-MS-CLIENT-PRINCIPAL-IDP"
)

// KeyAccess is what a caller holding only the function key may do.
type KeyAccess string

// Function key access levels (FUNCTION_KEY_ACCESS).
const (
	KeyNone KeyAccess = config.KeyAccessNone
	KeyRead KeyAccess = config.KeyAccessRead
	KeyFull KeyAccess = config.KeyAccessFull
)

// Access says who may call the Operations endpoints and do what. The zero value is the app
// without App Service authentication, where the function key may do everything.
type Access struct {
	// Authentication is true when App Service authentication fronts the app
	// (WEBSITE_AUTH_ENABLED): only then are the principal headers the platform's.
	Authentication bool
	// Key is what a caller with only the function key may do; "" means KeyRead with
	// authentication on and KeyFull with it off.
	Key KeyAccess
}

// NewAccess builds the access rules from the app's settings.
func NewAccess(s config.Auth) (Access, error) {
	a := Access{Authentication: s.Enabled, Key: KeyAccess(s.KeyAccess)}
	switch a.Key {
	case "", KeyNone, KeyRead, KeyFull:
		return a.withDefaults(), nil
	}
	return Access{}, &config.SettingError{Setting: config.SettingFunctionKeyAccess, Problem: fmt.Sprintf("%q is not one of none, read, full", s.KeyAccess)}
}

func (a Access) withDefaults() Access {
	if a.Key == "" {
		a.Key = KeyFull
		if a.Authentication {
			a.Key = KeyRead
		}
	}
	return a
}

// action is what a call to the Operations endpoints asks to do, and the role it needs.
type action struct {
	verb string
	role string
	// keyMay is the function key access that allows it without a signed-in caller.
	keyMay map[KeyAccess]bool
}

var (
	actRead   = action{"read operations, devices and findings", RoleReader, map[KeyAccess]bool{KeyRead: true, KeyFull: true}}
	actSubmit = action{"submit requests and run cleanup passes", RoleOperator, map[KeyAccess]bool{KeyFull: true}}
	actDecide = action{"approve or deny held operations", RoleApprover, map[KeyAccess]bool{KeyFull: true}}
)

// actionOf classifies a call by method and route: every GET reads, a POST to approvals or
// denials decides, any other POST submits.
func actionOf(method, kind string) action {
	switch {
	case method == http.MethodGet:
		return actRead
	case kind == "approvals" || kind == "denials":
		return actDecide
	}
	return actSubmit
}

// caller is who called, as far as the handler can tell.
type caller struct {
	// who is the principal: verified (App Service authentication on and its headers present)
	// or claimed (headers sent with authentication off); nil when nobody is named.
	who *deprovision.Principal
	// roles are the verified principal's app roles.
	roles map[string]bool
	// key is true on the Operations function, which the host serves only with a function key.
	key bool
	// unreadable says why the platform's principal header could not be read.
	unreadable string
	// claimedVia names the header a claimed principal came from.
	claimedVia string
}

func (c caller) verified() bool { return c.who != nil && c.who.Verified }

// clientPrincipal is the decoded X-MS-CLIENT-PRINCIPAL header (Learn, "Work with user
// identities in Azure App Service authentication", "Decode the client principal header").
type clientPrincipal struct {
	AuthType string `json:"auth_typ"`
	NameType string `json:"name_typ"`
	RoleType string `json:"role_typ"`
	Claims   []struct {
		Type  string `json:"typ"`
		Value string `json:"val"`
	} `json:"claims"`
}

// Claim types App Service authentication passes for Microsoft Entra ID. Claims "go through a
// default claims-mapping process, so some might have different names than you would see if you
// processed the token directly" (same page), so both forms are read: the mapped URI and the
// token's own name.
var (
	objectIDClaims = []string{"http://schemas.microsoft.com/identity/claims/objectidentifier", "oid"}
	nameClaims     = []string{"preferred_username", "name", "upn", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "appid", "azp"}
	roleClaims     = []string{"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
)

// maxPrincipalHeader bounds the principal header the handler decodes (a token's claims are a
// few kilobytes; the host's own request limits apply before that).
const maxPrincipalHeader = 64 << 10

// maxIdentityField bounds an object id, name or provider name kept in the journal.
const maxIdentityField = 256

// identify tells who called. viaKey is true on the Operations function.
func (h *Handler) identify(r *httpRequest, viaKey bool) caller {
	c := caller{key: viaKey, roles: map[string]bool{}}
	// A name or id is a few dozen characters; anything longer is cut before it reaches the
	// journal (without authentication it is whatever the caller sent).
	id, name, idp := abbreviate(r.header(HeaderClientPrincipalID), maxIdentityField), abbreviate(r.header(HeaderClientPrincipalName), maxIdentityField),
		abbreviate(r.header(HeaderClientPrincipalIDP), maxIdentityField)
	if !h.o.Access.Authentication {
		// Whatever the caller typed: kept for the journal, as a claim.
		for _, hv := range []struct{ name, value string }{{HeaderClientPrincipalName, name}, {HeaderClientPrincipalID, id}} {
			if hv.value != "" {
				c.who = &deprovision.Principal{Name: name, ObjectID: id, IdentityProvider: idp}
				c.claimedVia = hv.name + " header"
				break
			}
		}
		return c
	}
	p := &deprovision.Principal{ObjectID: id, Name: name, IdentityProvider: idp, Verified: true}
	if raw := r.header(HeaderClientPrincipal); raw != "" {
		cp, err := decodeClientPrincipal(raw)
		if err != nil {
			c.unreadable = fmt.Sprintf("the %s header App Service authentication set cannot be read: %v", HeaderClientPrincipal, err)
			return c
		}
		claim := func(types ...string) string {
			for _, t := range types {
				for _, cl := range cp.Claims {
					if strings.EqualFold(cl.Type, t) && strings.TrimSpace(cl.Value) != "" {
						return abbreviate(strings.TrimSpace(cl.Value), maxIdentityField)
					}
				}
			}
			return ""
		}
		if p.ObjectID == "" {
			p.ObjectID = claim(objectIDClaims...)
		}
		if p.Name == "" {
			p.Name = claim(append([]string{cp.NameType}, nameClaims...)...)
		}
		if p.IdentityProvider == "" {
			p.IdentityProvider = abbreviate(cp.AuthType, maxIdentityField)
		}
		types := append([]string{cp.RoleType}, roleClaims...)
		for _, cl := range cp.Claims {
			for _, t := range types {
				if t != "" && strings.EqualFold(cl.Type, t) {
					for _, role := range claimValues(cl.Value) {
						c.roles[role] = true
					}
				}
			}
		}
	}
	switch {
	case p.ObjectID == "" && p.Name == "" && p.IdentityProvider == "":
		return c // nobody signed in
	case p.ObjectID == "":
		// Four eyes compares object ids; an identity without one cannot be told apart.
		c.unreadable = fmt.Sprintf("App Service authentication signed in %q but named no object id (%s, or claim oid)", p.Label(), HeaderClientPrincipalID)
		return c
	}
	c.who = p
	return c
}

// decodeClientPrincipal decodes the base64 JSON of X-MS-CLIENT-PRINCIPAL.
func decodeClientPrincipal(raw string) (*clientPrincipal, error) {
	if len(raw) > maxPrincipalHeader {
		return nil, fmt.Errorf("%d bytes, more than %d", len(raw), maxPrincipalHeader)
	}
	raw = strings.TrimSpace(raw)
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(raw, "=")); err != nil {
			return nil, fmt.Errorf("not base64: %w", err)
		}
	}
	var cp clientPrincipal
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("not the JSON {auth_typ, claims, name_typ, role_typ}: %w", err)
	}
	return &cp, nil
}

// claimValues splits a claim value that holds a JSON array of strings; any other value is
// one value.
func claimValues(v string) []string {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "[") {
		var many []string
		if json.Unmarshal([]byte(v), &many) == nil {
			return many
		}
	}
	return []string{v}
}

// refusal is an answer that refuses a call for who the caller is.
type refusal struct {
	status int
	msg    string
}

// authorize decides whether c may do act; nil means yes.
func (h *Handler) authorize(c caller, act action) *refusal {
	if c.unreadable != "" {
		return &refusal{http.StatusUnauthorized, c.unreadable}
	}
	if c.verified() {
		if c.roles[act.role] {
			return nil
		}
		return &refusal{http.StatusForbidden, fmt.Sprintf("%s lacks the app role %s, which is needed to %s; ask an administrator of the app registration to assign it (docs/deploy.md)",
			c.who, act.role, act.verb)}
	}
	if !c.key {
		if !h.o.Access.Authentication {
			return &refusal{http.StatusUnauthorized, fmt.Sprintf("App Service authentication is not on for this app (%s is not true), so nobody can be signed in here: call deprovision/… with the function key instead",
				config.SettingAuthEnabled)}
		}
		return &refusal{http.StatusUnauthorized, "sign in: this endpoint serves callers that App Service authentication signed in with Microsoft Entra ID (send a bearer token for the app)"}
	}
	if act.keyMay[h.o.Access.Key] {
		return nil
	}
	if h.o.Access.Authentication {
		return &refusal{http.StatusUnauthorized, fmt.Sprintf("the function key alone may not %s (%s=%s): sign in with an account that has the app role %s",
			act.verb, config.SettingFunctionKeyAccess, h.o.Access.Key, act.role)}
	}
	return &refusal{http.StatusUnauthorized, fmt.Sprintf("the function key alone may not %s (%s=%s), and App Service authentication is not on to sign anyone in",
		act.verb, config.SettingFunctionKeyAccess, h.o.Access.Key)}
}

// admit authorizes a call, answering and journaling a refusal; it reports whether the call
// may go on.
func (h *Handler) admit(ctx context.Context, c *call, who caller, act action, route string) bool {
	ref := h.authorize(who, act)
	if ref == nil {
		return true
	}
	h.refuse(ctx, c, who, route, ref)
	return false
}

// refuse journals a refused call as a rejected operation of the Operations API's source, so
// that an audit finds every refusal next to every operation, and answers it. A refusal of a
// caller with neither a key nor a verified sign-in (anyone on the internet can reach the
// signed-in endpoint, and claim any name in a header) is journaled once per clock hour under
// one id and with the same content, so that such calls cannot fill the journal.
func (h *Handler) refuse(ctx context.Context, c *call, who caller, route string, ref *refusal) {
	now := h.o.Clock.Now()
	route = abbreviate(route, 300) // the caller's URL
	reason := fmt.Sprintf("%d %s: %s refused: %s", ref.status, http.StatusText(ref.status), route, ref.msg)
	req := deprovision.Request{Source: APISource, EventType: "operations-api:refused", EventTime: now, Reason: reason, SubmittedBy: who.who}
	if !who.verified() && !who.key {
		req.EventID = "refused-unauthenticated-" + now.UTC().Format("2006010215")
		req.EventType = "operations-api:unauthenticated"
		req.Reason, req.SubmittedBy = "", nil
		reason = fmt.Sprintf("%d %s: calls without a sign-in refused in the hour from %s UTC (the first: %s)",
			ref.status, http.StatusText(ref.status), now.UTC().Format("2006-01-02 15:00"), ref.msg)
	} else {
		req.EventID = "refused-" + c.id
		if c.id == "" {
			req.EventID = "refused-" + randomID()
		}
	}
	if op, err := h.o.Engine.Reject(ctx, req, reason); err != nil {
		// The caller is refused either way; the journal being down must not turn a refusal
		// into something to retry.
		c.logf(slog.LevelError, "journaling the refusal of %s (%d): %v", route, ref.status, err)
	} else {
		c.logf(slog.LevelWarn, "%s (operation %s)", reason, op.ID)
	}
	c.respond(ref.status, apiError{ref.msg})
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// describe names the caller for a log line.
func (c caller) describe() string {
	switch {
	case c.who != nil && c.claimedVia != "":
		return c.who.String() + " via the " + c.claimedVia
	case c.who != nil:
		return c.who.String()
	case c.key:
		return "the holder of the function key"
	}
	return "nobody identified"
}

// route is the request's route for a person: deprovision/{kind}/{id}, and the query that
// names an operation or a device.
func (r *httpRequest) route() string {
	s := "deprovision"
	for _, p := range []string{r.param("kind"), r.param("id")} {
		if p != "" {
			s += "/" + p
		}
	}
	for _, q := range []string{"operation", "device"} {
		for k, v := range r.Query {
			if strings.EqualFold(k, q) && v != "" {
				s += "?" + q + "=" + string(v)
			}
		}
	}
	return s
}

package deprovision

import "strings"

// Principal is the person or application behind a request or a decision made through the
// Operations endpoints, as far as the app could establish it. It is journaled with the
// operation (Request.SubmittedBy) so that an audit can tell who asked, and so that an
// operation held for approval is never approved by the one who submitted it.
type Principal struct {
	// ObjectID is the identity provider's identifier of the caller (for Microsoft Entra ID,
	// the object id, claim oid).
	ObjectID string `json:"objectId,omitempty"`
	// Name is a human-readable name (user principal name, email) as the provider gives it.
	Name string `json:"name,omitempty"`
	// IdentityProvider names the provider that signed the caller in ("aad").
	IdentityProvider string `json:"identityProvider,omitempty"`
	// Verified is true when the platform vouched for the identity (App Service
	// authentication signed the caller in); false when it is only what the caller claimed.
	Verified bool `json:"verified"`
}

// Same reports whether p and q are the same verified identity: the same object id from the
// same identity provider. Claimed identities are never the same as anything: nothing proves
// who made them.
func (p *Principal) Same(q *Principal) bool {
	if p == nil || q == nil || !p.Verified || !q.Verified || p.ObjectID == "" {
		return false
	}
	return strings.EqualFold(p.ObjectID, q.ObjectID) && strings.EqualFold(p.IdentityProvider, q.IdentityProvider)
}

// String names the principal for a person reading the journal: its name, then Details.
func (p *Principal) String() string {
	if p == nil {
		return "nobody identified"
	}
	return p.Label() + " (" + p.Details() + ")"
}

// Label is the principal's name, or its object id when it has no name.
func (p *Principal) Label() string {
	switch {
	case p == nil:
		return "nobody identified"
	case p.Name != "":
		return p.Name
	case p.ObjectID != "":
		return p.ObjectID
	}
	return "an unnamed caller"
}

// Details says what identifies the principal besides its label: object id, identity
// provider, and whether App Service authentication verified it.
func (p *Principal) Details() string {
	if p == nil {
		return "claimed, not verified"
	}
	var parts []string
	if p.ObjectID != "" && p.ObjectID != p.Label() {
		parts = append(parts, "object id "+p.ObjectID)
	}
	if p.IdentityProvider != "" {
		parts = append(parts, "identity provider "+p.IdentityProvider)
	}
	if p.Verified {
		parts = append(parts, "verified by App Service authentication")
	} else {
		parts = append(parts, "claimed, not verified")
	}
	return strings.Join(parts, ", ")
}

package sas

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// DefaultTTL is how long a token from [NewTokenPolicy] is valid when PolicyOptions.TTL is zero.
const DefaultTTL = time.Hour

// TokenPolicyOptions configures [NewTokenPolicy].
type TokenPolicyOptions struct {
	// TTL is the lifetime of each token; DefaultTTL when zero. A token is replaced once less
	// than a fifth of it (at most five minutes) is left, so that a request never leaves with
	// a token that expires in flight.
	TTL time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// TokenPolicy is an azcore per-retry policy that sets the Authorization header of every request
// to a SAS token for the connection string's host, refreshing it before it expires.
// It refuses to send a token over anything but HTTPS.
type TokenPolicy struct {
	cs     ConnectionString
	ttl    time.Duration
	margin time.Duration
	now    func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// NewTokenPolicy returns the signing policy for cs.
func NewTokenPolicy(cs ConnectionString, opts *TokenPolicyOptions) (*TokenPolicy, error) {
	if cs.HostName == "" {
		return nil, errors.New("connection string has no HostName")
	}
	if cs.SharedAccessSignature == "" && (cs.SharedAccessKey == "" || cs.SharedAccessKeyName == "") {
		return nil, errors.New("connection string has neither a key with its name nor a signature")
	}
	p := &TokenPolicy{cs: cs, ttl: DefaultTTL, now: time.Now}
	if opts != nil {
		if opts.TTL < 0 {
			return nil, fmt.Errorf("SAS token TTL %s is negative", opts.TTL)
		}
		if opts.TTL > 0 {
			p.ttl = opts.TTL
		}
		if opts.Now != nil {
			p.now = opts.Now
		}
	}
	if p.ttl < time.Second {
		return nil, fmt.Errorf("SAS token TTL %s is under a second (the expiry is in whole seconds)", p.ttl)
	}
	p.margin = min(p.ttl/5, 5*time.Minute)
	return p, nil
}

// Token returns the current token, signing a new one when the current one is within the
// refresh margin of its expiry.
func (p *TokenPolicy) Token() (string, error) {
	if p.cs.SharedAccessSignature != "" {
		// A fixed signature cannot be refreshed; the service answers 401 once it expires.
		return p.cs.SharedAccessSignature, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.token != "" && now.Add(p.margin).Before(p.expires) {
		return p.token, nil
	}
	exp := now.Add(p.ttl).Truncate(time.Second)
	tok, err := Sign(p.cs.HostName, p.cs.SharedAccessKeyName, p.cs.SharedAccessKey, exp)
	if err != nil {
		return "", err
	}
	p.token, p.expires = tok, exp
	return tok, nil
}

// Do implements policy.Policy.
func (p *TokenPolicy) Do(req *policy.Request) (*http.Response, error) {
	if req.Raw().URL.Scheme != "https" {
		return nil, fmt.Errorf("refusing to send a SAS token over %s: use an https endpoint", req.Raw().URL.Scheme)
	}
	tok, err := p.Token()
	if err != nil {
		return nil, fmt.Errorf("signing the SAS token: %w", err)
	}
	req.Raw().Header.Set("Authorization", tok)
	return req.Next()
}

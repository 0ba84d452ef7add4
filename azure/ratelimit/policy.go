package ratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"dpsdeprov/deprovision"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Charge is what one try of a request draws from the shared budgets.
type Charge struct {
	// Key names the budget: a service's host name, or a hub's query budget ([QueryKey]).
	Key string
	// N is the operations the try costs (every device of a hub bulk call counts).
	N int
	// Bulk says the request is bulk work by nature (a bulk call, a query page): its default
	// priority when the context carries none.
	Bulk bool
}

// Charger says what one try of a request costs. [HubCharge] and [DPSCharge] are the app's.
type Charger func(req *policy.Request) (Charge, error)

// PolicyOptions configure [NewPolicy].
type PolicyOptions struct {
	// Charge prices each try. Default [HubCharge].
	Charge Charger
}

// NewPolicy returns an azcore per-retry policy (azcore.ClientOptions.PerRetryPolicies) that
// makes every try of every request wait for its budget in l, first tries and the client's
// retries alike, and records a 429 answer with [Limiter.Observe429] (its Retry-After pauses
// every instance) before the client's retry policy sees it. The client keeps its own
// retries: a 429 is tried again after its Retry-After (each try paid again), and a 5xx or a
// dropped connection on a call that is safe to repeat is retried in the process.
//
// A request's priority is the one [WithPriority] put in its context; without one, bulk
// requests (Charge.Bulk) go in the bulk lane and the others in the high-priority lane (they
// are what single-device compromise response makes). A failure to reach the shared budget
// (its table unavailable) or a context that ends while waiting comes back as a transient
// error (deprovision.Transient), so the work is delivered again later.
func NewPolicy(l *Limiter, o *PolicyOptions) policy.Policy {
	p := &limitPolicy{l: l, charge: HubCharge}
	if o != nil && o.Charge != nil {
		p.charge = o.Charge
	}
	return p
}

type limitPolicy struct {
	l      *Limiter
	charge Charger
}

func (p *limitPolicy) Do(req *policy.Request) (*http.Response, error) {
	ch, err := p.charge(req)
	if err != nil {
		return nil, fmt.Errorf("pricing %s %s: %w", req.Raw().Method, req.Raw().URL.Path, err)
	}
	ctx := req.Raw().Context()
	prio := defaultPriority(ctx, ch.Bulk)
	// A prepaid try's caller waited for its budget before it built the request.
	if !usePrepaid(ctx, ch) {
		if err := p.l.Wait(ctx, ch.Key, ch.N, prio); err != nil {
			if errors.Is(err, errInvalid) || ctx.Err() != nil {
				return nil, err
			}
			// The shared budget's table is unavailable: the call may succeed when the work is
			// delivered again. (%v: the table's own answer must not pass for the service's.)
			return nil, deprovision.Transient(fmt.Errorf("waiting for the budget of %s: %v", ch.Key, err))
		}
	}
	resp, err := req.Next()
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		after := parseRetryAfter(resp.Header.Get("Retry-After"), p.l.now())
		if oerr := p.l.Observe429(ctx, ch.Key, after); oerr != nil {
			p.l.log.Warn("recording a 429", "budget", ch.Key, "error", oerr)
		}
	}
	return resp, err
}

func defaultPriority(ctx context.Context, bulk bool) Priority {
	if p, ok := PriorityFrom(ctx); ok {
		return p
	}
	if bulk || deprovision.IsGroupWork(ctx) {
		return PriorityBulk // a group's reads and bulk calls alike
	}
	return PriorityHigh
}

// QueryKey is the budget key of a hub's queries (POST /devices/query), which the hub throttles
// apart from its identity registry. Its budget is a fifth of the registry's unless
// Options.HubPerMinute names the key: the documented ratio in every tier (S1 and S2: 20
// queries and 100 registry operations a minute a unit; S3: 1,000 and 5,000).
func QueryKey(host string) string { return strings.ToLower(host) + querySuffix }

const querySuffix = "/query"

// HubCharge prices a try of an IoT Hub registry request: a bulk POST /devices costs one
// operation per device in its body, a query one operation of the hub's query budget
// ([QueryKey]), anything else one registry operation (a read, a write, a delete: an update
// the adapter makes as a read and a write is two requests, each priced on its own).
func HubCharge(req *policy.Request) (Charge, error) {
	r := req.Raw()
	host := r.URL.Host
	path := strings.ToLower(strings.Trim(r.URL.Path, "/"))
	switch {
	case r.Method == http.MethodPost && path == "devices":
		var items []json.RawMessage
		if err := decodeBody(req, &items); err != nil {
			return Charge{}, fmt.Errorf("reading a bulk registry body: %w", err)
		}
		return Charge{Key: host, N: max(1, len(items)), Bulk: true}, nil
	case r.Method == http.MethodPost && path == "devices/query":
		return Charge{Key: QueryKey(host), N: 1, Bulk: true}, nil
	}
	return Charge{Key: host, N: 1}, nil
}

// DPSCharge returns the pricing of the DPS service API: every call is one operation of the
// instance's budget (about-iot-dps.md, "Billable service operations"), a query one per page.
// A bulk enrollment or group operation (up to 10 items) costs one operation per item when
// perItem is set, else one: how DPS counts it is not documented (UNCONFIRMED), and counting
// every item is the reading that never takes more than the budget.
func DPSCharge(perItem bool) Charger {
	return func(req *policy.Request) (Charge, error) {
		r := req.Raw()
		path := strings.ToLower(strings.Trim(r.URL.Path, "/"))
		ch := Charge{Key: r.URL.Host, N: 1}
		switch {
		case r.Method == http.MethodPost && (path == "enrollments" || path == "enrollmentgroups"):
			ch.Bulk = true
			if !perItem {
				break
			}
			var body struct {
				Enrollments      []json.RawMessage `json:"enrollments"`
				EnrollmentGroups []json.RawMessage `json:"enrollmentGroups"`
			}
			if err := decodeBody(req, &body); err != nil {
				return Charge{}, fmt.Errorf("reading a bulk enrollment body: %w", err)
			}
			ch.N = max(1, len(body.Enrollments)+len(body.EnrollmentGroups))
		case r.Method == http.MethodPost && strings.HasSuffix(path, "/query"):
			ch.Bulk = true
		}
		return ch, nil
	}
}

// decodeBody reads a request's JSON body into v and rewinds it for sending.
func decodeBody(req *policy.Request, v any) error {
	body := req.Body()
	if body == nil {
		return nil
	}
	b, err := io.ReadAll(body)
	if rerr := req.RewindBody(); err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return json.Unmarshal(b, v)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 32); err == nil {
		return time.Duration(max(0, s)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now))
	}
	return 0
}

package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
)

// hubAdapter returns the engine's hub adapter over every hub of e, its clients paced by l
// (the limiter as their per-retry policy, with azcore's retries on, as the app builds them);
// a nil l gives clients that are neither paced nor retried.
func hubAdapter(tb testing.TB, e *emulator.Emulator, l *Limiter) *adapter.HubDevices {
	tb.Helper()
	info := e.Info()
	tr := testenv.LoopbackTransport(tb, e)
	co := azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: -1}}
	if l != nil {
		co.Retry = policy.RetryOptions{MaxRetries: 3, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 2 * time.Second}
		co.PerRetryPolicies = []policy.Policy{NewPolicy(l, nil)}
	}
	cs := map[string]*iothub.Client{}
	for _, h := range info.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: co})
		if err != nil {
			tb.Fatal(err)
		}
		cs[h.Host] = c
	}
	return adapter.NewHubDevices(cs)
}

// drain spends what is left of a hub's emulated budget outside the limiter, so that its next
// call is answered 429.
func drain(tb testing.TB, inner deprovision.Devices, hub string) {
	tb.Helper()
	for _, size := range []int{10, 1} {
		for {
			items := make([]deprovision.BulkItem, size)
			for i := range items {
				items[i].DeviceID = testenv.UniqueName("drain")
			}
			_, err := inner.Bulk(context.Background(), hub, deprovision.BulkDelete, items)
			var re *azcore.ResponseError
			if errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests {
				break
			}
			if err != nil {
				tb.Fatalf("draining %s: %v", hub, err)
			}
		}
	}
}

// Every try is paid for, first or retry: a read the hub answers 429 twice is observed twice
// (pausing the hub for every instance), retried by the client after the Retry-After, and
// granted one token per call the hub saw. A bulk call costs one token per device; a 5xx and
// a dropped connection on a read are retried in the process, each try paid.
func TestPolicyPaysEveryTry(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	var tokens atomic.Int64
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000, OnGrant: func(g Grant) { tokens.Add(int64(g.Tokens)) }})
	d := hubAdapter(t, em, l)
	ctx := context.Background()
	if _, err := d.PutDevice(ctx, &deprovision.Device{Hub: "hub1.azure-devices.net", DeviceID: "dev-1", Enabled: true}, ""); err != nil {
		t.Fatal(err)
	}
	check := func(what string, wantCalls int64) {
		t.Helper()
		st := em.Stats().Hubs["hub1"]
		if st.Calls != wantCalls || tokens.Load() != st.Calls && !strings.HasPrefix(what, "bulk") {
			t.Errorf("%s: %d hub calls, %d tokens granted; want %d calls, a token each", what, st.Calls, tokens.Load(), wantCalls)
		}
		tokens.Store(0)
		em.ResetStats()
	}
	tokens.Store(0)
	em.ResetStats()

	if err := em.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 429, RetryAfter: 1, Count: 2}); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetDevice(ctx, "hub1.azure-devices.net", "dev-1")
	if err != nil || got.DeviceID != "dev-1" {
		t.Fatalf("GetDevice through two 429s: %+v, %v", got, err)
	}
	if n := l.Stats().Observed429s; n != 2 {
		t.Errorf("observed %d 429s, want 2", n)
	}
	check("GetDevice through two 429s", 3)

	if err := em.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 503, RetryAfter: 1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetDevice(ctx, "hub1", "dev-1"); err != nil {
		t.Fatalf("GetDevice through a 503: %v", err)
	}
	check("GetDevice through a 503", 2)
	// A dropped connection is retried in the process too. (Go's transport itself repeats a
	// read whose reused connection closed before any answer, below the pipeline: that
	// repeat is the one try the policy cannot see.)
	if err := em.AddFault(emulator.Fault{Op: "hub.devices.get", Action: "drop", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetDevice(ctx, "hub1", "dev-1"); err != nil {
		t.Fatalf("GetDevice through a dropped connection: %v", err)
	}
	if st := em.Stats().Hubs["hub1"]; st.Calls != 2 || tokens.Load() < 1 {
		t.Errorf("GetDevice through a dropped connection: %d hub calls, %d tokens", st.Calls, tokens.Load())
	}
	tokens.Store(0)
	em.ResetStats()

	items := []deprovision.BulkItem{{DeviceID: "dev-x"}, {DeviceID: "dev-y"}, {DeviceID: "dev-z"}}
	if _, err := d.Bulk(ctx, "hub1", deprovision.BulkDelete, items); err != nil {
		t.Fatal(err)
	}
	if tokens.Load() != int64(len(items)) {
		t.Errorf("a bulk call of %d devices was granted %d tokens", len(items), tokens.Load())
	}
	check("bulk", 1)

	// A bulk call is not safe to repeat blindly: a 503 is not retried, a 429 is.
	if err := em.AddFault(emulator.Fault{Op: "hub.devices.bulk", Status: 503, RetryAfter: 1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Bulk(ctx, "hub1", deprovision.BulkDelete, items); !deprovision.IsTransient(err) {
		t.Errorf("bulk answered 503: %v, want a transient error", err)
	}
	check("bulk answered 503", 1)

	// A permanent answer passes through, not retried, not observed.
	before := l.Stats().Observed429s
	if _, err := d.GetDevice(ctx, "hub1", "nobody"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Errorf("GetDevice of a missing device: %v, want ErrNotFound", err)
	}
	if l.Stats().Observed429s != before {
		t.Error("a 404 was observed as a 429")
	}
	check("GetDevice of a missing device", 1)
}

// Against the emulator's real throttle: the hub's Retry-After (a minute's refill for a budget
// of 1 a minute) pauses the hub in the limiter, and a caller whose context ends during the
// pause gets an error that says to try again later.
func TestPolicyHonoursTheThrottlesRetryAfter(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}, ThrottlePerMinute: 1})
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000})
	d := hubAdapter(t, em, l)
	drain(t, hubAdapter(t, em, nil), "hub1")
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { _, err := d.GetDevice(ctx, "hub1", "dev-1"); errc <- err }()
	// The caller's context ends once the hub's 429 has paused it (the call is then waiting out
	// the pause).
	h, _ := l.hub("hub1")
	pausedUntil := func() time.Time { h.lock(); defer h.unlock(); return h.notBefore }
	testenv.Eventually(t, "the hub's 429 to pause it", func() bool { return pausedUntil().After(start) })
	cancel()
	if err := <-errc; !deprovision.IsTransient(err) {
		t.Fatalf("GetDevice on a spent hub: %v, want a transient error", err)
	}
	until := pausedUntil()
	if until.Before(start.Add(30 * time.Second)) {
		t.Errorf("paused until %v after a 429 asking for most of a minute (from %v)", until, start)
	}
}

func newRequest(t *testing.T, method, url, body string) *policy.Request {
	t.Helper()
	req, err := runtime.NewRequest(context.Background(), method, url)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		if err := req.SetBody(streaming.NopCloser(strings.NewReader(body)), "application/json"); err != nil {
			t.Fatal(err)
		}
	}
	return req
}

// What each request costs, and which budget it draws on.
func TestCharges(t *testing.T) {
	const hub, dps = "https://hub1.azure-devices.net", "https://dps1.azure-devices-provisioning.net"
	bulk10 := `{"mode":"create","enrollments":[` + strings.TrimSuffix(strings.Repeat(`{"registrationId":"a"},`, 10), ",") + `]}`
	for _, c := range []struct {
		name   string
		charge Charger
		method string
		url    string
		body   string
		want   Charge
	}{
		{"hub read", HubCharge, "GET", hub + "/devices/d1", "", Charge{Key: "hub1.azure-devices.net", N: 1}},
		{"hub bulk", HubCharge, "POST", hub + "/devices/", `[{"id":"a"},{"id":"b"},{"id":"c"}]`, Charge{Key: "hub1.azure-devices.net", N: 3, Bulk: true}},
		{"hub query", HubCharge, "POST", hub + "/devices/query", `{"query":"SELECT * FROM devices"}`, Charge{Key: "hub1.azure-devices.net/query", N: 1, Bulk: true}},
		{"dps read", DPSCharge(true), "GET", dps + "/enrollments/r1", "", Charge{Key: "dps1.azure-devices-provisioning.net", N: 1}},
		{"dps bulk per item", DPSCharge(true), "POST", dps + "/enrollments", bulk10, Charge{Key: "dps1.azure-devices-provisioning.net", N: 10, Bulk: true}},
		{"dps bulk per call", DPSCharge(false), "POST", dps + "/enrollments", bulk10, Charge{Key: "dps1.azure-devices-provisioning.net", N: 1, Bulk: true}},
		{"dps registration query", DPSCharge(true), "POST", dps + "/registrations/g1/query", "", Charge{Key: "dps1.azure-devices-provisioning.net", N: 1, Bulk: true}},
	} {
		req := newRequest(t, c.method, c.url, c.body)
		got, err := c.charge(req)
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
		if c.body != "" {
			// The body is still there to be sent.
			b := make([]byte, len(c.body))
			if n, _ := req.Body().Read(b); n != len(c.body) {
				t.Errorf("%s: the body was not rewound (%d bytes left)", c.name, n)
			}
		}
	}
	if _, err := HubCharge(newRequest(t, "POST", hub+"/devices", `{"not":"an array"}`)); err == nil {
		t.Error("a bulk body that is not an array was priced")
	}
}

func TestQueryBudget(t *testing.T) {
	l := newLimiter(t, newTable(t), Options{PerMinute: 5000, HubPerMinute: map[string]int{"hub2": 100, "hub3.azure-devices.net/query": 7}})
	for key, want := range map[string]int{
		"hub1.azure-devices.net":           5000,
		QueryKey("HUB1.azure-devices.net"): 1000,
		QueryKey("hub2.azure-devices.net"): 20,
		QueryKey("hub3.azure-devices.net"): 7,
	} {
		if got := l.PerMinute(key); got != want {
			t.Errorf("PerMinute(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestPriorityOfACall(t *testing.T) {
	ctx := context.Background()
	if p := defaultPriority(ctx, true); p != PriorityBulk {
		t.Errorf("bulk call without a context priority: %v", p)
	}
	if p := defaultPriority(ctx, false); p != PriorityHigh {
		t.Errorf("single-device call without a context priority: %v", p)
	}
	if p := defaultPriority(WithPriority(ctx, PriorityBulk), false); p != PriorityBulk {
		t.Errorf("single-device call of group work: %v", p)
	}
	if p, ok := PriorityFrom(WithPriority(ctx, PriorityHigh)); !ok || p != PriorityHigh {
		t.Errorf("PriorityFrom: %v %v", p, ok)
	}
	if _, ok := PriorityFrom(ctx); ok {
		t.Error("PriorityFrom found a priority in a bare context")
	}
	if PriorityHigh.String() != "high" || Priority(9).String() != "Priority(9)" {
		t.Error("Priority.String")
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		" 0 ":                           0,
		"-5":                            0,
		"soon":                          0,
		"Sat, 28 Nov 2026 12:00:10 GMT": 10 * time.Second,
		"Sat, 28 Nov 2026 11:59:00 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", in, got, want)
		}
	}
}

// A prepaid request's first try waits for nothing (its caller waited already); a retry, and
// the next request, wait as usual; a prepaid context for another budget pays nothing.
func TestPrepaidTry(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	var tokens atomic.Int64
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000, OnGrant: func(g Grant) { tokens.Add(int64(g.Tokens)) }})
	d := hubAdapter(t, em, l)
	const hub = "hub1.azure-devices.net"
	ctx := WithPrepaid(context.Background(), hub, 1)
	if _, err := d.GetDevice(ctx, hub, "nobody"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatal(err)
	}
	if tokens.Load() != 0 {
		t.Errorf("a prepaid read was granted %d tokens", tokens.Load())
	}
	if _, err := d.GetDevice(ctx, hub, "nobody"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatal(err)
	}
	if tokens.Load() != 1 {
		t.Errorf("the second read of a prepaid context was granted %d tokens, want 1", tokens.Load())
	}
	tokens.Store(0)
	if err := em.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 429, RetryAfter: 1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetDevice(WithPrepaid(context.Background(), hub, 1), hub, "nobody"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatal(err)
	}
	if tokens.Load() != 1 {
		t.Errorf("a prepaid read retried once was granted %d tokens, want 1 (the retry)", tokens.Load())
	}
	tokens.Store(0)
	if _, err := d.GetDevice(WithPrepaid(context.Background(), "dps1.azure-devices-provisioning.net", 1), hub, "nobody"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Fatal(err)
	}
	if tokens.Load() != 1 {
		t.Errorf("a read prepaid on another budget was granted %d tokens, want 1", tokens.Load())
	}
}

// The DPS budget: a DPS client paced by its own limiter (DPSCharge) against the emulator's
// instance-wide throttle. A call DPS answers 429 (its bucket spent by another client) is
// observed, paused for its Retry-After and retried by the client, every try paid; a bulk
// operation costs one token per item.
func TestDPSBudget(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{DPSOperationsPerMinute: 60}) // refills one a second
	info := em.Info()
	tr := testenv.LoopbackTransport(t, em)
	var tokens atomic.Int64
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000, OnGrant: func(g Grant) { tokens.Add(int64(g.Tokens)) }})
	paced, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tr,
		Retry:            policy.RetryOptions{MaxRetries: 3, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 3 * time.Second},
		PerRetryPolicies: []policy.Policy{NewPolicy(l, &PolicyOptions{Charge: DPSCharge(true)})}}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := dps.NewClientFromConnectionString(info.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		_, err := other.GetEnrollment(ctx, "nobody", nil)
		if dps.IsThrottled(err) {
			break
		}
		if i > 1000 {
			t.Fatal("DPS never answered 429")
		}
	}
	em.ResetStats()
	if _, err := paced.GetEnrollment(ctx, "nobody", nil); !dps.IsNotFound(err) {
		t.Fatalf("a read after the budget was spent: %v, want the 404 once DPS lets it through", err)
	}
	st := em.Stats().DPS
	if st.Throttled < 1 || l.Stats().Observed429s != st.Throttled || tokens.Load() != st.Calls {
		t.Errorf("DPS calls %d (429: %d), observed %d, tokens %d: want every 429 observed and every try paid",
			st.Calls, st.Throttled, l.Stats().Observed429s, tokens.Load())
	}
	tokens.Store(0)
	em.ResetStats()
	var es []dps.IndividualEnrollment
	for i := range 3 {
		es = append(es, dps.IndividualEnrollment{RegistrationID: fmt.Sprintf("b-%d", i),
			Attestation: &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey}})
	}
	if _, err := paced.RunEnrollmentBulkOperation(ctx, dps.BulkEnrollmentOperation{Mode: dps.BulkOperationModeCreate, Enrollments: es}, nil); err != nil {
		t.Fatal(err)
	}
	if tries := em.Stats().Operations["dps.enrollments.bulk"].Calls; tries < 1 || tokens.Load() != 3*tries {
		t.Errorf("a bulk operation of 3 items tried %d times was granted %d tokens, want 3 a try", tries, tokens.Load())
	}
}

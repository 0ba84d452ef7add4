package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/loopback"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// hubAdapter returns the engine's hub adapter over every hub of e, with the clients' own
// 429 retries off so that the rate limiter sees every 429.
func hubAdapter(tb testing.TB, e *emulator.Emulator) *adapter.HubDevices {
	tb.Helper()
	info := e.Info()
	ca, err := os.ReadFile(info.CAFile)
	if err != nil {
		tb.Fatal(err)
	}
	tr, err := loopback.NewClient(info.Addr, ca)
	if err != nil {
		tb.Fatal(err)
	}
	co := azcore.ClientOptions{Transport: tr, Retry: policy.RetryOptions{MaxRetries: -1}}
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
			if _, throttled := throttledBy(err); throttled {
				break
			}
			if err != nil {
				tb.Fatalf("draining %s: %v", hub, err)
			}
		}
	}
}

// A call the hub answers 429 is paused and tried again: every 429 is observed, every try is
// paid for, and the call succeeds once the hub accepts it. Bounded attempts end with the
// hub's 429, transient.
func TestDevicesRetriesAfterA429(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}})
	inner := hubAdapter(t, em)
	ctx := context.Background()
	if _, err := inner.PutDevice(ctx, &deprovision.Device{Hub: "hub1.azure-devices.net", DeviceID: "dev-1", Enabled: true}, ""); err != nil {
		t.Fatal(err)
	}
	var tokens atomic.Int64
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000, OnGrant: func(g Grant) { tokens.Add(int64(g.Tokens)) }})
	d := NewLimitedDevices(inner, l, nil)

	if err := em.AddFault(emulator.Fault{Op: "hub.devices.get", Status: 429, RetryAfter: 1, Count: 2}); err != nil {
		t.Fatal(err)
	}
	em.ResetStats()
	got, err := d.GetDevice(ctx, "hub1.azure-devices.net", "dev-1")
	if err != nil || got.DeviceID != "dev-1" {
		t.Fatalf("GetDevice through two 429s: %+v, %v", got, err)
	}
	st := em.Stats().Hubs["hub1"]
	if st.Calls != 3 || st.Throttled != 2 || l.Stats().Observed429s != 2 {
		t.Errorf("hub calls %d, 429s %d, observed %d; want 3, 2, 2", st.Calls, st.Throttled, l.Stats().Observed429s)
	}
	if tokens.Load() != st.Calls {
		t.Errorf("limiter granted %d tokens for %d hub calls", tokens.Load(), st.Calls)
	}

	// A bulk call costs one token per device.
	tokens.Store(0)
	items := []deprovision.BulkItem{{DeviceID: "dev-1", StatusReason: "test"}, {DeviceID: "dev-x"}, {DeviceID: "dev-y"}}
	if _, err := d.Bulk(ctx, "hub1", deprovision.BulkDelete, items); err != nil {
		t.Fatal(err)
	}
	if tokens.Load() != int64(len(items)) {
		t.Errorf("a bulk call of %d devices was granted %d tokens", len(items), tokens.Load())
	}

	// A permanent error is returned as the inner adapter returned it, without a retry.
	before := l.Stats().Observed429s
	if _, err := d.GetDevice(ctx, "hub1", "dev-1"); !errors.Is(err, deprovision.ErrNotFound) {
		t.Errorf("GetDevice of a deleted device: %v, want ErrNotFound", err)
	}
	if l.Stats().Observed429s != before {
		t.Error("a 404 was observed as a 429")
	}

	// Attempts are bounded: the last 429 comes back transient, wrapping the hub's answer.
	if err := em.AddFault(emulator.Fault{Op: "hub.devices.delete", Status: 429, RetryAfter: 1}); err != nil {
		t.Fatal(err)
	}
	em.ResetStats()
	err = NewLimitedDevices(inner, l, &LimitedDevicesOptions{MaxAttempts: 2}).DeleteDevice(ctx, "hub1", "dev-1", "")
	var re *azcore.ResponseError
	if !deprovision.IsTransient(err) || !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests {
		t.Errorf("DeleteDevice answered 429 every time: %v, want a transient 429", err)
	}
	if n := em.Stats().Hubs["hub1"].Calls; n != 2 {
		t.Errorf("DeleteDevice with 2 attempts made %d hub calls", n)
	}
}

// Against the emulator's real throttle: the hub's Retry-After (a minute's refill for a budget
// of 1 a minute) pauses the hub, and a caller whose context ends during the pause gets the
// hub's 429 back.
func TestDevicesHonoursTheThrottlesRetryAfter(t *testing.T) {
	em := testenv.StartEmulator(t, emulator.Options{Hubs: []string{"hub1"}, ThrottlePerMinute: 1})
	inner := hubAdapter(t, em)
	l := newLimiter(t, newTable(t), Options{PerMinute: 6000})
	d := NewLimitedDevices(inner, l, nil)
	drain(t, inner, "hub1")
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
	err := <-errc
	var re *azcore.ResponseError
	if !deprovision.IsTransient(err) || !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("GetDevice on a spent hub: %v, want the hub's 429", err)
	}
	until := pausedUntil()
	if until.Before(start.Add(30 * time.Second)) {
		t.Errorf("paused until %v after a 429 asking for most of a minute (from %v)", until, start)
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
	h := http.Header{}
	h.Set("Retry-After", "2")
	wrapped := deprovision.Transient(fmt.Errorf("reading: %w", &azcore.ResponseError{StatusCode: 429, RawResponse: &http.Response{Header: h}}))
	if d, ok := throttledBy(wrapped); !ok || d != 2*time.Second {
		t.Errorf("throttledBy(wrapped 429) = %v, %v", d, ok)
	}
	if _, ok := throttledBy(deprovision.Transient(&azcore.ResponseError{StatusCode: 503})); ok {
		t.Error("a 503 counted as throttled")
	}
}

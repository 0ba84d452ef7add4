package ratelimit

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// benchScenario is one run of group-wide bulk work against throttled emulated hubs.
type benchScenario struct {
	name      string
	instances int
	// drained starts every hub with its throttle bucket empty (the worst case: the hub was
	// busy just before); otherwise it starts idle, with a full minute of budget.
	drained bool
	// overBudget is how much the limiter's configured budget exceeds the hub's real one
	// (0.1 = 10% too high), so that only 429 adaptation keeps the 429 rate down.
	overBudget float64
}

// BenchmarkSharedBudget disables every device of 4 hubs with bulk calls of 100, from several
// instances that share each hub's budget through Table Storage (Azurite), against the
// emulator's per-hub throttle (6,000 operations a minute). Every instance works on every hub,
// taking batches from a shared per-hub queue, as the GroupWork fan-out does. A third of the way
// through, one instance disables a single device at high priority.
//
// Reported per run: wall/min (wall time over the physical minimum, devices per hub ÷ budget),
// %budget (operations the hubs charged per minute over the budget, per hub), %429 (of hub
// calls), table-ops/s (all instances) and high-ms (the single high-priority disable).
//
// RATELIMIT_BENCH_DEVICES sets the devices per hub (default 2,000: a 20 s minimum).
func BenchmarkSharedBudget(b *testing.B) {
	for _, s := range []benchScenario{
		{name: "idle/instances=2", instances: 2},
		{name: "idle/instances=4", instances: 4},
		{name: "drained/instances=4", instances: 4, drained: true},
		{name: "drained-over10pct/instances=4", instances: 4, drained: true, overBudget: 0.1},
	} {
		b.Run(s.name, func(b *testing.B) {
			for range b.N {
				runSharedBudget(b, s)
			}
		})
	}
}

func runSharedBudget(b *testing.B, s benchScenario) {
	const budget, batch = 6000, 100
	perHub := 2000
	if v := os.Getenv("RATELIMIT_BENCH_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < batch {
			b.Fatalf("RATELIMIT_BENCH_DEVICES=%q: want a number of devices per hub, at least %d", v, batch)
		}
		perHub = n
	}
	hubs := []string{"hub1", "hub2", "hub3", "hub4"}
	b.StopTimer()
	em := testenv.StartEmulator(b, emulator.Options{Hubs: hubs})
	for _, h := range hubs {
		if _, err := em.Seed(emulator.SeedSpec{Prefix: "b" + h, Registrations: perHub, Hubs: []string{h}, Attestation: "x509"}); err != nil {
			b.Fatal(err)
		}
	}
	if err := em.SetThrottle("", budget, 0); err != nil {
		b.Fatal(err)
	}
	table := newTable(b)
	type instance struct {
		l *Limiter
		d deprovision.Devices
	}
	ins := make([]instance, s.instances)
	for i := range ins {
		l := newLimiter(b, table, Options{PerMinute: int(float64(budget) * (1 + s.overBudget))})
		ins[i] = instance{l: l, d: hubAdapter(b, em, l)}
	}
	if s.drained {
		inner := hubAdapter(b, em, nil)
		for _, h := range hubs {
			drain(b, inner, h)
		}
	}
	// The shared per-hub queues of batches.
	queues := map[string]chan []deprovision.BulkItem{}
	for _, h := range hubs {
		q := make(chan []deprovision.BulkItem, perHub/batch+1)
		for j := 0; j < perHub; j += batch {
			items := make([]deprovision.BulkItem, 0, batch)
			for k := j; k < min(j+batch, perHub); k++ {
				items = append(items, deprovision.BulkItem{DeviceID: fmt.Sprintf("b%s-g0-d%d", h, k), StatusReason: "group compromised"})
			}
			q <- items
		}
		close(q)
		queues[h] = q
	}
	em.ResetStats()
	minimum := time.Duration(float64(perHub) / budget * float64(time.Minute))
	ctx := WithPriority(context.Background(), PriorityBulk)
	b.StartTimer()
	start := time.Now()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed int
	for _, in := range ins {
		for _, h := range hubs {
			for range 2 { // two workers per hub per instance
				wg.Add(1)
				go func() {
					defer wg.Done()
					for items := range queues[h] {
						res, err := in.d.Bulk(ctx, h, deprovision.BulkDisable, items)
						mu.Lock()
						if err != nil {
							failed++
							b.Errorf("bulk on %s: %v", h, err)
						}
						for _, r := range res {
							if r.Err != nil {
								failed++
							}
						}
						mu.Unlock()
					}
				}()
			}
		}
	}
	// The single compromised device, a third of the way through.
	highDone := make(chan time.Duration, 1)
	go func() {
		time.Sleep(minimum / 3)
		t0 := time.Now()
		hctx := WithPriority(context.Background(), PriorityHigh)
		dev := &deprovision.Device{Hub: "hub1.azure-devices.net", DeviceID: "bhub1-g0-d" + strconv.Itoa(perHub-1), StatusReason: "compromised"}
		if _, err := ins[len(ins)-1].d.PutDevice(hctx, dev, "*"); err != nil {
			b.Errorf("high-priority disable: %v", err)
		}
		highDone <- time.Since(t0)
	}()
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	high := <-highDone
	if failed > 0 {
		b.Fatalf("%d devices failed", failed)
	}
	st := em.Stats()
	var calls, throttled, ops int64
	for _, h := range hubs {
		calls += st.Hubs[h].Calls
		throttled += st.Hubs[h].Throttled
		ops += st.Hubs[h].RegistryOps
	}
	var tableCalls int64
	for _, in := range ins {
		tableCalls += in.l.Stats().TableCalls
	}
	perMinutePerHub := float64(ops) / float64(len(hubs)) / elapsed.Minutes()
	b.ReportMetric(elapsed.Seconds()/minimum.Seconds(), "wall/min")
	b.ReportMetric(100*perMinutePerHub/budget, "%budget")
	b.ReportMetric(100*float64(throttled)/float64(max(calls, 1)), "%429")
	b.ReportMetric(float64(tableCalls)/elapsed.Seconds(), "table-ops/s")
	b.ReportMetric(float64(high.Milliseconds()), "high-ms")
	b.Logf("%s: %d devices on each of %d hubs in %v (minimum %v); %.0f ops/min/hub for a budget of %d; %d hub calls, %d answered 429; %d table calls",
		s.name, perHub, len(hubs), elapsed.Round(time.Millisecond), minimum, perMinutePerHub, budget, calls, throttled, tableCalls)
}

package fleet_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"dpsdeprov/azure/journal"
	"dpsdeprov/internal/testenv"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	flagCases  = flag.Int("fleet.cases", 2000, "generated fleets to check")
	flagSeed   = flag.Uint64("fleet.seed", 0, "check only the fleet of this seed (with -fleet.shrink, shrink it)")
	flagFirst  = flag.Uint64("fleet.first", 1, "seed of the first generated fleet")
	flagShrink = flag.Bool("fleet.shrink", false, "shrink a failing -fleet.seed to a small case and print it")
)

// TestGeneratedFleets checks the invariants over generated fleets (doc.go). A failure
// prints the command that replays its seed and shrinks it.
func TestGeneratedFleets(t *testing.T) {
	ctx := context.Background()
	if *flagSeed != 0 {
		w := newWorld(t)
		c := Generate(*flagSeed)
		o, err := w.run(ctx, c, newJournal())
		if err != nil {
			t.Fatalf("seed %d: %v\n%s", *flagSeed, err, c)
		}
		if len(o.violations) == 0 {
			t.Logf("seed %d holds (%d operations)\n%s", *flagSeed, o.ops, c)
			return
		}
		if *flagShrink {
			c, o = shrink(ctx, t, w, c, o)
		}
		t.Fatalf("seed %d breaks the policy:\n%s\n%s", *flagSeed, strings.Join(o.violations, "\n"), c)
	}
	workers := max(1, runtime.GOMAXPROCS(0))
	var (
		next, ops, done atomic.Uint64
		mu              sync.Mutex
		failed          []string
		wg              sync.WaitGroup
	)
	next.Store(*flagFirst)
	last := *flagFirst + uint64(*flagCases)
	for range workers {
		w := newWorld(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seed := next.Add(1) - 1
				if seed >= last {
					return
				}
				mu.Lock()
				stop := len(failed) >= 5
				mu.Unlock()
				if stop {
					return
				}
				o, err := w.run(ctx, Generate(seed), newJournal())
				done.Add(1)
				msg := ""
				switch {
				case err != nil:
					msg = fmt.Sprintf("seed %d: harness: %v", seed, err)
				case len(o.violations) > 0:
					msg = fmt.Sprintf("seed %d: %s", seed, o.violations[0])
				default:
					ops.Add(uint64(o.ops))
				}
				if msg != "" {
					mu.Lock()
					failed = append(failed, msg)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d generated fleets checked, %d operations", done.Load(), ops.Load())
	for _, f := range failed {
		t.Errorf("%s\n  replay and shrink: go test ./internal/fleet -run 'TestGeneratedFleets$' -fleet.seed=%s -fleet.shrink", f, strings.TrimSuffix(strings.Fields(f)[1], ":"))
	}
}

// shrink removes steps, devices and groups from a failing case while it still fails.
func shrink(ctx context.Context, t *testing.T, w *world, c *Case, o *outcome) (*Case, *outcome) {
	tries := 0
	for progress := true; progress; {
		progress = false
		for _, s := range c.shrinks() {
			tries++
			so, err := w.run(ctx, s, newJournal())
			if err != nil || len(so.violations) == 0 {
				continue
			}
			c, o, progress = s, so, true
			break
		}
	}
	fmt.Fprintf(os.Stderr, "shrunk in %d tries to %d devices, %d groups, %d steps\n", tries, len(c.Devices), len(c.Groups), len(c.Steps))
	return c, o
}

var flagAzurite = flag.Int("fleet.azurite", 40, "generated fleets also run with the journal on Azurite (Table Storage)")

// TestGeneratedFleetsOnAzurite runs fleets with the journal the app uses, Table Storage on
// Azurite, instead of the in-memory one under the engine's Journal port.
func TestGeneratedFleetsOnAzurite(t *testing.T) {
	if *flagSeed != 0 {
		t.Skip("replaying one seed")
	}
	ctx := context.Background()
	a := testenv.SharedAzurite(t)
	svc, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	// Seeds far from the in-memory run's, so that these fleets are others.
	for seed := uint64(1_000_000); seed < 1_000_000+uint64(*flagAzurite); seed++ {
		j, err := journal.New(ctx, svc, journal.Options{TablePrefix: testenv.UniqueName("f")})
		if err != nil {
			t.Fatal(err)
		}
		c := Generate(seed)
		o, err := w.run(ctx, c, j)
		if err != nil {
			t.Fatalf("seed %d: harness: %v\n%s", seed, err, c)
		}
		if len(o.violations) > 0 {
			t.Errorf("seed %d (journal on Azurite): %s\n%s", seed, strings.Join(o.violations, "\n"), c)
		}
	}
}

// A seed makes the same case every time, and every shrink of a case is a case.
func TestGenerationReplaysAndShrinks(t *testing.T) {
	for seed := uint64(1); seed <= 300; seed++ {
		c := Generate(seed)
		if c.String() != Generate(seed).String() {
			t.Fatalf("seed %d generated two different cases", seed)
		}
		for _, s := range c.shrinks() {
			checkCase(t, s)
			_ = s.String()
		}
	}
}

// checkCase fails on a case whose references do not hold.
func checkCase(t *testing.T, c *Case) {
	t.Helper()
	for i, dv := range c.Devices {
		if dv.Kind == kX509Member && c.nearestGroup(dv.CA) < 0 || dv.Kind == kSKMember && (dv.Group >= len(c.Groups) || c.Groups[dv.Group].Kind != gSK) {
			t.Fatalf("seed %d: device %d lost its group\n%s", c.Seed, i, c)
		}
	}
	for i, ev := range c.Steps {
		if ev.Again >= i || ev.Again >= 0 && c.Steps[ev.Again].Again >= 0 || ev.Device >= len(c.Devices) || ev.Group >= len(c.Groups) ||
			ev.Intent.GroupWide() && ev.Group < 0 {
			t.Fatalf("seed %d: step %d refers to nothing\n%s", c.Seed, i+1, c)
		}
	}
}

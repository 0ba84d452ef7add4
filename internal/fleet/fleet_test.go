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

	"dpsdeprov/internal/testenv"
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
		seed := strings.TrimPrefix(strings.Fields(f)[1], "")
		_ = seed
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

// Command demo runs the deprovisioning app end to end on one machine, with no Azure
// subscription: Azurite for Storage, the project's emulator for DPS and two IoT hubs, and devhost
// as the Functions host and Event Grid. See docs/demo.md.
//
//	demo        start everything, seed a fleet, play the story, print the journal's summary,
//	            check every device's next provisioning attempt, stop everything (make demo)
//	demo -up    start everything and seed the fleet, then keep running until Ctrl-C, so that
//	            a person can publish events of their own (make run)
//	demo -bench the group-wide benchmark on the same stack (make bench; docs/benchmarks.md)
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"dpsdeprov/azure/journal"
)

type demo struct {
	out     io.Writer
	stack   *stack
	fleet   *fleet
	journal *journal.Journal
	start   time.Time
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", ".", "the repository root (host.json, the function folders, node_modules)")
	state := flag.String("state", ".demo", "folder for logs, settings and the staged app")
	bin := flag.String("bin", filepath.Join(".demo", "bin"), "folder holding the built handler, iotemulator and devhost")
	bulk := flag.Int("bulk", 1000, "members of the enrollment group that is compromised")
	scale := flag.Float64("retry-scale", 0.05, "Event Grid's retry schedule is multiplied by this (0.05: 10 s becomes 0.5 s)")
	up := flag.Bool("up", false, "start and seed, then keep running until Ctrl-C (make run)")
	bench := flag.Bool("bench", false, "run a benchmark scenario instead of the story (make bench; docs/benchmarks.md)")
	bo := benchFlags(flag.CommandLine)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := filepath.Abs(*state)
	if err != nil {
		return err
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	d := &demo{out: os.Stdout, start: time.Now(), stack: &stack{dir: dir, bin: binDir, app: filepath.Join(dir, "app"), retryScal: *scale}}
	// Whatever happens (an error, Ctrl-C), everything started is stopped before returning.
	defer func() {
		d.stack.stop()
		d.say("stopped Azurite, the emulator, devhost and the handler")
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"azurite-blob.log", "azurite-queue.log", "azurite-table.log", "emulator.log", "devhost.log", "handler.log", "deadletter.jsonl"} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	if *bench {
		if bo.Name == "" {
			bo.Name = fmt.Sprintf("%s-%dx%d", bo.Scenario, bo.Members, bo.Hubs)
		}
		return runBench(ctx, d, *root, *bo)
	}
	d.say("starting Azurite, the DPS/IoT Hub emulator, and devhost with the handler (logs in %s)", *state)
	if err := d.stack.up(ctx, *root); err != nil {
		return err
	}
	d.say("devhost is the Functions host at %s; Event Grid topics at %s", d.stack.devhost.URL, d.stack.devhost.EventGridURL)
	if d.journal, err = openJournal(ctx, d.stack.storage); err != nil {
		return fmt.Errorf("opening the journal: %w", err)
	}
	if d.fleet, err = newFleet(d.stack.emu); err != nil {
		return err
	}
	if err := d.fleet.seed(ctx, *bulk, d.say); err != nil {
		return err
	}
	if *up {
		d.say("ready. Publish your own events, for example:")
		fmt.Fprintf(d.out, "\n  go run ./cmd/devhost publish -type device-lost -subject devices/meter-07 -data '{\"registrationId\":\"meter-07\"}'\n\n")
		fmt.Fprintf(d.out, "  devices: %s, and %s-d0 … %s-d%d in group %s\n", strings.Join(d.fleet.order, ", "), d.fleet.bulk.ID, d.fleet.bulk.ID, d.fleet.bulk.Registrations-1, d.fleet.bulk.ID)
		fmt.Fprintf(d.out, "  what happened to a device: go run ./cmd/dpsdeprov status meter-07   (then show, plan, apply, approve, deny; docs/app.md)\n")
		fmt.Fprintf(d.out, "  outcome events: go run ./cmd/devhost received   · logs: %s/*.log   · Ctrl-C stops everything\n\n", *state)
		select {
		case <-ctx.Done():
		case <-d.stack.exited():
			return errors.New("a process of the stack exited; see the logs in " + *state)
		}
		return nil
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	chapters := d.fleet.story(hex.EncodeToString(b))
	if err := d.play(ctx, chapters); err != nil {
		return err
	}
	d.say("every operation has come to rest")
	if err := d.summary(ctx, chapters); err != nil {
		return err
	}
	if err := d.outcomes(ctx); err != nil {
		return err
	}
	if err := d.operatorCLI(ctx, "meter-07"); err != nil {
		return err
	}
	ok, err := d.check(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out)
	if !ok {
		return errors.New("some devices did not end as the story says they should (marked WRONG above)")
	}
	d.say("the demo ran end to end")
	return nil
}

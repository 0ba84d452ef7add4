package cleanup_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
)

var (
	genCases = flag.Int("cleanup.cases", 16, "generated fleets TestGeneratedFleetsThroughManyTimerRuns runs")
	genSeed  = flag.Uint64("cleanup.seed", 0, "replay one generated fleet: its seed (0 runs -cleanup.cases fleets)")
	genRuns  = flag.Int("cleanup.runs", 24, "timer runs per generated fleet")
)

// How a simulated device lives: what the hub knows of it, and which lifecycle events it
// raises (each of which may be lost, repeated or delivered late).
type life int

const (
	lifeConnected life = iota // stays connected: a connect now and then, a disconnect-connect pair sometimes
	lifeHTTPS                 // speaks only HTTPS: no connection events; the identity's lastActivityTime moves
	lifeTelemetry             // telemetry events (when subscribed) and activity
	lifeDead                  // went silent at deathAt for good
)

func (l life) String() string {
	return [...]string{"connected", "https-only", "telemetry", "dead"}[l]
}

type simDevice struct {
	id   string
	host string // the hub DPS assigns
	// old is the hub the device was moved from ("" if never): its sightings and a leftover
	// identity are there, enabled.
	old     string
	life    life
	deathAt time.Time
	// revoked is the intent the event path applied (compromised, lost), "" if none.
	revoked deprovision.Intent
	// driftRun is the run before which the compromised device was re-enabled behind the
	// system's back (-1: not drifted).
	driftRun int
}

// pending is one lifecycle event on its way (delivered late, or twice).
type pending struct {
	hub, id string
	kind    cleanup.LifecycleKind
	at      time.Time
}

// TestGeneratedFleetsThroughManyTimerRuns runs random fleets (devices that stay connected,
// speak only HTTPS, send telemetry or go silent; devices moved to another hub; lifecycle
// events lost, repeated and out of order; compromises, losses and re-enables behind the
// system's back) and random settings through many timer runs of the real engine and the
// Azurite journal, and checks after every run that no device with evidence of life was
// retired, no device in a revoking state was retired by the stale pass, no identity in a hub
// the device was not seen in was touched, and every drifted revocation was restored within
// the documented sweep time (docs/cleanup.md: a sweep of R rows takes at most
// ⌈R / ⌊⌈B/2⌉/2⌋⌉ runs, B the run's budget; a drift is restored within one sweep and a run).
// A failing fleet replays from its seed: go test ./cleanup/ -run
// TestGeneratedFleetsThroughManyTimerRuns -cleanup.seed=N (the package before the flags).
func TestGeneratedFleetsThroughManyTimerRuns(t *testing.T) {
	seeds := []uint64{*genSeed}
	if *genSeed == 0 {
		seeds = nil
		for i := range *genCases {
			seeds = append(seeds, uint64(1000+i*7919))
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runFleet(t, seed, *genRuns)
		})
	}
}

func runFleet(t *testing.T, seed uint64, runs int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	w := newWorld(t)
	ctx := context.Background()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\nreplay: go test ./cleanup/ -run TestGeneratedFleetsThroughManyTimerRuns -cleanup.seed=%d", seed, fmt.Sprintf(format, args...), seed)
	}
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }

	// Settings.
	o := cleanup.Options{
		Budget:        pick(4, 6, 10, 16, 30),
		StaleAfter:    time.Duration(pick(7, 30, 60)) * day,
		StaleMax:      pick(1, 2, 5),
		StaleRunShare: []float64{0.05, 0.2, 1}[rng.IntN(3)],
		StaleDayShare: []float64{0.1, 0.3, 1}[rng.IntN(3)],
		ApplyStale:    rng.IntN(5) > 0,
		StaleAllow:    []string{"hub2/keep-*"},
	}
	if rng.IntN(2) == 0 {
		o.GraceAfter, o.ApplyGrace = time.Duration(pick(20, 40))*day, true
		o.GraceIntent = []deprovision.Intent{"", deprovision.IntentRetired}[rng.IntN(2)]
	}
	w.guard.StaleDayShare = o.StaleDayShare
	w.guard.MaxPerHour = pick(3, 50)
	lossRate := []float64{0, 0.2, 0.5}[rng.IntN(3)]

	// The fleet.
	var fleet []*simDevice
	n := 6 + rng.IntN(10)
	for i := range n {
		d := &simDevice{id: fmt.Sprintf("d%02d", i), host: []string{hub1, hub2}[rng.IntN(2)], life: life(rng.IntN(4)), driftRun: -1}
		if rng.IntN(5) == 0 {
			d.id = "keep-" + d.id // allowed in hub2
		}
		if d.life == lifeDead {
			d.deathAt = w.clock.Now().Add(time.Duration(rng.IntN(130)-100) * day)
		}
		if rng.IntN(6) == 0 {
			d.old, d.host = hub1, hub2 // moved: DPS assigns hub2, the old identity stays in hub1
		}
		w.dps.AddEnrollment(deprovision.Enrollment{RegistrationID: d.id, DeviceID: d.id, Attestation: deprovision.AttestationSymmetricKey, Enabled: true})
		w.dps.AddRegistration(deprovision.Registration{RegistrationID: d.id, DeviceID: d.id, AssignedHub: d.host, Status: "assigned"}, "")
		w.hubs.AddDevice(deprovision.Device{Hub: d.host, DeviceID: d.id, Enabled: true, AuthType: "sas"})
		if d.old != "" {
			w.hubs.AddDevice(deprovision.Device{Hub: d.old, DeviceID: d.id, Enabled: true, AuthType: "sas"})
		}
		fleet = append(fleet, d)
	}
	name := func(host string) string { h, _, _ := strings.Cut(host, "."); return h }
	active := func(d *simDevice, now time.Time) bool { return d.life != lifeDead || now.Before(d.deathAt) }

	// What the hubs report: the truth about each device's life.
	w.live.hook = nil
	report := func(now time.Time) {
		for _, d := range fleet {
			a := cleanup.Activity{}
			switch {
			case !active(d, now):
				a.LastActivity, a.ConnectionStateUpdated = d.deathAt, d.deathAt
			case d.life == lifeConnected:
				a.Connected, a.ConnectionStateUpdated, a.LastActivity = true, now.Add(-time.Duration(rng.IntN(200))*day), now
			case d.life == lifeHTTPS:
				a.LastActivity = now // the twin's stays at 0001-01-01
			case d.life == lifeTelemetry:
				a.LastActivity, a.TwinLastActivity = now, now
			}
			w.live.set(d.host, d.id, a)
			if d.old != "" {
				w.live.set(d.old, d.id, cleanup.Activity{LastActivity: now.Add(-365 * day)})
			}
		}
	}

	var queue []pending
	emit := func(hub, id string, kind cleanup.LifecycleKind, at time.Time) {
		if rng.Float64() < lossRate {
			return // lost
		}
		queue = append(queue, pending{hub, id, kind, at})
		if rng.IntN(8) == 0 {
			queue = append(queue, pending{hub, id, kind, at}) // delivered twice
		}
	}
	lc := w.lifecycle()
	deliver := func() {
		rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
		var late []pending
		for _, p := range queue {
			if rng.IntN(4) == 0 {
				late = append(late, p) // out of order: delivered in a later step
				continue
			}
			if err := lc.Record(ctx, cleanup.LifecycleEvent{EventID: fmt.Sprint(p), Type: eventTypes[p.kind], Kind: p.kind, Hub: p.hub, DeviceID: p.id, Time: p.at}); err != nil {
				fail("recording %+v: %v", p, err)
			}
		}
		queue = late
	}
	// Every device was seen at the start; a moved device's old hub saw it then, for the last time.
	start := w.clock.Now()
	for _, d := range fleet {
		if d.old != "" {
			emit(name(d.old), d.id, cleanup.LifecycleConnected, start.Add(-200*day))
			emit(name(d.old), d.id, cleanup.LifecycleDisconnected, start.Add(-199*day))
		}
		if active(d, start) {
			emit(name(d.host), d.id, cleanup.LifecycleConnected, start.Add(-time.Duration(rng.IntN(240))*time.Hour))
		} else {
			emit(name(d.host), d.id, cleanup.LifecycleConnected, d.deathAt.Add(-time.Hour))
			emit(name(d.host), d.id, cleanup.LifecycleDisconnected, d.deathAt)
		}
	}

	r, err := cleanup.New(w.cleanupDeps(), withHubs(o))
	if err != nil {
		fail("New: %v", err)
	}
	rows := n // every device row drift could ever check
	reserve := (o.Budget + 1) / 2
	sweepRuns := (rows + max(1, reserve/2) - 1) / max(1, reserve/2)
	bound := sweepRuns + 1
	var sightings []string
	for run := range runs {
		now := w.clock.Now()
		// The fleet lives.
		for _, d := range fleet {
			if !active(d, now) {
				if d.life == lifeDead && now.Sub(d.deathAt) < 9*day {
					emit(name(d.host), d.id, cleanup.LifecycleDisconnected, d.deathAt)
				}
				continue
			}
			switch d.life {
			case lifeConnected:
				if rng.IntN(3) == 0 {
					emit(name(d.host), d.id, cleanup.LifecycleDisconnected, now.Add(-time.Hour))
					emit(name(d.host), d.id, cleanup.LifecycleConnected, now.Add(-time.Hour+time.Minute)) // may be lost: the hub still says Connected
				}
			case lifeTelemetry:
				emit(name(d.host), d.id, cleanup.LifecycleTelemetry, now.Add(-time.Duration(rng.IntN(60))*time.Minute))
			}
		}
		deliver()
		// Someone acts: a compromise, a loss, or a re-enable behind the system's back.
		if rng.IntN(3) == 0 {
			d := fleet[rng.IntN(len(fleet))]
			if d.revoked == "" && !gone(w, d) {
				in := []deprovision.Intent{deprovision.IntentCompromised, deprovision.IntentLost}[rng.IntN(2)]
				op, err := w.engine.Submit(ctx, deprovision.Request{EventID: fmt.Sprintf("sec-%s-%d", d.id, run), Source: "urn:security",
					Intent: in, RegistrationID: d.id, EventTime: now})
				if err != nil {
					fail("%s of %s: %v", in, d.id, err)
				}
				if op.Status == deprovision.StatusSucceeded {
					d.revoked = in
				}
			}
		}
		for _, d := range fleet {
			if d.revoked == deprovision.IntentCompromised && d.driftRun < 0 && !gone(w, d) && rng.IntN(6) == 0 {
				reEnable(w, d, rng.IntN(2) == 0)
				d.driftRun = run
			}
		}
		report(now)
		rep, err := r.Run(ctx)
		if err != nil {
			fail("run %d: %v", run, err)
		}
		// Invariants.
		for _, f := range w.findings(rep.RunID) {
			if f.Pass != cleanup.PassStale || f.OperationStatus != deprovision.StatusSucceeded || f.OperationID == "" {
				continue
			}
			d := find(fleet, f.DeviceID)
			if d == nil {
				fail("run %d retired %s, no device of the fleet", run, f.DeviceID)
			}
			if active(d, now) || now.Sub(d.deathAt) <= o.StaleAfter {
				fail("run %d retired %s (%s, dead since %s): it showed life within %s", run, d.id, d.life, d.deathAt.Format(time.DateOnly), o.StaleAfter)
			}
			if d.revoked != "" {
				fail("run %d retired %s as stale, which the journal holds %s", run, d.id, d.revoked)
			}
			if !strings.EqualFold(f.Hub, d.host) {
				fail("run %d retired %s in %s; DPS assigns it to %s", run, d.id, f.Hub, d.host)
			}
			sightings = append(sightings, fmt.Sprintf("run %d: %s", run, d.id))
		}
		for _, d := range fleet {
			if active(d, now) && d.revoked == "" {
				if _, ok := w.hubs.Device(d.host, d.id); !ok {
					fail("run %d: %s (%s) is alive and its identity in %s is gone", run, d.id, d.life, d.host)
				}
			}
			if d.old != "" {
				if old, ok := w.hubs.Device(d.old, d.id); !ok || !old.Enabled {
					fail("run %d: the identity of %s in %s, where the timer never saw it live, was changed", run, d.id, d.old)
				}
			}
			if d.driftRun >= 0 {
				if restored(w, d) {
					d.driftRun = -1
				} else if run-d.driftRun >= bound {
					fail("run %d: %s, re-enabled before run %d, is still enabled: the documented bound is %d runs (budget %d, %d rows)", run, d.id, d.driftRun, bound, o.Budget, rows)
				}
			}
		}
		w.clock.add(time.Duration(2+rng.IntN(7)) * day)
	}
	slices.Sort(sightings)
	t.Logf("seed %d: %d devices, budget %d, stale after %s (apply %t), loss %.0f%%, retired as stale: %v", seed, n, o.Budget, o.StaleAfter, o.ApplyStale, lossRate*100, sightings)
}

var eventTypes = map[cleanup.LifecycleKind]string{cleanup.LifecycleConnected: "Microsoft.Devices.DeviceConnected",
	cleanup.LifecycleDisconnected: "Microsoft.Devices.DeviceDisconnected", cleanup.LifecycleTelemetry: "Microsoft.Devices.DeviceTelemetry",
	cleanup.LifecycleCreated: "Microsoft.Devices.DeviceCreated", cleanup.LifecycleDeleted: "Microsoft.Devices.DeviceDeleted"}

func withHubs(o cleanup.Options) cleanup.Options {
	o.Hubs = []string{hub1, hub2}
	return o
}

func find(fleet []*simDevice, id string) *simDevice {
	for _, d := range fleet {
		if d.id == id {
			return d
		}
	}
	return nil
}

// gone reports whether the device's identity in its hub is gone (retired).
func gone(w *world, d *simDevice) bool {
	_, ok := w.hubs.Device(d.host, d.id)
	return !ok
}

// reEnable enables a revoked device's identity (and enrollment) behind the system's back.
func reEnable(w *world, d *simDevice, enrollment bool) {
	ctx := context.Background()
	if enrollment {
		if e, err := w.dps.GetEnrollment(ctx, d.id); err == nil {
			e.Enabled = true
			_, _ = w.dps.PutEnrollment(ctx, e, "*")
		}
	}
	if dev, err := w.hubs.HubDevices.GetDevice(ctx, d.host, d.id); err == nil {
		dev.Enabled = true
		_, _ = w.hubs.HubDevices.PutDevice(ctx, dev, "*")
	}
}

// restored reports whether a compromised device's revocation holds again.
func restored(w *world, d *simDevice) bool {
	dev, ok := w.hubs.Device(d.host, d.id)
	e, eok := w.dps.Enrollment(d.id)
	return (!ok || !dev.Enabled) && (!eok || !e.Enabled)
}

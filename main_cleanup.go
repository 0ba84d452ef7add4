package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/azure/journal"
	"dpsdeprov/azure/ratelimit"
	"dpsdeprov/azure/workqueue"
	"dpsdeprov/cleanup"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
	"dpsdeprov/outcome"
)

// cleanupPorts are the ports the cleanup passes share with the engine.
type cleanupPorts struct {
	engine        *deprovision.Engine
	journal       deprovision.Journal
	housekeeping  *journal.Housekeeping
	enrollments   deprovision.Enrollments
	registrations deprovision.Registrations
	devices       deprovision.Devices
	// liveness reads what the hubs report of a device's life (the stale pass's evidence).
	liveness  cleanup.Liveness
	publisher *outcome.Publisher // nil when outcome events are off
	// queues is the account of the group-work queue, whose poison queue the poison pass
	// sweeps; nil opens it from the storage settings.
	queues *azqueue.ServiceClient
}

// openHousekeeping opens the cleanup's tables ({prefix}cleanup, {prefix}seen). The engine
// needs them too: the timer's guard counts against them and group revocations are tracked
// in them (cleanupEngineDeps).
func openHousekeeping(ctx context.Context, cfg *settings, tables *aztables.ServiceClient) (*journal.Housekeeping, error) {
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	hk, err := journal.NewHousekeeping(hctx, tables, journal.Options{TablePrefix: cfg.JournalPrefix})
	if err != nil {
		return nil, fmt.Errorf("opening the cleanup tables (setting %s, tables %scleanup, %sseen): %w", config.SettingStorage, cfg.JournalPrefix, cfg.JournalPrefix, err)
	}
	return hk, nil
}

// cleanupEngineDeps adds to the engine's ports what the cleanup needs of it: the journal
// records the enrollment groups the engine disables (cleanup.TrackGroups), and the timer's
// guard owns the cleanup's own operations, counting them against the timer's hourly budget
// (apart from, and below, the event path's) and the stale pass's daily share of the fleet.
func cleanupEngineDeps(d deprovision.Deps, cfg *settings, hk *journal.Housekeeping, budget deprovision.Budget) deprovision.Deps {
	d.Journal = cleanup.TrackGroups(d.Journal, hk)
	d.Holder = &cleanup.Guard{Budget: budget, Fleet: hk, Clock: d.Clock,
		MaxPerHour: cfg.cleanup.MaxDestructivePerHour, StaleDayShare: cfg.cleanup.StaleDayShare}
	return d
}

// wireCleanup returns the Cleanup timer's Cleaner and the recorder of IoT Hub lifecycle
// events (docs/cleanup.md).
func wireCleanup(cfg *settings, p cleanupPorts, logger *slog.Logger) (*handler.Cleanup, *cleanup.Lifecycle, error) {
	hk := p.housekeeping
	queues := p.queues
	if queues == nil {
		// The storage account's managed identity takes no cached state from the other
		// credentials, so a fresh set serves as well as the app's.
		var err error
		if queues, err = queueService(cfg.Config, &credentials{clientID: cfg.ClientID}); err != nil {
			return nil, nil, err
		}
	}
	d := cleanup.Deps{
		Engine: p.engine, Operations: p.journal, DeviceJournal: p.journal, Journal: hk, Ledger: hk, Seen: hk,
		Poison:      newPoisonSweeper(workqueue.NewPoison(queues, handler.GroupWorkQueue), p.engine),
		Enrollments: p.enrollments, Registrations: p.registrations, Devices: p.devices, Liveness: p.liveness,
		Moves:         deprovision.NewMoves(deprovision.Deps{Registrations: p.registrations, Devices: p.devices, Journal: p.journal, Logger: logger}),
		ResumeContext: intentPriority, Clock: deprovision.SystemClock{}, Logger: logger,
	}
	if p.publisher != nil {
		d.Reporter = p.publisher
	}
	runner, err := cleanup.New(d, cfg.cleanup)
	if err != nil {
		return nil, nil, err
	}
	return newCleaner(runner), &cleanup.Lifecycle{Seen: hk, Journal: p.journal, Beats: hk, Hubs: cfg.hubHosts, Logger: logger}, nil
}

// cleanupOptions builds the cleanup's options from its settings. DRY_RUN reaches every pass.
func cleanupOptions(cfg *config.Config, hubs []string) cleanup.Options {
	c := cfg.Cleanup
	o := cleanup.Options{
		Budget: c.Budget, DryRun: cfg.Admission.DryRun, ResumeAfter: cfg.ResumeAfter,
		GraceAfter: c.GraceAfter, GraceIntent: deprovision.Intent(c.GraceIntent), ApplyGrace: c.ApplyGrace,
		DriftDryRun: c.DriftDryRun, RedisableGroups: c.RedisableGroups,
		StaleAfter: c.StaleAfter, StaleMax: c.StaleMax, StaleRunShare: c.StaleRunShare, StaleDayShare: c.StaleDayShare,
		StaleFeedMaxAge: c.StaleFeedMaxAge, StaleAllow: c.StaleAllow, ApplyStale: c.ApplyStale,
		DeleteOrphans: c.DeleteOrphans, OrphanGroups: c.OrphanGroups, MaxDestructivePerHour: c.MaxDestructivePerHour,
		KeepFindings: c.KeepFindings, KeepDeletedSightings: c.KeepDeletedSightings, Hubs: hubs,
	}
	for _, p := range c.Off {
		if o.Off == nil {
			o.Off = map[string]bool{}
		}
		o.Off[p] = true
	}
	return o
}

// intentPriority is the hub rate limiter's priority of a resumed operation: what the event
// path gives it. A single compromised, stolen or lost device is threat response, served ahead
// of group work; everything else is bulk work.
func intentPriority(ctx context.Context, in deprovision.Intent) context.Context {
	switch in {
	case deprovision.IntentCompromised, deprovision.IntentStolen, deprovision.IntentLost:
		return ratelimit.WithPriority(ctx, ratelimit.PriorityHigh)
	}
	return ratelimit.WithPriority(ctx, ratelimit.PriorityBulk)
}

// newCleaner is the Cleanup function's Cleaner over runner. Every run, timed or by hand,
// works at the hub rate limiter's bulk priority: cleanup is never urgent, and its hub calls
// (drift checks, re-revocations, resumed and settled work) must leave the reserve of each
// hub's budget to compromise response. Without it a drift check's single-device calls would
// take the high-priority lane that the limiter gives single-device calls by default.
func newCleaner(runner handler.CleanupRunner) *handler.Cleanup {
	return &handler.Cleanup{Runner: runner, Context: bulkPriority}
}

func bulkPriority(ctx context.Context) context.Context {
	return ratelimit.WithPriority(ctx, ratelimit.PriorityBulk)
}

// poisonSweeper adapts the group-work queue's poison sweeper to the cleanup's port.
type poisonSweeper struct {
	poison *workqueue.Poison
	settle func(context.Context, *deprovision.WorkBatch) error
}

// newPoisonSweeper settles the batches of p's queue through the engine.
func newPoisonSweeper(p *workqueue.Poison, e *deprovision.Engine) *poisonSweeper {
	return &poisonSweeper{poison: p, settle: e.SettlePoisoned}
}

// Sweep implements cleanup.PoisonSweeper.
func (s *poisonSweeper) Sweep(ctx context.Context, max int) (cleanup.PoisonSweep, error) {
	res, err := s.poison.Sweep(ctx, max, s.settle)
	return cleanup.PoisonSweep{Settled: res.Settled, Kept: res.Kept, Young: res.Young}, err
}

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
	enrollments   deprovision.Enrollments
	registrations deprovision.Registrations
	devices       deprovision.Devices
	publisher     *outcome.Publisher // nil when outcome events are off
	// queues is the account of the group-work queue, whose poison queue the poison pass
	// sweeps; nil opens it from the storage settings.
	queues *azqueue.ServiceClient
}

// wireCleanup opens the cleanup's tables and returns the Cleanup timer's Cleaner and the
// recorder of IoT Hub lifecycle events (docs/cleanup.md).
func wireCleanup(ctx context.Context, cfg *settings, tables *aztables.ServiceClient, p cleanupPorts, logger *slog.Logger) (*handler.Cleanup, *cleanup.Lifecycle, error) {
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	hk, err := journal.NewHousekeeping(hctx, tables, journal.Options{TablePrefix: cfg.JournalPrefix})
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("opening the cleanup tables (setting %s, tables %scleanup, %sseen): %w", config.SettingStorage, cfg.JournalPrefix, cfg.JournalPrefix, err)
	}
	queues := p.queues
	if queues == nil {
		// The storage account's managed identity takes no cached state from the other
		// credentials, so a fresh set serves as well as the app's.
		if queues, err = queueService(cfg.Config, &credentials{clientID: cfg.ClientID}); err != nil {
			return nil, nil, err
		}
	}
	d := cleanup.Deps{
		Engine: p.engine, Operations: p.journal, Journal: hk, Seen: hk,
		Poison:      newPoisonSweeper(workqueue.NewPoison(queues, handler.GroupWorkQueue), p.engine),
		Enrollments: p.enrollments, Registrations: p.registrations, Devices: p.devices,
		Clock: deprovision.SystemClock{}, Logger: logger,
	}
	if p.publisher != nil {
		d.Reporter = p.publisher
	}
	runner, err := cleanup.New(d, cfg.cleanup)
	if err != nil {
		return nil, nil, err
	}
	return newCleaner(runner), &cleanup.Lifecycle{Seen: hk, Journal: p.journal, Logger: logger}, nil
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

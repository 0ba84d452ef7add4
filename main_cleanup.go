package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"dpsdeprov/azure/journal"
	"dpsdeprov/cleanup"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
	"dpsdeprov/outcome"
)

// cleanupPorts are the ports the cleanup passes share with the engine.
type cleanupPorts struct {
	engine        cleanup.Submitter
	journal       deprovision.Journal
	enrollments   deprovision.Enrollments
	registrations deprovision.Registrations
	devices       deprovision.Devices
	publisher     *outcome.Publisher // nil when outcome events are off
}

// wireCleanup opens the cleanup's tables and returns the Cleanup timer's Cleaner and the
// recorder of IoT Hub lifecycle events (docs/cleanup.md).
func wireCleanup(ctx context.Context, cfg *config.Config, tables *aztables.ServiceClient, p cleanupPorts, logger *slog.Logger) (*handler.Cleanup, *cleanup.Lifecycle, error) {
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	hk, err := journal.NewHousekeeping(hctx, tables, journal.Options{TablePrefix: cfg.JournalPrefix})
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("opening the cleanup tables (setting %s, tables %scleanup, %sseen): %w", config.SettingStorage, cfg.JournalPrefix, cfg.JournalPrefix, err)
	}
	d := cleanup.Deps{
		Engine: p.engine, Operations: p.journal, Journal: hk, Seen: hk,
		Enrollments: p.enrollments, Registrations: p.registrations, Devices: p.devices,
		Clock: deprovision.SystemClock{}, Logger: logger,
	}
	if p.publisher != nil {
		d.Reporter = p.publisher
	}
	o := cfg.Cleanup
	o.ResumeAfter, o.Hubs = cfg.ResumeAfter, cfg.Hubs.Hosts
	runner, err := cleanup.New(d, o)
	if err != nil {
		return nil, nil, err
	}
	return &handler.Cleanup{Runner: runner}, &cleanup.Lifecycle{Seen: hk, Journal: p.journal, Logger: logger}, nil
}

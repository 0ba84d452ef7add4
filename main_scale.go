package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/azure/ratelimit"
	"dpsdeprov/azure/workqueue"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
)

// groupPageSize is the registration states the fan-out reads per DPS query call: each call is
// one DPS operation whatever its size, so large pages spare the DPS budget.
const groupPageSize = 1000

// hubRetry is the hub clients' retry policy. When the rate limiter paces them the clients do
// not retry at all: the client's own retries of a 429 (which it repeats even for bulk calls,
// honouring Retry-After) would spend budget the limiter does not count and hide the 429 from
// the other instances; the limiter retries 429s itself, after sharing the pause. A 5xx or a
// timeout goes back to the engine as transient, and the queue or Event Grid delivers the work
// again.
func hubRetry(cfg *config.Config) policy.RetryOptions {
	if cfg.Scale.HubOpsPerMinute <= 0 {
		return policy.RetryOptions{}
	}
	return policy.RetryOptions{MaxRetries: -1}
}

// limitHubs wraps the hubs' registry in the shared per-hub rate limiter (its counters live in
// the table <prefix>ratelimit), unless HUB_OPS_PER_MINUTE is off.
func limitHubs(ctx context.Context, cfg *config.Config, tables *aztables.ServiceClient, hubs deprovision.Devices, logger *slog.Logger) (deprovision.Devices, error) {
	if cfg.Scale.HubOpsPerMinute <= 0 {
		logger.Warn("hub calls are not rate limited", "setting", config.SettingHubOpsPerMinute)
		return hubs, nil
	}
	name := cfg.JournalPrefix + "ratelimit"
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	table, err := ratelimit.CreateTable(tctx, tables, name)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("opening the rate limiter's table %s (setting %s): %w", name, config.SettingStorage, err)
	}
	lim, err := ratelimit.New(table, &ratelimit.Options{PerMinute: cfg.Scale.HubOpsPerMinute,
		HubPerMinute: cfg.Scale.HubOpsPerMinuteByHub, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("rate limiter (setting %s): %w", config.SettingHubOpsPerMinute, err)
	}
	return ratelimit.NewLimitedDevices(hubs, lim, nil), nil
}

// queueService is the Queue Storage client of the app's storage account.
func queueService(cfg *config.Config, creds *credentials) (*azqueue.ServiceClient, error) {
	var svc *azqueue.ServiceClient
	var err error
	if cs := cfg.Storage.ConnectionString; cs != "" {
		svc, err = azqueue.NewServiceClientFromConnectionString(config.ExpandDevelopmentStorage(cs.Reveal()), nil)
	} else {
		cred, cerr := creds.managedIdentity(cfg.Storage.ClientID)
		if cerr != nil {
			return nil, cerr
		}
		svc, err = azqueue.NewServiceClient(cfg.Storage.QueueServiceURL, cred, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the Queue Storage client (%s): %w", config.SettingStorage, err)
	}
	return svc, nil
}

// workQueue opens (creating it if needed) the queue the GroupWork function reads.
func workQueue(ctx context.Context, cfg *config.Config, creds *credentials) (*workqueue.Queue, error) {
	svc, err := queueService(cfg, creds)
	if err != nil {
		return nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	q, err := workqueue.Create(qctx, svc, handler.GroupWorkQueue)
	if err != nil {
		return nil, fmt.Errorf("opening the group-work queue (setting %s): %w", config.SettingStorage, err)
	}
	return q, nil
}

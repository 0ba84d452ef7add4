package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/ratelimit"
	"dpsdeprov/azure/workqueue"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/deprovision/coalesce"
	"dpsdeprov/handler"
)

// groupPageSize is the registration states the fan-out reads per DPS query call: each call is
// one DPS operation whatever its size, so large pages spare the DPS budget.
const groupPageSize = 1000

// budgets are the shared rate limiters of the hubs' identity registries and of the DPS
// instance, each nil when its setting turns it off. Both keep their counters in the table
// <prefix>ratelimit (one partition per hub, per hub's queries, and for DPS), so every
// instance of the app draws on the same budgets.
type budgets struct {
	hubs, dps  *ratelimit.Limiter
	dpsPerItem bool
}

// openBudgets opens the limiters' table and builds the limiters the settings ask for.
func openBudgets(ctx context.Context, cfg *config.Config, tables *aztables.ServiceClient, logger *slog.Logger) (*budgets, error) {
	b := &budgets{dpsPerItem: cfg.Scale.DPSBulkCost != config.DPSBulkPerCall}
	if cfg.Scale.HubOpsPerMinute <= 0 {
		logger.Warn("hub calls are not rate limited", "setting", config.SettingHubOpsPerMinute)
	}
	if cfg.Scale.DPSBudget() <= 0 {
		logger.Warn("DPS calls are not rate limited", "setting", config.SettingDPSOpsPerMinute)
	}
	if cfg.Scale.HubOpsPerMinute <= 0 && cfg.Scale.DPSBudget() <= 0 {
		return b, nil
	}
	name := cfg.JournalPrefix + "ratelimit"
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	table, err := ratelimit.CreateTable(tctx, tables, name)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("opening the rate limiter's table %s (setting %s): %w", name, config.SettingStorage, err)
	}
	if cfg.Scale.HubOpsPerMinute > 0 {
		b.hubs, err = ratelimit.New(table, &ratelimit.Options{PerMinute: cfg.Scale.HubOpsPerMinute,
			HubPerMinute: cfg.Scale.HubOpsPerMinuteByHub, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("hub rate limiter (setting %s): %w", config.SettingHubOpsPerMinute, err)
		}
	}
	if n := cfg.Scale.DPSBudget(); n > 0 {
		// Paced in quarters of a window: DPS's throttle is modelled as a token bucket refilled
		// continuously (how DPS refills is UNCONFIRMED), which answers 429 to a window's whole
		// budget sent at the window's start after its budget ran dry (the customer's other
		// tools, or a burst before). The hubs are not paced: their documented traffic shaping
		// holds a short excess in a backlog rather than refusing it.
		b.dps, err = ratelimit.New(table, &ratelimit.Options{PerMinute: n, Pace: 4, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("DPS rate limiter (settings %s, %s): %w", config.SettingDPSOpsPerMinute, config.SettingDPSOpsShare, err)
		}
	}
	return b, nil
}

// hubOptions are the hub clients' options: with the limiter on, it is their per-retry
// policy, so every try (first or retry) waits for the hub's shared budget and a 429 pauses
// every instance before the client retries it after its Retry-After; the client's own
// retries (azcore's defaults) also repeat a 5xx or a dropped connection of a call that is
// safe to repeat, in the process.
func (b *budgets) hubOptions(transport policy.Transporter) azcore.ClientOptions {
	o := azcore.ClientOptions{Transport: transport}
	if b.hubs != nil {
		o.PerRetryPolicies = []policy.Policy{ratelimit.NewPolicy(b.hubs, &ratelimit.PolicyOptions{Charge: ratelimit.HubCharge})}
	}
	return o
}

// dpsOptions are the DPS client's options, paced by the DPS budget as hubOptions are by the
// hubs'.
func (b *budgets) dpsOptions(transport policy.Transporter) azcore.ClientOptions {
	o := azcore.ClientOptions{Transport: transport}
	if b.dps != nil {
		o.PerRetryPolicies = []policy.Policy{ratelimit.NewPolicy(b.dps, &ratelimit.PolicyOptions{Charge: ratelimit.DPSCharge(b.dpsPerItem)})}
	}
	return o
}

// laned is the engine as the DeviceEvents function uses it: a group-wide request's calls go
// in the budgets' bulk lane, so that the reserve of each budget stays with single-device
// compromise response (a single-device request's calls default to the high-priority lane).
type laned struct{ *deprovision.Engine }

// Submit implements handler.Engine.
func (l laned) Submit(ctx context.Context, req deprovision.Request) (*deprovision.Operation, error) {
	if req.Intent.GroupWide() {
		ctx = bulkPriority(ctx)
	}
	return l.Engine.Submit(ctx, req)
}

// newBurst is the engine's coalescer of revocation bursts: the DPS work of single-device
// revocations that arrive together shares calls (docs/scale.md), in the budgets' bulk lane;
// what an instance cannot work on at once goes to the burst queue (ten requests a message),
// and the instances share
// their listings of a group's registration states (pages).
// When DPS counts a bulk call once (DPS_BULK_COST=call), each bulk call waits for its
// operation of the DPS budget before it takes the blocking enrollments queued by then.
func (b *budgets) newBurst(d *adapter.DPS, dpsHost string, queue *workqueue.Queue, pages coalesce.Pages, logger *slog.Logger) *coalesce.Coalescer {
	o := &coalesce.Options{Lane: bulkPriority, Logger: logger, Defer: workqueue.NewRequestBatcher(queue, nil).Defer, Pages: pages}
	if b.dps != nil && !b.dpsPerItem {
		o.Reserve = func(ctx context.Context) (context.Context, error) {
			ctx = bulkPriority(ctx)
			if err := b.dps.Wait(ctx, dpsHost, 1, ratelimit.PriorityBulk); err != nil {
				return ctx, deprovision.Transient(fmt.Errorf("waiting for the DPS budget of a bulk call: %w", err))
			}
			return ratelimit.WithPrepaid(ctx, dpsHost, 1), nil
		}
	}
	return coalesce.New(d, d, o)
}

// storageHTTP is the HTTP client of the app's Table and Queue clients. A burst of events makes
// hundreds of journal writes at once; azcore's default client keeps 10 idle connections a host
// and opens a new one for every request beyond them, so under load connections churn, each
// new one a handshake (and, against the local storage emulator, a flood of connects it cannot
// accept). This one keeps up to 64 idle and opens no more than 128 at once; the other requests
// wait for a connection.
var storageHTTP = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	ForceAttemptHTTP2:     true,
	MaxIdleConns:          256,
	MaxIdleConnsPerHost:   64,
	MaxConnsPerHost:       128,
	IdleConnTimeout:       90 * time.Second,
	TLSHandshakeTimeout:   10 * time.Second,
	ExpectContinueTimeout: time.Second,
	TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
}}

// storageOptions are the Table and Queue clients' options.
func storageOptions() azcore.ClientOptions { return azcore.ClientOptions{Transport: storageHTTP} }

// queueService is the Queue Storage client of the app's storage account.
func queueService(cfg *config.Config, creds *credentials) (*azqueue.ServiceClient, error) {
	var svc *azqueue.ServiceClient
	var err error
	o := &azqueue.ClientOptions{ClientOptions: storageOptions()}
	if cs := cfg.Storage.ConnectionString; cs != "" {
		svc, err = azqueue.NewServiceClientFromConnectionString(config.ExpandDevelopmentStorage(cs.Reveal()), o)
	} else {
		cred, cerr := creds.managedIdentity(cfg.Storage.ClientID)
		if cerr != nil {
			return nil, cerr
		}
		svc, err = azqueue.NewServiceClient(cfg.Storage.QueueServiceURL, cred, o)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the Queue Storage client (%s): %w", config.SettingStorage, err)
	}
	return svc, nil
}

// workQueues opens (creating them if needed) the queues the GroupWork and BurstWork functions
// read.
func workQueues(ctx context.Context, cfg *config.Config, creds *credentials) (group, burst *workqueue.Queue, _ error) {
	svc, err := queueService(cfg, creds)
	if err != nil {
		return nil, nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if group, err = workqueue.Create(qctx, svc, handler.GroupWorkQueue); err == nil {
		burst, err = workqueue.Create(qctx, svc, handler.BurstQueue)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening the work queues (setting %s): %w", config.SettingStorage, err)
	}
	return group, burst, nil
}

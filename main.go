// Command handler is the Azure Functions custom handler of the deprovisioning app: the
// Functions host starts it (host.json customHandler.description.defaultExecutablePath), and
// calls it on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT for the DeviceEvents, GroupWork,
// Cleanup and Operations functions.
//
// It reads the app settings once (package config; docs/app.md lists them), wires the DPS and
// IoT Hub clients, the Table Storage journal, the engine and the outcome publisher, and serves
// until SIGTERM. A missing or malformed setting stops it before it listens, with a message
// naming the setting.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"dpsdeprov/azure/adapter"
	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/azure/journal"
	"dpsdeprov/azure/listings"
	"dpsdeprov/azure/loopback"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/handler"
	"dpsdeprov/internal/hostlog"
	"dpsdeprov/outcome"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "handler: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := loadSettings(os.Environ())
	if err != nil {
		return fmt.Errorf("the app settings are not usable:\n%w", err)
	}
	// The host reads stdout as Information and stderr as Error (Warning if the line says
	// "warn"): each line goes to the stream of its level (internal/hostlog, docs/app.md).
	logger := slog.New(hostlog.New(os.Stdout, os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// Listen and answer the host's readiness probe (GET /) at once; invocations wait until
	// the clients and the journal are wired, which may take a few seconds (the journal creates
	// its tables, a managed identity fetches its first token).
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listening on port %d (setting %s): %w", cfg.Port, config.SettingPort, err)
	}
	gate := &gate{ready: make(chan struct{})}
	srv := &http.Server{
		Handler:           gate,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	app, err := wire(ctx, cfg, logger)
	if err != nil {
		_ = srv.Close()
		return err
	}
	gate.open(app.handler)
	logger.Info("handler ready", append([]any{"address", ln.Addr().String()}, cfg.summary()...)...)

	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	// The host sends SIGTERM when it stops or scales in: finish the invocations in flight (the
	// host's client waits up to functionTimeout), then the outcome events still publishing.
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("finishing invocations: %w", err))
	}
	if app.publisher != nil {
		if err := app.publisher.Close(sctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// gate answers GET / at once and holds every other request until open is called.
type gate struct {
	ready chan struct{}
	h     http.Handler
}

func (g *gate) open(h http.Handler) {
	g.h = h
	close(g.ready)
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-g.ready:
		g.h.ServeHTTP(w, r)
		return
	default:
	}
	if r.Method == http.MethodGet && r.URL.Path == "/" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(`{"status":"starting"}`))
		return
	}
	select {
	case <-g.ready:
		g.h.ServeHTTP(w, r)
	case <-r.Context().Done():
	}
}

// app is everything main wires together.
type app struct {
	handler   http.Handler
	publisher *outcome.Publisher
}

func wire(ctx context.Context, cfg *settings, logger *slog.Logger) (*app, error) {
	var transport policy.Transporter
	if cfg.Emulator != nil {
		c, err := loopback.NewClient(cfg.Emulator.Address, cfg.Emulator.CAPEM)
		if err != nil {
			return nil, fmt.Errorf("setting %s: %w", config.SettingEmulatorAddress, err)
		}
		transport = c
		logger.Warn("DPS and hub traffic goes to a local emulator", "address", cfg.Emulator.Address)
	}
	creds := &credentials{clientID: cfg.ClientID}

	tables, err := tableService(cfg.Config, creds)
	if err != nil {
		return nil, fmt.Errorf("creating the Table Storage client (%s): %w", config.SettingStorage, err)
	}
	// Every DPS and hub call waits for its service's budget, shared across instances through
	// Table Storage; the limiters are the clients' per-retry policies (main_scale.go).
	budgets, err := openBudgets(ctx, cfg.Config, tables, logger)
	if err != nil {
		return nil, err
	}

	dpsOpts := &dps.ClientOptions{ClientOptions: budgets.dpsOptions(transport)}
	var dpsClient *dps.Client
	if cfg.DPS.Credential == config.CredentialConnectionString {
		dpsClient, err = dps.NewClientFromConnectionString(cfg.DPS.ConnectionString.Reveal(), dpsOpts)
	} else {
		var cred azcore.TokenCredential
		if cred, err = creds.get(cfg.DPS.Credential); err == nil {
			dpsClient, err = dps.NewClient(cfg.dpsEndpoint, cred, dpsOpts)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("DPS client (%s, %s): %w", config.SettingDPSEndpoint, config.SettingDPSCredential, err)
	}

	hubClients := map[string]*iothub.Client{}
	for _, host := range cfg.hubHosts {
		opts := &iothub.ClientOptions{ClientOptions: budgets.hubOptions(transport)}
		var c *iothub.Client
		if cfg.Hubs.Credential == config.CredentialConnectionString {
			c, err = iothub.NewClientFromConnectionString(cfg.hubConnections[host].Reveal(), opts)
		} else {
			var cred azcore.TokenCredential
			if cred, err = creds.get(cfg.Hubs.Credential); err == nil {
				c, err = iothub.NewClient("https://"+host, cred, opts)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("IoT Hub client for %s (%s): %w", host, config.SettingHubs, err)
		}
		hubClients[host] = c
	}

	// The journal creates its tables now: an unreachable or unauthorized account stops
	// start-up here, within the host's 30 s start-up window, rather than failing every
	// invocation later.
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	jrnl, err := journal.New(jctx, tables, journal.Options{TablePrefix: cfg.JournalPrefix})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("opening the journal (setting %s, tables %s*): %w", config.SettingStorage, cfg.JournalPrefix, err)
	}
	bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	budget, err := journal.NewBudget(bctx, tables, journal.Options{TablePrefix: cfg.JournalPrefix})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("opening the guardrail budget (setting %s, table %sguard): %w", config.SettingStorage, cfg.JournalPrefix, err)
	}

	var notifier deprovision.Notifier
	var pub *outcome.Publisher
	if cfg.Outcome.Endpoint != "" {
		pub, err = publisher(cfg.Config, creds, jrnl, logger)
		if err != nil {
			return nil, fmt.Errorf("outcome publisher (%s): %w", config.SettingOutcomeEndpoint, err)
		}
		notifier = pub
	}

	// Group-wide work fans out through the GroupWork queue.
	hubs := adapter.NewHubDevices(hubClients)
	work, burstQueue, err := workQueues(ctx, cfg.Config, creds)
	if err != nil {
		return nil, err
	}

	hk, err := openHousekeeping(ctx, cfg, tables)
	if err != nil {
		return nil, err
	}
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
	pages, err := listings.Open(lctx, tables, cfg.JournalPrefix+"listings", logger)
	lcancel()
	if err != nil {
		return nil, fmt.Errorf("opening the shared listings (setting %s, table %slistings): %w", config.SettingStorage, cfg.JournalPrefix, err)
	}
	dpsAdapter := adapter.NewDPS(dpsClient)
	engine := deprovision.NewEngine(cleanupEngineDeps(deprovision.Deps{
		Burst:         budgets.newBurst(dpsAdapter, dpsClient.HostName(), burstQueue, pages, logger),
		Enrollments:   dpsAdapter,
		Registrations: dpsAdapter,
		Devices:       hubs,
		Journal:       jrnl,
		Clock:         deprovision.SystemClock{},
		Notifier:      notifier,
		Logger:        logger,
		Budget:        budget,
		Work:          work,
	}, cfg, hk, budget), deprovision.Config{Hubs: cfg.hubHosts, Guard: cfg.guard, GroupPageSize: groupPageSize})

	cleaner, lifecycle, err := wireCleanup(cfg, cleanupPorts{engine: engine, journal: jrnl, housekeeping: hk,
		enrollments: dpsAdapter, registrations: dpsAdapter, devices: hubs, liveness: adapter.NewLiveness(hubs, hubClients), publisher: pub}, logger)
	if err != nil {
		return nil, err
	}

	h, err := handler.New(handler.Options{
		Engine:      laned{engine},
		GroupWorker: &handler.EngineGroupWorker{Engine: engine, Logger: logger, MaxDequeueCount: int64(cfg.Scale.MaxDequeueCount), Context: bulkPriority},
		Cleaner:     cleaner,
		Lifecycle:   lifecycle,
		Admission:   cfg.admission,
		Access:      cfg.access,
		Logger:      logger,
		Failures:    &handler.JournalFailures{Journal: jrnl},
	})
	if err != nil {
		return nil, err
	}
	return &app{handler: h, publisher: pub}, nil
}

// credentials builds each kind of token credential once.
type credentials struct {
	clientID string
	mi       azcore.TokenCredential
	def      azcore.TokenCredential
}

func (c *credentials) get(kind config.Credential) (azcore.TokenCredential, error) {
	var err error
	switch kind {
	case config.CredentialDefault:
		if c.def == nil {
			c.def, err = azidentity.NewDefaultAzureCredential(nil)
		}
		return c.def, err
	default:
		if c.mi == nil {
			c.mi, err = c.managedIdentity(c.clientID)
		}
		return c.mi, err
	}
}

func (c *credentials) managedIdentity(clientID string) (azcore.TokenCredential, error) {
	o := &azidentity.ManagedIdentityCredentialOptions{}
	if clientID != "" {
		o.ID = azidentity.ClientID(clientID)
	}
	return azidentity.NewManagedIdentityCredential(o)
}

func tableService(cfg *config.Config, creds *credentials) (*aztables.ServiceClient, error) {
	if cs := cfg.Storage.ConnectionString; cs != "" {
		return aztables.NewServiceClientFromConnectionString(config.ExpandDevelopmentStorage(cs.Reveal()), &aztables.ClientOptions{ClientOptions: storageOptions()})
	}
	cred, err := creds.managedIdentity(cfg.Storage.ClientID)
	if err != nil {
		return nil, err
	}
	return aztables.NewServiceClient(cfg.Storage.TableServiceURL, cred, &aztables.ClientOptions{ClientOptions: storageOptions()})
}

func publisher(cfg *config.Config, creds *credentials, j outcome.StepRecorder, logger *slog.Logger) (*outcome.Publisher, error) {
	var transport policy.Transporter
	if len(cfg.Outcome.CAPEM) > 0 {
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(cfg.Outcome.CAPEM) {
			return nil, fmt.Errorf("setting %s: no certificate could be parsed", config.SettingOutcomeCAFile)
		}
		transport = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}, Timeout: 30 * time.Second}
	}
	opts := outcome.NewClientOptions(transport)
	var client *azeventgrid.Client
	var err error
	if key := cfg.Outcome.Key; key != "" {
		client, err = azeventgrid.NewClientWithSharedKeyCredential(cfg.Outcome.Endpoint, azcore.NewKeyCredential(key.Reveal()), opts)
	} else {
		var cred azcore.TokenCredential
		if cred, err = creds.get(config.CredentialManagedIdentity); err == nil {
			client, err = azeventgrid.NewClient(cfg.Outcome.Endpoint, cred, opts)
		}
	}
	if err != nil {
		return nil, err
	}
	return outcome.NewPublisher(client, outcome.PublisherOptions{Source: cfg.Outcome.Source, Journal: j, Logger: logger}), nil
}

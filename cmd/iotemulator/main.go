// Command iotemulator serves an emulated Azure IoT Hub Device Provisioning Service and one or
// more IoT hubs on loopback, for tests, benchmarks and the local demo. Once ready it prints
// one JSON line on stdout with the endpoints, the id scope, the connection strings and the CA
// file; it stops on SIGINT or SIGTERM. See docs/emulator.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"dpsdeprov/emulator"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "iotemulator:", err)
		os.Exit(1)
	}
}

func run() error {
	var o emulator.Options
	var hubs, bearerKey, logLevel string
	flag.StringVar(&o.DPSName, "dps", "dps1", "DPS instance name (host NAME.azure-devices-provisioning.net)")
	flag.StringVar(&o.IDScope, "id-scope", "0ne00000001", "DPS id scope for device registration")
	flag.StringVar(&hubs, "hubs", "hub1", "comma-separated IoT hub names (hosts NAME.azure-devices.net)")
	flag.IntVar(&o.ThrottlePerMinute, "throttle", 0, "per-hub identity-registry operations per minute (every bulk item counts); 0 = unlimited")
	flag.IntVar(&o.QueryThrottlePerMinute, "query-throttle", 0, "per-hub device queries per minute; 0 = unlimited")
	flag.DurationVar(&o.ThrottleBacklog, "throttle-backlog", 0, "how long a hub holds calls over its budget before answering 429 (traffic shaping), e.g. 10s; 0 = answer 429 at once")
	flag.IntVar(&o.DPSOperationsPerMinute, "dps-throttle", 0, fmt.Sprintf("DPS service operations per minute for the instance (every bulk item counts; DPS documents %d); 0 = unlimited", emulator.DPSDocumentedPerMinute))
	flag.BoolVar(&o.DPSBulkPerCall, "dps-bulk-per-call", false, "charge a DPS bulk enrollment operation one operation whatever its items (how DPS counts it is undocumented; default: every item)")
	flag.IntVar(&o.DPSRegistrationsPerMinute, "dps-registration-throttle", 0, fmt.Sprintf("DPS device registrations per minute for the instance (DPS documents %d); 0 = unlimited", emulator.DPSDocumentedPerMinute))
	flag.DurationVar(&o.Latency, "latency", 0, "latency added to every request, e.g. 20ms")
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:0", "HTTPS listen address")
	flag.StringVar(&o.HTTPAddr, "http-addr", "", "plain HTTP listen address (empty = none)")
	flag.StringVar(&o.CertDir, "cert-dir", "", "folder for ca.pem (default: a temporary folder removed on exit)")
	flag.BoolVar(&o.AcceptBearer, "bearer", false, "also accept Authorization: Bearer JWTs with the service audience")
	flag.StringVar(&bearerKey, "bearer-key", "", "require bearer JWTs to be HS256-signed with this key (implies -bearer)")
	var faults multiFlag
	flag.Var(&faults, "fault", `inject a fault, JSON as for POST /_emulator/faults, e.g. '{"op":"hub.devices.bulk","status":503,"probability":0.1}' (repeatable)`)
	flag.StringVar(&logLevel, "log", "warn", "log level on stderr: debug, info, warn, error")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log: %w", err)
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	for _, h := range strings.Split(hubs, ",") {
		if h = strings.TrimSpace(h); h != "" {
			o.Hubs = append(o.Hubs, h)
		}
	}
	if bearerKey != "" {
		o.AcceptBearer, o.BearerKey = true, []byte(bearerKey)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := emulator.Start(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	for _, f := range faults {
		var ft emulator.Fault
		if err := json.Unmarshal([]byte(f), &ft); err != nil {
			return fmt.Errorf("-fault %s: %w", f, err)
		}
		if err := e.AddFault(ft); err != nil {
			return fmt.Errorf("-fault %s: %w", f, err)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(e.Info()); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"dpsdeprov/azure/loopback"
	"dpsdeprov/emulator"
)

// StartEmulator starts a DPS and IoT hub emulator in process for this test only; it is
// closed when the test ends.
func StartEmulator(tb testing.TB, o emulator.Options) *emulator.Emulator {
	tb.Helper()
	e, err := emulator.Start(context.Background(), o)
	if err != nil {
		tb.Fatalf("starting the emulator: %v", err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

var (
	sharedEmu     *emulator.Emulator
	sharedEmuErr  error
	sharedEmuOnce sync.Once
)

// SharedEmulator returns the test binary's one emulator (default options, hubs hub1 and
// hub2), starting it on first use; [Main] stops it. Tests sharing it keep apart by using
// their own ids (see [UniqueName]) and must not reset it or install faults on it; a test that
// needs faults, throttling or a clean state starts its own with [StartEmulator].
func SharedEmulator(tb testing.TB) *emulator.Emulator {
	tb.Helper()
	sharedEmuOnce.Do(func() {
		sharedEmu, sharedEmuErr = emulator.Start(context.Background(), emulator.Options{Hubs: []string{"hub1", "hub2"}})
		if sharedEmuErr == nil {
			onExit(func() { _ = sharedEmu.Close() })
		}
	})
	if sharedEmuErr != nil {
		tb.Fatalf("starting the shared emulator: %v", sharedEmuErr)
	}
	return sharedEmu
}

// EmulatorHTTPClient returns an HTTP client that sends every connection, whatever host the
// URL names, to the emulator's HTTPS port and trusts the emulator's CA. Clients keep the real
// host names (https://hub1.azure-devices.net/...), as they would against Azure. It satisfies
// azcore's policy.Transporter, so it can be an SDK client's ClientOptions.Transport.
func EmulatorHTTPClient(e *emulator.Emulator) *http.Client {
	return EmulatorHTTPClientWithCert(e, nil)
}

// EmulatorHTTPClientWithCert is [EmulatorHTTPClient] presenting cert as the TLS client
// certificate (an X.509 device registering with DPS).
func EmulatorHTTPClientWithCert(e *emulator.Emulator, cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CACertPEM())
	addr := e.Info().Addr
	d := &net.Dialer{Timeout: 10 * time.Second}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     cfg,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// LoopbackTransport is the transport the app builds in emulator mode (azure/loopback, from
// EMULATOR_ADDRESS and EMULATOR_CA_FILE) for e: tests that pass it to the SDK clients run
// the connection path production runs against the emulator.
func LoopbackTransport(tb testing.TB, e *emulator.Emulator) *http.Client {
	tb.Helper()
	info := e.Info()
	ca, err := os.ReadFile(info.CAFile)
	if err != nil {
		tb.Fatalf("reading the emulator's CA: %v", err)
	}
	tr, err := loopback.NewClient(info.Addr, ca)
	if err != nil {
		tb.Fatalf("building the loopback transport: %v", err)
	}
	return tr
}

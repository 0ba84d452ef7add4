// Package apptest runs the packaged app for end-to-end tests as the Functions host would: the
// real handler binary behind devhost, over Azurite and the emulator. It is apart from
// testenv because devhost's own tests use testenv.
package apptest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"dpsdeprov/devhost"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// Settings are the app settings that point the handler at az and the emulator described by
// info, with the journal's tables under prefix and the Cleanup timer once a year, so that
// only a test's own events act. Tests add theirs, or replace these, in the map.
func Settings(az *testenv.Azurite, info emulator.Info, prefix string) map[string]string {
	s := map[string]string{
		"AzureWebJobsStorage":   az.ConnectionString(),
		"JOURNAL_TABLE_PREFIX":  prefix,
		"DPS_CONNECTION_STRING": info.DPS.ConnectionString,
		"CLEANUP_SCHEDULE":      "0 0 0 1 1 *",
		"EMULATOR_ADDRESS":      info.Addr,
		"EMULATOR_CA_FILE":      info.CAFile,
	}
	for i, h := range info.Hubs {
		s[fmt.Sprintf("IOT_HUB_CONNECTION_STRING_%d", i)] = h.ConnectionString
	}
	return s
}

// Start runs the app whose host.json and function folders are in root under devhost, with
// handlerBin as its custom handler and settings as its app settings; auth, when not nil,
// fronts it as App Service authentication does. The host stops when the test ends, and a
// failed test logs the end of what devhost and the handler wrote (the returned Output).
func Start(tb testing.TB, root, handlerBin string, settings map[string]string, auth *devhost.AuthOptions) (*devhost.Host, *testenv.Output) {
	tb.Helper()
	app, err := devhost.LoadApp(root)
	if err != nil {
		tb.Fatalf("loading the app in %s: %v", root, err)
	}
	app.Host.CustomHandler.Description.DefaultExecutablePath = handlerBin
	out := &testenv.Output{}
	host, err := devhost.Start(context.Background(), app, devhost.Options{Settings: settings, Addr: "127.0.0.1:0",
		HandlerOutput: out, Logger: slog.New(slog.NewTextHandler(out, nil)), Auth: auth})
	if err != nil {
		tb.Fatalf("starting devhost: %v", err)
	}
	tb.Cleanup(func() {
		_ = host.Close()
		if tb.Failed() {
			s := out.String()
			tb.Logf("devhost and handler log (its last 8,000 bytes):\n%s", s[max(0, len(s)-8000):])
		}
	})
	return host, out
}

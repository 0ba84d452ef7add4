package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildBinary builds the command once per test run, into a folder removed by TestMain.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binPath = filepath.Join(binDir, "iotemulator")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iotemulator-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// The start-up contract: once ready, one JSON line on stdout with the endpoints, id scope,
// connection strings and CA file; flags shape it; SIGTERM stops it.
func TestStartupContract(t *testing.T) {
	bin := buildBinary(t)
	certDir := t.TempDir()
	cmd := exec.CommandContext(testenv.Context(t), bin, "-dps", "mydps", "-id-scope", "0ne0000ABCD", "-hubs", "north, south",
		"-http-addr", "127.0.0.1:0", "-cert-dir", certDir, "-throttle", "100",
		"-fault", `{"op":"hub.devices.get","status":503,"count":1}`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the start-up line: %v", err)
	}
	var in emulator.Info
	if err := json.Unmarshal([]byte(line), &in); err != nil {
		t.Fatalf("start-up line is not Info JSON: %v: %s", err, line)
	}
	if in.DPS.Host != "mydps.azure-devices-provisioning.net" || in.DPS.IDScope != "0ne0000ABCD" ||
		!strings.Contains(in.DPS.ConnectionString, "SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=") ||
		len(in.Hubs) != 2 || in.Hubs[1].Host != "south.azure-devices.net" ||
		!strings.HasPrefix(in.Hubs[0].ConnectionString, "HostName=north.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=") ||
		in.Addr == "" || in.HTTPAddr == "" || in.CAFile != filepath.Join(certDir, "ca.pem") {
		t.Fatalf("info %+v", in)
	}
	if b, err := os.ReadFile(in.CAFile); err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
		t.Fatalf("CA file: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

func TestBadFlagsFailClearly(t *testing.T) {
	bin := buildBinary(t)
	for _, args := range [][]string{{"-hubs", "bad_name"}, {"-fault", `{"op":"x","status":200}`}, {"-log", "loud"}, {"-dps-throttle", "-1"}, {"-throttle-backlog", "-1s"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "iotemulator:") {
			t.Fatalf("%v: err %v, output %s", args, err, out)
		}
	}
}

package pack

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"dpsdeprov/config"
	"dpsdeprov/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// writeFiles creates files (path -> content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const toyHost = `{"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "bin/toy"}}}`

// toyMain answers GET / on FUNCTIONS_CUSTOMHANDLER_PORT, as the host expects of a handler.
const toyMain = `package main

import (
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("toy")) })
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT"), nil); err != nil {
		os.Exit(1)
	}
}
`

// toyApp is a small Functions app surrounded by files that must stay out of the package.
func toyApp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"go.mod":                  "module toy\n\ngo 1.22\n",
		"main.go":                 toyMain,
		"host.json":               toyHost,
		"Alpha/function.json":     `{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}, {"type": "http", "direction": "out", "name": "res"}]}`,
		"beta-2/function.json":    `{"bindings": [{"type": "queueTrigger", "direction": "in", "name": "msg", "queueName": "work", "connection": "AzureWebJobsStorage"}]}`,
		"Alpha/notes.txt":         "not part of the function",
		"function.json":           `{"bindings": []}`,
		"local.settings.json":     `{"Values": {"AzureWebJobsStorage": "secret"}}`,
		"docs/function.md":        "docs",
		"node_modules/x/index.js": "x",
		"internal/lib/lib.go":     "package lib\n",
	})
	return dir
}

// readZip returns the entries of a zip by name, in order.
func readZip(t *testing.T, path string) (*zip.ReadCloser, []string) {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatalf("opening the package: %v", err)
	}
	t.Cleanup(func() { zr.Close() })
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	return zr, names
}

func entry(t *testing.T, zr *zip.ReadCloser, name string) (*zip.File, []byte) {
	t.Helper()
	for _, f := range zr.File {
		if f.Name == name {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			return f, b
		}
	}
	t.Fatalf("the package has no %s", name)
	return nil, nil
}

// checkBinary asserts the packaged binary is an executable, static Linux amd64 ELF file.
func checkBinary(t *testing.T, f *zip.File, b []byte) {
	t.Helper()
	if m := f.Mode(); m.Perm()&0o111 == 0 || !m.IsRegular() {
		t.Errorf("%s has mode %v in the zip; the host needs it executable", f.Name, m)
	}
	ef, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s is not an ELF binary: %v", f.Name, err)
	}
	if ef.Machine != elf.EM_X86_64 || ef.Class != elf.ELFCLASS64 {
		t.Errorf("%s is built for %v %v, want x86-64", f.Name, ef.Machine, ef.Class)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked (it has an interpreter); build it with CGO_ENABLED=0", f.Name)
		}
	}
}

func TestBuildPackagesOnlyWhatTheHostNeeds(t *testing.T) {
	root := toyApp(t)
	out := filepath.Join(t.TempDir(), "dist", "app.zip")
	res, err := Build(context.Background(), Options{Root: root, Output: out})
	if err != nil {
		t.Fatal(err)
	}
	zr, names := readZip(t, out)
	want := []string{"host.json", "Alpha/function.json", "beta-2/function.json", "bin/toy"}
	if !slices.Equal(names, want) || !slices.Equal(res.Entries, want) {
		t.Fatalf("package entries = %q (reported %q), want exactly %q", names, res.Entries, want)
	}
	if _, b := entry(t, zr, "host.json"); string(b) != toyHost {
		t.Errorf("host.json in the package differs from the app's: %s", b)
	}
	f, b := entry(t, zr, "bin/toy")
	checkBinary(t, f, b)
	if st, _ := os.Stat(out); res.Size != st.Size() {
		t.Errorf("Result.Size = %d, file has %d bytes", res.Size, st.Size())
	}

	// The same inputs give the same bytes, so a rebuilt package is recognisably the same.
	again := filepath.Join(t.TempDir(), "again.zip")
	if _, err := Build(context.Background(), Options{Root: root, Output: again}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b2, _ := os.ReadFile(again)
	if !bytes.Equal(a, b2) {
		t.Error("two builds of the same app differ")
	}

	// Unpacked as the host does, the binary starts and answers the host's probe.
	dir := unzip(t, zr)
	startAndProbe(t, filepath.Join(dir, "bin", "toy"), nil)
}

func TestBuildReportsCompileErrors(t *testing.T) {
	root := toyApp(t)
	writeFiles(t, root, map[string]string{"main.go": "package main\n\nfunc main() { undefined() }\n"})
	out := filepath.Join(t.TempDir(), "app.zip")
	_, err := Build(context.Background(), Options{Root: root, Output: out})
	if err == nil || !strings.Contains(err.Error(), "undefined") || !strings.Contains(err.Error(), "linux/amd64") {
		t.Fatalf("Build of a broken handler: err = %v, want the compiler's message and the target", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed build left %s behind", out)
	}
}

func TestReadAppRejectsWhatTheHostWouldReject(t *testing.T) {
	fn := `{"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 * * * * *"}]}`
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no host.json", map[string]string{"F/function.json": fn}, "host configuration"},
		{"version 1", map[string]string{"host.json": `{"version": "1.0", "customHandler": {"description": {"defaultExecutablePath": "h"}}}`, "F/function.json": fn}, `requires "2.0"`},
		{"not a custom handler", map[string]string{"host.json": `{"version": "2.0"}`, "F/function.json": fn}, "defaultExecutablePath is not set"},
		{"binary outside the root", map[string]string{"host.json": `{"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "../h"}}}`, "F/function.json": fn}, "inside the app root"},
		{"absolute binary", map[string]string{"host.json": `{"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "/usr/bin/h"}}}`, "F/function.json": fn}, "inside the app root"},
		{"binary named like a function", map[string]string{"host.json": `{"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "F"}}}`, "F/function.json": fn}, "collides"},
		{"no function", map[string]string{"host.json": toyHost, "function.json": fn}, "no function folder"},
		{"two triggers", map[string]string{"host.json": toyHost, "F/function.json": `{"bindings": [{"type": "timerTrigger", "name": "a"}, {"type": "queueTrigger", "name": "b"}]}`}, "2 trigger bindings"},
		{"no trigger", map[string]string{"host.json": toyHost, "F/function.json": `{"bindings": [{"type": "http", "direction": "out", "name": "res"}]}`}, "0 trigger bindings"},
		{"bad folder name", map[string]string{"host.json": toyHost, "1F/function.json": fn}, "not a valid function name"},
		{"malformed function.json", map[string]string{"host.json": toyHost, "F/function.json": `{"bindings": [`}, "parsing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, c.files)
			_, err := ReadApp(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadApp: err = %v, want one saying %q", err, c.want)
			}
		})
	}
}

// TestPackageOfThisApp builds the real deployment package and starts its handler the way the
// host does, with the smallest settings it accepts (docs/app.md): storage on Azurite, DPS
// and hubs on the emulator.
func TestPackageOfThisApp(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	app, err := ReadApp(root)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "dpsdeprov.zip")
	if _, err := Build(context.Background(), Options{Root: root, Output: out}); err != nil {
		t.Fatal(err)
	}
	zr, names := readZip(t, out)
	want := []string{HostFile}
	for _, f := range app.Functions {
		want = append(want, f.Name+"/"+FunctionFile)
	}
	want = append(want, app.Executable)
	if !slices.Equal(names, want) {
		t.Fatalf("package entries = %q, want exactly %q", names, want)
	}
	for _, name := range want[:len(want)-1] {
		_, b := entry(t, zr, name)
		orig, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(b, orig) {
			t.Errorf("%s in the package differs from the repository's (%v)", name, err)
		}
	}
	f, b := entry(t, zr, app.Executable)
	checkBinary(t, f, b)

	az := testenv.SharedAzurite(t)
	emu := testenv.SharedEmulator(t)
	ca := filepath.Join(t.TempDir(), "emulator-ca.pem")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := unzip(t, zr)
	startAndProbe(t, filepath.Join(dir, filepath.FromSlash(app.Executable)), []string{
		config.SettingStorage + "=" + az.ConnectionString(),
		config.SettingJournalPrefix + "=" + testenv.UniqueName("pack"),
		config.SettingDPSEndpoint + "=https://dps.azure-devices-provisioning.net",
		config.SettingHubs + "=hub1.azure-devices.net",
		config.SettingCleanupSchedule + "=0 */5 * * * *",
		config.SettingEmulatorAddress + "=" + emu.Info().Addr,
		config.SettingEmulatorCAFile + "=" + ca,
	})
}

// unzip extracts the package the way the host's deployment does, keeping file modes.
func unzip(t *testing.T, zr *zip.ReadCloser) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range zr.File {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, f.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startAndProbe runs the binary as the host does (working directory = app root,
// FUNCTIONS_CUSTOMHANDLER_PORT set) and waits until GET / answers 200. A binary that exits
// first fails the test with its output.
func startAndProbe(t *testing.T, bin string, env []string) {
	t.Helper()
	if runtime.GOOS != TargetOS || runtime.GOARCH != TargetArch {
		t.Skipf("the package holds a %s/%s binary, which cannot run on this %s/%s machine", TargetOS, TargetArch, runtime.GOOS, runtime.GOARCH)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = filepath.Dir(bin)
	// Only what the host would pass: no developer credentials or settings leak in from the
	// test's own environment.
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port)}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var output testenv.Output
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the packaged handler: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{Timeout: 5 * time.Second}
	// The host probes until the handler answers; so do we, until the process exits. Only the
	// test's own deadline ends the wait, so a slow machine cannot fail it.
	stopBefore, hasDeadline := t.Deadline()
	for {
		select {
		case err := <-exited:
			t.Fatalf("the packaged handler exited before answering GET / (%v):\n%s", err, output.String())
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET / answered %s, want 200", resp.Status)
			}
			return
		}
		if hasDeadline && time.Until(stopBefore) < 10*time.Second {
			t.Fatalf("the packaged handler never answered GET /: %v\n%s", err, output.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

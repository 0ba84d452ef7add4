package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dpsdeprov/config/configtest"
	"dpsdeprov/internal/testenv"
)

// handlerBin is the handler binary, built once for the package's tests.
var handlerBin string

// TestMain builds the real handler binary, runs the tests, then stops what they started.
// (It does the work of testenv.Main itself so that the build folder is removed too.)
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "handler-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	handlerBin = filepath.Join(dir, "handler")
	build := exec.Command("go", "build", "-o", handlerBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building the handler: %v\n", err)
	} else {
		code = m.Run()
	}
	stopAzurite()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var (
	azuriteOnce sync.Once
	azurite     *testenv.Azurite
	azuriteErr  error
)

// sharedAzurite starts one Azurite for the package's tests; TestMain stops it.
func sharedAzurite(t *testing.T) *testenv.Azurite {
	t.Helper()
	azuriteOnce.Do(func() { azurite, azuriteErr = testenv.StartAzurite(context.Background()) })
	if azuriteErr != nil {
		t.Fatalf("starting Azurite: %v", azuriteErr)
	}
	return azurite
}

func stopAzurite() {
	if azurite != nil {
		azurite.Stop()
	}
}

// baseEnv is what a process needs besides the app settings.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Each setting missing or malformed stops the real binary before it listens, with a message
// naming the setting (and never a secret).
func TestStartupFailsNamingTheSetting(t *testing.T) {
	for _, c := range append(configtest.BadSettingCases(), configtest.BuiltSettingCases()...) {
		t.Run(c.Name, func(t *testing.T) {
			settings := configtest.Valid()
			c.Apply(settings)
			cmd := exec.Command(handlerBin)
			cmd.Dir = t.TempDir()
			cmd.Env = baseEnv()
			for k, v := range settings {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			var stderr testenv.Output
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(testenv.HungAfter):
				_ = cmd.Process.Kill()
				t.Fatalf("the handler kept running with a bad %s; stderr: %s", c.Setting, stderr.String())
			}
			if err == nil {
				t.Fatalf("exited 0; stderr: %s", stderr.String())
			}
			if !strings.Contains(stderr.String(), "setting "+c.Setting) {
				t.Fatalf("stderr does not name %s:\n%s", c.Setting, stderr.String())
			}
			if strings.Contains(stderr.String(), "c2VjcmV0") {
				t.Fatalf("a key reached stderr:\n%s", stderr.String())
			}
		})
	}
}

// proc is a running handler binary.
type proc struct {
	url     string
	cmd     *exec.Cmd
	out     testenv.Output
	done    chan struct{}
	exitErr error
}

func (p *proc) log() string { return p.out.String() }

// startHandler runs the binary with settings as the host would (port in
// FUNCTIONS_CUSTOMHANDLER_PORT, app settings in the environment) and polls GET / as the host
// does until it answers.
func startHandler(t *testing.T, settings map[string]string) *proc {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{url: "http://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	p.cmd = exec.Command(handlerBin)
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = append(baseEnv(), "FUNCTIONS_CUSTOMHANDLER_PORT="+strconv.Itoa(port), "FUNCTIONS_CUSTOMHANDLER_WORKER_ID=test-worker", "FUNCTIONS_APP_ROOT_PATH="+p.cmd.Dir)
	for k, v := range settings {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exitErr = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		// The host stops the handler with SIGTERM: it must finish and exit cleanly.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.exitErr != nil {
				t.Errorf("the handler did not exit cleanly on SIGTERM: %v", p.exitErr)
			}
		case <-time.After(testenv.HungAfter):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Errorf("the handler had not exited %v after SIGTERM", testenv.HungAfter)
		}
		if t.Failed() {
			t.Logf("handler log:\n%s", p.log())
		}
	})
	// The host waits 30 s (its InitializationTimeout) for GET / to answer; the handler answers
	// it before it wires anything. How long that takes on this machine is not the test's to
	// judge: it waits for the answer, or the process's exit.
	if testenv.UpOrExited(t, "the handler to answer GET /", p.done, testenv.AnswersGET(p.url+"/")) {
		t.Fatalf("the handler exited during start-up:\n%s", p.log())
	}
	return p
}

// hostResult is the handler's answer to an invocation.
type hostResult struct {
	Outputs     map[string]json.RawMessage
	Logs        []string
	ReturnValue json.RawMessage
}

var invocationSeq struct {
	sync.Mutex
	n int
}

// invoke posts an invocation body exactly as the host does (POST /{function}, JSON
// {"Data":…,"Metadata":…}, the invocation-id headers; docs/app.md) and checks what
// the host requires of the answer.
func (p *proc) invoke(t *testing.T, function string, body []byte) (int, hostResult) {
	t.Helper()
	invocationSeq.Lock()
	invocationSeq.n++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", invocationSeq.n)
	invocationSeq.Unlock()
	req, err := http.NewRequest(http.MethodPost, p.url+"/"+function, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", id)
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1037.0.0")
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1037.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("invoking %s: %v", function, err)
		return 0, hostResult{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "text/json") {
		t.Errorf("%s answered Content-Type %q: the host fails the invocation", function, ct)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		t.Errorf("%s answered an empty body: the host never completes the invocation", function)
	}
	var r hostResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Errorf("%s answered %s: %v", function, b, err)
	}
	return resp.StatusCode, r
}

// res decodes the Operations function's `res` output.
func (r hostResult) res(t *testing.T) (int, map[string]any) {
	t.Helper()
	var out struct {
		StatusCode int               `json:"statusCode"`
		Headers    map[string]string `json:"headers"`
		Body       string            `json:"body"`
	}
	if err := json.Unmarshal(r.Outputs["res"], &out); err != nil {
		t.Fatalf("res output %s: %v", r.Outputs["res"], err)
	}
	if !strings.HasPrefix(out.Headers["Content-Type"], "application/json") {
		t.Fatalf("res Content-Type %q", out.Headers["Content-Type"])
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(out.Body), &body); err != nil {
		t.Fatalf("res body %q: %v", out.Body, err)
	}
	return out.StatusCode, body
}

// fixture reads one of the handler's reference-shaped envelopes, with replacements applied.
func fixture(t *testing.T, name string, replace ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("handler", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.NewReplacer(replace...).Replace(string(b)))
}

// writePEM writes DER certificates as PEM to a file and returns its path.
func writePEM(t *testing.T, der ...[]byte) string {
	t.Helper()
	var buf bytes.Buffer
	for _, d := range der {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Settings that parse but name a storage account the handler cannot reach stop start-up too,
// naming the setting, within the host's start-up window.
func TestStartupFailsOnUnreachableStorage(t *testing.T) {
	port, err := testenv.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	listen, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	settings := configtest.Valid()
	settings["FUNCTIONS_CUSTOMHANDLER_PORT"] = strconv.Itoa(listen)
	settings["AzureWebJobsStorage"] = fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=%s;TableEndpoint=http://127.0.0.1:%d/devstoreaccount1;", testenv.AzuriteKey, port)
	cmd := exec.Command(handlerBin)
	cmd.Dir = t.TempDir()
	cmd.Env = baseEnv()
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("exited 0:\n%s", out)
	}
	if !strings.Contains(string(out), "setting AzureWebJobsStorage") || strings.Contains(string(out), testenv.AzuriteKey) {
		t.Fatalf("output does not name the setting, or shows the key:\n%s", out)
	}
}

package devhost

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"dpsdeprov/internal/testenv"
)

// The tests drive devhost against a real custom handler process: this test binary, started
// again by devhost with DEVHOST_TEST_HANDLER=1 (an app setting devhost passes on as environment,
// as the host does). It records every request it gets to a JSON-lines file and answers as a
// custom handler must, or as a test's script tells it to misbehave.
func TestMain(m *testing.M) {
	if os.Getenv("DEVHOST_TEST_HANDLER") == "1" {
		runTestHandler()
		return
	}
	testenv.Main(m)
}

// recorded is one request the test handler received.
type recorded struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
	// Env is set on the first line only: the environment the handler was started with.
	Env map[string]string `json:"env,omitempty"`
}

// answer is how the test handler answers the nth invocation of a function.
type answer struct {
	Status      int    `json:"status"`
	ContentType string `json:"contentType"`
	Body        string `json:"body"`
}

// script maps a function name to its answers; the last answer repeats. A key
// "<Function>:<substring>" applies to invocations whose body contains substring.
type script map[string][]answer

func runTestHandler() {
	rec := os.Getenv("DEVHOST_TEST_RECORD")
	var sc script
	_ = json.Unmarshal([]byte(os.Getenv("DEVHOST_TEST_SCRIPT")), &sc)
	var mu sync.Mutex
	counts := map[string]int{}
	write := func(r recorded) {
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(rec, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return
		}
		defer f.Close()
		b, _ := json.Marshal(r)
		_, _ = f.Write(append(b, '\n'))
	}
	env := map[string]string{}
	for _, k := range []string{"FUNCTIONS_CUSTOMHANDLER_PORT", "FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "FUNCTIONS_HTTPWORKER_PORT",
		"FUNCTIONS_HTTPWORKER_ID", "FUNCTIONS_APP_ROOT_PATH", "ORDERS_QUEUE", "WEBSITE_AUTH_ENABLED"} {
		env[k] = os.Getenv(k)
	}
	wd, _ := os.Getwd()
	env["cwd"] = wd
	write(recorded{Method: "START", Env: env})
	// DEVHOST_TEST_CONSOLE lists lines to write to stdout and stderr as the handler starts.
	var console struct{ Stdout, Stderr []string }
	_ = json.Unmarshal([]byte(os.Getenv("DEVHOST_TEST_CONSOLE")), &console)
	for _, l := range console.Stdout {
		fmt.Fprintln(os.Stdout, l)
	}
	for _, l := range console.Stderr {
		fmt.Fprintln(os.Stderr, l)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && r.Method == http.MethodGet {
			w.WriteHeader(http.StatusNotFound) // any answer means ready, a 404 included
			return
		}
		body, _ := io.ReadAll(r.Body)
		hdr := map[string]string{}
		for k, v := range r.Header {
			hdr[k] = strings.Join(v, ",")
		}
		rb := json.RawMessage(body)
		if !json.Valid(body) {
			rb, _ = json.Marshal(string(body))
		}
		write(recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Headers: hdr, Body: rb})
		fn := strings.TrimPrefix(r.URL.Path, "/")
		key := fn
		for k := range sc {
			if name, sub, ok := strings.Cut(k, ":"); ok && name == fn && strings.Contains(string(body), sub) {
				key = k
			}
		}
		mu.Lock()
		n := counts[key]
		counts[key]++
		mu.Unlock()
		a := answer{Status: 200, ContentType: "application/json", Body: `{"Outputs":{},"Logs":["handled ` + fn + `"],"ReturnValue":null}`}
		if as := sc[key]; len(as) > 0 {
			a = as[min(n, len(as)-1)]
		}
		if a.Status < 0 {
			os.Exit(3) // a crash, mid-invocation
		}
		if a.ContentType != "" {
			w.Header().Set("Content-Type", a.ContentType)
		} else {
			w.Header()["Content-Type"] = nil
		}
		w.WriteHeader(a.Status)
		_, _ = io.WriteString(w, a.Body)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT"), Handler: mux}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// testApp is an app folder whose handler is this test binary.
type testApp struct {
	dir    string
	record string
}

// newTestApp writes host.json (with extra host.json JSON merged at the top level) and the given
// functions (folder name → function.json text).
func newTestApp(t *testing.T, hostExtra string, functions map[string]string) *testApp {
	t.Helper()
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := `{"version":"2.0","functionTimeout":"00:01:00","customHandler":{"description":{"defaultExecutablePath":` +
		jsonString(exe) + `,"workingDirectory":"","arguments":[]},"enableForwardingHttpRequest":false}` + hostExtra + `}`
	writeFile(t, filepath.Join(dir, "host.json"), host)
	for name, fj := range functions {
		writeFile(t, filepath.Join(dir, name, "function.json"), fj)
	}
	return &testApp{dir: dir, record: filepath.Join(dir, "record.jsonl")}
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// settings returns the app settings that make the handler record to this app's file.
func (a *testApp) settings(sc script, extra map[string]string) map[string]string {
	b, _ := json.Marshal(sc)
	s := map[string]string{"DEVHOST_TEST_HANDLER": "1", "DEVHOST_TEST_RECORD": a.record, "DEVHOST_TEST_SCRIPT": string(b)}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

// requests reads what the handler recorded so far.
func (a *testApp) requests(t *testing.T) []recorded {
	t.Helper()
	f, err := os.Open(a.record)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []recorded
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var r recorded
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad record line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// invocations returns the recorded invocations of function fn.
func (a *testApp) invocations(t *testing.T, fn string) []recorded {
	var out []recorded
	for _, r := range a.requests(t) {
		if r.Method == http.MethodPost && r.Path == "/"+fn {
			out = append(out, r)
		}
	}
	return out
}

// waitInvocations waits until fn has at least n recorded invocations. The wait bound is only a
// guard against a hang, not a speed assertion.
func (a *testApp) waitInvocations(t *testing.T, fn string, n int) []recorded {
	t.Helper()
	var got []recorded
	testenv.Eventually(t, fmt.Sprintf("%d invocations of %s", n, fn), func() bool {
		got = a.invocations(t, fn)
		return len(got) >= n
	})
	return got
}

// waitFor polls cond until it holds (guarding against a hang only).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, what, cond)
}

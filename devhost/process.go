package devhost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// worker is the running handler process: one per host, started with the port in
// FUNCTIONS_CUSTOMHANDLER_PORT, restarted when it exits.
type worker struct {
	h *Host
	// fixedPort is customHandler.port from host.json; 0 means a free port for every start, as
	// the host picks one (a port reused across restarts can be taken in between).
	fixedPort int
	port      int // the running handler's, guarded by mu
	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	// ready is closed once the running handler answered GET /; a new one is made for every
	// start. Invocations wait on it, as the host dispatches nothing to a worker not yet ready.
	ready   chan struct{}
	stopped bool
	crashes []time.Time
}

func (w *worker) currentPort() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.port
}

// exitState describes how the current handler process ended, for error messages.
func (w *worker) exitState() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil || w.cmd.ProcessState == nil {
		return "no exit status"
	}
	return w.cmd.ProcessState.String()
}

func (w *worker) baseURL() string { return "http://127.0.0.1:" + strconv.Itoa(w.currentPort()) }

// executable resolves defaultExecutablePath as the host does: a relative path that names a file
// under the app root is taken from there; anything else is looked up on PATH.
func executable(app *App, settings map[string]string) (path string, args []string, dir string, err error) {
	d := app.Host.CustomHandler.Description
	path = d.DefaultExecutablePath
	if !filepath.IsAbs(path) {
		if st, statErr := os.Stat(filepath.Join(app.Root, path)); statErr == nil && st.Mode().IsRegular() {
			path = filepath.Join(app.Root, path)
		} else if lp, lookErr := exec.LookPath(path); lookErr == nil {
			path = lp
		} else if statErr == nil {
			return "", nil, "", fmt.Errorf("handler executable %q (host.json customHandler.description.defaultExecutablePath) is a folder under the app root, not a program; build the handler into an app folder where that name is free", d.DefaultExecutablePath)
		} else {
			return "", nil, "", fmt.Errorf("handler executable %q (host.json customHandler.description.defaultExecutablePath) is neither under the app root nor on PATH; build it first", d.DefaultExecutablePath)
		}
	}
	for _, a := range d.Arguments {
		args = append(args, expandPercent(a, settings))
	}
	dir = app.Root
	if d.WorkingDirectory != "" {
		dir = d.WorkingDirectory
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(app.Root, dir)
		}
	}
	return path, args, dir, nil
}

var percentRE = regexp.MustCompile(`%([^%]+)%`)

// expandPercent mimics Environment.ExpandEnvironmentVariables: %NAME% is replaced when NAME is
// set (app settings first, then the environment) and left as it is otherwise.
func expandPercent(s string, settings map[string]string) string {
	return percentRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[1 : len(m)-1]
		if v, ok := settings[name]; ok {
			return v
		}
		if v, ok := os.LookupEnv(name); ok {
			return v
		}
		return m
	})
}

// start launches the handler with the host's environment and waits until GET / answers.
func (w *worker) start(ctx context.Context) error {
	h := w.h
	path, args, dir, err := executable(h.app, h.settings)
	if err != nil {
		return err
	}
	workerID := newGUID()
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = nil
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, settingAuthEnabled+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range h.settings {
		if k != settingAuthEnabled {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Env = append(cmd.Env, h.handlerAuthEnv()...)
	portNum := w.fixedPort
	if portNum == 0 {
		if portNum, err = freePort(); err != nil {
			return err
		}
	}
	ready := make(chan struct{})
	w.mu.Lock()
	w.port = portNum
	w.ready = ready
	w.mu.Unlock()
	port := strconv.Itoa(portNum)
	cmd.Env = append(cmd.Env,
		"FUNCTIONS_CUSTOMHANDLER_PORT="+port,
		"FUNCTIONS_CUSTOMHANDLER_WORKER_ID="+workerID,
		"FUNCTIONS_HTTPWORKER_PORT="+port,
		"FUNCTIONS_HTTPWORKER_ID="+workerID,
		"FUNCTIONS_APP_ROOT_PATH="+h.app.Root,
	)
	var consoles []*console
	if out := h.handlerOutput; out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	} else {
		// As the host does: each line is logged at the level its stream and text give it.
		stdout, stderr := &console{log: h.log}, &console{log: h.log, stderr: true}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		consoles = []*console{stdout, stderr}
	}
	// Its own process group, so that stopping devhost stops whatever the handler started, and
	// killed with devhost if devhost dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting handler %s: %w", path, err)
	}
	exited := make(chan struct{})
	w.mu.Lock()
	w.cmd, w.exited = cmd, exited
	w.mu.Unlock()
	go func() {
		err := cmd.Wait()
		for _, c := range consoles {
			c.flush()
		}
		close(exited)
		w.onExit(err)
	}()
	if err := w.waitReady(ctx, exited); err != nil {
		return err
	}
	close(ready)
	return nil
}

// awaitReady waits until the current handler answered GET /, the host failed, or ctx ends.
// A handler restarting after a crash gets its invocations once it is up again.
func (w *worker) awaitReady(ctx context.Context) error {
	w.mu.Lock()
	ready := w.ready
	w.mu.Unlock()
	if ready == nil {
		return errors.New("the handler has not been started")
	}
	select {
	case <-ready:
		return nil
	case <-w.h.failed:
		return fmt.Errorf("the host stopped: %w", w.h.Err())
	case <-ctx.Done():
		return fmt.Errorf("waiting for the handler to be ready: %w", ctx.Err())
	}
}

// waitReady polls GET / every 25 ms until any HTTP answer (a 404 counts), as the host's
// IsWorkerReady does, within customHandler.initializationTimeout (default 30 s).
func (w *worker) waitReady(ctx context.Context, exited chan struct{}) error {
	deadline := time.Now().Add(w.h.initTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.baseURL()+"/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) && ctx.Err() == nil {
			// Not a socket error: something answered, just not HTTP; keep waiting like the host.
			w.h.log.Debug("handler not ready", "err", err)
		}
		select {
		case <-exited:
			return fmt.Errorf("handler exited before it answered GET / on port %d (%s)", w.currentPort(), w.exitState())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("handler did not answer GET / on port %d within %s", w.currentPort(), w.h.initTimeout)
		}
	}
}

// onExit restarts a handler that exited while devhost runs, as the host does, and gives up after
// three exits within 30 minutes (HttpFunctionInvocationDispatcher's thresholds).
func (w *worker) onExit(err error) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	now := time.Now()
	var recent []time.Time
	for _, t := range w.crashes {
		if now.Sub(t) < 30*time.Minute {
			recent = append(recent, t)
		}
	}
	w.crashes = append(recent, now)
	n := len(w.crashes)
	w.mu.Unlock()
	w.h.log.Error("handler exited", "err", err, "exitsIn30m", n)
	if n >= 3 {
		w.h.fail(fmt.Errorf("handler exited %d times within 30 minutes; the host stops here too (last: %v)", n, err))
		return
	}
	if startErr := w.start(w.h.ctx); startErr != nil {
		w.h.fail(fmt.Errorf("restarting handler: %w", startErr))
	}
}

// stop ends the handler's process group: SIGTERM, then SIGKILL after five seconds.
func (w *worker) stop() {
	w.mu.Lock()
	w.stopped = true
	cmd, exited := w.cmd, w.exited
	w.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

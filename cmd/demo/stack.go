package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"dpsdeprov/config"
	"dpsdeprov/emulator"
)

// proc is a child process in its own process group, so that stopping it stops whatever it
// started; it is killed with the demo if the demo dies.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs a command with its stdout and stderr appended to logFile.
func start(name, logFile string, env []string, bin string, args ...string) (*proc, io.ReadCloser, error) {
	return startIn("", name, logFile, env, bin, args...)
}

// drainTo appends what r gives to the file name until r ends, so that a process whose
// standard output nobody reads never blocks on a full pipe.
func drainTo(r io.Reader, name string) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		_, _ = io.Copy(io.Discard, r)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, r)
}

// startIn is start in the working folder dir.
func startIn(dir, name, logFile string, env []string, bin string, args ...string) (*proc, io.ReadCloser, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = f
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, stdout, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after five seconds.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// firstLine reads the first stdout line of a process that announces readiness with one JSON
// line, and keeps draining the rest into the log.
func firstLine(ctx context.Context, p *proc, stdout io.Reader, logFile string, v any) error {
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		if sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-lines:
		if err := json.Unmarshal([]byte(l), v); err != nil {
			return fmt.Errorf("%s printed %q, not its ready line: %w", p.name, l, err)
		}
		return nil
	case <-p.done:
		return fmt.Errorf("%s exited before it was ready; see %s", p.name, logFile)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(90 * time.Second):
		return fmt.Errorf("%s was not ready within 90s; see %s", p.name, logFile)
	}
}

// stack is Azurite, the emulator and devhost with the handler, started by the demo.
type stack struct {
	dir, bin, app string
	mu            sync.Mutex
	procs         []*proc

	storage   string // Azurite connection string
	emu       emulator.Info
	devhost   devhostInfo
	topicKey  string
	egPort    int
	outcomes  string
	retryScal float64
	// queueVisibility, if set, replaces host.json's extensions.queues.visibilityTimeout in the
	// staged app (tests use it to reach the poison queue without waiting 30 s per retry).
	queueVisibility string
	// hubs, emuArgs and settings, if set, replace the emulator's two hubs, add emulator flags
	// and add or override handler settings (the benchmark: four throttled hubs).
	hubs     string
	emuArgs  []string
	settings map[string]string
}

// demoThrottle is each emulated hub's identity-registry budget in the demo, operations a
// minute: an S3 unit's 5,000 scaled up a little, so the demo's thousand-member group shows the
// rate limiter at work and still finishes in seconds. The benchmark sets its own.
const demoThrottle = 6000

// demoDPSThrottle is the emulated DPS instance's budgets of service operations and of device
// registrations, a minute each, in the demo and the benchmark: the documented numbers
// (includes/iot-dps-limits.md, "1,000/min/service" for both), so that both run against the
// limits a real instance has.
var demoDPSThrottle = strconv.Itoa(emulator.DPSDocumentedPerMinute)

// devhostInfo is the part of cmd/devhost's ready line and info file the demo reads.
type devhostInfo struct {
	URL          string            `json:"url"`
	EventGridURL string            `json:"eventGridUrl"`
	Topics       map[string]string `json:"topics"`
	Key          string            `json:"key"`
	CAFile       string            `json:"caFile"`
}

// Azurite's public development account (documented by Microsoft; works only against Azurite).
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitPort(ctx context.Context, p *proc, port int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it opened port %d", p.name, port)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not open port %d within 60s", p.name, port)
		}
	}
}

func (s *stack) add(p *proc) {
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
}

// stop stops every process the stack started, the last started first.
func (s *stack) stop() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

// up starts Azurite (in memory, telemetry off), the emulator, and devhost running the staged
// app, each in its own process group, logging to files in the state folder.
func (s *stack) up(ctx context.Context, root string) error {
	if err := stageApp(root, s.app, filepath.Join(s.bin, "handler")); err != nil {
		return err
	}
	if s.queueVisibility != "" {
		if err := patchQueueVisibility(filepath.Join(s.app, "host.json"), s.queueVisibility); err != nil {
			return err
		}
	}
	// Azurite.
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	azDir := filepath.Join(s.dir, "azurite")
	if err := os.MkdirAll(azDir, 0o755); err != nil {
		return err
	}
	// Each Storage service in its own Azurite process, as Azure runs Table and Queue Storage
	// as services of their own: one Node process serving all three spends a whole core (its
	// one JavaScript thread) on a burst's journal writes and queue messages together, and
	// was the benchmark's bottleneck.
	for i, svc := range []string{"blob", "queue", "table"} {
		bin, err := filepath.Abs(filepath.Join(root, "node_modules", ".bin", "azurite-"+svc))
		if err != nil {
			return err
		}
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("azurite is not installed (run `npm ci`; make demo does): %w", err)
		}
		// Azurite writes its debug files to its working folder.
		dir := filepath.Join(azDir, svc)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		logFile := filepath.Join(s.dir, "azurite-"+svc+".log")
		az, out, err := startIn(dir, "azurite-"+svc, logFile, nil, bin,
			"--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
			"--"+svc+"Host", "127.0.0.1", "--"+svc+"Port", strconv.Itoa(ports[i]))
		if err != nil {
			return err
		}
		s.add(az)
		go drainTo(out, logFile)
		if err := waitPort(ctx, az, ports[i]); err != nil {
			return err
		}
	}
	s.storage = fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%d/%s;QueueEndpoint=http://127.0.0.1:%d/%s;TableEndpoint=http://127.0.0.1:%d/%s;",
		azuriteAccount, azuriteKey, ports[0], azuriteAccount, ports[1], azuriteAccount, ports[2], azuriteAccount)

	// The emulator: DPS and two hubs.
	emuLog := filepath.Join(s.dir, "emulator.log")
	hubs := s.hubs
	if hubs == "" {
		hubs = "hub1,hub2"
	}
	emu, out, err := start("iotemulator", emuLog, nil, filepath.Join(s.bin, "iotemulator"),
		append([]string{"-hubs", hubs, "-cert-dir", filepath.Join(s.dir, "emulator"), "-log", "warn", "-throttle", strconv.Itoa(demoThrottle),
			"-dps-throttle", demoDPSThrottle, "-dps-registration-throttle", demoDPSThrottle}, s.emuArgs...)...)
	if err != nil {
		return err
	}
	s.add(emu)
	if err := firstLine(ctx, emu, out, emuLog, &s.emu); err != nil {
		return err
	}

	// devhost and the handler. The outcome topic's endpoint and key must be in the handler's
	// settings before devhost starts it, so the demo picks the port and the key.
	if s.egPort, err = freePort(); err != nil {
		return err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s.topicKey = base64.StdEncoding.EncodeToString(key)
	s.outcomes = fmt.Sprintf("https://127.0.0.1:%d/topics/outcomes/api/events", s.egPort)
	settings := map[string]string{
		config.SettingStorage:               s.storage,
		config.SettingDPSConnection:         s.emu.DPS.ConnectionString,
		config.SettingCleanupSchedule:       "0 */1 * * * *",
		config.SettingEmulatorAddress:       s.emu.Addr,
		config.SettingEmulatorCAFile:        s.emu.CAFile,
		config.SettingOutcomeEndpoint:       s.outcomes,
		config.SettingOutcomeCAFile:         filepath.Join(s.dir, "eventgrid-ca.pem"),
		config.SettingOutcomeSource:         "/dpsdeprov/demo",
		config.SettingDryRun:                "false",
		config.SettingLogLevel:              "info",
		"ALLOWED_SOURCES_COMPROMISED":       sourceSecurity,
		"ALLOWED_SOURCES_GROUP_COMPROMISED": sourceSecurity,
	}
	for i, h := range s.emu.Hubs {
		settings[config.SettingHubConnection+strconv.Itoa(i)] = h.ConnectionString
	}
	// The handler's per-hub budget matches the emulator's throttle (demoThrottle), as it should
	// match the hubs' tier in Azure; the default (S1's 100 a minute) would take the demo's
	// thousand-member group five minutes.
	settings[config.SettingHubOpsPerMinute] = strconv.Itoa(demoThrottle)
	for k, v := range s.settings {
		settings[k] = v
	}
	addr, err := freePort()
	if err != nil {
		return err
	}
	// The settings go to devhost as a local.settings.json, as Core Tools reads them; it holds
	// connection strings of the local stand-ins and stays in the uncommitted state folder.
	settings[config.SettingOutcomeKey] = s.topicKey
	lsPath := filepath.Join(s.dir, "local.settings.json")
	ls, _ := json.MarshalIndent(map[string]any{"IsEncrypted": false, "Values": settings}, "", "  ")
	if err := os.WriteFile(lsPath, ls, 0o600); err != nil {
		return err
	}
	// The CA file is written by devhost before it starts the handler, so the handler can read it.
	if err := os.Remove(filepath.Join(s.dir, "eventgrid-ca.pem")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	env := []string{"DEVHOST_TOPIC_KEY=" + s.topicKey}
	dhLog := filepath.Join(s.dir, "devhost.log")
	args := []string{"serve", "-root", s.app, "-settings", lsPath, "-state-dir", s.dir,
		"-addr", "127.0.0.1:" + strconv.Itoa(addr), "-eventgrid-addr", "127.0.0.1:" + strconv.Itoa(s.egPort),
		"-retry-scale", strconv.FormatFloat(s.retryScal, 'f', -1, 64), "-handler-log", filepath.Join(s.dir, "handler.log")}
	dh, out, err := start("devhost", dhLog, env, filepath.Join(s.bin, "devhost"), args...)
	if err != nil {
		return err
	}
	s.add(dh)
	if err := firstLine(ctx, dh, out, dhLog, &s.devhost); err != nil {
		return err
	}
	s.devhost.Key = s.topicKey
	return nil
}

// stageApp lays the app out as the deployment package does: host.json, one folder per
// function with its function.json, and the handler binary at the root. (The repository root
// cannot be the app root locally: its handler/ source folder has the binary's name.)
func stageApp(root, app, handlerBin string) error {
	if err := os.RemoveAll(app); err != nil {
		return err
	}
	if err := os.MkdirAll(app, 0o755); err != nil {
		return err
	}
	copyFile := func(src, dst string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	}
	b, err := os.ReadFile(filepath.Join(root, "host.json"))
	if err != nil {
		return fmt.Errorf("reading host.json: %w", err)
	}
	var host struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
		} `json:"customHandler"`
	}
	if err := json.Unmarshal(b, &host); err != nil {
		return fmt.Errorf("parsing host.json: %w", err)
	}
	exe := host.CustomHandler.Description.DefaultExecutablePath
	if exe == "" || strings.ContainsAny(exe, `/\`) {
		return fmt.Errorf("host.json defaultExecutablePath %q: the demo expects a plain file name", exe)
	}
	if err := copyFile(filepath.Join(root, "host.json"), filepath.Join(app, "host.json")); err != nil {
		return err
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		fj := filepath.Join(root, e.Name(), "function.json")
		if _, err := os.Stat(fj); e.IsDir() && err == nil {
			if err := copyFile(fj, filepath.Join(app, e.Name(), "function.json")); err != nil {
				return err
			}
		}
	}
	hb, err := os.ReadFile(handlerBin)
	if err != nil {
		return fmt.Errorf("the handler binary is not built (make demo builds it): %w", err)
	}
	return os.WriteFile(filepath.Join(app, exe), hb, 0o755)
}

// exited is closed when any process of the stack exits.
func (s *stack) exited() <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		go func() {
			<-p.done
			once.Do(func() { close(ch) })
		}()
	}
	return ch
}

// patchQueueVisibility sets extensions.queues.visibilityTimeout in a staged host.json.
func patchQueueVisibility(path, v string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return err
	}
	ext, _ := doc["extensions"].(map[string]any)
	if ext == nil {
		ext = map[string]any{}
		doc["extensions"] = ext
	}
	q, _ := ext["queues"].(map[string]any)
	if q == nil {
		q = map[string]any{}
		ext["queues"] = q
	}
	q["visibilityTimeout"] = v
	out, _ := json.MarshalIndent(doc, "", "  ")
	return os.WriteFile(path, out, 0o644)
}

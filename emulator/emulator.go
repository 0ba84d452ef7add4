// Package emulator serves, from one process, the Azure IoT Hub Device Provisioning Service
// (DPS) service API (api-version 2021-10-01), the DPS device registration API, and the IoT
// Hub registry API (api-version 2021-04-12) of one or more hubs, closely enough that
// Microsoft's official SDKs drive it without noticing. State is kept in memory.
//
// Requests are routed by their Host header, so clients keep using the real host names
// (dps1.azure-devices-provisioning.net, hub1.azure-devices.net,
// global.azure-devices-provisioning.net) and only their TCP connections are redirected to
// the emulator's loopback port. The HTTPS listener uses a certificate issued by a CA
// generated at start; its PEM is written to [Info.CAFile].
//
// Test-only controls (faults, throttle, seeding, stats, reset) are methods on [Emulator] and
// also admin endpoints under /_emulator/ on any host; see docs/emulator.md.
package emulator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures an emulator. The zero value is usable.
type Options struct {
	// DPSName is the DPS instance name; its service host is DPSName + ".azure-devices-provisioning.net".
	// Default "dps1".
	DPSName string
	// IDScope is the DPS id scope devices register under. Default "0ne00000001".
	IDScope string
	// Hubs are the IoT hub names linked to the DPS; each is served at name + ".azure-devices.net".
	// Default ["hub1"].
	Hubs []string
	// ThrottlePerMinute is each hub's identity-registry budget in operations per minute
	// (every device of a bulk call counts). 0 means unlimited.
	ThrottlePerMinute int
	// QueryThrottlePerMinute is each hub's separate budget for /devices/query calls. 0 means unlimited.
	QueryThrottlePerMinute int
	// ThrottleBacklog is how long a hub holds a call that is over its budget before it
	// gives up on it (traffic shaping: the call is served late, at the budget's rate, and
	// answered 429 ThrottlingBacklogTimeout only when it would wait longer than this). 0
	// answers 429 ThrottlingException at once.
	ThrottleBacklog time.Duration
	// DPSOperationsPerMinute is the DPS instance's budget of service API operations (every
	// enrollment, group, registration-state and query call; every item of a bulk call), per
	// minute; DPS documents 1,000 (DPSDocumentedPerMinute). 0 means unlimited.
	DPSOperationsPerMinute int
	// DPSRegistrationsPerMinute is the DPS instance's separate budget of device
	// registrations (PUT …/register), per minute; DPS documents 1,000. 0 means unlimited.
	DPSRegistrationsPerMinute int
	// DPSBulkPerCall charges a bulk enrollment or group operation one operation of
	// DPSOperationsPerMinute whatever its items. Whether DPS counts a bulk call once or per
	// item is UNCONFIRMED: the default counts every item (never overstating capacity); this is
	// the other reading, for measuring what it would allow.
	DPSBulkPerCall bool
	// Latency is added to every request before it is handled.
	Latency time.Duration
	// Addr is the HTTPS listen address. Default "127.0.0.1:0".
	Addr string
	// HTTPAddr, when set, adds a plain HTTP listener (same routing). Use "127.0.0.1:0" for a free port.
	HTTPAddr string
	// CertDir is where ca.pem is written. Default: a temporary folder removed by Close.
	CertDir string
	// AcceptBearer makes both services also accept "Authorization: Bearer <JWT>" with the
	// audience https://iothubs.azure.net (hubs) or https://azure-devices-provisioning.net (DPS).
	AcceptBearer bool
	// BearerKey, when set, requires bearer JWTs to be HS256-signed with it; otherwise their
	// signature is not checked. See [TestBearerToken].
	BearerKey []byte
	// Logger receives one line per request (never a secret). Default: discard.
	Logger *slog.Logger
}

// Info is what a client needs to reach the emulator; cmd/iotemulator prints it as JSON.
type Info struct {
	Addr     string    `json:"addr"`               // HTTPS "127.0.0.1:port"
	HTTPAddr string    `json:"httpAddr,omitempty"` // plain HTTP, when enabled
	CAFile   string    `json:"caFile"`             // PEM of the CA that issued the server certificate
	DPS      DPSInfo   `json:"dps"`
	Hubs     []HubInfo `json:"hubs"`
}

// DPSInfo describes the emulated DPS instance.
type DPSInfo struct {
	Host             string `json:"host"`             // service API host, e.g. dps1.azure-devices-provisioning.net
	IDScope          string `json:"idScope"`          // id scope for device registration
	ConnectionString string `json:"connectionString"` // policy provisioningserviceowner
	DeviceHost       string `json:"deviceHost"`       // global.azure-devices-provisioning.net
}

// HubInfo describes one emulated IoT hub.
type HubInfo struct {
	Name             string `json:"name"`
	Host             string `json:"host"`
	ConnectionString string `json:"connectionString"` // policy iothubowner
}

// DPSDocumentedPerMinute is DPS's documented budget, per instance and minute, of service
// operations and, separately, of device registrations (includes/iot-dps-limits.md in
// MicrosoftDocs/azure-docs: "Operations 1,000/min/service", "Device registrations
// 1,000/min/service"). Demos and benchmarks set [Options.DPSOperationsPerMinute] and
// [Options.DPSRegistrationsPerMinute] to it.
const DPSDocumentedPerMinute = 1000

// Host names of the emulated services.
const (
	GlobalDeviceHost = "global.azure-devices-provisioning.net"
	dpsDomain        = ".azure-devices-provisioning.net"
	hubDomain        = ".azure-devices.net"
)

// Emulator is a running emulator. Its methods are safe for concurrent use.
type Emulator struct {
	opts    Options
	log     *slog.Logger
	dps     *dps
	hubs    map[string]*hub // by lower-case host; fixed after Start, so read without a lock
	hubList []*hub          // in option order, for hashed allocation
	faults  *faultSet
	stats   *statsSet
	ca      *TestCert
	caFile  string
	rmDir   string
	ln      net.Listener
	httpLn  net.Listener
	srv     *http.Server
	httpSrv *http.Server
	wg      sync.WaitGroup
	latency atomic.Int64 // time.Duration
	backlog atomic.Int64 // time.Duration, Options.ThrottleBacklog
}

// Start starts an emulator and returns once its listeners accept connections.
func Start(ctx context.Context, o Options) (*Emulator, error) {
	if o.DPSName == "" {
		o.DPSName = "dps1"
	}
	if o.IDScope == "" {
		o.IDScope = "0ne00000001"
	}
	if len(o.Hubs) == 0 {
		o.Hubs = []string{"hub1"}
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := validHostLabel(o.DPSName); err != nil {
		return nil, fmt.Errorf("DPS name: %w", err)
	}
	e := &Emulator{
		opts:   o,
		log:    o.Logger,
		hubs:   map[string]*hub{},
		faults: newFaultSet(),
		stats:  newStatsSet(),
	}
	e.latency.Store(int64(o.Latency))
	e.backlog.Store(int64(o.ThrottleBacklog))
	if o.ThrottleBacklog < 0 || o.DPSOperationsPerMinute < 0 || o.DPSRegistrationsPerMinute < 0 {
		return nil, fmt.Errorf("throttle settings must not be negative")
	}
	e.dps = newDPS(e, strings.ToLower(o.DPSName)+dpsDomain, o.IDScope)
	hosts := []string{e.dps.host, GlobalDeviceHost}
	for _, name := range o.Hubs {
		if err := validHostLabel(name); err != nil {
			return nil, fmt.Errorf("hub name: %w", err)
		}
		h := newHub(e, strings.ToLower(name), o.ThrottlePerMinute, o.QueryThrottlePerMinute)
		if _, dup := e.hubs[h.host]; dup {
			return nil, fmt.Errorf("hub %s is listed twice", name)
		}
		e.hubs[h.host] = h
		e.hubList = append(e.hubList, h)
		hosts = append(hosts, h.host)
	}

	ca, tlsCfg, err := serverTLS(hosts)
	if err != nil {
		return nil, fmt.Errorf("generating TLS certificates: %w", err)
	}
	e.ca = ca
	dir := o.CertDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "iotemulator-"); err != nil {
			return nil, err
		}
		e.rmDir = dir
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cert dir: %w", err)
	}
	e.caFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(e.caFile, ca.CertPEM, 0o644); err != nil {
		e.cleanupDir()
		return nil, fmt.Errorf("writing CA file: %w", err)
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", o.Addr)
	if err != nil {
		e.cleanupDir()
		return nil, fmt.Errorf("listening on %s: %w", o.Addr, err)
	}
	e.ln = ln
	e.srv = &http.Server{
		Handler:           e,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 30 * time.Second,
		// HTTP/1.1 only: the real services speak it to these clients, and connection-drop
		// faults rely on it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	e.wg.Add(1)
	go func() { defer e.wg.Done(); _ = e.srv.ServeTLS(ln, "", "") }()
	if o.HTTPAddr != "" {
		hl, err := lc.Listen(ctx, "tcp", o.HTTPAddr)
		if err != nil {
			_ = e.Close()
			return nil, fmt.Errorf("listening on %s: %w", o.HTTPAddr, err)
		}
		e.httpLn = hl
		e.httpSrv = &http.Server{Handler: e, ReadHeaderTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug)}
		e.wg.Add(1)
		go func() { defer e.wg.Done(); _ = e.httpSrv.Serve(hl) }()
	}
	return e, nil
}

func (e *Emulator) cleanupDir() {
	if e.rmDir != "" {
		_ = os.RemoveAll(e.rmDir)
	}
}

// Close stops the listeners, gives calls in progress a moment to finish, cuts off the rest,
// and removes the temporary CA folder.
func (e *Emulator) Close() error {
	// Short on purpose: http.Server.Shutdown waits up to 5s for connections that were opened
	// but never used (clients dial spares), and every test closes an emulator.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var errs []error
	for _, s := range []*http.Server{e.srv, e.httpSrv} {
		if s == nil {
			continue
		}
		if err := s.Shutdown(ctx); err != nil {
			// Calls still running (a slow fault, injected latency, idle spares) are cut off.
			errs = append(errs, s.Close())
		}
	}
	e.wg.Wait()
	e.cleanupDir()
	return errors.Join(errs...)
}

// Info returns the endpoints and connection strings of this emulator.
func (e *Emulator) Info() Info {
	in := Info{
		Addr:   e.ln.Addr().String(),
		CAFile: e.caFile,
		DPS: DPSInfo{
			Host:             e.dps.host,
			IDScope:          e.dps.idScope,
			ConnectionString: e.dps.connectionString("provisioningserviceowner"),
			DeviceHost:       GlobalDeviceHost,
		},
	}
	if e.httpLn != nil {
		in.HTTPAddr = e.httpLn.Addr().String()
	}
	for _, h := range e.hubList {
		in.Hubs = append(in.Hubs, HubInfo{Name: h.name, Host: h.host, ConnectionString: h.connectionString("iothubowner")})
	}
	return in
}

// CACertPEM returns the PEM of the CA that issued the emulator's server certificate.
func (e *Emulator) CACertPEM() []byte { return e.ca.CertPEM }

// HubConnectionString returns the connection string of a hub's shared access policy
// (iothubowner, service, registryRead, registryReadWrite), or "" if either is unknown.
func (e *Emulator) HubConnectionString(hubName, policy string) string {
	h := e.hubByName(hubName)
	if h == nil {
		return ""
	}
	return h.connectionString(policy)
}

// DPSConnectionString returns the connection string of a DPS shared access policy
// (provisioningserviceowner, enrollmentread), or "" if it is unknown.
func (e *Emulator) DPSConnectionString(policy string) string { return e.dps.connectionString(policy) }

// SetLatency changes the latency added to every request.
func (e *Emulator) SetLatency(d time.Duration) { e.latency.Store(int64(d)) }

func (e *Emulator) hubByName(name string) *hub {
	name = strings.ToLower(name)
	name = strings.TrimSuffix(name, hubDomain)
	return e.hubs[name+hubDomain]
}

func (e *Emulator) hubByHost(host string) *hub {
	return e.hubs[strings.ToLower(host)]
}

// ServeHTTP routes a request by its Host header.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_emulator/") {
		e.serveAdmin(w, r)
		return
	}
	if d := time.Duration(e.latency.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	rw := &statusWriter{ResponseWriter: w}
	var op, hubName string
	defer func() {
		if op != "" {
			e.stats.record(hubName, op, rw.status)
		}
	}()
	switch {
	case host == e.dps.host && !isDeviceAPIPath(r.URL.Path, e.dps.idScope):
		op = e.dps.serveService(rw, r)
	case host == GlobalDeviceHost || host == e.dps.host:
		if isRegisterCall(r) {
			// Device registrations have their own budget, apart from service operations
			// (iot-dps-limits.md: "Device registrations 1,000/min/service"); the polls of an
			// operation's status have a per-device limit that is not modelled.
			if wait := e.dps.regBucket.take(1); wait > 0 {
				op = "dps.device.register"
				e.dps.throttled(rw, wait, "device registrations are over the instance's %d a minute", e.dps.regBucket.limit())
				return
			}
			e.stats.chargeDPS(0, 1)
		}
		op = e.dps.serveDevice(rw, r)
	default:
		h := e.hubByHost(host)
		if h == nil {
			writeJSON(rw, http.StatusNotFound, map[string]string{"Message": "no emulated service answers for host " + host})
			return
		}
		hubName = h.name
		op = h.serve(rw, r)
	}
	e.log.Debug("request", "method", r.Method, "host", host, "path", r.URL.Path, "op", op, "status", rw.status)
}

// isRegisterCall reports whether r is a device registration (PUT
// /{idScope}/registrations/{id}/register).
func isRegisterCall(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasSuffix(strings.ToLower(strings.TrimSuffix(r.URL.Path, "/")), "/register")
}

// isDeviceAPIPath reports whether p is a device registration API path (/{idScope}/registrations/...).
func isDeviceAPIPath(p, idScope string) bool {
	first, rest, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return ok && strings.EqualFold(first, idScope) && len(rest) > len("registrations/") && strings.EqualFold(rest[:len("registrations/")], "registrations/")
}

// statusWriter remembers the status written, for stats.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// validHostLabel checks a DPS or hub name used as the first label of a host name.
func validHostLabel(s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("%q must be 1 to 63 characters", s)
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1
		if !ok {
			return fmt.Errorf("%q may hold only letters, digits and inner hyphens", s)
		}
	}
	return nil
}

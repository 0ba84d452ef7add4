package devhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a [Host]. The zero value of every field has a working default.
type Options struct {
	// Settings are the app settings: given to the handler as environment variables and used to
	// resolve %Setting% binding expressions and storage connections.
	Settings map[string]string
	// Addr is the host's listen address (webhooks, HTTP triggers); default 127.0.0.1:7071, and
	// "127.0.0.1:0" picks a free port.
	Addr string
	// EventGrid configures the Event Grid topic stand-in; nil means no topics.
	EventGrid *EventGridOptions
	// HostVersion is announced to the handler; default [DefaultHostVersion].
	HostVersion string
	// Logger receives devhost's log; default slog.Default().
	Logger *slog.Logger
	// HandlerOutput receives the handler's stdout and stderr as they are written. When it is
	// nil, each line is logged through Logger at the level the host gives it ([ConsoleLevel]:
	// stdout Information, stderr Error, or Warning when the line says "warn").
	HandlerOutput io.Writer
	// Disabled lists functions not to run (as the AzureWebJobs.<name>.Disabled setting does).
	Disabled []string
	// OnInvocation, if set, is called with every invocation just before it is sent; tests and
	// the demo's progress display use it. It must not block.
	OnInvocation func(*Invocation)
	// OnResult, if set, is called with the outcome of every invocation (err nil on success).
	OnResult func(inv *Invocation, err error)
	// Auth, if set, fronts the app as App Service authentication does (easyauth.go).
	Auth *AuthOptions
}

// Host is a running stand-in for the Functions host with its handler process.
type Host struct {
	app             *App
	settings        map[string]string
	log             *slog.Logger
	hostVersion     string
	handlerOutput   io.Writer
	functionTimeout time.Duration
	initTimeout     time.Duration
	client          *http.Client
	worker          *worker
	opts            Options

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	srv      *http.Server
	addr     string
	eg       *eventGrid
	failOnce sync.Once
	failErr  error
	failed   chan struct{}

	timersMu sync.Mutex
	timers   map[string]*timer
}

// Start loads nothing itself: it runs app (see [LoadApp]) with opts. It starts the handler and
// waits for it, opens the host's listener, starts the Event Grid stand-in, the timers and the
// queue listeners, and returns once all are running. Close stops everything.
func Start(ctx context.Context, app *App, opts Options) (*Host, error) {
	h := &Host{
		app:           app,
		settings:      opts.Settings,
		log:           opts.Logger,
		hostVersion:   opts.HostVersion,
		handlerOutput: opts.HandlerOutput,
		opts:          opts,
		failed:        make(chan struct{}),
	}
	if h.settings == nil {
		h.settings = map[string]string{}
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.hostVersion == "" {
		h.hostVersion = DefaultHostVersion
	}
	// Locally (not Consumption) the host's default functionTimeout is 30 minutes.
	h.functionTimeout = 30 * time.Minute
	if t := app.Host.FunctionTimeout; t != "" && t != "-1" {
		d, err := parseTimeSpan(t)
		if err != nil {
			return nil, fmt.Errorf("host.json functionTimeout: %w", err)
		}
		h.functionTimeout = d
	}
	h.initTimeout = 30 * time.Second
	if t := app.Host.CustomHandler.InitializationTimeout; t != "" {
		d, err := parseTimeSpan(t)
		if err != nil {
			return nil, fmt.Errorf("host.json customHandler.initializationTimeout: %w", err)
		}
		h.initTimeout = d
	}
	// The host's HttpClient waits functionTimeout plus a minute; the invocation context bounds
	// each call to functionTimeout.
	h.client = &http.Client{Timeout: h.functionTimeout + time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	for _, name := range opts.Disabled {
		if f := app.Function(name); f != nil {
			f.Disabled = true
		} else {
			return nil, fmt.Errorf("cannot disable function %q: the app has no such function", name)
		}
	}
	for _, f := range app.Functions {
		if v := h.settings["AzureWebJobs."+f.Name+".Disabled"]; strings.EqualFold(v, "true") || v == "1" {
			f.Disabled = true
		}
	}

	if opts.Auth != nil {
		if err := opts.Auth.check(); err != nil {
			return nil, fmt.Errorf("authentication front: %w", err)
		}
	}
	if _, set := h.settings[settingAuthEnabled]; set {
		h.log.Warn("ignoring app setting " + settingAuthEnabled + ": App Service sets it when its authentication fronts the app; devhost sets it when it does (Options.Auth)")
	}

	h.ctx, h.cancel = context.WithCancel(context.Background())
	if opts.EventGrid != nil {
		eg, err := newEventGrid(h, *opts.EventGrid)
		if err != nil {
			h.cancel()
			return nil, err
		}
		h.eg = eg
	}
	h.worker = &worker{h: h, fixedPort: app.Host.CustomHandler.Port}
	if err := h.worker.start(ctx); err != nil {
		h.Close()
		return nil, err
	}

	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:7071"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	h.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/runtime/webhooks/eventgrid", h.serveEventGridWebhook)
	mux.HandleFunc("/admin/functions/{name}", h.serveAdminInvoke)
	mux.HandleFunc("/admin/host/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"state": "Running", "version": h.hostVersion})
	})
	mux.HandleFunc("/", h.serveHTTPTrigger)
	h.srv = &http.Server{Handler: h.front(mux), ReadHeaderTimeout: 10 * time.Second}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.fail(fmt.Errorf("host listener: %w", err))
		}
	}()

	if h.eg != nil {
		if err := h.eg.serve(ctx); err != nil {
			h.Close()
			return nil, err
		}
	}
	for _, f := range app.Functions {
		if f.Disabled {
			h.log.Info("function disabled", "function", f.Name)
			continue
		}
		switch {
		case f.isTrigger(TypeTimerTrigger):
			if err := h.startTimer(f); err != nil {
				h.Close()
				return nil, err
			}
		case f.isTrigger(TypeQueueTrigger):
			if err := h.startQueueListener(ctx, f); err != nil {
				h.Close()
				return nil, err
			}
		}
	}
	h.log.Info("devhost running", "url", h.URL(), "functions", len(app.Functions), "handlerPort", h.worker.currentPort())
	return h, nil
}

// URL is the host's base URL (http://127.0.0.1:<port>), where the Event Grid webhook and the
// HTTP triggers are served.
func (h *Host) URL() string { return "http://" + h.addr }

// WebhookURL is the Event Grid webhook URL of a function, as a subscription would be given it.
func (h *Host) WebhookURL(function string) string {
	return h.URL() + "/runtime/webhooks/eventgrid?functionName=" + function
}

// App returns the app the host runs.
func (h *Host) App() *App { return h.app }

// Failed is closed when the host stopped on its own (the handler kept crashing, a listener
// failed); Err then says why.
func (h *Host) Failed() <-chan struct{} { return h.failed }

// Err is the reason the host failed, or nil.
func (h *Host) Err() error {
	select {
	case <-h.failed:
		return h.failErr
	default:
		return nil
	}
}

func (h *Host) fail(err error) {
	h.failOnce.Do(func() {
		h.failErr = err
		h.log.Error("devhost failed", "err", err)
		close(h.failed)
	})
}

// Close stops the timers, queue listeners, Event Grid deliveries, listeners and the handler, and
// waits for them.
func (h *Host) Close() error {
	if h.cancel != nil {
		h.cancel()
	}
	if h.eg != nil {
		h.eg.close()
	}
	if h.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = h.srv.Shutdown(sctx)
		cancel()
	}
	h.wg.Wait()
	if h.worker != nil {
		h.worker.stop()
	}
	return nil
}

func (h *Host) recordSent(inv *Invocation) {
	if h.opts.OnInvocation != nil {
		h.opts.OnInvocation(inv)
	}
}

func (h *Host) recordResult(inv *Invocation, err error) {
	if err != nil {
		h.log.Warn("invocation failed", "function", inv.Function, "invocationId", inv.ID, "err", err)
	} else {
		h.log.Debug("invocation succeeded", "function", inv.Function, "invocationId", inv.ID)
	}
	if h.opts.OnResult != nil {
		h.opts.OnResult(inv, err)
	}
}

// run sends an invocation, applies its output bindings, and reports the outcome.
func (h *Host) run(ctx context.Context, f *Function, inv *Invocation) (*Result, error) {
	res, err := h.send(ctx, inv)
	if err == nil {
		err = h.writeOutputs(ctx, f, res)
	}
	h.recordResult(inv, err)
	return res, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := marshalHost(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

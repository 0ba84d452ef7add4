// Command devhost runs a Functions app with a custom handler locally, as the Azure Functions host
// would, together with Event Grid topics that deliver to it; and publishes events to those
// topics. See docs/devhost.md.
//
//	devhost serve -root . -settings local.settings.json -state-dir .demo
//	devhost publish -type device-lost -subject devices/sensor-042 -data '{"registrationId":"sensor-042"}'
//	devhost received -topic outcomes
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"dpsdeprov/devhost"
)

// Info is what `devhost serve` writes to <state-dir>/devhost.json once it is ready, and what
// `devhost publish` reads to find the topics. The file holds the topic key: it is for the local
// stand-in only, and the state folder is not committed.
type Info struct {
	URL            string            `json:"url"`
	EventGridURL   string            `json:"eventGridUrl"`
	Topics         map[string]string `json:"topics"`
	Key            string            `json:"key,omitempty"`
	CAFile         string            `json:"caFile"`
	DeadLetterFile string            `json:"deadLetterFile,omitempty"`
	PID            int               `json:"pid"`
}

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "publish":
		err = publish(args)
	case "received":
		err = received(args)
	default:
		err = fmt.Errorf("unknown command %q: want serve, publish or received", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devhost:", err)
		os.Exit(1)
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	root := fs.String("root", ".", "the Functions app root (host.json and one folder per function)")
	settingsFile := fs.String("settings", "", "local.settings.json whose Values are the app settings (default: none)")
	var sets, topics, disabled multiFlag
	fs.Var(&sets, "set", "an app setting NAME=VALUE, overriding the settings file (repeatable)")
	fs.Var(&topics, "topic", "a topic NAME or NAME=Function1,Function2 (repeatable); default: events=<every eventGridTrigger function> and outcomes")
	fs.Var(&disabled, "disable", "a function not to run (repeatable)")
	addr := fs.String("addr", "127.0.0.1:7071", "the host's listen address (webhooks, HTTP triggers)")
	egAddr := fs.String("eventgrid-addr", "127.0.0.1:7443", "the topics' HTTPS listen address")
	key := fs.String("key", os.Getenv("DEVHOST_TOPIC_KEY"), "the topics' access key, base64 (default: $DEVHOST_TOPIC_KEY, else random)")
	scale := fs.Float64("retry-scale", 0.1, "multiply Event Grid's retry delays and time to live by this factor (1 = real time)")
	attempts := fs.Int("max-attempts", devhost.DefaultMaxDeliveryAttempts, "Event Grid's maximum delivery attempts (1-30)")
	ttl := fs.Duration("event-ttl", devhost.DefaultEventTTL, "Event Grid's event time to live (before -retry-scale)")
	stateDir := fs.String("state-dir", ".demo", "folder for devhost.json, the CA certificate and the dead-letter file")
	logLevel := fs.String("log", "info", "log level: debug, info, warn, error")
	handlerLog := fs.String("handler-log", "", "file for the handler's stdout and stderr as written (default: devhost logs each line at the level the Functions host gives it)")
	authFile := fs.String("auth", "", "front the app as App Service authentication does, signing in the test identities of this JSON file by bearer token (docs/devhost.md)")
	_ = fs.Parse(args)

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	settings := map[string]string{}
	if *settingsFile != "" {
		s, err := devhost.LoadSettings(*settingsFile)
		if err != nil {
			return err
		}
		settings = s
	}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("-set %q: want NAME=VALUE", kv)
		}
		settings[k] = v
	}
	app, err := devhost.LoadApp(*root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*stateDir, 0o755); err != nil {
		return fmt.Errorf("creating state folder: %w", err)
	}
	state, err := filepath.Abs(*stateDir)
	if err != nil {
		return err
	}
	tos, err := topicOptions(app, topics)
	if err != nil {
		return err
	}
	var out io.Writer // nil: devhost logs the handler's lines as the host does
	if *handlerLog != "" {
		f, err := os.OpenFile(*handlerLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("opening handler log: %w", err)
		}
		defer f.Close()
		out = f
	}
	var auth *devhost.AuthOptions
	if *authFile != "" {
		if auth, err = devhost.LoadAuthOptions(*authFile); err != nil {
			return fmt.Errorf("-auth: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	eg := &devhost.EventGridOptions{
		Addr:                *egAddr,
		Topics:              tos,
		Key:                 *key,
		CAFile:              filepath.Join(state, "eventgrid-ca.pem"),
		TimeScale:           *scale,
		MaxDeliveryAttempts: *attempts,
		EventTTL:            *ttl,
		DeadLetterFile:      filepath.Join(state, "deadletter.jsonl"),
	}
	h, err := devhost.Start(ctx, app, devhost.Options{
		Settings:      settings,
		Addr:          *addr,
		EventGrid:     eg,
		Logger:        logger,
		HandlerOutput: out,
		Disabled:      disabled,
		Auth:          auth,
	})
	if err != nil {
		return err
	}
	defer h.Close()
	info := Info{URL: h.URL(), EventGridURL: h.EventGridURL(), Topics: map[string]string{}, Key: h.TopicKey(),
		CAFile: eg.CAFile, DeadLetterFile: eg.DeadLetterFile, PID: os.Getpid()}
	for _, t := range tos {
		info.Topics[t.Name] = h.TopicEndpoint(t.Name)
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	infoFile := filepath.Join(state, "devhost.json")
	if err := os.WriteFile(infoFile, b, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", infoFile, err)
	}
	defer os.Remove(infoFile)
	// One line on stdout says devhost is ready; the key stays in the 0600 info file.
	info.Key = ""
	line, _ := json.Marshal(info)
	fmt.Println(string(line))
	select {
	case <-ctx.Done():
		return nil
	case <-h.Failed():
		return h.Err()
	}
}

// topicOptions reads -topic flags; without any, topic "events" delivers to every
// eventGridTrigger function and topic "outcomes" keeps what it receives.
func topicOptions(app *devhost.App, flags []string) ([]devhost.TopicOptions, error) {
	if len(flags) == 0 {
		var subs []string
		for _, f := range app.Functions {
			if strings.EqualFold(f.Trigger.Type, devhost.TypeEventGridTrigger) {
				subs = append(subs, f.Name)
			}
		}
		return []devhost.TopicOptions{{Name: "events", Subscribers: subs}, {Name: "outcomes"}}, nil
	}
	var out []devhost.TopicOptions
	for _, fl := range flags {
		name, subs, _ := strings.Cut(fl, "=")
		t := devhost.TopicOptions{Name: name}
		for _, s := range strings.Split(subs, ",") {
			if s = strings.TrimSpace(s); s != "" {
				t.Subscribers = append(t.Subscribers, s)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// readInfo reads a running devhost's info file.
func readInfo(path string) (*Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s (is `devhost serve` running? `make run` starts it): %w", path, err)
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return &info, nil
}

func tlsClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

func publish(args []string) error {
	fs := flag.NewFlagSet("publish", flag.ExitOnError)
	infoFile := fs.String("info", filepath.Join(".demo", "devhost.json"), "a running devhost's info file")
	topic := fs.String("topic", "events", "the topic to publish to")
	schema := fs.String("schema", "cloudevents", "cloudevents or eventgrid")
	typ := fs.String("type", "", "the event type, e.g. device-lost")
	subject := fs.String("subject", "", "the event subject, e.g. devices/sensor-042")
	data := fs.String("data", "{}", "the event data (JSON)")
	source := fs.String("source", "urn:dpsdeprov:devhost-cli", "the CloudEvents source")
	id := fs.String("id", "", "the event id (default: random)")
	file := fs.String("file", "", "publish this file's events as they are (a JSON array, or one event; - for stdin) instead of -type/-subject/-data")
	_ = fs.Parse(args)

	info, err := readInfo(*infoFile)
	if err != nil {
		return err
	}
	endpoint, ok := info.Topics[*topic]
	if !ok {
		return fmt.Errorf("devhost has no topic %q", *topic)
	}
	client, err := tlsClient(info.CAFile)
	if err != nil {
		return err
	}
	c, err := azeventgrid.NewClientWithSharedKeyCredential(endpoint, azcore.NewKeyCredential(info.Key),
		&azeventgrid.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: client}})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if *file != "" {
		return publishFile(ctx, c, *file, *schema)
	}
	if *typ == "" {
		return errors.New("-type is required (or -file)")
	}
	var d any
	if err := json.Unmarshal([]byte(*data), &d); err != nil {
		return fmt.Errorf("-data is not JSON: %w", err)
	}
	if *id == "" {
		*id = fmt.Sprintf("cli-%d", time.Now().UnixNano())
	}
	switch *schema {
	case "cloudevents":
		ev, err := messaging.NewCloudEvent(*source, *typ, d, &messaging.CloudEventOptions{Subject: subject, DataContentType: to.Ptr("application/json")})
		if err != nil {
			return err
		}
		ev.ID = *id
		_, err = c.PublishCloudEvents(ctx, []messaging.CloudEvent{ev}, nil)
		if err != nil {
			return err
		}
	case "eventgrid":
		_, err = c.PublishEvents(ctx, []azeventgrid.Event{{ID: id, EventType: typ, Subject: subject, EventTime: to.Ptr(time.Now().UTC()),
			DataVersion: to.Ptr("1.0"), Data: d}}, nil)
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("-schema %q: want cloudevents or eventgrid", *schema)
	}
	fmt.Printf("published %s %s (id %s) to %s\n", *typ, *subject, *id, *topic)
	return nil
}

func publishFile(ctx context.Context, c *azeventgrid.Client, file, schema string) error {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		raw = []json.RawMessage{b}
	}
	switch schema {
	case "cloudevents":
		evs := make([]messaging.CloudEvent, len(raw))
		for i, r := range raw {
			if err := json.Unmarshal(r, &evs[i]); err != nil {
				return fmt.Errorf("event %d is not a CloudEvent: %w", i, err)
			}
		}
		_, err = c.PublishCloudEvents(ctx, evs, nil)
	case "eventgrid":
		evs := make([]azeventgrid.Event, len(raw))
		for i, r := range raw {
			if err := json.Unmarshal(r, &evs[i]); err != nil {
				return fmt.Errorf("event %d is not an Event Grid event: %w", i, err)
			}
		}
		_, err = c.PublishEvents(ctx, evs, nil)
	default:
		return fmt.Errorf("-schema %q: want cloudevents or eventgrid", schema)
	}
	if err != nil {
		return err
	}
	fmt.Printf("published %d event(s)\n", len(raw))
	return nil
}

func received(args []string) error {
	fs := flag.NewFlagSet("received", flag.ExitOnError)
	infoFile := fs.String("info", filepath.Join(".demo", "devhost.json"), "a running devhost's info file")
	topic := fs.String("topic", "outcomes", "the topic whose received events to print")
	_ = fs.Parse(args)
	info, err := readInfo(*infoFile)
	if err != nil {
		return err
	}
	client, err := tlsClient(info.CAFile)
	if err != nil {
		return err
	}
	resp, err := client.Get(info.EventGridURL + "/topics/" + *topic + "/events")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var events []json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&events); err != nil {
		return fmt.Errorf("reading received events: %w", err)
	}
	for _, e := range events {
		fmt.Println(string(e))
	}
	return nil
}

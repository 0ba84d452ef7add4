package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"dpsdeprov/cleanup"
	"dpsdeprov/deprovision"
	"dpsdeprov/opsapi"
	"dpsdeprov/outcome"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	exitHeld  = 3
)

const usage = `usage: dpsdeprov <command> [arguments] [flags]

commands:
  status <registration id>          the state this app left a device in, its operations, and the latest in full
  show <operation id> [--watch]     an operation: its plan, each step's reason and outcome, a group's progress
  plan <intent> <device or group>   what the app would do (a dry run, journaled as planned)
  apply <intent> <device or group>  do it; the intents: compromised, stolen, lost, recovered, sold, moved,
                                    retired, group-compromised, group-retired
  approve <operation id> --reason R [--by NAME]   let an operation held for approval run
  deny <operation id> --reason R [--by NAME]      end a held operation without running it
  findings [--since 7d] [--pass P] [--kind K] [--subject ID] [--run RUN] [--limit N]
                                    the cleanup's findings, counted fleet-wide per pass and kind

plan and apply take --reason, --device-id, --hub, --target-hub (moved), --group (a member's
enrollment group), --action disable|delete, --certificate FILE (PEM), and apply --id (makes a
retry find the same operation) and --wait (follow a running operation to its end).

every command takes:
  --url URL          the app's API base, https://<app>.azurewebsites.net/api ($DPSDEPROV_URL;
                     default: the local stack of make run, from .demo/devhost.json)
  --key KEY          the Operations function's key ($DPSDEPROV_KEY)
  --scope SCOPE      sign in with Entra ID for this scope, the app's Application ID URI with
                     /.default ($DPSDEPROV_SCOPE)
  --credential C     default (azidentity's DefaultAzureCredential), cli (az login), or token: the
                     access token in $DPSDEPROV_ACCESS_TOKEN, e.g. from az account get-access-token
                     ($DPSDEPROV_CREDENTIAL)
  --json             print the app's answers as JSON
`

// cli is one invocation of the command.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// flags every command takes
	url, key, scope, credential string
	json                        bool
	// plan and apply
	reason, deviceID, hub, targetHub, group, action, certificate, id string
	wait                                                             bool
	// approve and deny
	by string
	// show
	watch    bool
	interval time.Duration
	// findings
	since, pass, kind, subject, run string
	limit                           int

	client *opsapi.Client
	auth   string // key, entra or none: what the client sends
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("dpsdeprov "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.url, "url", getenv("DPSDEPROV_URL"), "")
	fs.StringVar(&c.key, "key", getenv("DPSDEPROV_KEY"), "")
	fs.StringVar(&c.scope, "scope", getenv("DPSDEPROV_SCOPE"), "")
	fs.StringVar(&c.credential, "credential", or(getenv("DPSDEPROV_CREDENTIAL"), "default"), "")
	fs.BoolVar(&c.json, "json", false, "")
	want := 1
	switch cmd {
	case "status":
	case "show":
		fs.BoolVar(&c.watch, "watch", false, "")
		fs.DurationVar(&c.interval, "interval", 2*time.Second, "")
	case "plan", "apply":
		want = 2
		fs.StringVar(&c.reason, "reason", "", "")
		fs.StringVar(&c.deviceID, "device-id", "", "")
		fs.StringVar(&c.hub, "hub", "", "")
		fs.StringVar(&c.targetHub, "target-hub", "", "")
		fs.StringVar(&c.group, "group", "", "")
		fs.StringVar(&c.action, "action", "", "")
		fs.StringVar(&c.certificate, "certificate", "", "")
		if cmd == "apply" {
			fs.StringVar(&c.id, "id", "", "")
			fs.BoolVar(&c.wait, "wait", false, "")
			fs.DurationVar(&c.interval, "interval", 2*time.Second, "")
		}
	case "approve", "deny":
		fs.StringVar(&c.reason, "reason", "", "")
		fs.StringVar(&c.by, "by", "", "")
	case "findings":
		want = 0
		fs.StringVar(&c.since, "since", "", "")
		fs.StringVar(&c.pass, "pass", "", "")
		fs.StringVar(&c.kind, "kind", "", "")
		fs.StringVar(&c.subject, "subject", "", "")
		fs.StringVar(&c.run, "run", "", "")
		fs.IntVar(&c.limit, "limit", 0, "")
	default:
		fmt.Fprintf(stderr, "dpsdeprov: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		fmt.Fprintf(stderr, "dpsdeprov %s: %v\n\n%s", cmd, err, usage)
		return exitUsage
	}
	if len(pos) != want {
		fmt.Fprintf(stderr, "dpsdeprov %s: %d argument(s) expected, got %d\n\n%s", cmd, want, len(pos), usage)
		return exitUsage
	}
	if (cmd == "approve" || cmd == "deny") && strings.TrimSpace(c.reason) == "" {
		fmt.Fprintf(stderr, "dpsdeprov %s: --reason is required: say why, it is journaled with your name\n", cmd)
		return exitUsage
	}
	if err := c.connect(); err != nil {
		return c.fail(err)
	}
	switch cmd {
	case "status":
		return c.status(ctx, pos[0])
	case "show":
		return c.show(ctx, pos[0])
	case "plan":
		return c.submit(ctx, pos[0], pos[1], true)
	case "apply":
		return c.submit(ctx, pos[0], pos[1], false)
	case "approve":
		return c.decide(ctx, pos[0], false)
	case "findings":
		return c.findings(ctx)
	default:
		return c.decide(ctx, pos[0], true)
	}
}

// findings prints the cleanup's findings: counts per pass and kind over the fleet, then the
// newest findings.
func (c *cli) findings(ctx context.Context) int {
	o := &opsapi.GetFindingsOptions{Pass: c.pass, Kind: c.kind, Subject: c.subject, Run: c.run, Limit: c.limit}
	if c.since != "" {
		t, err := cleanup.ParseSince(c.since, time.Now())
		if err != nil {
			return c.fail(&usageError{"--" + err.Error()}) // names the flag: --since "…" is neither …
		}
		o.Since = t
	}
	f, err := c.client.GetFindings(ctx, o)
	if err != nil {
		return c.fail(c.explain(err, "findings", ""))
	}
	if c.json {
		return c.printJSON(f.Findings, exitOK)
	}
	_ = opsapi.WriteFindings(c.stdout, &f.Findings)
	return exitOK
}

// parseInterleaved parses flags wherever they stand among the positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// usageError is a mistake in how the command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// connect finds the app and builds the client with the credential the caller gave.
func (c *cli) connect() error {
	if c.url == "" {
		local, err := localStack()
		if err != nil {
			return &usageError{"name the app: --url https://<app>.azurewebsites.net/api (or DPSDEPROV_URL); without it, dpsdeprov looks for the local stack of `make run` in .demo/devhost.json, and " + err.Error()}
		}
		c.url = local
	}
	u, err := url.Parse(c.url)
	if err != nil || u.Host == "" {
		return &usageError{fmt.Sprintf("--url %q is not a URL such as https://<app>.azurewebsites.net/api", c.url)}
	}
	loopback := isLoopback(u.Hostname())
	o := &opsapi.ClientOptions{InsecureAllowCredentialWithHTTP: loopback}
	switch {
	case c.key != "":
		c.auth = "key"
		c.client, err = opsapi.NewClientWithKey(c.url, azcore.NewKeyCredential(c.key), o)
	case c.scope != "" || c.credential == "token":
		c.auth = "entra"
		var cred azcore.TokenCredential
		switch c.credential {
		case "cli":
			cred, err = azidentity.NewAzureCLICredential(nil)
		case "default":
			cred, err = azidentity.NewDefaultAzureCredential(nil)
		case "token":
			t := strings.TrimSpace(c.getenv("DPSDEPROV_ACCESS_TOKEN"))
			if t == "" {
				return &usageError{"--credential token reads the access token from DPSDEPROV_ACCESS_TOKEN, which is empty: `az account get-access-token --scope <the app's Application ID URI>/.default --query accessToken -o tsv` gets one"}
			}
			cred = staticToken(t)
		default:
			return &usageError{fmt.Sprintf("--credential %q: use default, cli or token", c.credential)}
		}
		if err != nil {
			return fmt.Errorf("setting up the Entra ID credential: %w", err)
		}
		o.Scopes = []string{or(c.scope, "token-from-DPSDEPROV_ACCESS_TOKEN")}
		c.client, err = opsapi.NewClient(c.url, cred, o)
	case loopback:
		c.auth = "none" // devhost and Core Tools check no keys
		c.client, err = opsapi.NewClientWithNoCredential(c.url, o)
	default:
		return &usageError{fmt.Sprintf("the app at %s needs a credential: the Operations function's key (--key or DPSDEPROV_KEY; `az functionapp function keys list -g <resource group> -n <app> --function-name Operations` lists them), or your Entra ID sign-in (--scope api://<app's Application ID URI>/.default, after `az login`)", c.url)}
	}
	return err
}

// staticToken is an access token the caller already holds (DPSDEPROV_ACCESS_TOKEN); it is
// sent as it is, for whatever scope it was issued.
type staticToken string

// GetToken returns the token, valid for the length of a command.
func (t staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(t), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// localStack returns the API base of the stack `make run` started, from the info file
// devhost writes in the state folder.
func localStack() (string, error) {
	p := filepath.Join(".demo", "devhost.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("%s is not there (is `make run` running in this folder?)", p)
	}
	var info struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(b, &info); err != nil || info.URL == "" {
		return "", fmt.Errorf("%s names no url", p)
	}
	return strings.TrimRight(info.URL, "/") + "/api", nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// status prints a device's state and history, then its latest operation in full.
func (c *cli) status(ctx context.Context, rid string) int {
	d, err := c.client.GetDevice(ctx, rid, nil)
	if err != nil {
		return c.fail(c.explain(err, "device", rid))
	}
	var latest *opsapi.Operation
	if len(d.Operations) > 0 {
		op, err := c.client.GetOperation(ctx, d.Operations[0].OperationID, nil)
		if err != nil {
			return c.fail(c.explain(err, "operation", d.Operations[0].OperationID))
		}
		latest = &op.Operation
	}
	if c.json {
		return c.printJSON(map[string]any{"device": d.Device, "latest": latest}, exitOK)
	}
	_ = opsapi.WriteDevice(c.stdout, &d.Device)
	if latest != nil {
		fmt.Fprintln(c.stdout)
		fmt.Fprintln(c.stdout, "latest operation:")
		_ = opsapi.WriteOperation(c.stdout, latest)
	}
	return exitOK
}

// show prints an operation; with --watch it follows a running one, its progress bar
// redrawn as group members are handled, until it comes to rest.
func (c *cli) show(ctx context.Context, id string) int {
	op, err := c.client.GetOperation(ctx, id, nil)
	if err != nil {
		return c.fail(c.explain(err, "operation", id))
	}
	if c.watch {
		if op, err = c.follow(ctx, op); err != nil {
			return c.fail(c.explain(err, "operation", id))
		}
	}
	if c.json {
		return c.printJSON(op.Operation, statusExit(op.Status))
	}
	_ = opsapi.WriteOperation(c.stdout, &op.Operation)
	return c.heldHint(op.Summary, statusExit(op.Status))
}

// atRest reports whether an operation will not change without a person or a redelivery.
func atRest(s deprovision.Status) bool {
	return s.Terminal() || s == deprovision.StatusAwaitingApproval
}

// follow polls a running operation until it comes to rest, writing its progress to stderr
// whenever it changes (stdout keeps only the final answer, for scripts).
func (c *cli) follow(ctx context.Context, op opsapi.GetOperationResponse) (opsapi.GetOperationResponse, error) {
	last := ""
	for !atRest(op.Status) {
		line := string(op.Status)
		if bar := opsapi.ProgressBar(op.Progress, 30); bar != "" {
			line += " " + bar
		}
		if line != last {
			fmt.Fprintf(c.stderr, "%s %s\n", op.OperationID, line)
			last = line
		}
		select {
		case <-ctx.Done():
			return op, ctx.Err()
		case <-time.After(c.interval):
		}
		var err error
		if op, err = c.client.GetOperation(ctx, op.OperationID, nil); err != nil {
			return op, err
		}
	}
	return op, nil
}

// submit posts a request: a dry run for plan, the real thing for apply.
func (c *cli) submit(ctx context.Context, intent, subject string, dry bool) int {
	r := opsapi.Request{Intent: intent, Reason: c.reason, DeviceID: c.deviceID, IoTHub: c.hub, TargetHub: c.targetHub, Action: c.action, ID: c.id}
	if strings.HasPrefix(strings.ToLower(intent), "group-") {
		r.EnrollmentGroupID = subject
	} else {
		r.RegistrationID, r.EnrollmentGroupID = subject, c.group
	}
	if c.certificate != "" {
		b, err := os.ReadFile(c.certificate)
		if err != nil {
			return c.fail(&usageError{fmt.Sprintf("--certificate: %v", err)})
		}
		r.Certificate = string(b)
	}
	r.DryRun = &dry
	if r.ID == "" {
		// An id makes a retried call find the same operation instead of starting another.
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		kind := "apply"
		if dry {
			kind = "plan"
		}
		r.ID = "cli-" + kind + "-" + hex.EncodeToString(b)
	}
	res, err := c.client.Submit(ctx, r, nil)
	if err != nil {
		return c.fail(c.explain(err, "request", subject))
	}
	view := opsapi.Operation{Summary: res.Summary}
	// The answer has the plan; the journal has what became of each step.
	if op, err := c.client.GetOperation(ctx, res.OperationID, nil); err == nil {
		view = op.Operation
	}
	if c.wait && !atRest(view.Status) {
		op, err := c.follow(ctx, opsapi.GetOperationResponse{Operation: view})
		if err != nil {
			return c.fail(c.explain(err, "operation", res.OperationID))
		}
		view = op.Operation
	}
	code := statusExit(view.Status)
	if c.json {
		return c.printJSON(view, code)
	}
	_ = opsapi.WriteOperation(c.stdout, &view)
	switch {
	case view.Status == deprovision.StatusRejected:
		fmt.Fprintf(c.stderr, "\nthe app refused this request: %s\n", view.Reason)
	case !atRest(view.Status):
		fmt.Fprintf(c.stderr, "\nstill running; follow it with: dpsdeprov show %s --watch\n", view.OperationID)
	}
	return c.heldHint(view.Summary, code)
}

// decide approves or denies a held operation.
func (c *cli) decide(ctx context.Context, id string, deny bool) int {
	d := opsapi.Decision{Reason: c.reason}
	var res opsapi.DecideResponse
	var err error
	if deny {
		d.DeniedBy = c.by
		res, err = c.client.Deny(ctx, id, d, nil)
	} else {
		d.ApprovedBy = c.by
		res, err = c.client.Approve(ctx, id, d, nil)
	}
	if err != nil {
		return c.fail(c.explain(err, "decision", id))
	}
	view := opsapi.Operation{Summary: res.Summary}
	if op, err := c.client.GetOperation(ctx, id, nil); err == nil {
		view = op.Operation // with the journal: the approval is its first record
	}
	if c.json {
		return c.printJSON(view, statusExit(view.Status))
	}
	_ = opsapi.WriteOperation(c.stdout, &view)
	if !atRest(view.Status) {
		fmt.Fprintf(c.stderr, "\napproved and still running; follow it with: dpsdeprov show %s --watch\n", id)
	}
	return statusExit(view.Status)
}

// statusExit is the exit status for an operation that reached s.
func statusExit(s deprovision.Status) int {
	switch s {
	case deprovision.StatusRejected, deprovision.StatusFailed:
		return exitError
	case deprovision.StatusAwaitingApproval:
		return exitHeld
	}
	return exitOK
}

// heldHint says what to do with an operation held for approval.
func (c *cli) heldHint(s outcome.Summary, code int) int {
	if s.Status == deprovision.StatusAwaitingApproval {
		fmt.Fprintf(c.stderr, "\noperation %s is held for approval (%s).\na second person lets it run with:  dpsdeprov approve %s --reason \"...\"\nor ends it with:                   dpsdeprov deny %s --reason \"...\"\n",
			s.OperationID, s.Reason, s.OperationID, s.OperationID)
	}
	return code
}

func (c *cli) printJSON(v any, code int) int {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	return code
}

// fail reports err, as JSON on stdout with --json, and returns the exit status for it.
func (c *cli) fail(err error) int {
	code := exitError
	var ue *usageError
	if errors.As(err, &ue) {
		code = exitUsage
	}
	if c.json {
		body := map[string]any{"error": err.Error()}
		if s := opsapi.StatusCode(errors.Unwrap(err)); s != 0 {
			body["status"] = s
		}
		return c.printJSON(body, code)
	}
	fmt.Fprintln(c.stderr, "dpsdeprov:", err)
	return code
}

// cliError is a failed call, said with what to do about it.
type cliError struct {
	msg string
	err error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// explain turns a failed call about what (operation, device, request, decision) id into what
// the caller should do.
func (c *cli) explain(err error, what, id string) error {
	status := opsapi.StatusCode(err)
	said := opsapi.ErrorMessage(err)
	var msg string
	switch {
	case status == 0 && ctxDone(err):
		msg = "interrupted"
	case status == 0:
		msg = fmt.Sprintf("cannot reach the app at %s (%v): check --url, and that the app (or `make run`) is up", c.url, err)
	case status == 401 && c.auth == "key" && serverSaid(err):
		// The key was right, but what it may do (FUNCTION_KEY_ACCESS) ends here.
		msg = fmt.Sprintf("%s (HTTP 401); sign in with Entra ID instead (--scope <the app's Application ID URI>/.default) to act with your app roles", said)
	case status == 401 && c.auth == "key":
		msg = "the app refused the function key (HTTP 401): check --key or DPSDEPROV_KEY; `az functionapp function keys list -g <resource group> -n <app> --function-name Operations` lists the Operations function's keys"
	case status == 401 && c.auth == "entra":
		msg = fmt.Sprintf("the app refused your Entra ID sign-in (HTTP 401): %s; check that --scope (%s) is the app's Application ID URI with /.default, that you are signed in (`az login`), and that the app has App Service authentication", said, c.scope)
	case status == 401:
		msg = "the app wants a credential (HTTP 401): give the Operations function's key (--key) or sign in with Entra ID (--scope)"
	case status == 403 && strings.Contains(said, "role"):
		msg = fmt.Sprintf("%s (HTTP 403)", said)
	case status == 403:
		msg = fmt.Sprintf("%s (HTTP 403); ask for the app role that allows it", said)
	case status == 404 && what == "operation":
		msg = fmt.Sprintf("operation %s: not found; operation ids look like op- and 32 hex digits, and `dpsdeprov status <registration id>` lists a device's operations", id)
	case status == 404 && what == "decision":
		msg = fmt.Sprintf("operation %s: not found; `dpsdeprov status <registration id>` lists a device's operations", id)
	case status == 404 && what == "device":
		msg = fmt.Sprintf("%s. No event or request has named it here: check the registration id; `dpsdeprov plan lost %s` shows what the app would do with it", said, id)
	case status == 409 && what == "decision":
		msg = fmt.Sprintf("%s; `dpsdeprov show %s` shows where it stands", said, id)
	case status == 400 && what == "decision" && strings.Contains(said, "approver") && c.auth != "entra":
		msg = said + "; with dpsdeprov: --by <your name> (the app has no App Service authentication to name you)"
	case status == 503:
		msg = said + " (HTTP 503); try again in a minute"
	default:
		msg = fmt.Sprintf("%s (HTTP %d)", said, status)
	}
	return &cliError{msg: msg, err: err}
}

// serverSaid reports whether the failed call's answer carried the app's own message (the
// host's refusal of a wrong key has no body).
func serverSaid(err error) bool { return opsapi.ErrorMessage(err) != err.Error() }

func ctxDone(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

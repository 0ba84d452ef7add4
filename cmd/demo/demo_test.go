package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/testenv"
)

// The end-to-end tests run what `make demo` runs, with nothing faked: the real handler binary,
// the emulator and devhost as processes, Azurite from node_modules. TestMain builds the three
// binaries once.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "demo-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		binDir = dir
		code = m.Run()
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	for name, pkg := range map[string]string{"handler": ".", "iotemulator": "./cmd/iotemulator", "devhost": "./cmd/devhost", "dpsdeprov": "./cmd/dpsdeprov"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", pkg, err)
		}
	}
	return nil
}

// testDemo starts the stack and seeds a fleet with a bulk group of n members.
func testDemo(t *testing.T, n int, queueVisibility string) *demo {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.AzuriteBinary(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var out bytes.Buffer
	d := &demo{out: &out, start: time.Now(), stack: &stack{dir: dir, bin: binDir, app: filepath.Join(dir, "app"), retryScal: 0.01, queueVisibility: queueVisibility}}
	t.Cleanup(func() {
		d.stack.stop()
		if t.Failed() {
			for _, f := range []string{"devhost.log", "handler.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("%s:\n%s", f, tail(string(b), 4000))
			}
			t.Logf("demo output:\n%s", out.String())
		}
	})
	ctx := context.Background()
	if err := d.stack.up(ctx, root); err != nil {
		t.Fatal(err)
	}
	if d.journal, err = openJournal(ctx, d.stack.storage); err != nil {
		t.Fatal(err)
	}
	if d.fleet, err = newFleet(d.stack.emu); err != nil {
		t.Fatal(err)
	}
	if err := d.fleet.seed(ctx, n, d.say); err != nil {
		t.Fatal(err)
	}
	return d
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// The whole story through devhost: each event is published to devhost's topic, delivered to
// the real handler, acted on in the emulator and journaled; the outcome events arrive on the
// outcome topic; the invocation that fails on a hub fault is redelivered and resumes without
// redoing its DPS step; every device's next provisioning attempt gets what it should.
func TestStoryEndToEndThroughDevhost(t *testing.T) {
	d := testDemo(t, 50, "")
	ctx := context.Background()
	chapters := d.fleet.story("e2e")
	if err := d.play(ctx, chapters); err != nil {
		t.Fatal(err)
	}
	for _, c := range chapters {
		op, err := d.journal.GetOperation(ctx, c.opID)
		if err != nil {
			t.Fatalf("%s: no operation in the journal: %v", c.Title, err)
		}
		wantStatus := deprovision.StatusSucceeded
		if c.Source == sourceUnknown {
			wantStatus = deprovision.StatusRejected
		}
		if op.Status != wantStatus {
			t.Errorf("%s: operation %s, want %s (%s)", c.Title, op.Status, wantStatus, op.Reason)
		}
	}
	ok, err := d.check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Errorf("a device's next provisioning attempt did not get what the story says:\n%s", d.out.(*bytes.Buffer).String())
	}

	// The operator CLI, as the demo runs it, tells what happened to the meter: lost, then
	// recovered, the recovery in full.
	var cli bytes.Buffer
	d.out = &cli
	if err := d.operatorCLI(ctx, "meter-07"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"recovered by operation", "history", "lost  succeeded", "latest operation:", "why: "} {
		if !strings.Contains(cli.String(), want) {
			t.Errorf("dpsdeprov status meter-07 does not say %q:\n%s", want, cli.String())
		}
	}

	// Redelivery and resumption: the gateway's first invocation failed on the hub fault.
	var gw *chapter
	for _, c := range chapters {
		if c.Fault != nil {
			gw = c
		}
	}
	if n := d.redeliveries(gw.eventID); n < 1 {
		t.Errorf("the event that met a hub fault was delivered without a retry; devhost logged %d failed deliveries", n)
	}
	steps, err := d.journal.Steps(ctx, gw.opID)
	if err != nil {
		t.Fatal(err)
	}
	disables := 0
	for _, s := range steps {
		if s.Kind == deprovision.StepDisableEnrollment && s.Outcome == deprovision.StepDone {
			disables++
		}
	}
	if disables != 1 {
		t.Errorf("the DPS step of the redelivered event is recorded done %d times, want once (resumed, not redone): %+v", disables, steps)
	}

	// Outcome events: one per operation, on devhost's outcome topic.
	waitUntil(t, "an outcome event per operation", func() bool { return len(d.outcomeEvents(t)) >= len(chapters) })
	seen := map[string]string{}
	for _, e := range d.outcomeEvents(t) {
		var ev struct {
			Type string `json:"type"`
			Data struct {
				OperationID string `json:"operationId"`
			} `json:"data"`
		}
		_ = json.Unmarshal(e, &ev)
		seen[ev.Data.OperationID] = ev.Type
	}
	for _, c := range chapters {
		wantType := "Deprovisioning.Completed"
		if c.Source == sourceUnknown {
			wantType = "Deprovisioning.Rejected"
		}
		if seen[c.opID] != wantType {
			t.Errorf("%s: outcome event %q, want %q", c.Title, seen[c.opID], wantType)
		}
	}
}

// outcomeEvents reads what devhost's outcome topic received.
func (d *demo) outcomeEvents(t *testing.T) []json.RawMessage {
	t.Helper()
	ctx := context.Background()
	ca, err := os.ReadFile(d.stack.devhost.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	events, err := fetchReceived(ctx, d.stack.devhost.EventGridURL, ca, "outcomes")
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, what, cond)
}

// A group-work message whose invocations keep failing (every bulk call and query to the hub fails) is
// retried by devhost up to host.json's maxDequeueCount, with growing dequeue counts, and then
// moved to the poison queue as it was; each failed attempt is in the journal.
func TestPoisonGroupWorkThroughDevhost(t *testing.T) {
	d := testDemo(t, 20, "00:00:00")
	ctx := context.Background()
	// A group operation that exists in the journal, then a batch of its members as the fan-out
	// would enqueue it, while the hub refuses every bulk call.
	c := &chapter{Title: "group compromised", Device: d.fleet.bulk.ID, Type: "enrollment-group-compromised", Source: sourceSecurity,
		Data: map[string]any{"enrollmentGroupId": d.fleet.bulk.ID}, eventID: "poison-1"}
	c.opID = deprovision.OperationID(c.Source, c.eventID)
	if err := d.play(ctx, []*chapter{c}); err != nil {
		t.Fatal(err)
	}
	before, err := d.journal.Steps(ctx, c.opID)
	if err != nil {
		t.Fatal(err)
	}
	// A disable reads the batch's identities with a query first, and skips members already
	// disabled (the group operation above disabled them all): the query fails too.
	for _, op := range []string{"hub.devices.bulk", "hub.devices.query"} {
		if err := d.addFault(ctx, emulator.Fault{Op: op, Status: 503}); err != nil {
			t.Fatal(err)
		}
	}
	var fn struct {
		Bindings []struct {
			QueueName string `json:"queueName"`
		} `json:"bindings"`
	}
	b, err := os.ReadFile(filepath.Join(d.stack.app, "GroupWork", "function.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fn); err != nil || len(fn.Bindings) == 0 || fn.Bindings[0].QueueName == "" {
		t.Fatalf("GroupWork/function.json has no queue name: %s", b)
	}
	queue := fn.Bindings[0].QueueName
	item, _ := json.Marshal(map[string]any{"operationId": c.opID, "hub": d.stack.emu.Hubs[0].Host, "action": "disable",
		"statusReason": "poison test", "members": []map[string]string{{"registrationId": d.fleet.bulk.ID + "-d0", "deviceId": d.fleet.bulk.ID + "-d0"}}})
	text := base64.StdEncoding.EncodeToString(item) // host.json messageEncoding: base64 (the default)
	q, err := azqueue.NewQueueClientFromConnectionString(d.stack.storage, queue, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Create(ctx, nil); err != nil && !strings.Contains(err.Error(), "QueueAlreadyExists") {
		t.Fatal(err)
	}
	if _, err := q.EnqueueMessage(ctx, text, nil); err != nil {
		t.Fatal(err)
	}
	poison, err := azqueue.NewQueueClientFromConnectionString(d.stack.storage, queue+"-poison", nil)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	waitUntil(t, "the message in the poison queue", func() bool {
		resp, err := poison.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
		if err != nil || len(resp.Messages) == 0 {
			return false
		}
		msgs = msgs[:0]
		for _, m := range resp.Messages {
			msgs = append(msgs, *m.MessageText)
		}
		return true
	})
	if len(msgs) != 1 || msgs[0] != text {
		t.Errorf("poison queue holds %q, want the original message", msgs)
	}
	devhost, _ := os.ReadFile(filepath.Join(d.stack.dir, "devhost.log"))
	if n := strings.Count(string(devhost), "function=GroupWork"); n < 5 {
		t.Errorf("devhost logged %d failed GroupWork invocations, want 5 (maxDequeueCount)", n)
	}
	after, err := d.journal.Steps(ctx, c.opID)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, s := range after[len(before):] {
		if s.Outcome == deprovision.StepFailed {
			failed++
		}
	}
	op, err := d.journal.GetOperation(ctx, c.opID)
	if err != nil {
		t.Fatal(err)
	}
	if failed == 0 && op.Progress.Failed == 0 {
		t.Errorf("the journal shows nothing of the poisoned group work: %d new steps, progress %+v", len(after)-len(before), op.Progress)
	}
}

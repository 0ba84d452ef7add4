package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"dpsdeprov/azure/journal"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
	"dpsdeprov/internal/dpsdevice"
	"dpsdeprov/opsapi"
)

// Event sources of the story: security tooling may ask for compromise responses (the demo's
// ALLOWED_SOURCES_* settings say so); asset management for the rest.
const (
	sourceSecurity = "urn:contoso:security"
	sourceAssets   = "urn:contoso:assets"
	sourceUnknown  = "urn:somebody:else"
)

// chapter is one event of the story and what should become of it.
type chapter struct {
	Title   string
	Device  string // registration id, or the group id for group events
	Type    string
	Source  string
	Data    map[string]any
	eventID string
	opID    string
	// Fault, if set, is installed in the emulator before the event is published, to show a
	// failed invocation redelivered by Event Grid and resumed.
	Fault *emulator.Fault
}

// story is the demo's script.
func (f *fleet) story(run string) []*chapter {
	other := func(hub string) string {
		for _, h := range f.emu.Hubs {
			if !strings.EqualFold(h.Host, hub) {
				return strings.ToLower(h.Host)
			}
		}
		return hub
	}
	cam := f.devices["factory-cam-02"]
	moved := f.devices["field-sensor-03"]
	ch := []*chapter{
		{Title: "an X.509 group member is compromised", Device: cam.RegistrationID, Type: "device-compromised", Source: sourceSecurity,
			Data: map[string]any{"registrationId": cam.RegistrationID, "certificate": string(cam.cert.CertPEM), "reason": "EDR alert: camera firmware tampered"}},
		{Title: "a TPM kiosk is sold", Device: "kiosk-01", Type: "device-sold", Source: sourceAssets,
			Data: map[string]any{"registrationId": "kiosk-01", "deviceId": "kiosk-01", "iotHub": f.devices["kiosk-01"].Hub, "reason": "sold to Fabrikam"}},
		{Title: "a meter is lost", Device: "meter-07", Type: "device-lost", Source: sourceAssets,
			Data: map[string]any{"registrationId": "meter-07", "reason": "not seen on site since Monday"}},
		{Title: "the lost meter is found again", Device: "meter-07", Type: "device-recovered", Source: sourceAssets,
			Data: map[string]any{"registrationId": "meter-07", "reason": "found in the van"}},
		{Title: "a sensor moves to the other hub", Device: moved.RegistrationID, Type: "device-moved", Source: sourceAssets,
			Data: map[string]any{"registrationId": moved.RegistrationID, "enrollmentGroupId": moved.Group, "targetHub": other(moved.Hub), "reason": "site reorganised"}},
		{Title: "a gateway is stolen, and the hub fails once on the way", Device: "gateway-03", Type: "device-stolen", Source: sourceAssets,
			Data:  map[string]any{"registrationId": "gateway-03", "reason": "break-in at depot 4"},
			Fault: &emulator.Fault{Op: "hub.devices.put", Status: 503, Count: 1}},
		{Title: "an unknown source claims a compromise (refused)", Device: "field-sensor-05", Type: "device-compromised", Source: sourceUnknown,
			Data: map[string]any{"registrationId": "field-sensor-05", "reason": "trust me"}},
		{Title: fmt.Sprintf("the signing certificate of group %s (%d members) is compromised", f.bulk.ID, f.bulk.Registrations),
			Device: f.bulk.ID, Type: "enrollment-group-compromised", Source: sourceSecurity,
			Data: map[string]any{"enrollmentGroupId": f.bulk.ID, "reason": "CA private key leaked"}},
	}
	for i, c := range ch {
		c.eventID = fmt.Sprintf("demo-%s-%d", run, i+1)
		c.opID = deprovision.OperationID(c.Source, c.eventID)
	}
	return ch
}

// publisher publishes CloudEvents to devhost's events topic with azeventgrid, as a real
// publisher would publish to an Event Grid topic.
func newPublisher(s *stack) (*azeventgrid.Client, error) {
	ca, err := os.ReadFile(s.devhost.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return azeventgrid.NewClientWithSharedKeyCredential(s.devhost.Topics["events"], azcore.NewKeyCredential(s.devhost.Key),
		&azeventgrid.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: client}})
}

func (c *chapter) event() messaging.CloudEvent {
	ev, _ := messaging.NewCloudEvent(c.Source, c.Type, c.Data, &messaging.CloudEventOptions{
		Subject: to.Ptr("devices/" + c.Device), DataContentType: to.Ptr("application/json"), Time: to.Ptr(time.Now().UTC())})
	ev.ID = c.eventID
	return ev
}

// terminal reports whether an operation has come to rest.
func terminal(s deprovision.Status) bool {
	switch s {
	case deprovision.StatusSucceeded, deprovision.StatusFailed, deprovision.StatusRejected, deprovision.StatusPlanned, deprovision.StatusAwaitingApproval:
		return true
	}
	return false
}

// play publishes the story, one chapter at a time for the chapters that depend on an earlier
// one (the recovery after the loss), the rest together, and shows progress until every
// operation has come to rest.
func (d *demo) play(ctx context.Context, chapters []*chapter) error {
	pub, err := newPublisher(d.stack)
	if err != nil {
		return err
	}
	for i, c := range chapters {
		if c.Fault != nil {
			// The fault must hit this chapter's call, not another one's: let the others finish.
			if err := d.wait(ctx, chapters[:i]); err != nil {
				return err
			}
			if err := d.addFault(ctx, *c.Fault); err != nil {
				return err
			}
		}
		d.say("publish %-30s %-18s %s", c.Type, c.Device, "("+c.Title+")")
		if _, err := pub.PublishCloudEvents(ctx, []messaging.CloudEvent{c.event()}, nil); err != nil {
			return fmt.Errorf("publishing %s: %w", c.Type, err)
		}
		// A recovery only undoes a loss the journal has recorded: let the loss finish first.
		if i+1 < len(chapters) && chapters[i+1].Type == "device-recovered" {
			if err := d.wait(ctx, chapters[:i+1]); err != nil {
				return err
			}
		}
	}
	return d.wait(ctx, chapters)
}

// wait shows progress until every chapter's operation has come to rest.
func (d *demo) wait(ctx context.Context, chapters []*chapter) error {
	last := ""
	start := time.Now()
	for {
		done, members, total := 0, 0, 0
		for _, c := range chapters {
			op, err := d.journal.GetOperation(ctx, c.opID)
			if err != nil {
				continue
			}
			if op.Progress.Total > 0 {
				members, total = op.Progress.Done+op.Progress.Failed, op.Progress.Total
			}
			if terminal(op.Status) {
				done++
			}
		}
		line := fmt.Sprintf("operations at rest %d/%d", done, len(chapters))
		if total > 0 {
			line += fmt.Sprintf(" · group members handled %d/%d", members, total)
		}
		if line != last {
			d.say("  %s", line)
			last = line
		}
		if done == len(chapters) {
			return nil
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("the story did not finish within 5 minutes (%s); see %s", line, d.stack.dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (d *demo) addFault(ctx context.Context, ft emulator.Fault) error {
	b, _ := json.Marshal(ft)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+d.fleet.emu.DPS.Host+"/_emulator/faults", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := emulatorClient(d.fleet.emu, d.fleet.caPEM, nil).Do(req)
	if err != nil {
		return fmt.Errorf("installing a fault: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("installing a fault: %d %s", resp.StatusCode, body)
	}
	return nil
}

// summary prints, from the journal, one block per chapter: the operation as the Operations
// function shows it (its plan, each step's reason and outcome; opsapi renders it for the
// dpsdeprov command too), and how Event Grid delivered the event.
func (d *demo) summary(ctx context.Context, chapters []*chapter) error {
	fmt.Fprintln(d.out)
	fmt.Fprintln(d.out, "What the journal says")
	fmt.Fprintln(d.out, "=====================")
	for _, c := range chapters {
		op, err := d.journal.GetOperation(ctx, c.opID)
		if err != nil {
			return fmt.Errorf("reading operation of %s: %w", c.Device, err)
		}
		steps, err := d.journal.Steps(ctx, c.opID)
		if err != nil {
			return fmt.Errorf("reading steps of %s: %w", c.Device, err)
		}
		fmt.Fprintf(d.out, "\n%s (%s): %s\n", c.Device, d.kind(c), c.Title)
		view := opsapi.NewOperation(op, steps)
		if err := opsapi.WriteOperation(d.out, &view); err != nil {
			return err
		}
		if n := d.redeliveries(c.eventID); n > 0 {
			fmt.Fprintf(d.out, "  delivery: Event Grid redelivered the event %d time(s) after a failed invocation; the operation resumed\n", n)
		}
	}
	return nil
}

// operatorCLI shows one use of the operator command, dpsdeprov, as an analyst would run it:
// what happened to a device, asked of the Operations function through devhost.
func (d *demo) operatorCLI(ctx context.Context, device string) error {
	fmt.Fprintln(d.out)
	title := "What happened to " + device + "? Asked with the operator CLI: dpsdeprov status " + device
	fmt.Fprintln(d.out, title)
	fmt.Fprintln(d.out, strings.Repeat("=", len(title)))
	cmd := exec.CommandContext(ctx, filepath.Join(d.stack.bin, "dpsdeprov"), "status", device, "--url", d.stack.devhost.URL+"/api")
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("dpsdeprov status %s: %w", device, err)
	}
	return nil
}

func (d *demo) kind(c *chapter) string {
	if dev := d.fleet.devices[c.Device]; dev != nil {
		return dev.Kind
	}
	return "enrollment group"
}

// check tries to provision each device of the story again through the DPS device API and
// compares the answer with what the story should have left: revoked devices refused,
// recovered and moved devices admitted (a moved one to its new hub), untouched ones admitted.
// A refusal is either way DPS has: HTTP 401 (nothing to attest against), or an operation that
// ends "disabled" (the device attests against a disabled entry); the table says which.
func (d *demo) check(ctx context.Context) (bool, error) {
	f := d.fleet
	type expect struct {
		rid     string
		admit   bool
		hub     string
		comment string
	}
	moved := f.devices["field-sensor-03"]
	var target string
	for _, h := range f.emu.Hubs {
		if !strings.EqualFold(h.Host, moved.Hub) {
			target = strings.ToLower(h.Host)
		}
	}
	bulkMember := f.bulk.ID + "-d0"
	leaf, err := f.bulkCA.Issue(bulkMember, false)
	if err != nil {
		return false, err
	}
	f.devices[bulkMember] = &device{RegistrationID: bulkMember, Kind: "group member, X.509", cert: leaf, chain: []*emulator.TestCert{f.bulkCA}}
	checks := []expect{
		{"factory-cam-02", false, "", "compromised: blocked by a disabled individual enrollment"},
		{"kiosk-01", false, "", "sold: its TPM has no enrollment left to attest against"},
		{"gateway-03", false, "", "stolen: enrollment disabled"},
		{bulkMember, false, "", "its group is disabled"},
		{"meter-07", true, "", "recovered: enrollment enabled again"},
		{moved.RegistrationID, true, target, "moved: lands in the new hub"},
		{"field-sensor-05", true, "", "the unauthorized event changed nothing"},
		{"factory-cam-04", true, "", "an untouched member of the same group"},
	}
	fmt.Fprintln(d.out)
	fmt.Fprintln(d.out, "Does each device's next provisioning attempt get what it should?")
	fmt.Fprintln(d.out, "===============================================================")
	tw := tabwriter.NewWriter(d.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "device\texpected\tgot\t\twhy")
	ok := true
	for _, c := range checks {
		dev := f.devices[c.rid]
		err := f.register(ctx, dev)
		got := "admitted to " + dev.Hub
		admitted := err == nil
		if rf, ok := dpsdevice.AsRefused(err); ok {
			got = "refused (" + rf.Kind() + ")"
		} else if err != nil {
			return false, err
		}
		want := "refused"
		if c.admit {
			want = "admitted"
			if c.hub != "" {
				want += " to " + c.hub
			}
		}
		pass := admitted == c.admit && (c.hub == "" || strings.EqualFold(dev.Hub, c.hub))
		mark := "ok"
		if !pass {
			mark, ok = "WRONG", false
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.rid, want, got, mark, c.comment)
	}
	return ok, tw.Flush()
}

// fetchReceived reads what a devhost topic without subscribers received.
func fetchReceived(ctx context.Context, egURL string, caPEM []byte, topic string) ([]json.RawMessage, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, egURL+"/topics/"+topic+"/events", nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var events []json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&events); err != nil {
		return nil, fmt.Errorf("reading the events topic %s received: %w", topic, err)
	}
	return events, nil
}

// outcomes prints what arrived on the outcome topic.
func (d *demo) outcomes(ctx context.Context) error {
	ca, err := os.ReadFile(d.stack.devhost.CAFile)
	if err != nil {
		return err
	}
	raw, err := fetchReceived(ctx, d.stack.devhost.EventGridURL, ca, "outcomes")
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out)
	fmt.Fprintf(d.out, "The outcome topic received %d events:\n", len(raw))
	counts := map[string]int{}
	for _, r := range raw {
		var e struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(r, &e)
		counts[e.Type]++
	}
	var types []string
	for t := range counts {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		fmt.Fprintf(d.out, "  %-32s %d\n", t, counts[t])
	}
	return nil
}

// openJournal opens the handler's journal in Azurite (default table prefix).
func openJournal(ctx context.Context, storage string) (*journal.Journal, error) {
	svc, err := aztables.NewServiceClientFromConnectionString(storage, nil)
	if err != nil {
		return nil, err
	}
	return journal.New(ctx, svc, journal.Options{})
}

// redeliveries counts the failed deliveries of an event in devhost's log.
func (d *demo) redeliveries(eventID string) int {
	b, err := os.ReadFile(filepath.Join(d.stack.dir, "devhost.log"))
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "will retry") && strings.Contains(line, "eventId="+eventID+" ") {
			n++
		}
	}
	return n
}

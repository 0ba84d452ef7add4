package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/iothub"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
	"dpsdeprov/emulator"
)

// benchOptions are the benchmark's flags (docs/benchmarks.md).
type benchOptions struct {
	Name     string
	Members  int
	Hubs     int
	Throttle int // each hub's budget, operations a minute
	Naive    int // members the one-at-a-time comparison handles
	Results  string
	Notes    string
}

// benchResult is what one run measured; it is written as JSON to bench/results/<name>.json.
type benchResult struct {
	Name      string    `json:"name"`
	Date      time.Time `json:"date"`
	Command   string    `json:"command"`
	Machine   string    `json:"machine"`
	Members   int       `json:"members"`
	Hubs      int       `json:"hubs"`
	Throttle  int       `json:"throttlePerMinute"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	Done      int       `json:"done"`
	Failed    int       `json:"failed"`
	Batches   int       `json:"batches"`
	WallSec   float64   `json:"wallSeconds"`
	FanOutSec float64   `json:"fanOutSeconds"` // until every batch was enqueued
	// MinSec is the physical minimum: the busiest hub's registry operations ÷ its budget.
	MinSec    float64            `json:"minimumSeconds"`
	WallToMin float64            `json:"wallToMinimum"`
	PerHub    map[string]hubFigs `json:"perHub"`
	// The DPS instance's budget of service operations (a minute), the operations the run
	// charged to it and the DPS calls answered 429.
	DPSThrottle int     `json:"dpsThrottlePerMinute"`
	DPSOps      int64   `json:"dpsOperations"`
	DPS429      int64   `json:"dpsCalls429"`
	Calls       int64   `json:"hubCalls"`
	Calls429    int64   `json:"hubCalls429"`
	Pct429      float64 `json:"percent429"`
	PeakRSSMB   float64 `json:"handlerPeakRssMB"`
	// The single compromised device published a third of the way through.
	SingleAt      int     `json:"singlePublishedAtDone"`
	SingleSec     float64 `json:"singleSeconds"`
	SingleStatus  string  `json:"singleStatus"`
	SingleHubOps  int64   `json:"singleHubRegistryOps"`
	GroupOpsPerDv float64 `json:"groupHubOpsPerDevice"`
	// The naive way: one member at a time, GET + PUT, through the clients.
	NaiveMembers    int     `json:"naiveMembers"`
	NaiveSec        float64 `json:"naiveSeconds"`
	NaiveOps        int64   `json:"naiveHubRegistryOps"`
	Naive429        int64   `json:"naiveHubCalls429"`
	NaiveExtrapSec  float64 `json:"naiveExtrapolatedSeconds"`
	NaiveRatio      float64 `json:"naiveToFanOut"`
	NaiveOpsPerDev  float64 `json:"naiveHubOpsPerDevice"`
	NaiveExtrapNote string  `json:"naiveNote"`
}

type hubFigs struct {
	Calls       int64 `json:"calls"`
	Throttled   int64 `json:"throttled"`
	RegistryOps int64 `json:"registryOps"`
}

// runBench runs the group-wide benchmark on the demo's stack (Azurite, the emulator with
// per-hub throttling, devhost and the real handler): it seeds a group of opts.Members X.509
// members across opts.Hubs hubs, publishes its compromise, publishes one compromised device
// a third of the way through, and then does a sample of the same group the naive way.
func runBench(ctx context.Context, d *demo, root string, o benchOptions) error {
	hubs := make([]string, o.Hubs)
	for i := range hubs {
		hubs[i] = fmt.Sprintf("hub%d", i+1)
	}
	s := d.stack
	s.hubs = strings.Join(hubs, ",")
	s.emuArgs = []string{"-throttle", strconv.Itoa(o.Throttle)}
	s.settings = map[string]string{
		config.SettingHubOpsPerMinute:       strconv.Itoa(o.Throttle),
		config.SettingMaxGroupDevices:       "0", // the benchmark measures the work, not an approval
		config.SettingMaxDestructivePerHour: "0",
		config.SettingLogLevel:              "warn",
		// Cleanup's passes read hub identities on their own schedule; they would spend the
		// budget being measured and blur the per-path operation counts (once a year here).
		config.SettingCleanupSchedule: "0 0 0 1 1 *",
	}
	d.say("starting the stack: %d hubs throttled at %d operations a minute each", o.Hubs, o.Throttle)
	if err := s.up(ctx, root); err != nil {
		return err
	}
	var err error
	if d.journal, err = openJournal(ctx, s.storage); err != nil {
		return err
	}
	if d.fleet, err = newFleet(s.emu); err != nil {
		return err
	}
	if err := d.fleet.seed(ctx, o.Members, d.say); err != nil {
		return err
	}
	chapters := d.fleet.story("bench")
	var single, group *chapter
	for _, c := range chapters {
		switch {
		case c.Type == "device-compromised" && c.Source == sourceSecurity && single == nil:
			single = c
		case c.Type == "enrollment-group-compromised":
			group = c
		}
	}
	if single == nil || group == nil {
		return errors.New("the demo story has no single compromised device or no group compromise")
	}
	handlerPID, err := findProcess(filepath.Join(s.app, "handler"))
	if err != nil {
		return err
	}
	if err := d.drainHubs(ctx); err != nil {
		return err
	}
	if err := d.emulatorAdmin(ctx, http.MethodDelete, "/_emulator/stats", nil); err != nil {
		return err
	}
	pub, err := newPublisher(s)
	if err != nil {
		return err
	}
	res := &benchResult{Name: o.Name, Date: time.Now().UTC(), Members: o.Members, Hubs: o.Hubs, Throttle: o.Throttle,
		Command: benchCommand(o), Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())}

	d.say("publish %s for %s (%d members)", group.Type, group.Device, o.Members)
	start := time.Now()
	if _, err := pub.PublishCloudEvents(ctx, []messaging.CloudEvent{group.event()}, nil); err != nil {
		return err
	}
	var singleStart, singleEnd time.Time
	var op *deprovision.Operation
	last := time.Time{}
	for {
		op, err = d.journal.GetOperation(ctx, group.opID)
		if err != nil && !errors.Is(err, deprovision.ErrNotFound) {
			return err
		}
		if op != nil {
			p := op.Progress
			if res.FanOutSec == 0 && p.FannedOut {
				res.FanOutSec = time.Since(start).Seconds()
			}
			if singleStart.IsZero() && p.Done+p.Failed >= o.Members/3 {
				singleStart = time.Now()
				res.SingleAt = p.Done + p.Failed
				d.say("a third of the way (%d members done): publish %s for %s", res.SingleAt, single.Type, single.Device)
				if _, err := pub.PublishCloudEvents(ctx, []messaging.CloudEvent{single.event()}, nil); err != nil {
					return err
				}
			}
			if time.Since(last) > 10*time.Second {
				d.say("  %s: %d/%d members, %d/%d batches, %.0fs", op.Status, p.Done+p.Failed, p.Total, p.BatchesDone, p.Batches, time.Since(start).Seconds())
				last = time.Now()
			}
			if terminal(op.Status) {
				break
			}
		}
		if !singleStart.IsZero() && singleEnd.IsZero() {
			if sop, err := d.journal.GetOperation(ctx, single.opID); err == nil && terminal(sop.Status) {
				singleEnd = sop.Updated
				res.SingleStatus = string(sop.Status)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stack.exited():
			return errors.New("a process of the stack exited; see the logs in " + s.dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
	res.WallSec = time.Since(start).Seconds()
	res.Status, res.Reason = string(op.Status), op.Reason
	res.Done, res.Failed, res.Batches = op.Progress.Done, op.Progress.Failed, op.Progress.Batches
	d.say("group operation %s after %.1fs: %d done, %d failed", op.Status, res.WallSec, res.Done, res.Failed)
	if singleEnd.IsZero() && !singleStart.IsZero() {
		sop, err := d.waitTerminal(ctx, single.opID)
		if err != nil {
			return err
		}
		singleEnd, res.SingleStatus = sop.Updated, string(sop.Status)
	}
	if !singleStart.IsZero() {
		res.SingleSec = singleEnd.Sub(singleStart).Seconds()
	}
	res.PeakRSSMB = peakRSSMB(handlerPID)

	var st emulator.Stats
	if err := d.emulatorAdminJSON(ctx, "/_emulator/stats", &st); err != nil {
		return err
	}
	res.PerHub = map[string]hubFigs{}
	var busiest int64
	var groupOps int64
	for h, hs := range st.Hubs {
		res.PerHub[h] = hubFigs{Calls: hs.Calls, Throttled: hs.Throttled, RegistryOps: hs.RegistryOps}
		res.Calls += hs.Calls
		res.Calls429 += hs.Throttled
		busiest = max(busiest, hs.RegistryOps)
		groupOps += hs.RegistryOps
	}
	for name, ops := range st.Operations {
		if name == "hub.devices.get" || name == "hub.devices.put" || name == "hub.devices.delete" {
			res.SingleHubOps += ops.Calls - ops.Throttled
		}
	}
	groupOps -= res.SingleHubOps
	if res.Done > 0 {
		res.GroupOpsPerDv = float64(groupOps) / float64(res.Done)
	}
	// The minimum is set by whichever budget the run needs longest: the busiest hub's, or the
	// DPS instance's (its operations at the documented 1,000 a minute).
	res.DPSThrottle, res.DPSOps, res.DPS429 = emulator.DPSDocumentedPerMinute, st.DPS.Operations, st.DPS.Throttled
	res.MinSec = max(float64(busiest)/float64(o.Throttle), float64(res.DPSOps)/float64(res.DPSThrottle)) * 60
	res.WallToMin = res.WallSec / res.MinSec
	if res.Calls > 0 {
		res.Pct429 = 100 * float64(res.Calls429) / float64(res.Calls)
	}
	d.say("wall %.1fs, minimum %.1fs (%.3f×); 429s %d of %d hub calls (%.2f%%); DPS %d operations, %d answered 429; handler peak RSS %.0f MB; single device %s in %.2fs",
		res.WallSec, res.MinSec, res.WallToMin, res.Calls429, res.Calls, res.Pct429, res.DPSOps, res.DPS429, res.PeakRSSMB, res.SingleStatus, res.SingleSec)

	if o.Naive > 0 {
		if err := d.naive(ctx, group.Device, o, res); err != nil {
			return err
		}
	}
	return writeResults(res, o)
}

// naive does the first o.Naive members of the group one at a time, as a script with the
// clients would: page the group's registration states, then for each member GET its hub
// identity and PUT it back disabled (the clients retry 429s, honouring Retry-After).
func (d *demo) naive(ctx context.Context, groupID string, o benchOptions, res *benchResult) error {
	if err := d.drainHubs(ctx); err != nil {
		return err
	}
	if err := d.emulatorAdmin(ctx, http.MethodDelete, "/_emulator/stats", nil); err != nil {
		return err
	}
	d.say("the naive way: %d members one at a time (GET + PUT each)", o.Naive)
	start := time.Now()
	n := 0
	pager := d.fleet.dps.NewQueryRegistrationStatesPager(groupID, &dps.QueryOptions{PageSize: 1000})
	for pager.More() && n < o.Naive {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("naive: paging group %s: %w", groupID, err)
		}
		for _, r := range page.RegistrationStates {
			if n >= o.Naive {
				break
			}
			c := d.fleet.hubs[strings.ToLower(r.AssignedHub)]
			if c == nil {
				return fmt.Errorf("naive: member %s is in hub %q, which the emulator does not serve", r.RegistrationID, r.AssignedHub)
			}
			dev, err := c.GetDevice(ctx, r.DeviceID, nil)
			if err != nil {
				return fmt.Errorf("naive: reading %s: %w", r.DeviceID, err)
			}
			dev.Device.Status, dev.Device.StatusReason = iothub.DeviceStatusDisabled, "naive script"
			if _, err := c.CreateOrUpdateDevice(ctx, dev.Device, &iothub.CreateOrUpdateDeviceOptions{IfMatch: to.Ptr(azcore.ETagAny)}); err != nil {
				return fmt.Errorf("naive: disabling %s: %w", r.DeviceID, err)
			}
			n++
		}
	}
	res.NaiveSec = time.Since(start).Seconds()
	res.NaiveMembers = n
	var st emulator.Stats
	if err := d.emulatorAdminJSON(ctx, "/_emulator/stats", &st); err != nil {
		return err
	}
	for _, hs := range st.Hubs {
		res.NaiveOps += hs.RegistryOps
		res.Naive429 += hs.Throttled
	}
	if n > 0 {
		res.NaiveOpsPerDev = float64(res.NaiveOps) / float64(n)
		res.NaiveExtrapSec = res.NaiveSec / float64(n) * float64(res.Members)
		res.NaiveRatio = res.NaiveExtrapSec / res.WallSec
	}
	res.NaiveExtrapNote = fmt.Sprintf("%d members timed, extrapolated linearly to %d", n, res.Members)
	d.say("naive: %d members in %.1fs (%d hub registry operations, %d answered 429); extrapolated to %d members: %.0fs, %.1f× the fan-out",
		n, res.NaiveSec, res.NaiveOps, res.Naive429, res.Members, res.NaiveExtrapSec, res.NaiveRatio)
	return nil
}

// drainHubs empties every hub's throttle bucket (the emulator's holds a minute's budget,
// refilled continuously), as if the hubs had just been busy: both the fan-out and the naive
// way then run at the budget's steady rate, with no free burst for a short run. It sends bulk
// deletes of devices that do not exist (each item is charged) until the hub answers 429.
func (d *demo) drainHubs(ctx context.Context) error {
	items := make([]iothub.ExportImportDevice, iothub.MaxBulkItems)
	for i := range items {
		items[i] = iothub.ExportImportDevice{ID: fmt.Sprintf("bench-drain-%d", i), ImportMode: iothub.ImportModeDelete}
	}
	opts := azcore.ClientOptions{Transport: emulatorClient(d.fleet.emu, d.fleet.caPEM, nil), Retry: policy.RetryOptions{MaxRetries: -1}}
	for _, h := range d.fleet.emu.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: opts})
		if err != nil {
			return err
		}
		for i := 0; ; i++ {
			_, err := c.BulkUpdate(ctx, items, nil)
			var re *azcore.ResponseError
			if errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests {
				break
			}
			if err != nil {
				return fmt.Errorf("draining %s: %w", h.Host, err)
			}
			if i > 10000 {
				return fmt.Errorf("draining %s: the hub never answered 429; is it throttled?", h.Host)
			}
		}
	}
	return nil
}

func (d *demo) waitTerminal(ctx context.Context, opID string) (*deprovision.Operation, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		op, err := d.journal.GetOperation(ctx, opID)
		if err == nil && terminal(op.Status) {
			return op, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("operation %s did not finish within 2 minutes", opID)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *demo) emulatorAdmin(ctx context.Context, method, path string, body []byte) error {
	req, _ := http.NewRequestWithContext(ctx, method, "https://"+d.fleet.emu.DPS.Host+path, bytes.NewReader(body))
	resp, err := emulatorClient(d.fleet.emu, d.fleet.caPEM, nil).Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return nil
}

func (d *demo) emulatorAdminJSON(ctx context.Context, path string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+d.fleet.emu.DPS.Host+path, nil)
	resp, err := emulatorClient(d.fleet.emu, d.fleet.caPEM, nil).Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

// findProcess returns the id of the process running exe (the handler devhost started).
func findProcess(exe string) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if p, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && p == exe {
				return pid, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no process runs %s", exe)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// peakRSSMB reads a process's peak resident set (VmHWM), in MB; 0 if it cannot be read.
func peakRSSMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return math.Round(kb/1024*10) / 10
		}
	}
	return 0
}

func benchCommand(o benchOptions) string {
	return fmt.Sprintf("make bench BENCH_NAME=%s BENCH_MEMBERS=%d BENCH_HUBS=%d BENCH_THROTTLE=%d BENCH_NAIVE=%d",
		o.Name, o.Members, o.Hubs, o.Throttle, o.Naive)
}

// Markers around the generated table in the benchmark notes.
const (
	notesBegin = "<!-- bench:results:begin (generated by make bench from bench/results/*.json) -->"
	notesEnd   = "<!-- bench:results:end -->"
)

// writeResults writes res to <results>/<name>.json and regenerates the table of every result
// in the notes file between the markers.
func writeResults(res *benchResult, o benchOptions) error {
	if err := os.MkdirAll(o.Results, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	path := filepath.Join(o.Results, res.Name+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(o.Results, "*.json"))
	var all []benchResult
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r benchResult
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool {
		return all[i].Members < all[j].Members || all[i].Members == all[j].Members && all[i].Name < all[j].Name
	})
	var t strings.Builder
	t.WriteString(notesBegin + "\n\n")
	t.WriteString("| run | members × hubs | budget/min/hub | status | wall | minimum | wall ÷ min | 429s | handler peak RSS | single device | hub ops/device (group · single) | naive (extrapolated) | naive ÷ fan-out |\n")
	t.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range all {
		fmt.Fprintf(&t, "| %s | %d × %d | %d | %s (%d done, %d failed) | %.1f s | %.1f s | %.3f | %d of %d calls (%.2f%%) | %.0f MB | %s in %.2f s | %.2f · %d | %.0f s (%.2f ops/device) | %.1f× |\n",
			r.Name, r.Members, r.Hubs, r.Throttle, r.Status, r.Done, r.Failed, r.WallSec, r.MinSec, r.WallToMin,
			r.Calls429, r.Calls, r.Pct429, r.PeakRSSMB, r.SingleStatus, r.SingleSec, r.GroupOpsPerDv, r.SingleHubOps,
			r.NaiveExtrapSec, r.NaiveOpsPerDev, r.NaiveRatio)
	}
	t.WriteString("\n" + notesEnd)
	notes, err := os.ReadFile(o.Notes)
	if err != nil {
		return fmt.Errorf("reading the benchmark notes: %w", err)
	}
	s := string(notes)
	i, j := strings.Index(s, notesBegin), strings.Index(s, notesEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q … %q markers", o.Notes, notesBegin, notesEnd)
	}
	s = s[:i] + t.String() + s[j+len(notesEnd):]
	if err := os.WriteFile(o.Notes, []byte(s), 0o644); err != nil {
		return err
	}
	fmt.Printf("results: %s; table: %s\n", path, o.Notes)
	return nil
}

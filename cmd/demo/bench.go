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

// Benchmark scenarios (docs/benchmarks.md).
const (
	scenarioGroupCompromised = "group-compromised"
	scenarioGroupRetired     = "group-retired"
	scenarioBurst            = "burst"
)

// benchOptions are the benchmark's flags (docs/benchmarks.md).
type benchOptions struct {
	Name     string
	Scenario string
	Members  int
	Hubs     int
	// Throttle and DPS are each hub's budget and the DPS instance's, operations a minute,
	// before Scale; Scale multiplies every limit (hubs, hub queries, DPS) by one factor, so a
	// run is shorter and its ratio to the minimum the same.
	Throttle  int
	DPS       int
	Scale     float64
	Instances int
	// Burst is the events of the burst scenario; BulkCost how DPS counts a bulk enrollment
	// operation (config.DPSBulkPerItem or config.DPSBulkPerCall), in the emulator and the app.
	Burst    int
	BulkCost string
	// SendOver is how long the burst's sending is spread over, in seconds.
	SendOver float64
	// Naive is the group members done the naive way (group scenarios), or the events sent one
	// at a time (burst), for the comparison.
	Naive   int
	Results string
	Notes   string
}

// benchFlags registers the benchmark's flags.
func benchFlags(fs interface {
	StringVar(*string, string, string, string)
	IntVar(*int, string, int, string)
	Float64Var(*float64, string, float64, string)
}) *benchOptions {
	o := &benchOptions{}
	fs.StringVar(&o.Name, "bench-name", "", "the benchmark run's name: bench/results/<name>.json (default scenario-members-hubs)")
	fs.StringVar(&o.Scenario, "bench-scenario", scenarioGroupCompromised, "benchmark: group-compromised, group-retired or burst")
	fs.IntVar(&o.Members, "bench-members", 10000, "benchmark: X.509 group members")
	fs.IntVar(&o.Hubs, "bench-hubs", 4, "benchmark: hubs the members are spread over")
	fs.IntVar(&o.Throttle, "bench-throttle", 6000, "benchmark: each hub's budget, operations a minute, before -bench-scale (emulator and handler)")
	fs.IntVar(&o.DPS, "bench-dps", config.DefaultDPSOpsPerMinute, "benchmark: the DPS instance's budget, operations a minute, before -bench-scale")
	fs.Float64Var(&o.Scale, "bench-scale", 1, "benchmark: every limit (hubs, hub queries, DPS) multiplied by this")
	fs.IntVar(&o.Instances, "bench-instances", 3, "benchmark: handler instances sharing the queue and the budgets")
	fs.IntVar(&o.Burst, "bench-burst", 5000, "benchmark: device-compromised events of the burst scenario")
	fs.Float64Var(&o.SendOver, "bench-send-over", 50, "benchmark: seconds the burst's events are spread over (within one minute)")
	fs.StringVar(&o.BulkCost, "bench-bulk-cost", config.DPSBulkPerItem, "benchmark: how DPS counts a bulk enrollment operation, item or call (emulator and handler)")
	fs.IntVar(&o.Naive, "bench-naive", 1000, "benchmark: members done the naive way (group scenarios) or events sent one at a time (burst); 0: none")
	fs.StringVar(&o.Results, "bench-results", filepath.Join("bench", "results"), "benchmark: folder of the results files")
	fs.StringVar(&o.Notes, "bench-notes", filepath.Join("docs", "benchmarks.md"), "benchmark: notes whose results tables are regenerated")
	return o
}

// limits are a run's budgets, operations a minute, after scaling.
type limits struct {
	Hub, HubQueries, DPS int
}

func (o benchOptions) limits() limits {
	hub := int(math.Round(float64(o.Throttle) * o.Scale))
	return limits{Hub: hub, HubQueries: max(1, hub/5), DPS: int(math.Round(float64(o.DPS) * o.Scale))}
}

// benchResult is what one run measured; it is written as JSON to bench/results/<name>.json.
type benchResult struct {
	Name      string    `json:"name"`
	Scenario  string    `json:"scenario"`
	Date      time.Time `json:"date"`
	Command   string    `json:"command"`
	Machine   string    `json:"machine"`
	Members   int       `json:"members"`
	Hubs      int       `json:"hubs"`
	Instances int       `json:"instances"`
	// The limits, operations a minute: each hub's registry budget, its query budget, the DPS
	// instance's; Scale is the factor applied to the documented or configured ones.
	Throttle      int     `json:"throttlePerMinute"`
	QueryThrottle int     `json:"queryThrottlePerMinute"`
	DPSThrottle   int     `json:"dpsThrottlePerMinute"`
	Scale         float64 `json:"scale"`
	BulkCost      string  `json:"dpsBulkCost"`
	Status        string  `json:"status"`
	Reason        string  `json:"reason,omitempty"`
	Events        int     `json:"events,omitempty"` // burst: events sent
	Done          int     `json:"done"`
	Failed        int     `json:"failed"`
	Batches       int     `json:"batches,omitempty"`
	SendSec       float64 `json:"sendSeconds,omitempty"` // burst: from the first event sent to the last
	WallSec       float64 `json:"wallSeconds"`
	FanOutSec     float64 `json:"fanOutSeconds,omitempty"` // group: until every batch was enqueued
	// The minimum: the least operations the work needs on each budget, each divided by its
	// budget; the longest is the minimum. MinNote is that arithmetic.
	MinHubOps  int64              `json:"minimumHubOps"`
	MinDPSOps  int64              `json:"minimumDpsOps"`
	MinSec     float64            `json:"minimumSeconds"`
	MinNote    string             `json:"minimumArithmetic"`
	WallToMin  float64            `json:"wallToMinimum"`
	Goal       float64            `json:"goalWallToMinimum"`
	PerHub     map[string]hubFigs `json:"perHub"`
	Calls      int64              `json:"hubCalls"`
	Calls429   int64              `json:"hubCalls429"`
	DPSCalls   int64              `json:"dpsCalls"`
	DPSOps     int64              `json:"dpsOperations"`
	DPS429     int64              `json:"dpsCalls429"`
	Pct429     float64            `json:"percent429"` // of hub and DPS calls together
	PeakRSSMB  []float64          `json:"handlerPeakRssMB"`
	OpsPerDev  float64            `json:"hubOpsPerDevice"`
	Single     singleFigs         `json:"single"`
	Naive      *naiveFigs         `json:"naive,omitempty"`
	Coalescing string             `json:"coalescing,omitempty"`
}

type hubFigs struct {
	Calls       int64 `json:"calls"`
	Throttled   int64 `json:"throttled"`
	RegistryOps int64 `json:"registryOps"`
}

// singleFigs is the single compromised device published a third of the way through.
type singleFigs struct {
	AtDone int     `json:"publishedAtDone"`
	Sec    float64 `json:"seconds"`
	Status string  `json:"status"`
}

// naiveFigs is the comparison: the naive way (a script, one member at a time), or the same
// events sent one at a time.
type naiveFigs struct {
	What      string  `json:"what"`
	N         int     `json:"n"`
	Sec       float64 `json:"seconds"`
	OpsPerDev float64 `json:"opsPerDevice"`
	Throttled int64   `json:"calls429"`
	ExtrapSec float64 `json:"extrapolatedSeconds"`
	Ratio     float64 `json:"toRun"` // extrapolated ÷ the run's wall time
}

// emuStats is the emulator's statistics answer.
type emuStats struct {
	Hubs       map[string]emulator.HubStats `json:"hubs"`
	Operations map[string]emulator.OpStats  `json:"operations"`
	DPS        struct {
		Calls      int64 `json:"calls"`
		Throttled  int64 `json:"throttled"`
		Operations int64 `json:"operations"`
	} `json:"dps"`
}

// runBench runs one benchmark scenario on the demo's stack (Azurite, the emulator throttled at
// the run's limits, devhost and the real handler, several instances of both): it seeds the
// fleet and a group of o.Members X.509 members across o.Hubs hubs, empties every throttle
// bucket, runs the scenario with one compromised device published a third of the way
// through, measures against the scenario's minimum, and writes the results.
func runBench(ctx context.Context, d *demo, root string, o benchOptions) error {
	switch o.Scenario {
	case scenarioGroupCompromised, scenarioGroupRetired, scenarioBurst:
	default:
		return fmt.Errorf("-bench-scenario %q: want %s, %s or %s", o.Scenario, scenarioGroupCompromised, scenarioGroupRetired, scenarioBurst)
	}
	if o.BulkCost != config.DPSBulkPerItem && o.BulkCost != config.DPSBulkPerCall {
		return fmt.Errorf("-bench-bulk-cost %q: want %s or %s", o.BulkCost, config.DPSBulkPerItem, config.DPSBulkPerCall)
	}
	if o.Instances < 1 || o.Scale <= 0 {
		return fmt.Errorf("-bench-instances %d, -bench-scale %v: want at least 1 and more than 0", o.Instances, o.Scale)
	}
	lim := o.limits()
	hubs := make([]string, o.Hubs)
	for i := range hubs {
		hubs[i] = fmt.Sprintf("hub%d", i+1)
	}
	s := d.stack
	s.hubs = strings.Join(hubs, ",")
	s.emuArgs = []string{"-throttle", strconv.Itoa(lim.Hub), "-query-throttle", strconv.Itoa(lim.HubQueries),
		"-dps-throttle", strconv.Itoa(lim.DPS), "-dps-registration-throttle", strconv.Itoa(lim.DPS)}
	if o.BulkCost == config.DPSBulkPerCall {
		s.emuArgs = append(s.emuArgs, "-dps-bulk-per-call")
	}
	s.settings = map[string]string{
		config.SettingHubOpsPerMinute:       strconv.Itoa(lim.Hub),
		config.SettingDPSOpsPerMinute:       strconv.Itoa(lim.DPS),
		config.SettingDPSOpsShare:           "1", // the benchmark measures against the instance's whole budget
		config.SettingDPSBulkCost:           o.BulkCost,
		config.SettingMaxGroupDevices:       "0", // the benchmark measures the work, not an approval
		config.SettingMaxDestructivePerHour: "0",
		config.SettingLogLevel:              "warn",
		// Cleanup's passes read hub identities on their own schedule; they would spend the
		// budget being measured and blur the per-path operation counts (once a year here).
		config.SettingCleanupSchedule: "0 0 0 1 1 *",
	}
	d.say("starting the stack: %d handler instances; %d hubs at %d registry operations and %d queries a minute each; DPS at %d operations a minute (bulk calls counted per %s)",
		o.Instances, o.Hubs, lim.Hub, lim.HubQueries, lim.DPS, o.BulkCost)
	if err := s.up(ctx, root); err != nil {
		return err
	}
	ins, err := d.startInstances(ctx, o.Instances)
	if err != nil {
		return err
	}
	if d.journal, err = openJournal(ctx, s.storage); err != nil {
		return err
	}
	if d.fleet, err = newFleet(s.emu); err != nil {
		return err
	}
	if err := d.fleet.seed(ctx, o.Members, d.say); err != nil {
		return err
	}
	pids, err := handlerPIDs(filepath.Join(s.app, "handler"), o.Instances)
	if err != nil {
		return err
	}
	res := &benchResult{Name: o.Name, Scenario: o.Scenario, Date: time.Now().UTC(), Members: o.Members, Hubs: o.Hubs, Instances: o.Instances,
		Throttle: lim.Hub, QueryThrottle: lim.HubQueries, DPSThrottle: lim.DPS, Scale: o.Scale, BulkCost: o.BulkCost,
		Command: benchCommand(o), Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())}
	if err := d.drain(ctx); err != nil {
		return err
	}
	if err := d.emulatorAdmin(ctx, http.MethodDelete, "/_emulator/stats", nil); err != nil {
		return err
	}
	switch o.Scenario {
	case scenarioBurst:
		err = d.runBurst(ctx, ins, o, res)
	default:
		err = d.runGroup(ctx, ins, o, res)
	}
	if err != nil {
		return err
	}
	for _, pid := range pids {
		res.PeakRSSMB = append(res.PeakRSSMB, peakRSSMB(pid))
	}
	d.say("handler peak RSS per instance: %v MB", res.PeakRSSMB)
	if res.Naive == nil && o.Naive > 0 && o.Scenario != scenarioBurst {
		if err := d.naive(ctx, d.fleet.bulk.ID, o, res); err != nil {
			return err
		}
	}
	return writeResults(res, o)
}

// readStats reads the emulator's statistics into res: per hub, DPS, and the 429 share.
func (d *demo) readStats(ctx context.Context, res *benchResult) (emuStats, error) {
	var st emuStats
	if err := d.emulatorAdminJSON(ctx, "/_emulator/stats", &st); err != nil {
		return st, err
	}
	res.PerHub = map[string]hubFigs{}
	res.Calls, res.Calls429 = 0, 0
	for h, hs := range st.Hubs {
		res.PerHub[h] = hubFigs{Calls: hs.Calls, Throttled: hs.Throttled, RegistryOps: hs.RegistryOps}
		res.Calls += hs.Calls
		res.Calls429 += hs.Throttled
	}
	res.DPSCalls, res.DPSOps, res.DPS429 = st.DPS.Calls, st.DPS.Operations, st.DPS.Throttled
	if n := res.Calls + res.DPSCalls; n > 0 {
		res.Pct429 = 100 * float64(res.Calls429+res.DPS429) / float64(n)
	}
	return st, nil
}

// setMinimum fixes the minimum from the least operations the work needs on the busiest hub and
// on DPS, and the ratio of the wall time to it.
func setMinimum(res *benchResult, hubOps, dpsOps int64, hubWhy, dpsWhy string) {
	res.MinHubOps, res.MinDPSOps = hubOps, dpsOps
	hubSec := float64(hubOps) / float64(res.Throttle) * 60
	dpsSec := float64(dpsOps) / float64(res.DPSThrottle) * 60
	res.MinSec = max(hubSec, dpsSec)
	res.MinNote = fmt.Sprintf("max(hub: %s = %d ops ÷ %d/min = %.1f s; DPS: %s = %d ops ÷ %d/min = %.1f s) = %.1f s",
		hubWhy, hubOps, res.Throttle, hubSec, dpsWhy, dpsOps, res.DPSThrottle, dpsSec, res.MinSec)
	if res.MinSec > 0 {
		res.WallToMin = res.WallSec / res.MinSec
	}
}

// busiest is the members of the group assigned to the busiest hub (the seeding spreads them
// evenly).
func busiest(members, hubs int) int64 { return int64((members + hubs - 1) / hubs) }

// singleProbe is the single compromise a scenario publishes a third of the way through, while the
// budgets are busy with the scenario's work: when it was published, and when it ended.
type singleProbe struct {
	c          *chapter
	start, end time.Time
}

// publish sends the probe's event through the last instance, once, noting in res how much
// of the scenario (done, in what) had ended by then.
func (p *singleProbe) publish(ctx context.Context, d *demo, ins []*instance, done int, what string, res *benchResult) error {
	if !p.start.IsZero() {
		return nil
	}
	p.start = time.Now()
	res.Single.AtDone = done
	d.say("a third of the way (%d %s): publish %s for %s", done, what, p.c.Type, p.c.Device)
	_, err := ins[len(ins)-1].publisher.PublishCloudEvents(ctx, []messaging.CloudEvent{p.c.event()}, nil)
	return err
}

// poll notes the probe's end once its operation has ended.
func (p *singleProbe) poll(ctx context.Context, d *demo, res *benchResult) {
	if p.start.IsZero() || !p.end.IsZero() {
		return
	}
	if op, err := d.journal.GetOperation(ctx, p.c.opID); err == nil && terminal(op.Status) {
		p.end, res.Single.Status = op.Updated, string(op.Status)
	}
}

// finish waits for the probe's operation to end, if it was published, and records its time
// from publishing to its terminal journal write.
func (p *singleProbe) finish(ctx context.Context, d *demo, res *benchResult) error {
	if p.start.IsZero() {
		return nil
	}
	if p.end.IsZero() {
		op, err := d.waitTerminal(ctx, p.c.opID)
		if err != nil {
			return err
		}
		p.end, res.Single.Status = op.Updated, string(op.Status)
	}
	res.Single.Sec = p.end.Sub(p.start).Seconds()
	return nil
}

// runGroup publishes the group event of a group scenario and follows the operation to its end.
func (d *demo) runGroup(ctx context.Context, ins []*instance, o benchOptions, res *benchResult) error {
	var group, single *chapter
	for _, c := range d.fleet.story("bench") {
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
	res.Goal = 1.10
	if o.Scenario == scenarioGroupRetired {
		group.Type, group.Data["reason"], res.Goal = "enrollment-group-retired", "product line retired", 1.15
		group.eventID += "-retired"
		group.opID = deprovision.OperationID(group.Source, group.eventID)
	}
	d.say("publish %s for %s (%d members)", group.Type, group.Device, o.Members)
	start := time.Now()
	if _, err := ins[0].publisher.PublishCloudEvents(ctx, []messaging.CloudEvent{group.event()}, nil); err != nil {
		return err
	}
	probe := &singleProbe{c: single}
	var op *deprovision.Operation
	var err error
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
			if p.Done+p.Failed >= o.Members/3 {
				if err := probe.publish(ctx, d, ins, p.Done+p.Failed, "members done", res); err != nil {
					return err
				}
			}
			if time.Since(last) > 10*time.Second {
				d.say("  %s: %d/%d members, %d/%d batches, %d records, %.0fs", op.Status, p.Done+p.Failed, p.Total, p.BatchesDone, p.Batches, p.Records, time.Since(start).Seconds())
				last = time.Now()
			}
			if terminal(op.Status) {
				break
			}
		}
		probe.poll(ctx, d, res)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stack.exited():
			return errors.New("a process of the stack exited; see the logs in " + d.stack.dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The operation's terminal write is its end.
	res.WallSec = op.Updated.Sub(start).Seconds()
	res.Status, res.Reason = string(op.Status), op.Reason
	res.Done, res.Failed, res.Batches = op.Progress.Done, op.Progress.Failed, op.Progress.Batches
	d.say("group operation %s after %.1fs: %d done, %d failed, %d registration records deleted", op.Status, res.WallSec, res.Done, res.Failed, op.Progress.Records)
	if err := probe.finish(ctx, d, res); err != nil {
		return err
	}
	st, err := d.readStats(ctx, res)
	if err != nil {
		return err
	}
	var groupOps int64
	for _, hs := range st.Hubs {
		groupOps += hs.RegistryOps
	}
	groupOps -= singleHubOps(st)
	if res.Done > 0 {
		res.OpsPerDev = float64(groupOps) / float64(res.Done)
	}
	// The least the work needs: one registry operation per member on its hub (a bulk item);
	// on DPS, one query call per 1,000 registration states and the group's read and disable,
	// and for a retirement one delete per registration record (DPS has no bulk call for them),
	// the group's delete and the list of groups its X.509 safety check needs.
	pages := int64((o.Members + 999) / 1000)
	hubOps, dpsOps := busiest(o.Members, o.Hubs), pages+2
	hubWhy, dpsWhy := fmt.Sprintf("%d members on the busiest hub × 1", hubOps), fmt.Sprintf("%d pages of 1,000 + the group read and disabled (2)", pages)
	if o.Scenario == scenarioGroupRetired {
		dpsOps = int64(o.Members) + pages + 4
		dpsWhy = fmt.Sprintf("%d registration records + %d pages + 4 (the groups' list for the X.509 check, the group read, disabled and deleted)", o.Members, pages)
	}
	setMinimum(res, hubOps, dpsOps, hubWhy, dpsWhy)
	d.say("wall %.1fs, minimum %.1fs (%.3f×, goal ≤ %.2f×): %s", res.WallSec, res.MinSec, res.WallToMin, res.Goal, res.MinNote)
	d.say("429s: %d of %d hub calls, %d of %d DPS calls (%.2f%%); DPS charged %d operations; single device %s in %.2fs",
		res.Calls429, res.Calls, res.DPS429, res.DPSCalls, res.Pct429, res.DPSOps, res.Single.Status, res.Single.Sec)
	return nil
}

// singleHubOps is the registry operations of single-device calls (reads, writes, deletes).
func singleHubOps(st emuStats) int64 {
	var n int64
	for name, ops := range st.Operations {
		if name == "hub.devices.get" || name == "hub.devices.put" || name == "hub.devices.delete" {
			n += ops.Calls - ops.Throttled
		}
	}
	return n
}

// naive does the first o.Naive members of the group one at a time, as a script with the
// clients would: page the group's registration states, then for each member GET its hub
// identity and PUT it back disabled (the clients retry 429s, honouring Retry-After).
func (d *demo) naive(ctx context.Context, groupID string, o benchOptions, res *benchResult) error {
	if err := d.drain(ctx); err != nil {
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
	nf := &naiveFigs{What: "a script: GET + PUT per member", N: n, Sec: time.Since(start).Seconds()}
	var st emuStats
	if err := d.emulatorAdminJSON(ctx, "/_emulator/stats", &st); err != nil {
		return err
	}
	var ops int64
	for _, hs := range st.Hubs {
		ops += hs.RegistryOps
		nf.Throttled += hs.Throttled
	}
	if n > 0 {
		nf.OpsPerDev = float64(ops) / float64(n)
		nf.ExtrapSec = nf.Sec / float64(n) * float64(res.Members)
		nf.Ratio = nf.ExtrapSec / res.WallSec
	}
	res.Naive = nf
	d.say("naive: %d members in %.1fs (%.2f hub operations a member, %d answered 429); extrapolated to %d members: %.0fs, %.1f× the run",
		n, nf.Sec, nf.OpsPerDev, nf.Throttled, res.Members, nf.ExtrapSec, nf.Ratio)
	return nil
}

// drain empties every throttle bucket of the emulator (each holds a minute's budget, refilled
// continuously), as if the services had just been busy: the run then goes at the budgets'
// steady rate, with no free burst for a short run. Each hub gets bulk deletes of devices that
// do not exist (every item is charged), DPS reads of an enrollment that does not exist, until
// they answer 429.
func (d *demo) drain(ctx context.Context) error {
	items := make([]iothub.ExportImportDevice, iothub.MaxBulkItems)
	for i := range items {
		items[i] = iothub.ExportImportDevice{ID: fmt.Sprintf("bench-drain-%d", i), ImportMode: iothub.ImportModeDelete}
	}
	opts := azcore.ClientOptions{Transport: emulatorClient(d.fleet.emu, d.fleet.caPEM, nil), Retry: policy.RetryOptions{MaxRetries: -1}}
	throttled := func(err error) bool {
		var re *azcore.ResponseError
		return errors.As(err, &re) && re.StatusCode == http.StatusTooManyRequests
	}
	for _, h := range d.fleet.emu.Hubs {
		c, err := iothub.NewClientFromConnectionString(h.ConnectionString, &iothub.ClientOptions{ClientOptions: opts})
		if err != nil {
			return err
		}
		for i := 0; ; i++ {
			_, err := c.BulkUpdate(ctx, items, nil)
			if throttled(err) {
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
	c, err := dps.NewClientFromConnectionString(d.fleet.emu.DPS.ConnectionString, &dps.ClientOptions{ClientOptions: opts})
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		_, err := c.GetEnrollment(ctx, "bench-drain", nil)
		if throttled(err) {
			break
		}
		if err != nil && !dps.IsNotFound(err) {
			return fmt.Errorf("draining DPS: %w", err)
		}
		if i > 1000000 {
			return errors.New("draining DPS: it never answered 429; is it throttled?")
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
	cmd := fmt.Sprintf("make bench BENCH_SCENARIO=%s BENCH_NAME=%s BENCH_MEMBERS=%d BENCH_HUBS=%d BENCH_THROTTLE=%d BENCH_DPS=%d BENCH_SCALE=%g BENCH_INSTANCES=%d BENCH_NAIVE=%d",
		o.Scenario, o.Name, o.Members, o.Hubs, o.Throttle, o.DPS, o.Scale, o.Instances, o.Naive)
	if o.Scenario == scenarioBurst {
		cmd += fmt.Sprintf(" BENCH_BURST=%d BENCH_BULK_COST=%s BENCH_SEND_OVER=%g", o.Burst, o.BulkCost, o.SendOver)
	}
	return cmd
}

// Markers around the generated tables in the benchmark notes.
const (
	notesBegin = "<!-- bench:results:begin (generated by make bench from bench/results/*.json) -->"
	notesEnd   = "<!-- bench:results:end -->"
)

// writeResults writes res to <results>/<name>.json and regenerates the tables of every result
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
		if r.Scenario == "" {
			continue // a run of an earlier version of the benchmark, kept for its own table
		}
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Scenario != all[j].Scenario {
			return all[i].Scenario < all[j].Scenario
		}
		return all[i].Members < all[j].Members || all[i].Members == all[j].Members && all[i].Name < all[j].Name
	})
	var t strings.Builder
	t.WriteString(notesBegin + "\n\n")
	t.WriteString("| run | scenario | work | limits (a minute) | instances | status | wall | minimum | wall ÷ min (goal) | 429s | single device | peak RSS per instance | comparison |\n")
	t.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range all {
		work := fmt.Sprintf("%d members × %d hubs", r.Members, r.Hubs)
		if r.Scenario == scenarioBurst {
			work = fmt.Sprintf("%d events (group of %d, %d hubs)", r.Events, r.Members, r.Hubs)
		}
		lim := fmt.Sprintf("hub %d (queries %d), DPS %d (bulk per %s); ×%g", r.Throttle, r.QueryThrottle, r.DPSThrottle, r.BulkCost, r.Scale)
		rss := make([]string, len(r.PeakRSSMB))
		for i, m := range r.PeakRSSMB {
			rss[i] = fmt.Sprintf("%.0f", m)
		}
		cmp := "—"
		if n := r.Naive; n != nil {
			cmp = fmt.Sprintf("%s: %.0f s extrapolated (%.2f ops/device), %.1f× the run", n.What, n.ExtrapSec, n.OpsPerDev, n.Ratio)
		}
		fmt.Fprintf(&t, "| %s | %s | %s | %s | %d | %s (%d done, %d failed) | %.1f s | %.1f s | %.3f (≤ %.2f) | %d of %d (%.2f%%) | %s in %.2f s | %s MB | %s |\n",
			r.Name, r.Scenario, work, lim, r.Instances, r.Status, r.Done, r.Failed, r.WallSec, r.MinSec, r.WallToMin, r.Goal,
			r.Calls429+r.DPS429, r.Calls+r.DPSCalls, r.Pct429, r.Single.Status, r.Single.Sec, strings.Join(rss, " · "), cmp)
	}
	t.WriteString("\nMinimums, each from the run's limits:\n\n")
	for _, r := range all {
		fmt.Fprintf(&t, "- **%s**: %s. Reproduce: `%s`.\n", r.Name, r.MinNote, r.Command)
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

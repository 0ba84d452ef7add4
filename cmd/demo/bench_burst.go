package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"

	"dpsdeprov/azure/dps"
	"dpsdeprov/config"
	"dpsdeprov/deprovision"
)

// burstEvent is one device-compromised event of the burst, as security tooling that found a
// compromise across the fleet sends it: the device, its group and its certificate.
type burstEvent struct {
	rid, opID, hub string
	ev             messaging.CloudEvent
}

// burstEvents builds the events of members first … first+n-1 of the bulk group, with leaf
// certificates issued by the group's CA.
func (d *demo) burstEvents(run string, first, n int, hubOf map[string]string) ([]*burstEvent, error) {
	out := make([]*burstEvent, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rid := fmt.Sprintf("%s-d%d", d.fleet.bulk.ID, first+i)
			leaf, err := d.fleet.bulkCA.Issue(rid, false)
			if err != nil {
				errs <- err
				return
			}
			id := fmt.Sprintf("burst-%s-%d", run, first+i)
			ev, err := messaging.NewCloudEvent(sourceSecurity, "device-compromised", map[string]any{
				"registrationId": rid, "enrollmentGroupId": d.fleet.bulk.ID, "certificate": string(leaf.CertPEM),
				"reason": "fleet scan: implant found"}, &messaging.CloudEventOptions{
				Subject: to.Ptr("devices/" + rid), DataContentType: to.Ptr("application/json"), Time: to.Ptr(time.Now().UTC())})
			if err != nil {
				errs <- err
				return
			}
			ev.ID = id
			out[i] = &burstEvent{rid: rid, opID: deprovision.OperationID(sourceSecurity, id), hub: hubOf[strings.ToLower(rid)], ev: ev}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return out, nil
}

// runBurst sends o.Burst device-compromised events for members of the bulk group, spread over
// the instances and as fast as the topics take them, follows every operation to its end, and
// publishes one compromise of another group's device a third of the way through. Then it sends
// o.Naive more such events one at a time, each after the previous one ended, for the
// comparison.
func (d *demo) runBurst(ctx context.Context, ins []*instance, o benchOptions, res *benchResult) error {
	res.Goal = 1.25
	g := d.fleet.bulk
	n := min(o.Burst, g.Registrations-o.Naive)
	if n <= 0 {
		return fmt.Errorf("a burst of %d events and %d one at a time need a group of more than %d members", o.Burst, o.Naive, o.Burst+o.Naive)
	}
	// Where each member is (for the hub side of the minimum), read before the run.
	hubOf := map[string]string{}
	pager := d.fleet.dps.NewQueryRegistrationStatesPager(g.ID, &dps.QueryOptions{PageSize: 1000})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing group %s: %w", g.ID, err)
		}
		for _, r := range page.RegistrationStates {
			hubOf[strings.ToLower(r.RegistrationID)] = strings.ToLower(r.AssignedHub)
		}
	}
	run := fmt.Sprintf("%d", time.Now().Unix()%100000)
	evs, err := d.burstEvents(run, 0, n, hubOf)
	if err != nil {
		return err
	}
	var single *chapter
	for _, c := range d.fleet.story("bench") {
		if c.Type == "device-compromised" && c.Source == sourceSecurity {
			single = c
			break
		}
	}
	if single == nil {
		return errors.New("the demo story has no single compromised device")
	}
	if err := d.drain(ctx); err != nil {
		return err
	}
	if err := d.emulatorAdmin(ctx, "DELETE", "/_emulator/stats", nil); err != nil {
		return err
	}

	res.Events = n
	d.say("burst: %d device-compromised events for members of %s (%d members), over %d instances", n, g.ID, g.Registrations, len(ins))
	start := time.Now()
	sent := make(chan error, 1)
	go func() { sent <- d.sendBurst(ctx, ins, evs, time.Duration(o.SendOver*float64(time.Second)), res) }()

	pending := make([]*burstEvent, len(evs))
	copy(pending, evs)
	var end time.Time
	probe := &singleProbe{c: single}
	last := time.Now()
	done := 0
	for len(pending) > 0 {
		// Operations end roughly in the order their events were sent: read the oldest pending
		// ones until one has not ended (a few Table reads a poll, so that the benchmark does
		// not load the storage it measures); the wall time is read from the operations.
		for len(pending) > 0 {
			e := pending[0]
			op, err := d.journal.GetOperation(ctx, e.opID)
			if err != nil || !terminal(op.Status) {
				break
			}
			pending = pending[1:]
			done++
			if op.Updated.After(end) {
				end = op.Updated
			}
			if op.Status == deprovision.StatusSucceeded {
				res.Done++
				continue
			}
			res.Failed++
			if res.Reason == "" {
				res.Reason = fmt.Sprintf("%s %s: %s", e.rid, op.Status, op.Reason)
			}
		}
		if done >= n/3 {
			if err := probe.publish(ctx, d, ins, done, "operations ended", res); err != nil {
				return err
			}
		}
		probe.poll(ctx, d, res)
		if time.Since(last) > 5*time.Second {
			// DPS's operations so far say whether the run keeps to the budget's pace.
			var st emuStats
			if err := d.emulatorAdminJSON(ctx, "/_emulator/stats", &st); err == nil {
				d.say("  %d/%d operations ended, %.0fs, DPS %d operations (%d answered 429)", done, n, time.Since(start).Seconds(), st.DPS.Operations, st.DPS.Throttled)
			} else {
				d.say("  %d/%d operations ended, %.0fs", done, n, time.Since(start).Seconds())
			}
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stack.exited():
			return errors.New("a process of the stack exited; see the logs in " + d.stack.dir)
		case err := <-sent:
			if err != nil {
				return err
			}
			sent = nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	if sent != nil {
		if err := <-sent; err != nil {
			return err
		}
	}
	res.WallSec = end.Sub(start).Seconds()
	res.Status = "succeeded"
	if res.Failed > 0 {
		res.Status = "failed"
	}
	if err := probe.finish(ctx, d, res); err != nil {
		return err
	}
	st, err := d.readStats(ctx, res)
	if err != nil {
		return err
	}
	var ops []string
	for name, s := range st.Operations {
		if strings.HasPrefix(name, "dps.") {
			ops = append(ops, fmt.Sprintf("%s %d", name, s.Calls))
		}
	}
	sort.Strings(ops)
	res.Coalescing = strings.Join(ops, ", ")
	var hubOps int64
	for _, hs := range st.Hubs {
		hubOps += hs.RegistryOps
	}
	if res.Done > 0 {
		res.OpsPerDev = float64(hubOps-2) / float64(res.Done) // less the single device's two
	}

	// The least the burst needs. DPS: a blocking enrollment per device, 10 to a bulk call
	// (counted once a call, or once an item), and the group's registration states, 1,000 to a
	// query call, for the lookups (fewer than one read per device). Hubs: each device's
	// identity read and written back disabled (2 registry operations), on the busiest hub.
	perHub := map[string]int64{}
	for _, e := range evs {
		perHub[e.hub]++
	}
	var top int64
	var topHub string
	for h, c := range perHub {
		if c > top {
			top, topHub = c, h
		}
	}
	pages := int64((g.Registrations + 999) / 1000)
	creates, createWhy := int64((n+9)/10), fmt.Sprintf("⌈%d/10⌉ bulk creates", n)
	if o.BulkCost == config.DPSBulkPerItem {
		creates, createWhy = int64(n), fmt.Sprintf("%d bulk items", n)
	}
	setMinimum(res, 2*top, creates+pages,
		fmt.Sprintf("%d devices on %s × 2 (read, write back disabled)", top, topHub),
		fmt.Sprintf("%s + ⌈%d/1,000⌉ = %d pages of the group's registration states", createWhy, g.Registrations, pages))
	d.say("burst: %d succeeded, %d failed; sent in %.1fs; wall %.1fs, minimum %.1fs (%.3f×, goal ≤ %.2f×): %s",
		res.Done, res.Failed, res.SendSec, res.WallSec, res.MinSec, res.WallToMin, res.Goal, res.MinNote)
	d.say("429s: %d of %d hub calls, %d of %d DPS calls (%.2f%%); DPS charged %d operations (%s); single device %s in %.2fs",
		res.Calls429, res.Calls, res.DPS429, res.DPSCalls, res.Pct429, res.DPSOps, res.Coalescing, res.Single.Status, res.Single.Sec)
	if o.Naive > 0 {
		return d.oneAtATime(ctx, ins, n, o, res, hubOf)
	}
	return nil
}

// sendBurst publishes the events over the instances' topics, 50 to a call, spread evenly over
// o.SendOver (as a fleet scan reports what it finds), and records how long sending took.
func (d *demo) sendBurst(ctx context.Context, ins []*instance, evs []*burstEvent, over time.Duration, res *benchResult) error {
	const chunk = 50
	start := time.Now()
	sem := make(chan struct{}, 6)
	errs := make(chan error, len(evs)/chunk+1)
	var wg sync.WaitGroup
	chunks := (len(evs) + chunk - 1) / chunk
	for i, k := 0, 0; i < len(evs); i, k = i+chunk, k+1 {
		if at := start.Add(over * time.Duration(k) / time.Duration(chunks)); time.Now().Before(at) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(at)):
			}
		}
		batch := make([]messaging.CloudEvent, 0, chunk)
		for _, e := range evs[i:min(i+chunk, len(evs))] {
			batch = append(batch, e.ev)
		}
		pub := ins[k%len(ins)].publisher
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := pub.PublishCloudEvents(ctx, batch, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	res.SendSec = time.Since(start).Seconds()
	d.say("sent %d events in %.1fs", len(evs), res.SendSec)
	return <-errs
}

// oneAtATime sends o.Naive events like the burst's, for members the burst did not name, each
// after the previous one ended: each takes the single-device path (nothing to coalesce with),
// and the time a member is extrapolated to the burst's size.
func (d *demo) oneAtATime(ctx context.Context, ins []*instance, first int, o benchOptions, res *benchResult, hubOf map[string]string) error {
	evs, err := d.burstEvents(fmt.Sprintf("one-%d", time.Now().Unix()%100000), first, o.Naive, hubOf)
	if err != nil {
		return err
	}
	if err := d.drain(ctx); err != nil {
		return err
	}
	if err := d.emulatorAdmin(ctx, "DELETE", "/_emulator/stats", nil); err != nil {
		return err
	}
	d.say("one at a time: %d events, each sent when the previous one ended", len(evs))
	start := time.Now()
	for i, e := range evs {
		if _, err := ins[i%len(ins)].publisher.PublishCloudEvents(ctx, []messaging.CloudEvent{e.ev}, nil); err != nil {
			return err
		}
		if _, err := d.waitTerminal(ctx, e.opID); err != nil {
			return err
		}
	}
	nf := &naiveFigs{What: "the same events one at a time", N: len(evs), Sec: time.Since(start).Seconds()}
	var st emuStats
	if err := d.emulatorAdminJSON(ctx, "/_emulator/stats", &st); err != nil {
		return err
	}
	nf.OpsPerDev = float64(st.DPS.Operations) / float64(len(evs))
	nf.Throttled = st.DPS.Throttled
	for _, hs := range st.Hubs {
		nf.Throttled += hs.Throttled
	}
	nf.ExtrapSec = nf.Sec / float64(len(evs)) * float64(res.Events)
	nf.Ratio = nf.ExtrapSec / res.WallSec
	res.Naive = nf
	d.say("one at a time: %d events in %.1fs (%.2f DPS operations an event); extrapolated to %d: %.0fs, %.1f× the burst's wall time",
		len(evs), nf.Sec, nf.OpsPerDev, res.Events, nf.ExtrapSec, nf.Ratio)
	return nil
}

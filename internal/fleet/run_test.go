package fleet_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	d "dpsdeprov/deprovision"
	"dpsdeprov/deprovision/fake"
)

// epoch is the time of a fleet's first event; the engine's clock starts a day later.
var epoch = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// model is what the policy says each device's state must be after the operations that
// succeeded: it follows the engine's decisions (which event was applied), and states what
// each decision must have done. Rejections and precedence are tested elsewhere; the model
// checks that an accepted recovered undid only a lost or stolen revocation.
type model struct {
	admitted []bool // a provisioning attempt with the device's credential succeeds
	before   []bool // admitted before the latest lost or stolen
	last     []d.Intent
	via      []int  // the group that admits the device (-1: an individual enrollment)
	derived  []int  // the symmetric-key group its keys derive from (-1: none)
	named    []bool // an event named it, or named its group
	moved    []bool // a move succeeded and the device has not provisioned since
	revoked  []bool // a revocation may have deleted its identity (before any move)
	byGroup  []bool // a group-wide revocation reached it: recovered does not undo that
	reprov   []bool // it provisioned again during the sequence
	why      []string
	// compromised lists the groups whose compromise succeeded.
	compromised []int
}

func newModel(c *Case) *model {
	n := len(c.Devices)
	m := &model{admitted: make([]bool, n), before: make([]bool, n), last: make([]d.Intent, n), via: make([]int, n),
		derived: make([]int, n), named: make([]bool, n), moved: make([]bool, n), revoked: make([]bool, n), byGroup: make([]bool, n), reprov: make([]bool, n), why: make([]string, n)}
	for i, dv := range c.Devices {
		m.via[i], m.derived[i] = -1, -1
		m.admitted[i] = true
		m.why[i] = "set up admitted"
		if dv.Kind == kSKMember {
			m.derived[i] = dv.Group
		}
		if c.isMember(i) && dv.Moved < 0 {
			m.via[i] = c.memberGroup(i)
		}
		switch {
		case dv.Block != "":
			m.admitted[i], m.why[i] = false, "blocked by hand"
		case m.via[i] >= 0 && !c.Groups[m.via[i]].Enabled:
			m.admitted[i], m.why[i] = false, "its group is disabled"
		}
	}
	return m
}

// apply records a succeeded operation; it returns a violation when the engine applied
// what the policy forbids.
func (m *model) apply(c *Case, step int, ev evSpec) string {
	if ev.Intent.GroupWide() {
		for i := range c.Devices {
			hit := m.via[i] == ev.Group || ev.Intent == d.IntentGroupCompromised && m.derived[i] == ev.Group && c.Groups[ev.Group].Kind == gSK
			if hit {
				m.named[i], m.revoked[i], m.byGroup[i] = true, true, true
				m.admitted[i] = false
				m.why[i] = fmt.Sprintf("step %d: %s of %s", step+1, ev.Intent, c.groupID(ev.Group))
			}
		}
		if ev.Intent == d.IntentGroupCompromised {
			m.compromised = append(m.compromised, ev.Group)
		}
		return ""
	}
	i := ev.Device
	if i < 0 {
		return ""
	}
	switch ev.Intent {
	case d.IntentLost, d.IntentStolen:
		if m.last[i] != d.IntentLost && m.last[i] != d.IntentStolen {
			m.before[i] = m.admitted[i] // lost after stolen: recovered undoes both
		}
		fallthrough
	case d.IntentCompromised, d.IntentSold, d.IntentRetired:
		m.admitted[i] = false
		m.moved[i], m.revoked[i] = false, true
		m.why[i] = fmt.Sprintf("step %d: %s", step+1, ev.Intent)
	case d.IntentRecovered:
		if m.last[i] != d.IntentLost && m.last[i] != d.IntentStolen {
			return fmt.Sprintf("step %d: recovered of %s succeeded after %q: recovered undoes only lost or stolen", step+1, c.devID(i), m.last[i])
		}
		m.admitted[i] = m.before[i] && !m.byGroup[i]
		m.why[i] = fmt.Sprintf("step %d: recovered", step+1)
		if m.byGroup[i] {
			m.why[i] += " (after a group-wide revocation)"
		}
	case d.IntentMoved:
		if m.via[i] >= 0 {
			m.via[i] = -1 // an individual enrollment stands in front of the group now
		}
		m.moved[i] = true
	}
	m.last[i] = ev.Intent
	return ""
}

// request is the event of step ev.
func (f *fleet) request(step int, ev evSpec) d.Request {
	c := f.c
	r := d.Request{EventID: fmt.Sprintf("event-%d", step), Source: "/fleet/" + fmt.Sprint(c.Seed), Intent: ev.Intent,
		EventTime: epoch.Add(time.Duration(ev.At) * time.Minute), Action: ev.Action}
	if ev.Intent.GroupWide() {
		r.EnrollmentGroupID = c.groupID(ev.Group)
		return r
	}
	r.RegistrationID = c.devID(ev.Device)
	if ev.Group >= 0 {
		r.EnrollmentGroupID = c.groupID(ev.Group)
	}
	if ev.Intent == d.IntentMoved {
		r.TargetHub = hubs[ev.Target]
	}
	switch ev.Cert {
	case "leaf":
		r.CertificatePEM = f.leaves[ev.Device].PEM
	case "chain":
		r.CertificatePEM = f.leaves[ev.Device].ChainPEM
	case "other":
		for j := range c.Devices {
			if l := f.leaves[j]; l != nil && j != ev.Device {
				r.CertificatePEM = l.PEM
				break
			}
		}
	}
	return r
}

// outcome is what one run of a case found.
type outcome struct {
	violations []string
	ops        int
}

func (o *outcome) fail(format string, args ...any) {
	o.violations = append(o.violations, fmt.Sprintf(format, args...))
}

// run sets case c up, plays its steps through the engine with journal j, and checks the
// invariants at rest. An error is the harness failing, not the policy.
func (w *world) run(ctx context.Context, c *Case, j d.Journal) (*outcome, error) {
	f, err := w.setup(ctx, c)
	if err != nil {
		return nil, err
	}
	before, err := w.registry(ctx)
	if err != nil {
		return nil, err
	}
	m := newModel(c)
	o := &outcome{}
	clk := &clock{t: epoch.Add(24 * time.Hour)}
	q := &fake.Queue{}
	e := w.engine(j, clk, q)
	reqs := map[int]d.Request{}
	for step, ev := range c.Steps {
		if ev.Reprovision {
			i := ev.Device
			res, err := w.register(ctx, c.devID(i), f.credentials(i)[0])
			if err != nil {
				return nil, err
			}
			got := res.status == "assigned"
			if got != m.admitted[i] {
				o.fail("step %d: %s provisioning again got %q; the policy says admitted=%v (%s)", step+1, c.devID(i), res.status, m.admitted[i], m.why[i])
			}
			if got {
				m.reprov[i], m.moved[i] = true, false
				f.hubOf[i] = res.hub
			}
			continue
		}
		if ev.Again >= 0 {
			ev = c.Steps[ev.Again]
		}
		if !ev.Intent.GroupWide() && ev.Device >= 0 {
			m.named[ev.Device] = true
		}
		orig := step
		if c.Steps[step].Again >= 0 {
			orig = c.Steps[step].Again
		}
		req, ok := reqs[orig]
		if !ok {
			req = f.request(orig, ev)
			reqs[orig] = req
		}
		op, err := e.Submit(ctx, req)
		o.ops++
		if err != nil {
			o.fail("step %d (%s): Submit: %v", step+1, c.describe(ev), err)
			continue
		}
		if op.Status == d.StatusRunning { // fanned out: the GroupWork function applies its batches
			if err := q.DeliverAll(ctx, e); err != nil {
				o.fail("step %d (%s): GroupWork: %v", step+1, c.describe(ev), err)
				continue
			}
			if op, err = j.GetOperation(ctx, op.ID); err != nil {
				return nil, err
			}
		}
		switch op.Status {
		case d.StatusSucceeded:
			if orig == step { // a redelivery returns the operation, changing nothing
				if v := m.apply(c, step, ev); v != "" {
					o.fail("%s", v)
				}
			}
		case d.StatusRejected:
		default:
			o.fail("step %d (%s): operation %s: %s\n%s", step+1, c.describe(ev), op.Status, op.Reason, op.Plan)
		}
	}
	if err := w.check(ctx, c, f, m, j, before, o); err != nil {
		return nil, err
	}
	return o, nil
}

// check verifies the invariants once every operation is at rest.
func (w *world) check(ctx context.Context, c *Case, f *fleet, m *model, j d.Journal, before map[string]identity, o *outcome) error {
	after, err := w.registry(ctx)
	if err != nil {
		return err
	}
	// What a device had is never lost: an identity that stayed keeps its authentication,
	// capabilities, scopes and tags whatever its status; a device no event named keeps its
	// status too, and its identity; a moved device keeps its old identity until it moves.
	var keys []string
	for k := range before {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		was := before[k]
		host, id, _ := strings.Cut(k, "/")
		i := deviceIndex(c, id)
		if i < 0 || m.reprov[i] {
			continue // not a device of the case, or provisioned again since (fresh credentials)
		}
		now, ok := after[k]
		switch {
		case !ok && !m.named[i]:
			o.fail("%s in %s was deleted, and no event named it", id, host)
		case !ok && m.moved[i] && !m.revoked[i]:
			o.fail("%s in %s was deleted after a move, before the device moved", id, host)
		case !ok:
		case was.diff(now) != "":
			o.fail("%s in %s (%s) lost what it had: %s", id, host, now.Status, was.diff(now))
		case !m.named[i] && (was.Status != now.Status || was.Reason != now.Reason):
			o.fail("%s in %s changed status %s %q → %s %q, and no event named it", id, host, was.Status, was.Reason, now.Status, now.Reason)
		}
	}
	// No credential of a revoked device provisions it; a device the policy leaves admitted
	// is admitted. Refusals first: a successful registration changes the registry.
	order := make([]int, 0, len(c.Devices))
	for i := range c.Devices {
		if !m.admitted[i] {
			order = append(order, i)
		}
	}
	// No credential derivable from a compromised group's key admits anyone.
	if err := w.checkCompromised(ctx, c, f, m, o); err != nil {
		return err
	}
	for i := range c.Devices {
		if m.admitted[i] {
			order = append(order, i)
		}
	}
	for _, i := range order {
		creds := f.credentials(i)
		if m.admitted[i] {
			creds = creds[:1]
		}
		for _, cr := range creds {
			res, err := w.register(ctx, c.devID(i), cr)
			if err != nil {
				return err
			}
			if got := res.status == "assigned"; got != m.admitted[i] {
				o.fail("%s with %s: registration %q; the policy says admitted=%v (%s)", c.devID(i), cr.what, res.status, m.admitted[i], m.why[i])
			} else if got && m.moved[i] {
				if err := w.checkMoved(ctx, c, f, i, res, before, j, o); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkCompromised tries credentials anyone holding a compromised group's key could make.
func (w *world) checkCompromised(ctx context.Context, c *Case, f *fleet, m *model, o *outcome) error {
	for _, g := range m.compromised {
		// Anyone: two registration ids no device has, and every device the group ever admitted.
		ids := []string{"intruder-1", "intruder-2"}
		for i := range c.Devices {
			if c.memberGroup(i) == g || m.derived[i] == g {
				ids = append(ids, c.devID(i))
			}
		}
		for _, id := range ids {
			var creds []credential
			if c.Groups[g].Kind == gSK {
				k, err := d.DerivedKeys(f.gkeys[g], id)
				if err != nil {
					return err
				}
				creds = []credential{{what: "a key derived from its primary key", key: k.Primary}, {what: "a key derived from its secondary key", key: k.Secondary}}
			} else {
				leaf := f.forge(c.Groups[g].CA, id)
				creds = []credential{{what: "a certificate signed by its CA", chain: f.chain(leaf)}}
			}
			for _, cr := range creds {
				res, err := w.register(ctx, id, cr)
				if err != nil {
					return err
				}
				if res.status == "assigned" {
					o.fail("%s was compromised, yet %s with %s provisioned into %s", c.groupID(g), id, cr.what, res.hub)
				}
			}
		}
	}
	return nil
}

// checkMoved follows a device that moved: it provisioned into its target hub, DPS removed
// the old identity and moved its twin, and the move's confirmation ends the wait.
func (w *world) checkMoved(ctx context.Context, c *Case, f *fleet, i int, res registration, before map[string]identity, j d.Journal, o *outcome) error {
	id := c.devID(i)
	old := f.hubOf[i]
	if res.hub == old {
		return nil // moved back where it was
	}
	if _, err := w.hubs[old].GetDevice(ctx, id, nil); err == nil {
		o.fail("%s moved to %s, and its old identity in %s is still there", id, res.hub, old)
	}
	if was, ok := before[old+"/"+id]; ok && c.Devices[i].Tags {
		after, err := w.registry(ctx)
		if err != nil {
			return err
		}
		if now := after[res.hub+"/"+id]; now.Tags != was.Tags {
			o.fail("%s moved to %s without its twin: tags %s → %s", id, res.hub, was.Tags, now.Tags)
		}
	}
	ds, err := j.GetDevice(ctx, strings.ToLower(id))
	if err != nil {
		return nil // a move by hand, or the journal has no row: nothing waits
	}
	if ds.MoveTarget == "" {
		return nil
	}
	got, err := d.NewMoves(d.Deps{Registrations: w.en, Devices: w.dv, Journal: j, Logger: slog.New(slog.DiscardHandler)}).Confirm(ctx, ds)
	if err != nil || got != d.MoveConfirmed {
		o.fail("%s moved to %s; the confirmation gave %q, %v", id, res.hub, got, err)
	}
	return nil
}

func deviceIndex(c *Case, id string) int {
	for i := range c.Devices {
		if c.devID(i) == id {
			return i
		}
	}
	return -1
}

// newJournal is the journal of one case: the in-memory one below the engine's own port.
func newJournal() d.Journal { return fake.NewJournal() }

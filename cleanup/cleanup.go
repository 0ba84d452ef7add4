// Package cleanup is the scheduled cleanup the Cleanup timer runs: passes that resume
// operations left half done, settle group work left in the poison queue, escalate lost or
// stolen devices past their grace period, find devices and enrollments re-enabled behind this
// system's back (drift), retire devices not seen for a long time, and delete registration
// records orphaned by deleted enrollment groups.
//
// Every pass is bounded by one operations budget per run, shared in a fixed order (resume
// first, so that finishing what was started comes before anything new); every pass keeps a
// cursor in the journal (the poison queue is its own), so the next run carries on where the
// last one stopped; every request a pass makes goes through the engine with a deterministic
// event id and source "cleanup", so it is journaled like any other operation and a re-run
// finds it instead of repeating it; and every destructive pass has a dry-run setting. docs/cleanup.md is the user's guide.
package cleanup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strings"
	"time"

	"dpsdeprov/deprovision"
)

// Source is the source of every request a cleanup pass submits.
const Source = "cleanup"

// Pass names, in the order a run takes them.
const (
	PassResume      = "resume"
	PassPoison      = "poison"
	PassGrace       = "grace"
	PassDrift       = "drift"
	PassDriftGroups = "drift-groups"
	PassStale       = "stale"
	PassOrphans     = "orphans"
)

// Passes lists the passes in the order a run takes them.
var Passes = []string{PassResume, PassPoison, PassGrace, PassDrift, PassDriftGroups, PassStale, PassOrphans}

// Submitter is the engine's entries; *deprovision.Engine satisfies it.
type Submitter interface {
	Submit(ctx context.Context, req deprovision.Request) (*deprovision.Operation, error)
	// Announce announces an operation whose end (or hold) was journaled but never handed to
	// the notifier, and reports whether it did.
	Announce(ctx context.Context, id string) (*deprovision.Operation, bool, error)
}

// OpenOperations lists unfinished operations, and those whose announcement was lost;
// deprovision.Journal satisfies it.
type OpenOperations interface {
	OpenOperations(ctx context.Context, olderThan time.Time) iter.Seq2[*deprovision.Operation, error]
	UnannouncedOperations(ctx context.Context, olderThan time.Time) iter.Seq2[*deprovision.Operation, error]
}

// PoisonSweeper settles group-work batches that reached the poison queue without being
// journaled (the handler died during their last delivery): each is applied once more as a
// last try, so that it ends in the journal as done or failed members and is counted in its
// operation. The app adapts the group-work queue's poison sweeper to it.
type PoisonSweeper interface {
	// Sweep reads at most max messages of the poison queue.
	Sweep(ctx context.Context, max int) (PoisonSweep, error)
}

// PoisonSweep counts what one sweep of the poison queue did.
type PoisonSweep struct {
	// Settled batches ended in the journal and left the poison queue.
	Settled int
	// Kept messages stay for an operator (not a batch, or the batch could not be settled),
	// hidden for a while so that the next sweep moves on.
	Kept int
	// Young messages arrived too recently and were left for a later sweep.
	Young int
}

// Deps are the ports the passes work through. Seen, Reporter and Poison may be nil (no stale
// pass, no drift events, no poison pass).
type Deps struct {
	Engine        Submitter
	Operations    OpenOperations
	Poison        PoisonSweeper
	Journal       deprovision.CleanupJournal
	Seen          deprovision.LastSeenStore
	Enrollments   deprovision.Enrollments
	Registrations deprovision.Registrations
	Devices       deprovision.Devices
	Reporter      deprovision.DriftReporter
	Clock         deprovision.Clock
	Logger        *slog.Logger
}

// Options are the cleanup settings (docs/cleanup.md). The zero value is safe: resume and drift
// run live, grace and stale are off, orphans are only reported, and turning grace or stale on
// plans without applying until ApplyGrace or ApplyStale says otherwise.
type Options struct {
	// Budget bounds the work of one run, shared by the passes in order: one unit per
	// operation resumed, per poisoned batch settled or kept, per device or record checked
	// against DPS or a hub, per request submitted, per record deleted. Default 100.
	Budget int
	// ResumeAfter is how long an operation must stand still before it is resumed. Default 10m.
	ResumeAfter time.Duration
	// AnnounceAfter is how long an operation journaled as ended (or held for approval) may
	// stay unannounced before the resume pass announces it: the engine announces right after
	// the journal write, so only a process that died in between leaves one. Default 2m.
	AnnounceAfter time.Duration
	// GraceAfter is how long a device stays lost or stolen before it is escalated; 0 turns
	// the grace pass off.
	GraceAfter time.Duration
	// GraceIntent is what a device past its grace period becomes (retired or sold); ""
	// only reports it.
	GraceIntent deprovision.Intent
	// ApplyGrace applies the escalations; otherwise they are planned only (a dry run).
	ApplyGrace bool
	// DriftDryRun plans the re-revocation of drifted compromised devices without applying it.
	DriftDryRun bool
	// StaleAfter is how long a device may go unseen before it is retired; 0 turns the stale
	// pass off.
	StaleAfter time.Duration
	// StaleMax caps the retirements requested per run (default 10).
	StaleMax int
	// StaleAllow lists device ids never retired as stale: exact ids or path.Match patterns
	// ("gateway-*"), optionally prefixed by a hub name ("hub1/gateway-*").
	StaleAllow []string
	// ApplyStale applies the retirements; otherwise they are planned only (a dry run).
	ApplyStale bool
	// DeleteOrphans deletes orphaned registration records; otherwise they are only reported.
	DeleteOrphans bool
	// OrphanGroups are enrollment group ids whose registration records are checked even if
	// this system never saw the group (groups deleted before it was deployed).
	OrphanGroups []string
	// Hubs are the configured hub host names, so that a hub name from a lifecycle event
	// (hubName) maps onto its host name.
	Hubs []string
	// PageSize is the page size of DPS registration queries (default 100).
	PageSize int
}

// DefaultBudget is the operations budget of a run when Options.Budget is not set.
const DefaultBudget = 100

// Runner runs the cleanup passes.
type Runner struct {
	d   Deps
	o   Options
	log *slog.Logger
}

// New returns a Runner. Engine, Operations, Journal, Enrollments, Registrations and Devices
// are required.
func New(d Deps, o Options) (*Runner, error) {
	var missing []string
	for name, ok := range map[string]bool{"Engine": d.Engine != nil, "Operations": d.Operations != nil, "Journal": d.Journal != nil,
		"Enrollments": d.Enrollments != nil, "Registrations": d.Registrations != nil, "Devices": d.Devices != nil} {
		if !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cleanup: Deps.%s is required", strings.Join(missing, ", Deps."))
	}
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.ResumeAfter <= 0 {
		o.ResumeAfter = 10 * time.Minute
	}
	if o.AnnounceAfter <= 0 {
		o.AnnounceAfter = 2 * time.Minute
	}
	if o.StaleMax <= 0 {
		o.StaleMax = 10
	}
	if o.PageSize <= 0 {
		o.PageSize = 100
	}
	if d.Clock == nil {
		d.Clock = deprovision.SystemClock{}
	}
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{d: d, o: o, log: log}, nil
}

// Overrides change one hand-started run (the Operations endpoint): a nil field keeps the setting.
type Overrides struct {
	// DryRun applies to every pass of the run.
	DryRun *bool
	Budget *int
}

// PassReport is what one pass did in one run.
type PassReport struct {
	Pass string `json:"pass"`
	// Ran is false when the pass is off or the budget was spent before it started.
	Ran bool `json:"ran"`
	// Skipped says why the pass did not run.
	Skipped string `json:"skipped,omitempty"`
	DryRun  bool   `json:"dryRun"`
	// Checked counts the items looked at, Findings the findings journaled, Submitted the
	// requests made through the engine, Spent the budget used.
	Checked   int `json:"checked"`
	Findings  int `json:"findings"`
	Submitted int `json:"submitted"`
	// Announced counts the operations whose lost announcement the resume pass made.
	Announced int `json:"announced,omitempty"`
	Failed    int `json:"failed"`
	Spent     int `json:"spent"`
	// Complete is true when the pass reached the end of its sweep; otherwise Cursor is where
	// the next run resumes.
	Complete bool     `json:"complete"`
	Cursor   string   `json:"cursor,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

// Report is what one run did.
type Report struct {
	RunID  string       `json:"runId"`
	Budget int          `json:"budget"`
	Spent  int          `json:"spent"`
	Passes []PassReport `json:"passes"`
}

// String summarises the run in one line for the invocation log.
func (r Report) String() string {
	var parts []string
	for _, p := range r.Passes {
		if !p.Ran {
			parts = append(parts, fmt.Sprintf("%s: %s", p.Pass, p.Skipped))
			continue
		}
		s := fmt.Sprintf("%s: checked %d, findings %d, submitted %d, failed %d", p.Pass, p.Checked, p.Findings, p.Submitted, p.Failed)
		switch p.Pass {
		case PassResume:
			s = fmt.Sprintf("%s: resumed %d open operations, %d could not be resumed", p.Pass, p.Submitted, p.Failed)
		case PassPoison:
			s = fmt.Sprintf("%s: checked %d poisoned messages, settled %d, kept %d", p.Pass, p.Checked, p.Submitted, p.Failed)
		}
		if p.DryRun {
			s += " (dry run)"
		}
		if !p.Complete {
			s += ", resumes next run"
		}
		parts = append(parts, s)
	}
	return fmt.Sprintf("run %s spent %d of %d: %s", r.RunID, r.Spent, r.Budget, strings.Join(parts, "; "))
}

// run is one run in progress.
type run struct {
	*Runner
	id     string
	now    time.Time
	budget int
	spent  int
	// share is the spending limit of the pass running (see Run).
	share int
	dry   *bool
}

// left reports whether n more units fit the run's budget and the current pass's share of it.
func (x *run) left(n int) bool { return x.spent+n <= x.budget && x.spent+n <= x.share }

// room is the units the current pass may still spend.
func (x *run) room() int { return max(0, min(x.budget, x.share)-x.spent) }

// spend uses n units of the run's budget for pass p.
func (x *run) spend(p *PassReport, n int) {
	x.spent += n
	p.Spent += n
}

func (x *run) dryRun(setting bool) bool {
	if x.dry != nil {
		return *x.dry
	}
	return setting
}

func (r *Runner) newRun(o Overrides) *run {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	now := r.d.Clock.Now().UTC()
	x := &run{Runner: r, id: now.Format("20060102T150405Z") + "-" + hex.EncodeToString(b), now: now, budget: r.o.Budget, dry: o.DryRun}
	if o.Budget != nil && *o.Budget > 0 {
		x.budget = *o.Budget
	}
	return x
}

// Run runs every pass in order, sharing one budget. A pass that fails stops where it failed
// (its cursor keeps what it finished) and the run goes on with the next; the error joins the
// failures.
func (r *Runner) Run(ctx context.Context) (Report, error) {
	x := r.newRun(Overrides{})
	rep := Report{RunID: x.id, Budget: x.budget}
	var errs []error
	for i, name := range Passes {
		// Resume may take the whole budget: finishing what was started comes first. The
		// passes after it split what is left evenly, a share unused by one going to the
		// next, so that a long drift sweep does not starve stale devices and orphans.
		x.share = x.budget
		if name != PassResume {
			n := 0
			for _, later := range Passes[i:] {
				if x.off(later) == "" {
					n++
				}
			}
			if n > 0 {
				x.share = x.spent + (x.budget-x.spent+n-1)/n
			}
		}
		p, err := x.pass(ctx, name)
		rep.Passes = append(rep.Passes, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("pass %s: %w", name, err))
		}
	}
	rep.Spent = x.spent
	r.log.InfoContext(ctx, "cleanup run", "run", x.id, "summary", rep.String())
	return rep, errors.Join(errs...)
}

// RunPass runs one pass by hand (the Operations endpoint), with its own budget.
func (r *Runner) RunPass(ctx context.Context, name string, o Overrides) (Report, error) {
	if !validPass(name) {
		return Report{}, fmt.Errorf("%w: %q is not a cleanup pass (%s)", ErrUnknownPass, name, strings.Join(Passes, ", "))
	}
	x := r.newRun(o)
	x.share = x.budget
	p, err := x.pass(ctx, name)
	rep := Report{RunID: x.id, Budget: x.budget, Spent: x.spent, Passes: []PassReport{p}}
	r.log.InfoContext(ctx, "cleanup pass run by hand", "run", x.id, "summary", rep.String())
	if err != nil {
		err = fmt.Errorf("pass %s: %w", name, err)
	}
	return rep, err
}

// Findings lists the findings journaled by one run (every run when runID is "").
func (r *Runner) Findings(ctx context.Context, runID string) iter.Seq2[*deprovision.Finding, error] {
	return r.d.Journal.Findings(ctx, runID)
}

// ErrUnknownPass is returned by RunPass for a name not in [Passes].
var ErrUnknownPass = errors.New("unknown cleanup pass")

func validPass(name string) bool {
	for _, p := range Passes {
		if p == name {
			return true
		}
	}
	return false
}

func (x *run) pass(ctx context.Context, name string) (PassReport, error) {
	p := PassReport{Pass: name}
	if off := x.off(name); off != "" {
		p.Skipped = off
		return p, nil
	}
	if !x.left(1) {
		p.Skipped = "no budget left in this run"
		return p, nil
	}
	cur, err := x.d.Journal.GetCursor(ctx, name)
	if errors.Is(err, deprovision.ErrNotFound) {
		cur, err = &deprovision.Cursor{Pass: name}, nil
	}
	if err != nil {
		p.Skipped = "its cursor cannot be read"
		return p, err
	}
	if name == PassPoison && x.dry != nil && *x.dry {
		// Settling a batch is applying it: there is nothing to plan, and the poison queue
		// cannot be listed without taking its messages.
		p.Skipped = "dry run (poisoned batches are settled by live runs only)"
		return p, nil
	}
	p.Ran = true
	p.DryRun = x.dry != nil && *x.dry
	var after string
	var complete bool
	switch name {
	case PassResume:
		after, complete, err = x.resume(ctx, &p, cur.After)
	case PassPoison:
		after, complete, err = x.poison(ctx, &p)
	case PassGrace:
		p.DryRun = x.dryRun(!x.o.ApplyGrace) && x.o.GraceIntent != ""
		after, complete, err = x.grace(ctx, &p, cur.After)
	case PassDrift:
		p.DryRun = x.dryRun(x.o.DriftDryRun)
		after, complete, err = x.drift(ctx, &p, cur.After)
	case PassDriftGroups:
		after, complete, err = x.driftGroups(ctx, &p, cur.After)
	case PassStale:
		p.DryRun = x.dryRun(!x.o.ApplyStale)
		after, complete, err = x.stale(ctx, &p, cur.After)
	case PassOrphans:
		p.DryRun = x.dryRun(!x.o.DeleteOrphans)
		after, complete, err = x.orphans(ctx, &p, cur.After)
	}
	if err != nil {
		p.Errors = append(p.Errors, err.Error())
		complete = false
	}
	cur.RunID, cur.Updated = x.id, x.d.Clock.Now()
	if complete {
		cur.After = ""
		cur.Sweeps++
		cur.SweptAt = cur.Updated
	} else {
		cur.After = after
	}
	p.Complete, p.Cursor = complete, cur.After
	if x.dry != nil && *x.dry {
		// A dry run by hand leaves the cursor where the scheduled runs keep it.
		return p, err
	}
	if perr := x.d.Journal.PutCursor(ctx, cur); perr != nil {
		// Another run moved the cursor meanwhile (a hand-started pass beside the timer): its
		// position wins, and this run's work is journaled and idempotent anyway.
		if !errors.Is(perr, deprovision.ErrPreconditionFailed) && !errors.Is(perr, deprovision.ErrConflict) {
			err = errors.Join(err, perr)
		}
	}
	return p, err
}

// off says why a pass does not run with these settings ("" when it runs).
func (x *run) off(name string) string {
	switch name {
	case PassPoison:
		if x.d.Poison == nil {
			return "off (no poison queue)"
		}
	case PassGrace:
		if x.o.GraceAfter <= 0 {
			return "off (no grace period set)"
		}
	case PassStale:
		if x.o.StaleAfter <= 0 {
			return "off (no stale period set)"
		}
		if x.d.Seen == nil {
			return "off (no last-seen store)"
		}
	}
	return ""
}

// eventID is the deterministic event id of a cleanup request: the same finding in a re-run
// makes the same operation, so the engine resumes or returns it instead of repeating it. A
// dry run has its own id, so that turning dry run off later is not answered by the planned one.
func eventID(pass string, dry bool, parts ...string) string {
	id := pass + "/" + strings.Join(parts, "/")
	if dry {
		id += "/dry-run"
	}
	return Source + "/" + id
}

// finding journals f (stamped with the run) and counts it.
func (x *run) finding(ctx context.Context, p *PassReport, f deprovision.Finding) error {
	f.Pass, f.RunID, f.Time = p.Pass, x.id, x.d.Clock.Now()
	if f.ID == "" {
		f.ID = p.Pass + "/" + f.Kind + "/" + f.RegistrationID
	}
	if err := x.d.Journal.RecordFinding(ctx, f); err != nil {
		return err
	}
	p.Findings++
	x.log.InfoContext(ctx, "cleanup finding", "run", x.id, "pass", f.Pass, "kind", f.Kind, "registrationId", f.RegistrationID,
		"deviceId", f.DeviceID, "hub", f.Hub, "group", f.GroupID, "action", f.Action, "operation", f.OperationID, "detail", f.Detail)
	return nil
}

// submit hands a cleanup request to the engine, spending one unit.
func (x *run) submit(ctx context.Context, p *PassReport, req deprovision.Request) (*deprovision.Operation, error) {
	req.Source = Source
	if req.EventTime.IsZero() {
		req.EventTime = x.now
	}
	x.spend(p, 1)
	op, err := x.d.Engine.Submit(ctx, req)
	if err != nil {
		p.Failed++
		return nil, fmt.Errorf("submitting %s for %s: %w", req.Intent, req.RegistrationID, err)
	}
	p.Submitted++
	return op, nil
}

// Package cleanup is the scheduled cleanup the Cleanup timer runs: passes that resume
// operations left half done, settle group work left in the poison queue, escalate lost or
// stolen devices past their grace period, find devices, enrollments and groups re-enabled
// behind this system's back (drift), retire devices not seen for a long time, delete
// registration records orphaned by deleted enrollment groups, and prune the cleanup's own old
// rows.
//
// Every pass is bounded by one operations budget per run, shared in a fixed order (resume
// first, so that finishing what was started comes before anything new, and half of the run
// kept for drift, so that a re-enabled revocation is always found within a known time); every
// pass keeps a cursor in the journal (the poison queue is its own), so the next run carries
// on where the last one stopped; every change a pass makes goes through the engine with a
// deterministic event id and source "cleanup", so it is journaled like any other operation,
// counted against the timer's own destructive budget (Guard) and a re-run finds it instead
// of repeating it; and every pass can be turned off, and every change planned only (a dry
// run). docs/cleanup.md is the user's guide.
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
	PassPrune       = "prune"
)

// Passes lists the passes in the order a run takes them.
var Passes = []string{PassResume, PassPoison, PassGrace, PassDrift, PassDriftGroups, PassStale, PassOrphans, PassPrune, PassMoves}

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

// DeviceJournal is what the passes read of a device's journal record before they change it;
// deprovision.Journal satisfies it.
type DeviceJournal interface {
	GetDevice(ctx context.Context, registrationID string) (*deprovision.DeviceState, error)
	DeviceHistory(ctx context.Context, registrationID string) ([]deprovision.OperationSummary, error)
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

// Deps are the ports the passes work through. Poison, Seen, Liveness, Reporter and
// ResumeContext may be nil (no poison pass; no stale pass without Seen and Liveness; no drift
// events; resumed operations at the run's priority).
type Deps struct {
	Engine     Submitter
	Operations OpenOperations
	// Devices' journal rows and histories, read before a device is retired.
	DeviceJournal DeviceJournal
	Poison        PoisonSweeper
	Journal       deprovision.CleanupJournal
	// Ledger keeps what the passes need between runs besides cursors (ledger.go).
	Ledger        Ledger
	Seen          deprovision.LastSeenStore
	Liveness      Liveness
	Enrollments   deprovision.Enrollments
	Registrations deprovision.Registrations
	Devices       deprovision.Devices
	Reporter      deprovision.DriftReporter
	// ResumeContext, when set, gives a resumed operation the context of its intent's
	// priority (the app: a compromised, stolen or lost device's at the hub rate limiter's
	// high priority, as the event path runs it), instead of the run's bulk priority.
	ResumeContext func(ctx context.Context, intent deprovision.Intent) context.Context
	// Moves confirms moves waiting for their device (moves.go); nil turns the pass off.
	Moves  MoveConfirmer
	Clock  deprovision.Clock
	Logger *slog.Logger
}

// Options are the cleanup settings (docs/cleanup.md). The zero value is safe: resume and drift
// run live, grace and stale are off, orphans are only reported, and turning grace or stale on
// plans without applying until ApplyGrace or ApplyStale says otherwise.
type Options struct {
	// Budget bounds the work of one run (see docs/cleanup.md, "The budget"). Default 100.
	Budget int
	// Off turns passes off by name.
	Off map[string]bool
	// DryRun plans every change of every pass without applying it (the app's DRY_RUN): no
	// pass changes DPS or a hub, and the poison pass does not run.
	DryRun bool
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
	// RedisableGroups makes drift-groups revoke again (through the engine, with the intent
	// that disabled it) an enrollment group this system disabled that is enabled again;
	// otherwise it is reported only, whatever a hand-started run's dry-run says.
	RedisableGroups bool
	// StaleAfter is how long a device may go unseen before it is retired; 0 turns the stale
	// pass off. It must be at least MinStaleAfter.
	StaleAfter time.Duration
	// StaleMax caps the retirements requested per run (default 10).
	StaleMax int
	// StaleRunShare and StaleDayShare cap, as a share of the fleet (the devices the lifecycle
	// events have shown in the hubs this app manages), the stale retirements requested per
	// run (the rest wait for the next run) and started per day (beyond it they wait for a
	// person's approval). Defaults 0.001 and 0.01; each allows at least one.
	StaleRunShare, StaleDayShare float64
	// StaleFeedMaxAge is how old a hub's newest lifecycle event may be before the stale pass
	// refuses to retire any device of that hub: a silent feed (a broken Event Grid
	// subscription) makes every device look stale. Default 24h.
	StaleFeedMaxAge time.Duration
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
	// MaxDestructivePerHour is the timer's own destructive budget: the destructive
	// operations its passes may start in one clock hour (UTC) without a person's approval,
	// counted apart from the event path's MAX_DESTRUCTIVE_PER_HOUR (Guard). Default 50.
	MaxDestructivePerHour int
	// KeepFindings is how long findings are kept before the prune pass deletes them
	// (default 90 days); KeepDeletedSightings how long the last-seen row of a deleted device
	// is (default 30 days).
	KeepFindings, KeepDeletedSightings time.Duration
	// PruneMax bounds the rows the prune pass deletes in one run (default 1,000).
	PruneMax int
	// Hubs are the configured hub host names: a hub name from a lifecycle event (hubName)
	// maps onto its host name, and sightings from any other hub are never acted on.
	Hubs []string
	// PageSize is the page size of DPS registration queries (default 100).
	PageSize int
}

// Defaults.
const (
	// DefaultBudget is the operations budget of a run when Options.Budget is not set.
	DefaultBudget = 100
	// MinStaleAfter is the shortest stale period accepted: a device silent for less than a
	// week is not stale, and a typo (1s, 90m) must not retire the fleet.
	MinStaleAfter = 7 * 24 * time.Hour
	// DefaultStaleRunShare and DefaultStaleDayShare are the default shares of the fleet the
	// stale pass may retire per run and per day.
	DefaultStaleRunShare = 0.001
	DefaultStaleDayShare = 0.01
	// DefaultStaleFeedMaxAge is how old a hub's newest lifecycle event may be.
	DefaultStaleFeedMaxAge = 24 * time.Hour
	// DefaultMaxDestructivePerHour is the timer's own destructive budget an hour.
	DefaultMaxDestructivePerHour = 50
)

// Runner runs the cleanup passes.
type Runner struct {
	d   Deps
	o   Options
	log *slog.Logger
}

// New returns a Runner. Engine, Operations, Journal, Enrollments, Registrations and Devices
// are required; the stale pass needs Seen, Liveness, DeviceJournal and Ledger.
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
	if o.StaleAfter > 0 && o.StaleAfter < MinStaleAfter {
		return nil, fmt.Errorf("cleanup: a stale period of %s is shorter than the minimum of %s", o.StaleAfter, MinStaleAfter)
	}
	for _, s := range []*float64{&o.StaleRunShare, &o.StaleDayShare} {
		if *s < 0 || *s > 1 {
			return nil, fmt.Errorf("cleanup: a share of the fleet of %g is not between 0 and 1", *s)
		}
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
	if o.StaleRunShare == 0 {
		o.StaleRunShare = DefaultStaleRunShare
	}
	if o.StaleDayShare == 0 {
		o.StaleDayShare = DefaultStaleDayShare
	}
	if o.StaleFeedMaxAge <= 0 {
		o.StaleFeedMaxAge = DefaultStaleFeedMaxAge
	}
	if o.MaxDestructivePerHour <= 0 {
		o.MaxDestructivePerHour = DefaultMaxDestructivePerHour
	}
	if o.KeepFindings <= 0 {
		o.KeepFindings = 90 * 24 * time.Hour
	}
	if o.KeepDeletedSightings <= 0 {
		o.KeepDeletedSightings = 30 * 24 * time.Hour
	}
	if o.PruneMax <= 0 {
		o.PruneMax = 1000
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
	// Refused counts the items a guard kept the pass from changing (stale: evidence of life,
	// a revoking state, another hub, a silent feed; orphans: a hub identity that exists).
	Refused int `json:"refused,omitempty"`
	// Held counts the requests a guardrail holds for a person's approval.
	Held   int `json:"held,omitempty"`
	Failed int `json:"failed"`
	Spent  int `json:"spent"`
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
	DryRun bool         `json:"dryRun,omitempty"`
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
		case PassPrune:
			s = fmt.Sprintf("%s: deleted %d old rows", p.Pass, p.Checked)
		}
		if p.Refused > 0 {
			s += fmt.Sprintf(", refused %d", p.Refused)
		}
		if p.Held > 0 {
			s += fmt.Sprintf(", held %d for approval", p.Held)
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

// LogAttrs is the run as structured attributes: one group per pass that ran, with its counts.
func (r Report) LogAttrs() []slog.Attr {
	attrs := []slog.Attr{slog.String("run", r.RunID), slog.Int("budget", r.Budget), slog.Int("spent", r.Spent), slog.Bool("dryRun", r.DryRun)}
	for _, p := range r.Passes {
		if !p.Ran {
			attrs = append(attrs, slog.Group(p.Pass, slog.String("skipped", p.Skipped)))
			continue
		}
		a := []any{slog.Int("checked", p.Checked), slog.Int("findings", p.Findings), slog.Int("submitted", p.Submitted),
			slog.Int("failed", p.Failed), slog.Int("spent", p.Spent), slog.Bool("complete", p.Complete), slog.Bool("dryRun", p.DryRun)}
		if p.Announced > 0 {
			a = append(a, slog.Int("announced", p.Announced))
		}
		if p.Refused > 0 {
			a = append(a, slog.Int("refused", p.Refused))
		}
		if p.Held > 0 {
			a = append(a, slog.Int("held", p.Held))
		}
		if len(p.Errors) > 0 {
			a = append(a, slog.String("firstError", p.Errors[0]))
		}
		attrs = append(attrs, slog.Group(p.Pass, a...))
	}
	return attrs
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
	// dry is the run's dry-run override (DRY_RUN, or a hand-started run's); nil keeps each
	// pass's own setting.
	dry *bool
	// hand is true for a hand-started run: a dry one leaves the cursors alone.
	hand bool
	// sweep is the number of the sweep the running pass is in (its cursor's Sweeps).
	sweep int
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

// allDry reports whether the whole run is a dry run.
func (x *run) allDry() bool { return x.dry != nil && *x.dry }

func (r *Runner) newRun(o Overrides, hand bool) *run {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	now := r.d.Clock.Now().UTC()
	x := &run{Runner: r, id: now.Format("20060102T150405Z") + "-" + hex.EncodeToString(b), now: now, budget: r.o.Budget, dry: o.DryRun, hand: hand}
	if r.o.DryRun {
		t := true // DRY_RUN overrides everything, a hand-started "dryRun": false included
		x.dry = &t
	}
	if o.Budget != nil && *o.Budget > 0 {
		x.budget = *o.Budget
	}
	return x
}

// driftReserve is the part of a run's budget kept for the drift pass: half of it, so that
// a full drift sweep takes a known number of runs whatever the other passes find.
func (x *run) driftReserve() int {
	if x.off(PassDrift) != "" {
		return 0
	}
	return (x.budget + 1) / 2
}

// Run runs every pass in order, sharing one budget, and logs one structured summary line. A
// pass that fails stops where it failed (its cursor keeps what it finished) and the run goes
// on with the next; the error joins the failures.
//
// The budget is shared so: resume may take all of it but the drift pass's reserve (half the
// budget); poison and grace share what resume leaves outside that reserve, evenly, a share
// one does not use going to the next; drift takes its reserve; the passes after it share
// what is left evenly; and drift carries on with whatever no pass used.
func (r *Runner) Run(ctx context.Context) (Report, error) {
	x := r.newRun(Overrides{}, false)
	rep := Report{RunID: x.id, Budget: x.budget, DryRun: x.allDry()}
	var errs []error
	reserve := x.driftReserve()
	driftAt := -1
	for i, name := range Passes {
		switch {
		case name == PassResume:
			x.share = x.budget - reserve
		case name == PassDrift:
			x.share = min(x.budget, x.spent+reserve)
			reserve = 0
		default:
			n := 0
			for _, later := range Passes[i:] {
				if later != PassDrift && later != PassPrune && x.off(later) == "" {
					n++
				}
			}
			x.share = x.budget - reserve
			if n > 0 {
				x.share = x.spent + (x.budget-reserve-x.spent+n-1)/n
			}
		}
		p, err := x.pass(ctx, name)
		if name == PassDrift {
			driftAt = len(rep.Passes)
		}
		rep.Passes = append(rep.Passes, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("pass %s: %w", name, err))
		}
	}
	// Drift carries on with what the others left.
	if d := &rep.Passes[driftAt]; d.Ran && !d.Complete && len(d.Errors) == 0 && x.spent < x.budget {
		x.share = x.budget
		more, err := x.pass(ctx, PassDrift)
		merge(d, more)
		if err != nil {
			errs = append(errs, fmt.Errorf("pass %s: %w", PassDrift, err))
		}
	}
	rep.Spent = x.spent
	r.log.LogAttrs(ctx, slog.LevelInfo, "cleanup run", rep.LogAttrs()...)
	return rep, errors.Join(errs...)
}

// merge adds a pass's second turn to its report.
func merge(p *PassReport, more PassReport) {
	if !more.Ran {
		return
	}
	p.Checked += more.Checked
	p.Findings += more.Findings
	p.Submitted += more.Submitted
	p.Refused += more.Refused
	p.Held += more.Held
	p.Failed += more.Failed
	p.Spent += more.Spent
	p.Complete, p.Cursor = more.Complete, more.Cursor
	p.Errors = append(p.Errors, more.Errors...)
	if len(p.Errors) > maxErrors {
		p.Errors = p.Errors[:maxErrors]
	}
}

// RunPass runs one pass by hand (the Operations endpoint), with its own budget.
func (r *Runner) RunPass(ctx context.Context, name string, o Overrides) (Report, error) {
	if !validPass(name) {
		return Report{}, fmt.Errorf("%w: %q is not a cleanup pass (%s)", ErrUnknownPass, name, strings.Join(Passes, ", "))
	}
	x := r.newRun(o, true)
	x.share = x.budget
	p, err := x.pass(ctx, name)
	rep := Report{RunID: x.id, Budget: x.budget, Spent: x.spent, DryRun: x.allDry(), Passes: []PassReport{p}}
	r.log.LogAttrs(ctx, slog.LevelInfo, "cleanup pass run by hand", rep.LogAttrs()...)
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
	if name != PassPrune && !x.left(1) {
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
	if name == PassPoison && x.allDry() {
		// Settling a batch is applying it: there is nothing to plan, and the poison queue
		// cannot be listed without taking its messages.
		p.Skipped = "dry run (poisoned batches are settled by live runs only)"
		return p, nil
	}
	p.Ran = true
	p.DryRun = x.allDry()
	x.sweep = cur.Sweeps
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
	case PassPrune:
		after, complete, err = x.prune(ctx, &p, cur.After)
	case PassMoves:
		after, complete, err = x.moves(ctx, &p, cur.After)
	}
	if err != nil {
		p.note(err)
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
	if x.hand && x.allDry() {
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
	if x.o.Off[name] {
		return "off (setting)"
	}
	switch name {
	case PassPoison:
		if x.d.Poison == nil {
			return "off (no poison queue)"
		}
	case PassGrace:
		if x.o.GraceAfter <= 0 {
			return "off (no grace period set)"
		}
	case PassMoves:
		if x.d.Moves == nil {
			return "off (no move confirmer)"
		}
	case PassStale:
		if x.o.StaleAfter <= 0 {
			return "off (no stale period set)"
		}
		if x.d.Seen == nil || x.d.Liveness == nil || x.d.DeviceJournal == nil || x.d.Ledger == nil {
			return "off (no last-seen store, hub activity reader, device journal or ledger)"
		}
	case PassPrune:
		if x.d.Ledger == nil || x.d.Seen == nil {
			return "off (no ledger or last-seen store)"
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
	x.log.DebugContext(ctx, "cleanup finding", "run", x.id, "pass", f.Pass, "kind", f.Kind, "registrationId", f.RegistrationID,
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
		return nil, fmt.Errorf("submitting %s for %s: %w", req.Intent, subject(req), err)
	}
	p.Submitted++
	if op.Status == deprovision.StatusAwaitingApproval {
		p.Held++
	}
	return op, nil
}

func subject(req deprovision.Request) string {
	if req.RegistrationID == "" {
		return "group " + req.EnrollmentGroupID
	}
	return req.RegistrationID
}

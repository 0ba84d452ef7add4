package deprovision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Deps are the ports the engine works through.
type Deps struct {
	Enrollments   Enrollments
	Registrations Registrations
	Devices       Devices
	Journal       Journal
	Clock         Clock
	// Notifier may be nil.
	Notifier Notifier
	Logger   *slog.Logger
	// Work carries group-wide operations' members to the GroupWork workers in batches
	// (fanout.go). It is required for group-wide intents: without it they fail.
	Work WorkQueue
	// Budget counts destructive operations per hour for Config.Guard; nil: not counted.
	Budget Budget
	// Holder, when set, is asked about every destructive operation just planned (holder.go).
	Holder Holder
	// Burst, when set, coalesces the DPS work of single-device revocations that arrive
	// together (burst.go); nil takes every request on its own.
	Burst Burst
}

// Config tunes the engine. The zero value is usable.
type Config struct {
	// LeaseDuration is how long one invocation owns an operation before another delivery of
	// the same event may take it over (it is renewed while steps run). Default 5 minutes.
	LeaseDuration time.Duration
	// GroupPageSize is the number of registration states asked for per page. Default 100.
	GroupPageSize int
	// Hubs, when not empty, are the host names of the hubs this deployment manages: a device
	// in another hub (or a move to one) is refused.
	Hubs []string
	// ETagRetries bounds the re-read-and-re-decide loop of one step after 412s. Default 5.
	ETagRetries int
	// Guard holds operations beyond its limits for a person's approval (guard.go).
	Guard Guardrails
	// RecordsTime bounds how long one group-work invocation spends deleting its batch's
	// registration records (waiting for the DPS budget, which every instance's workers
	// share) before it hands the members left to a new message. Default 2 minutes, well
	// inside a function's time limit however many instances wait.
	RecordsTime time.Duration
}

// Engine resolves, plans and applies requests, journaling every step.
type Engine struct {
	d   Deps
	c   Config
	log *slog.Logger
}

// NewEngine returns an engine over d.
func NewEngine(d Deps, c Config) *Engine {
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 5 * time.Minute
	}
	if c.GroupPageSize <= 0 {
		c.GroupPageSize = 100
	}
	if c.ETagRetries <= 0 {
		c.ETagRetries = 5
	}
	if c.RecordsTime <= 0 {
		c.RecordsTime = 2 * time.Minute
	}
	if d.Clock == nil {
		d.Clock = SystemClock{}
	}
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Engine{d: d, c: c, log: log}
}

// OperationID is the journal id of the operation for one event: stable across deliveries, and
// safe as a Table Storage key whatever the source and event id contain.
func OperationID(source, eventID string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + eventID))
	return "op-" + hex.EncodeToString(sum[:16])
}

// maxRejectedCertificate bounds the certificate a rejected request keeps in the journal.
const maxRejectedCertificate = 64 * 1024

func deviceKey(rid string) string { return strings.ToLower(rid) } // DPS ids are case-insensitive

func newOwner() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// retryable reports whether err is worth another delivery: marked transient, or cut short by
// the invocation's own context.
func retryable(err error) bool {
	return IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func asTransient(err error) error {
	if err == nil || IsTransient(err) {
		return err
	}
	return Transient(err)
}

// Submit journals and carries out one request (or only plans it when req.DryRun), and returns
// the operation as it stands. An error for which [IsTransient] is true means "try the whole
// delivery again later"; a refusal is not an error: the operation comes back rejected, with a
// Reason. A redelivery of the same (Source, EventID) resumes the stored operation at its first
// unfinished step (or returns it if terminal); a concurrent duplicate that finds a live lease
// gets a transient [ErrBusy] and runs nothing. Another event reusing the (Source, EventID) of
// a stored operation with different content ([RequestDiff]) runs nothing either: it comes
// back as its own rejected operation, journaled under a conflict id ([ReplayConflict]).
func (e *Engine) Submit(ctx context.Context, req Request) (*Operation, error) {
	if err := req.Validate(); err != nil {
		r, _ := AsRefusal(err)
		return e.Reject(ctx, req, r.Reason)
	}
	ctx, mode, leave, err := joinBurst(ctx, e.d.Burst, req)
	defer leave()
	if err != nil {
		return nil, err
	}
	op, err := e.acquire(ctx, req, mode != BurstDefer)
	if err != nil || op.Status.Terminal() || op.Status == StatusAwaitingApproval {
		return op, err
	}
	if mode == BurstDefer {
		// Journaled without a lease (or its lease given back); the burst queue's worker
		// carries it out (if the hand-over fails, the event is delivered again and resumes it).
		if op.LeaseOwner != "" {
			e.release(ctx, op)
		}
		if err := e.d.Burst.Defer(ctx, req); err != nil {
			return op, asTransient(fmt.Errorf("operation %s: handing it to the burst queue: %w", op.ID, err))
		}
		e.log.InfoContext(ctx, "revocation deferred to the burst queue", "operation", op.ID)
		return op, nil
	}
	return e.run(ctx, op)
}

// Reject journals a request refused before policy (malformed event, unauthorized source) as a
// terminal, rejected operation. A second delivery returns the stored operation; another event
// reusing the (source, id) of a stored operation is journaled as a conflict (see
// [ReplayConflict]), its reason followed by reason, and that operation is returned.
func (e *Engine) Reject(ctx context.Context, req Request, reason string) (*Operation, error) {
	now := e.d.Clock.Now()
	if n := len(req.CertificatePEM); n > maxRejectedCertificate {
		// A refused request keeps what identifies it; a huge certificate would not fit a row.
		req.CertificatePEM = ""
		reason += fmt.Sprintf(" (the request's certificate, %d bytes, is not kept)", n)
	}
	op := &Operation{ID: OperationID(req.Source, req.EventID), Request: req, Status: StatusRejected,
		Reason: reason, Created: now, Updated: now}
	stored, created, conflict, err := e.createOrConflict(ctx, op, reason)
	if err != nil {
		// The journal marks what is worth retrying (store unavailable); anything else is kept
		// as it is, so that the caller does not retry what can never be journaled.
		return nil, fmt.Errorf("journaling rejected operation %s: %w", op.ID, err)
	}
	if !created || conflict {
		return stored, nil
	}
	e.log.InfoContext(ctx, "operation rejected", "operation", op.ID, "intent", req.Intent, "reason", reason)
	e.notify(ctx, stored)
	return stored, nil
}

// Operation returns a journaled operation and its steps (the latest record of each).
func (e *Engine) Operation(ctx context.Context, id string) (*Operation, []StepRecord, error) {
	op, err := e.d.Journal.GetOperation(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("reading operation %s: %w", id, err)
	}
	steps, err := e.d.Journal.Steps(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("reading steps of operation %s: %w", id, err)
	}
	return op, steps, nil
}

// DeviceHistory returns the device row (nil when this system never changed the device) and
// the operations about the device, newest first.
func (e *Engine) DeviceHistory(ctx context.Context, registrationID string) (*DeviceState, []OperationSummary, error) {
	key := deviceKey(registrationID)
	ds, err := e.d.Journal.GetDevice(ctx, key)
	if errors.Is(err, ErrNotFound) {
		ds, err = nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading device row %s: %w", registrationID, err)
	}
	hist, err := e.d.Journal.DeviceHistory(ctx, key)
	if err != nil {
		return nil, nil, fmt.Errorf("reading history of %s: %w", registrationID, err)
	}
	return ds, hist, nil
}

// acquire creates the operation or takes over a stored one whose lease has run out. Another
// event reusing the operation's (source, id) gets its own rejected operation instead. Without
// lease (a request handed to the burst queue at once), a new operation is journaled with no
// lease and a stored one is left as it is: the queue's worker takes it.
func (e *Engine) acquire(ctx context.Context, req Request, lease bool) (*Operation, error) {
	now := e.d.Clock.Now()
	op := &Operation{ID: OperationID(req.Source, req.EventID), Request: req, Status: StatusRunning,
		Created: now, Updated: now}
	if lease {
		op.LeaseOwner, op.LeaseUntil = newOwner(), now.Add(e.c.LeaseDuration)
	}
	stored, created, conflict, err := e.createOrConflict(ctx, op, "")
	if err != nil {
		return nil, fmt.Errorf("journaling operation %s: %w", op.ID, err)
	}
	if created || conflict {
		return stored, nil // a conflict comes back rejected (terminal): nothing runs
	}
	if stored.Status.Terminal() || stored.Status == StatusAwaitingApproval {
		return stored, nil // waiting on a person, not on a fault: nothing to resume
	}
	if stored.LeaseOwner != "" && stored.LeaseUntil.After(now) {
		return nil, Transient(fmt.Errorf("operation %s is being applied by another delivery until %s: %w",
			stored.ID, stored.LeaseUntil.Format(time.RFC3339), ErrBusy))
	}
	if !lease {
		return stored, nil
	}
	stored.LeaseOwner = op.LeaseOwner
	stored.LeaseUntil = now.Add(e.c.LeaseDuration)
	stored.Updated = now
	if err := e.d.Journal.UpdateOperation(ctx, stored); err != nil {
		if errors.Is(err, ErrPreconditionFailed) {
			return nil, Transient(fmt.Errorf("operation %s was taken over by another delivery: %w", stored.ID, ErrBusy))
		}
		return nil, asTransient(fmt.Errorf("taking over operation %s: %w", stored.ID, err))
	}
	e.log.InfoContext(ctx, "resuming operation", "operation", stored.ID, "status", stored.Status)
	return stored, nil
}

// save writes op, renewing the lease; losing the lease (412) is transient.
func (e *Engine) save(ctx context.Context, op *Operation) error {
	now := e.d.Clock.Now()
	op.Updated = now
	if !op.Status.Terminal() {
		op.LeaseUntil = now.Add(e.c.LeaseDuration)
	}
	if err := e.d.Journal.UpdateOperation(ctx, op); err != nil {
		if errors.Is(err, ErrPreconditionFailed) && op.Progress.Batches > 0 {
			return e.saveOverWorkers(ctx, op) // group workers count batches in the same row
		}
		if errors.Is(err, ErrPreconditionFailed) {
			return Transient(fmt.Errorf("operation %s: lease lost to another delivery: %w", op.ID, ErrBusy))
		}
		return asTransient(fmt.Errorf("journaling operation %s: %w", op.ID, err))
	}
	return nil
}

// release gives the lease back after a transient failure, so that a redelivery resumes at once.
func (e *Engine) release(ctx context.Context, op *Operation) {
	op.LeaseOwner, op.LeaseUntil, op.Updated = "", time.Time{}, e.d.Clock.Now()
	if err := e.d.Journal.UpdateOperation(context.WithoutCancel(ctx), op); err != nil {
		e.log.WarnContext(ctx, "releasing operation lease", "operation", op.ID, "err", err)
	}
}

// finish makes op terminal and announces it.
func (e *Engine) finish(ctx context.Context, op *Operation, st Status, reason string) (*Operation, error) {
	op.Status, op.Reason = st, reason
	op.LeaseOwner, op.LeaseUntil = "", time.Time{}
	op.Hold, op.Announced = nil, time.Time{} // the terminal write leaves it unannounced (announce.go)
	if err := e.save(ctx, op); err != nil {
		return op, err
	}
	e.log.InfoContext(ctx, "operation ended", "operation", op.ID, "intent", op.Request.Intent,
		"registrationId", op.Request.RegistrationID, "status", st, "reason", reason)
	e.notify(ctx, op)
	return op, nil
}

// notify announces op, just journaled terminal, and marks it announced (announce.go).
func (e *Engine) notify(ctx context.Context, op *Operation) {
	e.announce(ctx, op)
}

// run plans op if it has no plan yet, then applies its unfinished steps.
func (e *Engine) run(ctx context.Context, op *Operation) (*Operation, error) {
	var p *planning // nil: an earlier delivery journaled the plan
	if op.Plan == nil {
		res, row, done, err := e.plan(ctx, op)
		if err != nil {
			if retryable(err) {
				e.release(ctx, op)
				return op, asTransient(err)
			}
			return e.finish(ctx, op, StatusFailed, err.Error())
		}
		if done {
			return op, nil
		}
		p = &planning{row: row, replanned: burstModeOf(ctx) == burstReplan}
		if res.Device != nil {
			p.read = &deviceRead{hub: res.Hub, id: res.DeviceID, d: res.Device}
		}
	}
	err := e.execute(ctx, op, p)
	if errors.Is(err, errIndividual) {
		// A coalesced plan's blocking enrollment met an individual enrollment: plan again
		// from a full read (the new plan's steps take the place of the old ones).
		e.log.InfoContext(ctx, "coalesced revocation found an individual enrollment; planning again", "operation", op.ID)
		op.Plan = nil
		return e.run(context.WithValue(ctx, burstKey{}, burstReplan), op)
	}
	if errors.Is(err, errAwaitBatches) {
		// Fanned out: the steps after the members wait until every batch has succeeded.
		var more bool
		if op, more, err = e.awaitBatches(ctx, op); err != nil || !more {
			return op, err
		}
		err = e.execute(ctx, op, nil)
	}
	if err != nil {
		if retryable(err) {
			e.release(ctx, op)
			e.log.WarnContext(ctx, "operation interrupted; a redelivery resumes it", "operation", op.ID, "err", err)
			return op, asTransient(err)
		}
		e.unlockDevice(ctx, op)
		return e.finish(ctx, op, StatusFailed, err.Error())
	}
	if !op.Request.Intent.GroupWide() {
		if err := e.recordDevice(ctx, op, p.lockedRow()); err != nil {
			e.release(ctx, op)
			return op, asTransient(err)
		}
	}
	return e.finish(ctx, op, StatusSucceeded, "")
}

// plan resolves and plans op and journals the plan, and returns what resolution read and the
// device row it locked (nil for a group). done is true when op became terminal (rejected, held
// for approval, or planned for a dry run).
func (e *Engine) plan(ctx context.Context, op *Operation) (res *Resolved, row *DeviceState, done bool, err error) {
	ok := false
	if burstModeOf(ctx) == burstCoalesce {
		res, ok, err = resolveCoalesced(ctx, e.d.Burst, e.d.Registrations, e.d.Devices, op.Request)
	}
	if !ok && err == nil {
		res, err = Resolve(ctx, e.d.Enrollments, e.d.Registrations, e.d.Devices, op.Request)
		if err == nil && burstModeOf(ctx) == burstReplan {
			res.Notes = append(res.Notes, "planned again: the blocking enrollment of a coalesced plan could not be created because an individual enrollment exists (the device is not a group member)")
		}
	}
	if r, ok := AsRefusal(err); ok {
		_, err := e.finish(ctx, op, StatusRejected, r.Reason)
		return nil, nil, true, err
	}
	if err != nil {
		return nil, nil, false, err
	}
	row, done, err = e.planResolved(ctx, op, res)
	return res, row, done, err
}

// planResolved is plan after resolution; row is the device row it locked.
func (e *Engine) planResolved(ctx context.Context, op *Operation, res *Resolved) (row *DeviceState, done bool, err error) {
	req := op.Request
	if req.RegistrationID == "" && res.RegistrationID != "" {
		op.Request.RegistrationID = res.RegistrationID
		req = op.Request
	}
	var prior *DeviceState
	if !req.Intent.GroupWide() {
		prior, err = e.d.Journal.GetDevice(ctx, deviceKey(req.RegistrationID))
		if errors.Is(err, ErrNotFound) {
			prior, err = nil, nil
		}
		if err != nil {
			return nil, false, asTransient(fmt.Errorf("reading device row %s: %w", req.RegistrationID, err))
		}
		// A dry run changes nothing, so it need not wait for the device.
		if !req.DryRun && prior != nil && prior.PendingOperation != "" && prior.PendingOperation != op.ID {
			other, err := e.d.Journal.GetOperation(ctx, prior.PendingOperation)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return nil, false, asTransient(err)
			}
			if err == nil && !other.Status.Terminal() {
				return nil, false, Transient(fmt.Errorf("device %s is being changed by operation %s: %w", req.RegistrationID, other.ID, ErrBusy))
			}
		}
	}
	var plan *Plan
	if err = e.checkHubs(res, req); err == nil {
		plan, err = PlanFor(res, req, prior)
	}
	if r, ok := AsRefusal(err); ok {
		_, err := e.finish(ctx, op, StatusRejected, r.Reason)
		return nil, true, err
	}
	if err != nil {
		return nil, false, err
	}
	op.Plan = plan
	if req.DryRun {
		_, err := e.finish(ctx, op, StatusPlanned, "dry run: nothing was changed")
		return nil, true, err
	}
	if held, err := e.guard(ctx, op); held || err != nil {
		return nil, held, err
	}
	if !req.Intent.GroupWide() {
		ds := prior
		if ds == nil {
			ds = &DeviceState{RegistrationID: deviceKey(req.RegistrationID)}
		}
		ds.PendingOperation = op.ID
		ds.Updated = e.d.Clock.Now()
		if err := e.d.Journal.PutDevice(ctx, ds); err != nil {
			if errors.Is(err, ErrPreconditionFailed) || errors.Is(err, ErrConflict) {
				return nil, false, Transient(fmt.Errorf("device row %s changed while planning: %w", req.RegistrationID, ErrBusy))
			}
			return nil, false, asTransient(fmt.Errorf("locking device row %s: %w", req.RegistrationID, err))
		}
		row = ds
	}
	e.log.InfoContext(ctx, "plan", "operation", op.ID, "path", plan.Path, "steps", len(plan.Steps))
	return row, false, e.save(ctx, op)
}

func (e *Engine) checkHubs(r *Resolved, req Request) error {
	if len(e.c.Hubs) == 0 {
		return nil
	}
	ok := func(h string) bool {
		return slices.ContainsFunc(e.c.Hubs, func(x string) bool { return strings.EqualFold(x, h) })
	}
	if r.Hub != "" && !ok(r.Hub) {
		return refuse("device %s is in hub %s, which this deployment does not manage (configured: %s)", r.RegistrationID, r.Hub, strings.Join(e.c.Hubs, ", "))
	}
	if req.Intent == IntentMoved && !ok(req.TargetHub) {
		return refuse("target hub %s is not one this deployment manages (configured: %s)", req.TargetHub, strings.Join(e.c.Hubs, ", "))
	}
	return nil
}

// deviceRead is the hub identity resolution read in this invocation. The device step decides
// and writes on it instead of reading the identity again (every read is a registry operation
// charged to the hub's budget); its ETag still guards the write, and a 412 leads to a fresh
// read and a new decision. A resumed operation has none: its step reads for itself.
type deviceRead struct {
	hub, id string
	d       *Device
}

// take returns a copy of the read if it is of the device hub/id, once.
func (r *deviceRead) take(hub, id string) *Device {
	if r == nil || r.d == nil || !strings.EqualFold(r.hub, hub) || r.id != id {
		return nil
	}
	d := *r.d
	r.d = nil
	return &d
}

// planning is what planning op in this invocation leaves to its steps and to the device row's
// last write, so that neither reads again what was just read or written.
type planning struct {
	read *deviceRead  // the hub identity resolution read, when it read one
	row  *DeviceState // the device row it locked (nil for a group)
	// replanned: a coalesced plan made again after its blocking enrollment met an
	// individual enrollment; the old plan's step records stand.
	replanned bool
}

// identity is the hub identity read while planning; nil for a plan an earlier delivery made.
func (p *planning) identity() *deviceRead {
	if p == nil {
		return nil
	}
	return p.read
}

// lockedRow is the device row planning locked; nil for a plan an earlier delivery made.
func (p *planning) lockedRow() *DeviceState {
	if p == nil {
		return nil
	}
	return p.row
}

// fresh says no step of the plan can have a record yet: it was made in this invocation, and
// its steps run only after it is journaled.
func (p *planning) fresh() bool { return p != nil && !p.replanned }

// execute applies every unfinished step in order, journaling before and after each. p is what
// planning in this invocation left (nil for a plan an earlier delivery made): a fresh plan's
// step records are not read, sparing every new operation a journal query on its critical path.
func (e *Engine) execute(ctx context.Context, op *Operation, p *planning) error {
	planned := p.identity()
	var recs []StepRecord
	if !p.fresh() {
		var err error
		if recs, err = e.d.Journal.Steps(ctx, op.ID); err != nil {
			return asTransient(fmt.Errorf("reading steps of %s: %w", op.ID, err))
		}
	}
	latest := map[int]StepRecord{}
	for _, r := range recs {
		latest[r.Index] = r
	}
	for i, st := range op.Plan.Steps {
		prev, seen := latest[i]
		if seen && (prev.Outcome == StepDone || prev.Outcome == StepNoChange || prev.Outcome == StepSkipped) {
			if st.Kind == StepGroupMembers && awaitingBatches(op) {
				return errAwaitBatches
			}
			continue
		}
		start := e.d.Clock.Now()
		rec := StepRecord{OperationID: op.ID, Index: i, Kind: st.Kind, Target: st.Target, Outcome: StepStarted, Time: start}
		if err := e.d.Journal.RecordStep(ctx, rec); err != nil {
			return asTransient(fmt.Errorf("journaling start of step %d: %w", i+1, err))
		}
		res := e.apply(ctx, op, st, planned, seen)
		end := e.d.Clock.Now()
		rec.Duration, rec.Time = end.Sub(start), end
		rec.HTTPStatus, rec.ErrorCode = res.status, res.code
		switch {
		case res.err != nil:
			rec.Outcome = StepFailed
			rec.Error = res.err.Error()
			if s, c := ServiceStatus(res.err); s != 0 || c != "" {
				rec.HTTPStatus, rec.ErrorCode = s, c
			}
		case res.changed || seen && wouldChange(st):
			rec.Outcome = StepDone
			rec.Error = res.note
		default:
			rec.Outcome = StepNoChange
			rec.Error = res.note
		}
		if err := e.d.Journal.RecordStep(context.WithoutCancel(ctx), rec); err != nil {
			return asTransient(fmt.Errorf("journaling end of step %d: %w", i+1, err))
		}
		e.log.InfoContext(ctx, "step", "operation", op.ID, "index", i+1, "kind", st.Kind, "target", st.Target,
			"outcome", rec.Outcome, "status", rec.HTTPStatus, "err", rec.Error)
		if res.err != nil {
			return fmt.Errorf("step %d (%s %s): %w", i+1, st.Kind, st.Target, res.err)
		}
		if st.Kind == StepGroupMembers && awaitingBatches(op) {
			return errAwaitBatches
		}
		if e.d.Clock.Now().After(op.LeaseUntil.Add(-e.c.LeaseDuration / 2)) {
			if err := e.save(ctx, op); err != nil {
				return err
			}
		}
	}
	return nil
}

// wouldChange reports whether st, given the state seen when planning, changes its target: on a
// resume, finding the target already changed then means the interrupted run changed it.
func wouldChange(st Step) bool {
	b := st.Params[ParamBefore]
	switch st.Kind {
	case StepDisableEnrollment, StepDisableGroup, StepDisableDevice:
		return b == "enabled"
	case StepEnableEnrollment, StepEnableDevice:
		return b == "disabled"
	case StepDeleteEnrollment, StepDeleteBlockingEnrollment, StepDeleteRegistration, StepDeleteGroup, StepDeleteDevice:
		return b == "present"
	case StepCreateBlockingEnrollment, StepCreateMoveEnrollment:
		return b == "missing"
	case StepRetargetEnrollment, StepGroupMembers, StepDeleteGroupRegistrations, StepDisableDerivedEnrollments:
		return true
	}
	return false
}

// recordDevice writes the device row: the state this operation left the device in, and the
// end of its hold on the device. locked, when not nil, is the row as this invocation wrote it
// while planning: the first try writes on it instead of reading the row again (its ETag
// still guards the write; a 412 reads the row).
func (e *Engine) recordDevice(ctx context.Context, op *Operation, locked *DeviceState) error {
	key := deviceKey(op.Request.RegistrationID)
	for attempt := 0; attempt <= e.c.ETagRetries; attempt++ {
		var ds *DeviceState
		var err error
		if attempt == 0 && locked != nil && locked.ETag != "" {
			cp := *locked
			ds = &cp
		} else {
			ds, err = e.d.Journal.GetDevice(ctx, key)
		}
		if errors.Is(err, ErrNotFound) {
			ds, err = &DeviceState{RegistrationID: key}, nil
		}
		if err != nil {
			return fmt.Errorf("reading device row %s: %w", key, err)
		}
		if ds.OperationID == op.ID && ds.PendingOperation != op.ID {
			return nil // written before an interruption
		}
		if len(op.Plan.Steps) > 0 {
			applyToDevice(ds, op)
		}
		if ds.PendingOperation == op.ID {
			ds.PendingOperation = ""
		}
		ds.Updated = e.d.Clock.Now()
		err = e.d.Journal.PutDevice(ctx, ds)
		if errors.Is(err, ErrPreconditionFailed) || errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing device row %s: %w", key, err)
		}
		return nil
	}
	return Transient(fmt.Errorf("device row %s kept changing: %w", key, ErrBusy))
}

func applyToDevice(ds *DeviceState, op *Operation) {
	req := op.Request
	// A lower-ranked change (compromised after sold) does not hide that the device is gone for good.
	if req.Intent.rank() >= ds.Intent.rank() || ds.Intent == "" {
		ds.Intent, ds.OperationID = req.Intent, op.ID
		ds.EventTime = req.EventTime
		if ds.EventTime.IsZero() {
			ds.EventTime = op.Created
		}
	}
	// Any later change of the device ends a move's wait: a revocation blocks the move, and a
	// new move names its own target below.
	ds.MoveTarget = ""
	for _, st := range op.Plan.Steps {
		switch st.Kind {
		case StepCreateBlockingEnrollment:
			ds.BlockingEnrollment, ds.EnrollmentAction, ds.GroupMember = true, "blocked", true
		case StepDeleteBlockingEnrollment:
			ds.BlockingEnrollment, ds.EnrollmentAction = false, "unblocked"
		case StepDisableEnrollment:
			if st.Params[ParamBefore] == "disabled" && ds.EnrollmentAction != "disabled" {
				ds.FoundDisabled = true // someone else disabled it: not this system's to undo
			}
			if st.Params[ParamCovers] != "" {
				ds.GroupMember = true // it stands in front of a group: never to be deleted
			}
			ds.EnrollmentAction = "disabled"
		case StepEnableEnrollment:
			ds.EnrollmentAction, ds.FoundDisabled = "enabled", false
		case StepDeleteEnrollment:
			ds.EnrollmentAction, ds.FoundDisabled = "deleted", false
		case StepRetargetEnrollment:
			ds.EnrollmentAction = "retargeted"
		case StepCreateMoveEnrollment:
			ds.EnrollmentAction, ds.GroupMember = "move-enrollment", true
		case StepDisableDevice, StepEnableDevice, StepDeleteDevice:
			ds.Hub, ds.DeviceID = st.Params[ParamHub], st.Params[ParamDeviceID]
			ds.HubAction = map[StepKind]string{StepDisableDevice: "disabled", StepEnableDevice: "enabled", StepDeleteDevice: "deleted"}[st.Kind]
		case StepAwaitMove:
			ds.Hub, ds.DeviceID = st.Params[ParamHub], st.Params[ParamDeviceID]
			ds.HubAction, ds.MoveTarget = HubAwaitingMove, st.Params[ParamTargetHub]
		}
	}
}

// unlockDevice ends op's hold on its device row after a permanent failure.
func (e *Engine) unlockDevice(ctx context.Context, op *Operation) {
	if op.Request.Intent.GroupWide() || op.Request.DryRun {
		return
	}
	key := deviceKey(op.Request.RegistrationID)
	ds, err := e.d.Journal.GetDevice(ctx, key)
	if err != nil || ds.PendingOperation != op.ID {
		return
	}
	ds.PendingOperation = ""
	ds.Updated = e.d.Clock.Now()
	if err := e.d.Journal.PutDevice(ctx, ds); err != nil {
		e.log.WarnContext(ctx, "unlocking device row", "registrationId", key, "err", err)
	}
}

package deprovision

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// StepGroupBatch is the journal record of one fanned-out batch (not a planned step): its
// index is batchStepBase + the batch number, its outcome done or failed, its error the
// members that failed.
const StepGroupBatch StepKind = "hub.group-batch"

const (
	// batchStepBase puts batch records after every planned step (plans have a handful).
	batchStepBase = 1000
	// unnumberedStepBase is where batches without a number (enqueued by hand) are recorded.
	unnumberedStepBase = 900000
	// enqueueParallel bounds the messages of one page enqueued at the same time.
	enqueueParallel = 8
	// progressAttempts bounds the re-reads of one ETag-guarded progress update; workers of
	// one operation update its row concurrently.
	progressAttempts = 64
	// maxFailureChars bounds one "deviceId: error" entry of Progress.Failures, so that the
	// progress (one Table property) stays small.
	maxFailureChars = 200
)

// fanOut is the StepGroupMembers step (see groupMembers): it pages the group's
// registration states from where the operation stopped, splits each page by assigned hub
// into batches of at most 100 members, enqueues them, and journals the page (continuation,
// batches enqueued) before reading the next. A crash between the enqueues and the journal
// write re-reads the same page and enqueues the same batches again under the same numbers,
// which the workers count once, and marked Again, so that a copy whose twin was already
// applied and journaled is counted from the journal without a second bulk call. The step
// ends when every page is enqueued; the operation stays running until the workers have
// accounted for every batch (see [Engine.ApplyBatch]).
func (e *Engine) fanOut(ctx context.Context, op *Operation, st Step) stepResult {
	gid, action, reason := st.Params[ParamGroupID], Action(st.Params[ParamAction]), st.Params[ParamStatusReason]
	if action != ActionDisable && action != ActionDelete {
		return failed(fmt.Errorf("fanning out group %s: the action must be disable or delete, not %q", gid, action))
	}
	pr := &op.Progress
	if pr.Pages > 0 && pr.Continuation == "" {
		return stepResult{note: fmt.Sprintf("%d members in %d batches enqueued", pr.Total, pr.Batches)}
	}
	owner := op.LeaseOwner
	retire := action == ActionDelete && planHas(op.Plan, StepDeleteGroupRegistrations)
	for page, err := range e.d.Registrations.GroupRegistrations(ctx, gid, pr.Continuation, e.c.GroupPageSize) {
		if err != nil {
			return failed(fmt.Errorf("reading registrations of group %s: %w", gid, err))
		}
		byHub := map[string][]WorkMember{}
		unassigned := 0
		for _, m := range page.Items {
			if m.AssignedHub == "" && !retire {
				unassigned++ // never assigned: no hub identity to change
				continue
			}
			// A retirement's unassigned members (hub "") still have records to delete: their
			// batches skip the hub call.
			byHub[m.AssignedHub] = append(byHub[m.AssignedHub], WorkMember{RegistrationID: m.RegistrationID, DeviceID: m.DeviceID})
		}
		hubs := make([]string, 0, len(byHub))
		for h := range byHub {
			hubs = append(hubs, h)
		}
		sort.Strings(hubs) // the batch numbers must not depend on map order
		var batches []*WorkBatch
		seq := pr.Batches
		for _, h := range hubs {
			ms := byHub[h]
			for start := 0; start < len(ms); start += maxBulk {
				seq++
				b := &WorkBatch{OperationID: op.ID, Hub: h, Action: action, StatusReason: reason,
					Seq: seq, Members: ms[start:min(start+maxBulk, len(ms))], Registrations: retire}
				if h == "" {
					b.HubDone = &MemberResult{Done: len(b.Members)} // no hub identity to delete
				}
				batches = append(batches, b)
			}
		}
		// Journal that this page's enqueueing begins: a delivery that finds the mark (an earlier
		// one died between the enqueues and the page's journal write) enqueues the page's
		// batches again marked Again, so that a worker looks for an earlier copy's journaled
		// outcome before calling the hub. One Table write a page, no hub operation.
		if pr.Enqueuing == pr.Pages+1 {
			for _, b := range batches {
				b.Again = true
			}
		} else if err := e.updateOperation(ctx, op, owner, func(o *Operation) bool {
			o.Progress.Enqueuing = o.Progress.Pages + 1
			return true
		}); err != nil {
			return failed(err)
		}
		if err := e.enqueueAll(ctx, batches); err != nil {
			return failed(fmt.Errorf("operation %s: enqueuing page %d of group %s: %w", op.ID, pr.Pages+1, gid, err))
		}
		n, next := len(page.Items), page.Next
		err := e.updateOperation(ctx, op, owner, func(o *Operation) bool {
			p := &o.Progress
			p.Total += n
			p.Done += unassigned
			p.Pages++
			p.Continuation = next
			p.Batches = seq
			return true
		})
		if err != nil {
			return failed(err)
		}
		if next == "" {
			break
		}
	}
	return stepResult{changed: true, note: fmt.Sprintf("%d members in %d batches enqueued", pr.Total, pr.Batches)}
}

// enqueueAll enqueues batches a few at a time; the first error stops it.
func (e *Engine) enqueueAll(ctx context.Context, batches []*WorkBatch) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, enqueueParallel)
	)
	for _, b := range batches {
		sem <- struct{}{}
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := e.d.Work.Enqueue(ctx, b); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("batch %d (%s, %d members): %w", b.Seq, b.Hub, len(b.Members), err)
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// updateOperation applies change to op and writes it with op's ETag; when another writer got
// there first (412) it reads the operation again and applies change to that, so concurrent
// changes merge instead of overwriting each other. change returns false when there is nothing
// to write. owner, when not empty, is the lease the caller holds: if another delivery took
// the operation over, the update stops with a transient [ErrBusy]; the holder's updates renew
// the lease. A worker (owner "") never renews it: a crashed fan-out's lease must run out.
func (e *Engine) updateOperation(ctx context.Context, op *Operation, owner string, change func(*Operation) bool) error {
	for attempt := 1; ; attempt++ {
		if !change(op) {
			return nil
		}
		now := e.d.Clock.Now()
		op.Updated = now
		if owner != "" && op.LeaseOwner == owner && !op.Status.Terminal() {
			op.LeaseUntil = now.Add(e.c.LeaseDuration) // only the lease holder renews it
		}
		err := e.d.Journal.UpdateOperation(ctx, op)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrPreconditionFailed) {
			return asTransient(fmt.Errorf("journaling operation %s: %w", op.ID, err))
		}
		if attempt >= progressAttempts {
			return Transient(fmt.Errorf("operation %s kept changing under %d updates: %w", op.ID, attempt, ErrBusy))
		}
		fresh, err := e.d.Journal.GetOperation(ctx, op.ID)
		if err != nil {
			return asTransient(fmt.Errorf("reading operation %s again: %w", op.ID, err))
		}
		if owner != "" && fresh.LeaseOwner != owner {
			return Transient(fmt.Errorf("operation %s: lease lost to another delivery: %w", op.ID, ErrBusy))
		}
		*op = *fresh
		// Writers that lost a race spread out, so that they do not collide again at once.
		time.Sleep(time.Duration(rand.IntN(5*min(attempt, 10))+1) * time.Millisecond)
	}
}

// saveOverWorkers writes op after a 412 on a fanned-out operation: the other writer may be a
// group worker counting its batch, which changes only the progress. op is written as it is,
// with the stored progress, as long as the stored lease is still op's. (A terminal write,
// whose lease is already cleared, cannot prove that and fails as before.)
func (e *Engine) saveOverWorkers(ctx context.Context, op *Operation) error {
	lost := Transient(fmt.Errorf("operation %s: lease lost to another delivery: %w", op.ID, ErrBusy))
	if op.LeaseOwner == "" {
		return lost
	}
	fresh, err := e.d.Journal.GetOperation(ctx, op.ID)
	if err != nil {
		return asTransient(fmt.Errorf("reading operation %s again: %w", op.ID, err))
	}
	if fresh.LeaseOwner != op.LeaseOwner {
		return lost
	}
	mine := *op
	*op = *fresh
	return e.updateOperation(ctx, op, mine.LeaseOwner, func(o *Operation) bool {
		progress, etag := o.Progress, o.ETag
		*o = mine
		o.Progress, o.ETag = progress, etag
		return true
	})
}

// errAwaitBatches stops a plan's execution at its fanned-out members step until every batch
// is accounted for: the steps after it (a retired group's last records and the group itself)
// run only once every batch has succeeded.
var errAwaitBatches = errors.New("awaiting the group's batches")

// awaitingBatches reports whether op has fanned out batches that are not all accounted for,
// or of which some failed: the plan's later steps must not run.
func awaitingBatches(op *Operation) bool {
	p := &op.Progress
	return p.Batches > 0 && (!p.FannedOut || p.BatchesDone < p.Batches || p.Failed > 0)
}

// planHas reports whether p has a step of kind k.
func planHas(p *Plan, k StepKind) bool {
	if p == nil {
		return false
	}
	for _, st := range p.Steps {
		if st.Kind == k {
			return true
		}
	}
	return false
}

// stepsAfterMembers reports whether op's plan has steps after its members step.
func stepsAfterMembers(op *Operation) bool {
	if op.Plan == nil {
		return false
	}
	for i, st := range op.Plan.Steps {
		if st.Kind == StepGroupMembers {
			return i < len(op.Plan.Steps)-1
		}
	}
	return false
}

// awaitBatches ends the fan-out's invocation: every page is enqueued. It marks the fan-out
// complete and, while batches are outstanding, gives the lease back: the worker that
// accounts for the last batch then ends the operation, or runs the plan's later steps. If
// the workers have already accounted for every batch, the operation ends here, or (every
// batch succeeded and steps follow) more is true and the caller, still holding the lease,
// runs them. Workers and the fan-out decide on the same ETag-guarded row, so exactly one of
// them goes on.
func (e *Engine) awaitBatches(ctx context.Context, op *Operation) (_ *Operation, more bool, _ error) {
	ended := false
	err := e.updateOperation(ctx, op, op.LeaseOwner, func(o *Operation) bool {
		more, ended = false, false
		if o.Status.Terminal() {
			return false
		}
		o.Progress.FannedOut = true
		if !awaitingBatches(o) && o.Progress.Failed == 0 && stepsAfterMembers(o) {
			more = true // keep the lease: the caller runs the later steps
			return true
		}
		o.LeaseOwner, o.LeaseUntil = "", time.Time{}
		ended = endIfAccounted(o)
		return true
	})
	if err != nil {
		e.release(ctx, op)
		return op, false, err
	}
	if ended {
		e.ended(ctx, op)
		return op, false, nil
	}
	if !more {
		e.log.InfoContext(ctx, "group fanned out; workers apply the batches", "operation", op.ID,
			"members", op.Progress.Total, "batches", op.Progress.Batches, "accounted", op.Progress.BatchesDone)
	}
	return op, more, nil
}

// endIfAccounted makes o terminal when its fan-out is complete and every batch is accounted
// for, unless every batch succeeded and the plan has steps after the members (those run
// first); it reports whether it did. A failed batch ends the operation failed: a retired
// group stays disabled, with the records of the failed batches' members, and sending the
// event again (under a new id) retries what is left.
func endIfAccounted(o *Operation) bool {
	p := &o.Progress
	if o.Status.Terminal() || !p.FannedOut || p.BatchesDone < p.Batches {
		return false
	}
	if p.Failed == 0 && stepsAfterMembers(o) {
		return false
	}
	o.LeaseOwner, o.LeaseUntil = "", time.Time{}
	if p.Failed > 0 {
		o.Status = StatusFailed
		o.Reason = fmt.Sprintf("%d of %d members failed (first: %s)", p.Failed, p.Total, strings.Join(p.Failures, "; "))
		if stepsAfterMembers(o) {
			o.Reason += "; the steps after the members did not run (the group stays disabled, with the records of the members not done): send the event again under a new id to retry"
		}
	} else {
		o.Status, o.Reason = StatusSucceeded, ""
	}
	return true
}

func (e *Engine) ended(ctx context.Context, op *Operation) {
	e.log.InfoContext(ctx, "operation ended", "operation", op.ID, "intent", op.Request.Intent,
		"status", op.Status, "reason", op.Reason, "members", op.Progress.Total, "done", op.Progress.Done, "failed", op.Progress.Failed)
	e.notify(ctx, op)
}

// BatchOptions tune [Engine.ApplyBatch].
type BatchOptions struct {
	// LastTry says the queue will not deliver the batch again (its dequeue count reached the
	// queue's maxDequeueCount): a failure is then journaled as failed members, so that the
	// batch ends in the journal and not only in the poison queue.
	LastTry bool
	// Redelivered says the batch may have been handled before (the message's DequeueCount is
	// above 1, or it is settled from the poison queue; a batch marked WorkBatch.Again is
	// treated the same): a batch journaled by an earlier delivery that died before counting
	// it is then counted from its journal record, without a second bulk call.
	Redelivered bool
}

// ApplyBatch applies one fanned-out batch (the GroupWork function's work): one bulk call for
// its members (through whatever rate limit wraps the Devices port), a journal record of the
// batch, and the batch's counts added to its operation. A batch the operation has already
// counted is not applied again. The last batch to be counted ends the operation.
//
// An error means "deliver the batch again": the members' outcome is not journaled yet. On
// the last try, or when the failure is permanent, the members are journaled as failed and
// counted (the error is still returned on the last try, so that the message goes on to the
// poison queue for an operator). A member's own failure is not an error: it is counted and
// listed in the operation's progress.
func (e *Engine) ApplyBatch(ctx context.Context, b *WorkBatch, o BatchOptions) (MemberResult, error) {
	var res MemberResult
	if err := b.check(); err != nil {
		return res, err
	}
	op, err := e.d.Journal.GetOperation(ctx, b.OperationID)
	switch {
	case errors.Is(err, ErrNotFound):
		// Only the app writes the queue; a batch whose operation is gone (an operator's hand-made
		// message, a journal reset) is still applied and journaled under the id it names.
		e.log.WarnContext(ctx, "group work batch for an operation not in the journal", "operation", b.OperationID, "batch", b.Seq)
		op = &Operation{ID: b.OperationID}
		unnumbered := *b
		unnumbered.Seq = 0 // nothing to count it in
		b = &unnumbered
	case err != nil:
		return res, asTransient(fmt.Errorf("reading operation %s: %w", b.OperationID, err))
	}
	if b.Seq > 0 && hasBit(op.Progress.Applied, b.Seq) {
		e.log.InfoContext(ctx, "group work batch already counted", "operation", b.OperationID, "batch", b.Seq)
		// A delivery that counted the last batch may have died before running the plan's
		// later steps: this one takes them up.
		return res, e.afterBatches(ctx, op)
	}
	hubDone := b.HubDone != nil
	if hubDone {
		res = *b.HubDone
	} else if b.Seq > 0 && (o.Redelivered || b.Again) {
		// The step record is the bulk call's outcome, journaled right after the call returns
		// and before the count: an earlier delivery that got that far must not call the hub
		// again. Only a death between the hub's answer and that record re-sends the batch.
		rec, err := e.batchRecord(ctx, b)
		if err != nil {
			return res, err
		}
		if rec != nil {
			if r, ok := recordedResult(*rec); ok {
				e.log.InfoContext(ctx, "group work batch journaled by an earlier delivery; counting it without a hub call",
					"operation", b.OperationID, "batch", b.Seq)
				res, hubDone = r, true
			}
		}
	}
	var applyErr error
	if !hubDone {
		regs := make([]Registration, len(b.Members))
		for i, m := range b.Members {
			regs[i] = Registration{RegistrationID: m.RegistrationID, DeviceID: m.DeviceID, AssignedHub: b.Hub}
		}
		start := e.d.Clock.Now()
		res, applyErr = e.ApplyMembers(ctx, b.OperationID, b.Hub, regs, b.Action, b.StatusReason)
		if applyErr != nil {
			if retryable(applyErr) && !o.LastTry {
				return res, applyErr
			}
			// Given up: every member not known to be done is failed, with the batch's error.
			res = MemberResult{}
			for _, m := range regs {
				res.fail(memberID(m), applyErr)
			}
		}
		if err := e.recordBatch(ctx, b, res, applyErr, start); err != nil {
			return res, err
		}
	}
	if b.Registrations && res.Failed == 0 {
		// Every member's identity is gone: their registration records go too.
		var continued bool
		if res, continued, err = e.deleteBatchRecords(ctx, b, o, res); err != nil || continued {
			return res, err
		}
	}
	if err := e.countBatch(ctx, b, res); err != nil {
		return res, err
	}
	if applyErr != nil && o.LastTry && retryable(applyErr) {
		return res, fmt.Errorf("operation %s: batch %d %w after the last try, its %d members journaled as failed: %w",
			b.OperationID, b.Seq, ErrBatchGivenUp, len(b.Members), applyErr)
	}
	return res, nil
}

// check validates a batch as a worker receives it.
func (b *WorkBatch) check() error {
	switch {
	case b.OperationID == "" || len(b.Members) == 0:
		return errors.New("group work batch lacks operationId or members")
	case b.Hub == "" && b.HubDone == nil:
		return errors.New("group work batch names no hub")
	case len(b.Members) > maxBulk:
		return fmt.Errorf("group work batch %d of %s has %d members; at most %d fit one bulk call", b.Seq, b.OperationID, len(b.Members), maxBulk)
	}
	return nil
}

// ErrBatchGivenUp marks the error of a batch's last try that failed: its members are
// journaled as failed and counted, and only the message is left (for the poison queue).
var ErrBatchGivenUp = errors.New("given up")

// SettlePoisoned settles a batch found in the poison queue (a sweeper's work): it is applied
// once more as a last try, so it ends either applied or journaled as failed members, and
// counted in its operation either way; a batch already counted is left as it is. A nil error
// means the message may be deleted. It covers a handler that died during the last delivery,
// before it could journal the batch.
func (e *Engine) SettlePoisoned(ctx context.Context, b *WorkBatch) error {
	_, err := e.ApplyBatch(ctx, b, BatchOptions{LastTry: true, Redelivered: true})
	if errors.Is(err, ErrBatchGivenUp) {
		return nil
	}
	return err
}

// batchRecord returns the journal record of a numbered batch, or nil when there is none.
// The Journal port has no read of a single step, so it lists the operation's steps; only a
// redelivered batch pays for that (Table reads, no hub budget).
func (e *Engine) batchRecord(ctx context.Context, b *WorkBatch) (*StepRecord, error) {
	steps, err := e.d.Journal.Steps(ctx, b.OperationID)
	if err != nil {
		return nil, asTransient(fmt.Errorf("reading the journal of batch %d of %s: %w", b.Seq, b.OperationID, err))
	}
	for i := range steps {
		s := &steps[i]
		if s.Kind == StepGroupBatch && s.Index == batchStepBase+b.Seq && (s.Outcome == StepDone || s.Outcome == StepFailed) {
			return s, nil
		}
	}
	return nil, nil
}

// batchCounts is the start of a batch record's text, which [recordedResult] reads back.
const batchCounts = "%d members, %d done, %d failed"

// recordedResult reads a batch's result back from its record (written by recordBatch:
// "action: N members, D done, F failed[: failures]"). The counts are exact; the failures are
// split on "; ", which an error text containing "; " splits too (they are for a person).
func recordedResult(rec StepRecord) (MemberResult, bool) {
	var res MemberResult
	_, rest, ok := strings.Cut(rec.Error, ": ")
	if !ok {
		return res, false
	}
	counts, failures, _ := strings.Cut(rest, ": ")
	var n int
	if _, err := fmt.Sscanf(counts, batchCounts, &n, &res.Done, &res.Failed); err != nil {
		return MemberResult{}, false
	}
	if failures != "" {
		fs := strings.Split(failures, "; ")
		res.Failures = fs[:min(len(fs), maxFailures)]
	}
	return res, true
}

// recordBatch journals a batch as one step record. For a numbered batch it is also the bulk
// call's outcome: a redelivery that finds it counts the batch from it (see ApplyBatch).
func (e *Engine) recordBatch(ctx context.Context, b *WorkBatch, res MemberResult, applyErr error, start time.Time) error {
	end := e.d.Clock.Now()
	idx := batchStepBase + b.Seq
	if b.Seq <= 0 {
		h := fnv.New32a()
		for _, m := range b.Members {
			h.Write([]byte(m.RegistrationID + "\x00"))
		}
		idx = unnumberedStepBase + int(h.Sum32()%90000)
	}
	rec := StepRecord{OperationID: b.OperationID, Index: idx, Kind: StepGroupBatch,
		Target: fmt.Sprintf("hubs/%s/batches/%d", b.Hub, b.Seq), Outcome: StepDone,
		Error: fmt.Sprintf("%s: "+batchCounts, b.Action, len(b.Members), res.Done, res.Failed),
		Time:  end, Duration: end.Sub(start)}
	if res.Failed > 0 {
		rec.Outcome = StepFailed
		rec.Error += ": " + strings.Join(res.Failures, "; ")
		if applyErr != nil {
			rec.HTTPStatus, rec.ErrorCode = ServiceStatus(applyErr)
		}
	}
	if err := e.d.Journal.RecordStep(context.WithoutCancel(ctx), rec); err != nil {
		return asTransient(fmt.Errorf("journaling batch %d of %s: %w", b.Seq, b.OperationID, err))
	}
	return nil
}

// countBatch adds a numbered batch's counts to its operation, once, and ends the operation
// when it was the last batch of a complete fan-out.
func (e *Engine) countBatch(ctx context.Context, b *WorkBatch, res MemberResult) error {
	if b.Seq <= 0 {
		return nil
	}
	op, err := e.d.Journal.GetOperation(ctx, b.OperationID)
	if err != nil {
		return asTransient(fmt.Errorf("reading operation %s: %w", b.OperationID, err))
	}
	ended, counted := false, false
	err = e.updateOperation(context.WithoutCancel(ctx), op, "", func(o *Operation) bool {
		ended, counted = false, false
		applied, ok := setBit(o.Progress.Applied, b.Seq)
		if !ok {
			return false // counted by an earlier delivery
		}
		counted = true
		p := &o.Progress
		p.Applied = applied
		p.BatchesDone++
		p.Done += res.Done
		p.Failed += res.Failed
		p.Records += res.Records
		for _, f := range res.Failures {
			if len(p.Failures) < maxFailures {
				p.Failures = append(p.Failures, truncateRunes(f, maxFailureChars))
			}
		}
		ended = endIfAccounted(o)
		return true
	})
	if err != nil {
		return err
	}
	if ended {
		e.ended(ctx, op)
	}
	if counted && !ended {
		return e.afterBatches(ctx, op)
	}
	return nil
}

// afterBatches runs the plan's steps after the members step (a retired group's last records
// and the group) once every batch is accounted for and succeeded, in the invocation of the
// worker that saw it: it takes the operation's lease (free, or run out: the fan-out gave it
// back, or a worker that took it died) in an ETag-guarded write, so one worker goes on. The
// steps' own failures end the operation as any step's would; a transient one gives the
// lease back, and the redelivered batch (already counted) comes here again.
func (e *Engine) afterBatches(ctx context.Context, op *Operation) error {
	owner := newOwner()
	take := false
	err := e.updateOperation(context.WithoutCancel(ctx), op, "", func(o *Operation) bool {
		now := e.d.Clock.Now()
		take = !o.Status.Terminal() && !awaitingBatches(o) && o.Progress.Failed == 0 && stepsAfterMembers(o) &&
			(o.LeaseOwner == "" || !o.LeaseUntil.After(now))
		if take {
			o.LeaseOwner, o.LeaseUntil = owner, now.Add(e.c.LeaseDuration)
		}
		return take
	})
	if err != nil || !take {
		return err
	}
	e.log.InfoContext(ctx, "every batch succeeded; running the steps after the members", "operation", op.ID)
	_, err = e.run(ctx, op)
	return err
}

// hasBit reports whether batch seq (from 1) is in the base64 bitmap.
func hasBit(bitmap string, seq int) bool {
	b, err := base64.RawStdEncoding.DecodeString(bitmap)
	i := seq - 1
	return err == nil && i >= 0 && i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0
}

// setBit adds batch seq to the bitmap; ok is false when it was already there.
func setBit(bitmap string, seq int) (string, bool) {
	b, _ := base64.RawStdEncoding.DecodeString(bitmap)
	i := seq - 1
	if i/8 >= len(b) {
		b = append(b, make([]byte, i/8+1-len(b))...)
	}
	if b[i/8]&(1<<(i%8)) != 0 {
		return bitmap, false
	}
	b[i/8] |= 1 << (i % 8)
	return base64.RawStdEncoding.EncodeToString(b), true
}

func truncateRunes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

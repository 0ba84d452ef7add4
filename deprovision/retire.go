package deprovision

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// StepGroupBatchRecords is the journal record of the registration records one batch of a
// group retirement deleted (not a planned step): its index is recordsStepBase + the batch
// number.
const StepGroupBatchRecords StepKind = "dps.group-batch-registrations"

// recordsStepBase puts a batch's records record apart from its hub record (batchStepBase).
const recordsStepBase = 500000

// deleteBatchRecords deletes the registration records of a retirement batch whose hub call
// succeeded for every member (res is that call's outcome), one DPS call each at the DPS
// budget: a record already gone counts as deleted, and a member whose record cannot be
// deleted (a permanent answer) is moved from done to failed, so that its group is not deleted.
//
// Workers of every instance share the DPS budget, so one invocation stops after
// Config.RecordsTime: it enqueues the members left as a continuation of the same batch
// (WorkBatch.HubDone carries the outcome so far) and reports continued, and the batch is
// counted when its last member is done. Another transient failure is returned (the queue
// delivers the batch again; its hub call is journaled, so only the records are retried); on
// the last try the members left are failed instead.
func (e *Engine) deleteBatchRecords(ctx context.Context, b *WorkBatch, o BatchOptions, res MemberResult) (_ MemberResult, continued bool, _ error) {
	// A member that moved out of the group and waits to re-provision keeps its record: DPS
	// migrates the device from the hub it names (move.go). Its identity was kept too
	// (ApplyMembers); it counts as done.
	var waiting map[string]bool
	if b.Hub != "" {
		regs := make([]Registration, len(b.Members))
		for i, m := range b.Members {
			regs[i] = Registration{RegistrationID: m.RegistrationID, DeviceID: m.DeviceID, AssignedHub: b.Hub}
		}
		w, err := e.waitingMoves(ctx, b.Hub, regs)
		if err != nil {
			return res, false, fmt.Errorf("operation %s: batch %d: %w", b.OperationID, b.Seq, err)
		}
		waiting = w
	}
	dctx, cancel := context.WithTimeout(ctx, e.c.RecordsTime)
	defer cancel()
	start := e.d.Clock.Now()
	var stop error
	left, kept := 0, 0
	for i, m := range b.Members {
		if waiting[memberID(Registration{RegistrationID: m.RegistrationID, DeviceID: m.DeviceID})] {
			kept++
			continue
		}
		err := e.d.Registrations.DeleteRegistration(dctx, m.RegistrationID, "")
		switch {
		case err == nil || errors.Is(err, ErrNotFound):
			res.Records++
			continue
		case !retryable(err):
			res.Done--
			res.fail(m.RegistrationID, fmt.Errorf("deleting its registration record: %w", err))
			continue
		}
		stop, left = err, i
		break
	}
	if stop != nil {
		outOfTime := dctx.Err() != nil && ctx.Err() == nil
		switch {
		case outOfTime && !o.LastTry:
			rest := *b
			rest.Members = b.Members[left:]
			done := res
			rest.HubDone, rest.Again = &done, false
			if err := e.d.Work.Enqueue(context.WithoutCancel(ctx), &rest); err != nil {
				return res, false, fmt.Errorf("operation %s: batch %d: handing %d registration records to a new message: %w", b.OperationID, b.Seq, len(rest.Members), err)
			}
			e.log.InfoContext(ctx, "group work batch out of time for its registration records; the rest goes to a new message",
				"operation", b.OperationID, "batch", b.Seq, "deleted", res.Records, "left", len(rest.Members))
			return res, true, nil
		case !o.LastTry:
			return res, false, fmt.Errorf("operation %s: batch %d: deleting registration record %s: %w", b.OperationID, b.Seq, b.Members[left].RegistrationID, stop)
		}
		for _, m := range b.Members[left:] {
			res.Done--
			res.fail(m.RegistrationID, fmt.Errorf("its registration record was not deleted after the last try: %w", stop))
		}
	}
	end := e.d.Clock.Now()
	rec := StepRecord{OperationID: b.OperationID, Index: recordsStepBase + b.Seq, Kind: StepGroupBatchRecords,
		Target: fmt.Sprintf("dps/registrations/batches/%d", b.Seq), Outcome: StepDone,
		Error: recordsNote(res.Records, kept), Time: end, Duration: end.Sub(start)}
	if res.Failed > 0 {
		rec.Outcome = StepFailed
		rec.Error += fmt.Sprintf(", %d members failed: %s", res.Failed, strings.Join(res.Failures, "; "))
	}
	if b.Seq > 0 {
		if err := e.d.Journal.RecordStep(context.WithoutCancel(ctx), rec); err != nil {
			return res, false, asTransient(fmt.Errorf("journaling the registration records of batch %d of %s: %w", b.Seq, b.OperationID, err))
		}
	}
	return res, false, nil
}

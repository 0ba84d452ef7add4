package handler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"dpsdeprov/deprovision"
)

// FailureRecorder journals an event whose handling panicked as a failed operation.
type FailureRecorder interface {
	// RecordFailure ends the event's operation failed for reason and returns it: it creates
	// the operation if the journal has none, and otherwise ends the stored one unless it has
	// already ended or waits for a person's approval (then it is returned as it is).
	RecordFailure(ctx context.Context, req deprovision.Request, reason string) (*deprovision.Operation, error)
}

// JournalFailures is the FailureRecorder over the engine's journal. A failure it records is not
// announced at once: the row is terminal and unannounced, so the next cleanup run announces
// it (deprovision/announce.go), the way it announces an outcome lost to a crash.
type JournalFailures struct {
	Journal deprovision.Journal
	Clock   deprovision.Clock
}

// RecordFailure implements FailureRecorder.
func (f *JournalFailures) RecordFailure(ctx context.Context, req deprovision.Request, reason string) (*deprovision.Operation, error) {
	clock := f.Clock
	if clock == nil {
		clock = deprovision.SystemClock{}
	}
	now := clock.Now()
	op := &deprovision.Operation{ID: deprovision.OperationID(req.Source, req.EventID), Request: req,
		Status: deprovision.StatusFailed, Reason: reason, Created: now, Updated: now}
	stored, created, err := f.Journal.CreateOperation(ctx, op)
	if err != nil {
		return nil, fmt.Errorf("journaling failed operation %s: %w", op.ID, err)
	}
	if created {
		return stored, nil
	}
	if conflict, _, ok := deprovision.ReplayConflict(stored, req); ok {
		// Another event holds this id: the panicking one gets its own operation, named as
		// the engine names a conflict, so the stored operation is left alone.
		return f.RecordFailure(ctx, conflict, reason)
	}
	if stored.Status.Terminal() || stored.Status == deprovision.StatusAwaitingApproval {
		return stored, nil
	}
	// The operation was running when its handling panicked. It stays failed rather than be
	// resumed into the same panic by a redelivery or the cleanup; its device row lock, if
	// any, is released by the engine's rule that a terminal operation holds nothing.
	stored.Status, stored.Reason = deprovision.StatusFailed, reason
	stored.LeaseOwner, stored.LeaseUntil = "", time.Time{}
	stored.Hold, stored.Updated = nil, now
	stored.Announced = time.Time{} // ended and not yet announced: the cleanup announces it
	if err := f.Journal.UpdateOperation(ctx, stored); err != nil {
		if errors.Is(err, deprovision.ErrPreconditionFailed) {
			// Another delivery changed it meanwhile: let the invocation fail and come again.
			return nil, deprovision.Transient(fmt.Errorf("ending operation %s failed: it changed meanwhile: %w", stored.ID, err))
		}
		return nil, fmt.Errorf("ending operation %s failed: %w", stored.ID, err)
	}
	return stored, nil
}

package deprovision

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ApprovalNotifier announces that a guardrail holds an operation for a person's approval
// (the Deprovisioning.ApprovalRequired outcome event). A [Notifier] that also implements it
// is told of every operation put on hold, once, when it is put on hold; op.Hold says which
// limit holds it. Like OperationEnded, a failed announcement is the notifier's to retry and
// journal.
type ApprovalNotifier interface {
	ApprovalRequired(ctx context.Context, op *Operation)
}

// announce hands op, just journaled in an announced state (terminal, or awaiting approval),
// to the notifier, then journals that it did so (Operation.Announced). The order matters: a
// process that dies between the state's write and this one leaves the operation
// unannounced, and the cleanup's resume pass announces it ([Engine.Announce]); one that dies
// after the hand-off but before the mark announces it twice, under the same event id. With
// no notifier there is nothing to hand over, and the operation is only marked.
func (e *Engine) announce(ctx context.Context, op *Operation) {
	ctx = context.WithoutCancel(ctx)
	switch {
	case e.d.Notifier == nil:
	case op.Status == StatusAwaitingApproval:
		if an, ok := e.d.Notifier.(ApprovalNotifier); ok {
			an.ApprovalRequired(ctx, op)
		}
	case op.Status.Terminal():
		e.d.Notifier.OperationEnded(ctx, op)
	default:
		return // nothing about a running operation is announced
	}
	op.Announced = e.d.Clock.Now()
	if err := e.d.Journal.UpdateOperation(ctx, op); err != nil {
		// The resume pass announces it again: at least once, never lost.
		op.Announced = time.Time{}
		e.log.WarnContext(ctx, "journaling that the operation was announced; the cleanup announces it again",
			"operation", op.ID, "status", op.Status, "err", err)
	}
}

// Announce announces operation id if its present state (terminal, or awaiting approval) was
// never handed to the notifier, as when the process died between journaling that state and
// announcing it; the cleanup's resume pass calls it. It reports whether it announced: an
// operation already announced, or running, is returned as it stands. An error for which
// [IsTransient] is true means the journal could not be read or written.
func (e *Engine) Announce(ctx context.Context, id string) (*Operation, bool, error) {
	op, err := e.d.Journal.GetOperation(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, false, fmt.Errorf("reading operation %s: %w", id, err)
		}
		return nil, false, asTransient(fmt.Errorf("reading operation %s: %w", id, err))
	}
	if !op.Unannounced() {
		return op, false, nil
	}
	e.log.InfoContext(ctx, "announcing an operation whose announcement was lost", "operation", op.ID, "status", op.Status)
	e.announce(ctx, op)
	if !op.Unannounced() {
		return op, true, nil
	}
	return op, true, Transient(fmt.Errorf("operation %s was announced, but the journal did not take the mark: it may be announced again", id))
}

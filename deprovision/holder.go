package deprovision

import "context"

// Holder is a guardrail that a caller keeps for operations of its own, beside [Guardrails]:
// the cleanup timer's guard is one (it gives the timer a destructive budget of its own, below
// the event path's, and limits what share of the fleet one day may retire). The engine asks it
// about every destructive operation it has just planned, before the hourly budget.
type Holder interface {
	// Hold decides about op, planned and not yet applied. A [Refusal] (AsRefusal) rejects
	// the operation with its reason, changing nothing; any other error is treated as the
	// journal's (transient ones are retried).
	Hold(ctx context.Context, op *Operation) (HoldDecision, error)
}

// HoldDecision is a [Holder]'s answer.
type HoldDecision struct {
	// Own is true when the operation is the holder's to count: MAX_DESTRUCTIVE_PER_HOUR then
	// neither counts nor holds it, so that the holder's operations never take the event
	// path's allowance.
	Own bool
	// Hold, when not nil, holds the operation for a person's approval; Reason says why.
	Hold   *Hold
	Reason string
}

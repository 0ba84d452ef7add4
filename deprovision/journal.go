package deprovision

import (
	"context"
	"iter"
	"time"
)

// Status is where an operation stands. Terminal statuses never change again.
type Status string

// Operation statuses.
const (
	// StatusRunning: steps are being applied (or will be resumed).
	StatusRunning Status = "running"
	// StatusAwaitingApproval: a guardrail held the operation; it runs once approved.
	StatusAwaitingApproval Status = "awaiting-approval"
	// StatusPlanned: a dry run; the plan is journaled and nothing was changed. Terminal.
	StatusPlanned Status = "planned"
	// StatusSucceeded: every step is done. Terminal.
	StatusSucceeded Status = "succeeded"
	// StatusFailed: a step failed permanently, or retries ran out. Terminal.
	StatusFailed Status = "failed"
	// StatusRejected: the request was refused before anything changed (malformed event,
	// unauthorized source, unknown device, policy refusal). Terminal.
	StatusRejected Status = "rejected"
)

// Terminal reports whether s never changes again.
func (s Status) Terminal() bool {
	switch s {
	case StatusPlanned, StatusSucceeded, StatusFailed, StatusRejected:
		return true
	}
	return false
}

// Operation is the journal's record of one event: one per (source, event id).
type Operation struct {
	// ID is derived from (Source, EventID) by [OperationID].
	ID      string
	Request Request
	Status  Status
	// Reason says, for a person, why the operation ended as it did (rejections above all).
	Reason string
	// Plan is the plan being applied, journaled before the first step runs.
	Plan *Plan
	// Progress counts the members of a group-wide operation.
	Progress Progress
	Created  time.Time
	Updated  time.Time
	// LeaseUntil and LeaseOwner say which invocation is applying the operation, so that two
	// concurrent deliveries of one event cannot both run it.
	LeaseOwner string
	LeaseUntil time.Time
	// Hold says which guardrail holds an operation awaiting approval (nil otherwise).
	Hold *Hold `json:",omitempty"`
	// Announced is when the operation's present state (terminal, or awaiting approval) was
	// handed to the notifier; zero until then. It is written after the state itself, so a
	// process that dies in between leaves the operation [Operation.Unannounced] and the
	// cleanup's resume pass announces it ([Engine.Announce]).
	Announced time.Time `json:",omitzero"`
	ETag      string
}

// Hold is the guardrail that holds an operation for a person's approval.
type Hold struct {
	// Limit is the setting that holds it: MAX_GROUP_DEVICES or MAX_DESTRUCTIVE_PER_HOUR.
	Limit string
	// Max is the limit's value; Count what was counted against it (for a group, where
	// counting stopped, just above Max).
	Max, Count int
}

// Unannounced reports whether op is in a state that is announced (terminal, or awaiting
// approval) and has not been handed to the notifier yet.
func (op *Operation) Unannounced() bool {
	return (op.Status.Terminal() || op.Status == StatusAwaitingApproval) && op.Announced.IsZero()
}

// Progress counts the members of a group-wide operation.
type Progress struct {
	Total, Done, Failed int
	// Pages counts the pages of registration states finished; Continuation resumes after the
	// last finished one ("" with Pages > 0: every page is done).
	Pages        int
	Continuation string
	// Failures lists the first members that failed ("deviceId: error"), for a person to check.
	Failures []string
	// Fan-out through a [WorkQueue] (see fanout.go): Batches counts the batches enqueued,
	// BatchesDone those a worker has accounted for (applied, or failed for good); Applied is
	// the set of accounted batch numbers (a bitmap, base64), so that a redelivered batch is
	// counted once; FannedOut is set when every page is enqueued and the plan's other steps
	// are done, after which the last batch to be accounted for ends the operation.
	Batches, BatchesDone int    `json:",omitempty"`
	FannedOut            bool   `json:",omitempty"`
	Applied              string `json:",omitempty"`
	// Enqueuing is the number of the page (Pages+1) whose batches the fan-out has begun to
	// enqueue: a resume that finds it enqueues that page's batches marked WorkBatch.Again.
	Enqueuing int `json:",omitempty"`
	// Records counts the registration records the batches of a group retirement deleted.
	Records int `json:",omitempty"`
}

// StepOutcome is what became of one step.
type StepOutcome string

// Step outcomes.
const (
	StepStarted  StepOutcome = "started"
	StepDone     StepOutcome = "done"
	StepNoChange StepOutcome = "no-change" // already in the wanted state: idempotence at work
	StepFailed   StepOutcome = "failed"
	StepSkipped  StepOutcome = "skipped"
)

// StepRecord is the journal's record of one step of an operation.
type StepRecord struct {
	OperationID string
	Index       int
	Kind        StepKind
	Target      string
	Outcome     StepOutcome
	HTTPStatus  int
	ErrorCode   string
	Error       string
	Duration    time.Duration
	Time        time.Time
}

// DeviceState is the journal's per-device row: the state this system left the device in.
// `recovered`, precedence between conflicting events and cleanup all consult it.
type DeviceState struct {
	RegistrationID string
	DeviceID       string
	Hub            string
	// Intent is the last intent applied to the device, and OperationID the operation that applied it.
	Intent      Intent
	OperationID string
	// EventTime is the time of the event that last changed the device: an older event is stale.
	EventTime time.Time
	// BlockingEnrollment is true when this system created the disabled individual enrollment
	// that blocks a group member (what `recovered` may undo for lost or stolen).
	BlockingEnrollment bool
	// HubAction is what was done to the hub identity: "disabled", "deleted" or "enabled".
	HubAction string
	// GroupMember is true once this system has given a group member an individual enrollment
	// (a blocking one, or one for a move): that enrollment stands in front of the group, so it
	// is never deleted, only disabled, or the group would admit the device again.
	GroupMember bool
	// EnrollmentAction is what was done in DPS: "disabled", "deleted", "enabled", "blocked",
	// "unblocked", "retargeted" or "move-enrollment".
	EnrollmentAction string
	// FoundDisabled is true when this system found the individual enrollment disabled
	// already the first time it disabled it (a block made by hand, or someone else's
	// revocation): recovered leaves it disabled, and sold and retired treat it as a block.
	FoundDisabled bool `json:",omitempty"`
	// MoveTarget is the hub a move waits for: the old identity (Hub, DeviceID) stays until DPS
	// shows the device assigned to MoveTarget, which [Moves] confirms (HubAction is then
	// HubMoved). Empty when no move waits; a later change of the device clears it.
	MoveTarget string `json:",omitempty"`
	// PendingOperation is the operation currently changing the device: another operation for
	// the same device waits (transient error) until it is terminal, so that conflicting events
	// are applied one after the other, in the order precedence allows.
	PendingOperation string
	Updated          time.Time
	ETag             string
}

// HubAction values of a move (DeviceState.HubAction).
const (
	// HubAwaitingMove: the old identity stays until the device is in its target hub.
	HubAwaitingMove = "awaiting-move"
	// HubMoved: DPS shows the device in its target hub, and the old identity is gone.
	HubMoved = "moved"
)

// OperationSummary is one line of a device's history.
type OperationSummary struct {
	OperationID string
	Intent      Intent
	Status      Status
	Reason      string
	EventTime   time.Time
	Updated     time.Time
}

// Journal is the durable record of every operation, step and device state. Every method may
// return a [TransientError] when the store is unavailable.
type Journal interface {
	// CreateOperation inserts op; if one with that ID exists it returns the stored one and
	// created=false.
	CreateOperation(ctx context.Context, op *Operation) (stored *Operation, created bool, err error)
	GetOperation(ctx context.Context, id string) (*Operation, error)
	// UpdateOperation replaces op if op.ETag still matches (ErrPreconditionFailed otherwise)
	// and sets op.ETag to the new value.
	UpdateOperation(ctx context.Context, op *Operation) error
	// RecordStep writes (upserts) a step record; the latest write for an index wins.
	RecordStep(ctx context.Context, rec StepRecord) error
	Steps(ctx context.Context, operationID string) ([]StepRecord, error)
	// GetDevice returns ErrNotFound when this system never touched the device.
	GetDevice(ctx context.Context, registrationID string) (*DeviceState, error)
	// PutDevice creates (ETag "") or replaces (ETag matching) the device row.
	PutDevice(ctx context.Context, ds *DeviceState) error
	DeviceHistory(ctx context.Context, registrationID string) ([]OperationSummary, error)
	// OpenOperations lists operations not in a terminal state last updated before olderThan.
	OpenOperations(ctx context.Context, olderThan time.Time) iter.Seq2[*Operation, error]
	// UnannouncedOperations lists operations for which [Operation.Unannounced] is true, last
	// updated before olderThan.
	UnannouncedOperations(ctx context.Context, olderThan time.Time) iter.Seq2[*Operation, error]
}

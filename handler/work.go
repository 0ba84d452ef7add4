package handler

import (
	"context"
	"fmt"
	"log/slog"

	"dpsdeprov/deprovision"
	"dpsdeprov/internal/hostlog"
)

// GroupWorkQueue is the Storage queue the GroupWork function reads (GroupWork/function.json).
const GroupWorkQueue = "deprovision-group-work"

// DefaultMaxDequeueCount is the queue extension's default maxDequeueCount (host.json
// extensions.queues.maxDequeueCount): the deliveries of a message before it is poisoned.
const DefaultMaxDequeueCount = 5

// GroupWorkItem is one message of group work: a batch of members of a group-wide operation,
// all in one hub, to which one hub action applies. The fan-out enqueues it as JSON, base64
// encoded (host.json messageEncoding).
type GroupWorkItem = deprovision.WorkBatch

// GroupWorkMember is one device of a batch.
type GroupWorkMember = deprovision.WorkMember

// BatchApplier is the engine's entry for a batch of group members; *deprovision.Engine
// satisfies it.
type BatchApplier interface {
	ApplyBatch(ctx context.Context, b *deprovision.WorkBatch, o deprovision.BatchOptions) (deprovision.MemberResult, error)
}

// EngineGroupWorker applies group work messages through the engine.
type EngineGroupWorker struct {
	Engine BatchApplier
	Logger *slog.Logger
	// MaxDequeueCount must be host.json's extensions.queues.maxDequeueCount (default
	// [DefaultMaxDequeueCount]): on that delivery a batch that still fails is journaled as
	// failed members before the host moves the message to the poison queue.
	MaxDequeueCount int64
	// Context, when set, prepares each batch's context (the app puts group work in the
	// budgets' bulk lane).
	Context func(context.Context) context.Context
}

// Apply implements GroupWorker. A message that is not a GroupWorkItem is a permanent failure.
func (w *EngineGroupWorker) Apply(ctx context.Context, msg QueueMessage) error {
	var item GroupWorkItem
	if err := decodeStrict(msg.Body, &item); err != nil {
		return fmt.Errorf("message %s is not a group work item: %w", msg.ID, err)
	}
	if item.OperationID == "" || len(item.Members) == 0 || item.Hub == "" && item.HubDone == nil {
		return fmt.Errorf("message %s lacks operationId, hub or members", msg.ID)
	}
	ctx = hostlog.With(ctx, "operation", item.OperationID, "batch", item.Seq, "hub", item.Hub)
	if w.Context != nil {
		ctx = w.Context(ctx)
	}
	maxDequeue := w.MaxDequeueCount
	if maxDequeue <= 0 {
		maxDequeue = DefaultMaxDequeueCount
	}
	res, err := w.Engine.ApplyBatch(ctx, &item, deprovision.BatchOptions{LastTry: msg.DequeueCount >= maxDequeue, Redelivered: msg.DequeueCount > 1})
	if err != nil {
		return err
	}
	if w.Logger != nil {
		w.Logger.InfoContext(ctx, "group work applied", "operation", item.OperationID, "hub", item.Hub,
			"batch", item.Seq, "done", res.Done, "failed", res.Failed)
	}
	return nil
}

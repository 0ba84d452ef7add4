// Package workqueue is the Storage queues behind the group-work fan-out and the burst queue: it
// implements deprovision.WorkQueue over azqueue, writing each batch as the GroupWork function's
// queue trigger reads it (JSON, base64 encoded, as host.json's default messageEncoding
// expects), and gathers the requests a burst defers into the BurstWork function's messages
// ([RequestBatcher]).
package workqueue

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/azure/internal/azerr"
	"dpsdeprov/deprovision"
)

// maxMessageBytes is Storage's limit on a message's text (64 KiB).
const maxMessageBytes = 64 * 1024

// Queue enqueues group work batches on one Storage queue.
type Queue struct {
	q *azqueue.QueueClient
}

var _ deprovision.WorkQueue = (*Queue)(nil)

// New returns a Queue over q, which must exist (see [Create]).
func New(q *azqueue.QueueClient) *Queue { return &Queue{q: q} }

// Create creates the queue if it does not exist yet and returns a Queue over it. The
// Functions host creates a trigger's queue too, but only once it listens; the fan-out may
// come first.
func Create(ctx context.Context, svc *azqueue.ServiceClient, name string) (*Queue, error) {
	q := svc.NewQueueClient(name)
	if _, err := q.Create(ctx, nil); err != nil && !hasStatus(err, http.StatusConflict) {
		return nil, fmt.Errorf("creating queue %s: %w", name, err)
	}
	return New(q), nil
}

func hasStatus(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

func isNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// Enqueue implements deprovision.WorkQueue. Messages never expire: a batch waits in the
// queue however long the hubs' budgets make it wait. A failure that is worth retrying
// (throttling, 5xx, a dropped connection) is marked deprovision.Transient.
func (w *Queue) Enqueue(ctx context.Context, b *deprovision.WorkBatch) error {
	return w.put(ctx, b, fmt.Sprintf("batch %d of %s", b.Seq, b.OperationID))
}

// put writes v as the triggers read a message (JSON, base64 encoded), never expiring.
func (w *Queue) put(ctx context.Context, v any, what string) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", what, err)
	}
	return w.putJSON(ctx, body, what)
}

// putJSON writes the JSON body as the triggers read a message, never expiring.
func (w *Queue) putJSON(ctx context.Context, body []byte, what string) error {
	text := base64.StdEncoding.EncodeToString(body)
	if len(text) > maxMessageBytes {
		return fmt.Errorf("%s is %d bytes encoded; a queue message holds at most %d", what, len(text), maxMessageBytes)
	}
	_, err := w.q.EnqueueMessage(ctx, text, &azqueue.EnqueueMessageOptions{TimeToLive: to.Ptr(int32(-1))})
	if err != nil {
		err = fmt.Errorf("enqueuing %s: %w", what, err)
		// Only an answer that will not change refuses the message; anything else, the queue
		// answering 429 or 5xx or no answer at all, may work on the next delivery.
		if status := azerr.Status(err); status != 0 && !azerr.TransientStatus(status) {
			return err
		}
		return deprovision.Transient(err)
	}
	return nil
}

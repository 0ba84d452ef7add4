package workqueue

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"dpsdeprov/deprovision"
)

// PoisonSuffix names the queue the Functions host moves a message to after its last failed
// delivery: "<queue>-poison".
const PoisonSuffix = "-poison"

// Poison is the poison queue of the group-work queue. A batch normally reaches it already
// journaled (the engine journals a batch's last failed try); Sweep settles the ones that
// reached it otherwise, for instance when the handler died during the last delivery.
type Poison struct {
	q *azqueue.QueueClient
	// Hold is how long a message Sweep could not settle stays invisible before another sweep
	// sees it again. Default 1 hour.
	Hold time.Duration
	// MinAge leaves messages younger than this alone (default 10 minutes), so that an operator
	// or a test watching the poison queue sees what arrived, and a batch the handler is still
	// journaling is not settled twice at once.
	MinAge time.Duration
	// Now is the clock a message's age is measured with; time.Now when nil.
	Now func() time.Time
}

// NewPoison returns the poison queue of the queue name on svc.
func NewPoison(svc *azqueue.ServiceClient, name string) *Poison {
	return &Poison{q: svc.NewQueueClient(name + PoisonSuffix)}
}

// SweepResult counts what one sweep did.
type SweepResult struct {
	// Settled messages were handed to settle, which returned nil; they are deleted.
	Settled int
	// Kept messages stay in the poison queue for an operator: not a batch, or settle failed.
	Kept int
	// Young messages were younger than MinAge and left for a later sweep.
	Young int
}

// Sweep reads up to max messages (at most 32 a call to the queue) and hands each batch to
// settle (deprovision.Engine.SettlePoisoned); a message whose batch was settled is deleted,
// the others stay, hidden for Hold so the next sweep moves on. A poison queue that does not
// exist yet is empty.
func (p *Poison) Sweep(ctx context.Context, max int, settle func(context.Context, *deprovision.WorkBatch) error) (SweepResult, error) {
	var res SweepResult
	hold, minAge, now := p.Hold, p.MinAge, p.Now
	if now == nil {
		now = time.Now
	}
	if hold <= 0 {
		hold = time.Hour
	}
	if minAge <= 0 {
		minAge = 10 * time.Minute
	}
	var young []*azqueue.DequeuedMessage
	defer func() {
		// Young messages go back at once, for a later sweep.
		for _, m := range young {
			_, _ = p.q.UpdateMessage(context.WithoutCancel(ctx), deref(m.MessageID), deref(m.PopReceipt), deref(m.MessageText),
				&azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(0))})
		}
	}()
	for res.Settled+res.Kept+res.Young < max {
		n := int32(min(32, max-res.Settled-res.Kept-res.Young))
		resp, err := p.q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: to.Ptr(int32(hold.Seconds()))})
		if isNotFound(err) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("reading the poison queue: %w", err)
		}
		if len(resp.Messages) == 0 {
			return res, nil
		}
		for _, m := range resp.Messages {
			if m.InsertionTime != nil && now().Sub(*m.InsertionTime) < minAge {
				young = append(young, m)
				res.Young++
				continue
			}
			b, err := decode(deref(m.MessageText))
			if err == nil {
				err = settle(ctx, b)
			}
			if err != nil {
				res.Kept++
				continue
			}
			if _, err := p.q.DeleteMessage(ctx, deref(m.MessageID), deref(m.PopReceipt), nil); err != nil {
				return res, fmt.Errorf("deleting settled poison message %s: %w", deref(m.MessageID), err)
			}
			res.Settled++
		}
	}
	return res, nil
}

// decode reads a message as the fan-out writes it (base64 JSON), or as plain JSON.
func decode(text string) (*deprovision.WorkBatch, error) {
	body := []byte(text)
	if raw, err := base64.StdEncoding.DecodeString(text); err == nil {
		body = raw
	}
	var b deprovision.WorkBatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("not a group work batch: %w", err)
	}
	if b.OperationID == "" || len(b.Members) == 0 || b.Hub == "" && b.HubDone == nil {
		return nil, fmt.Errorf("a group work batch lacks operationId, hub or members")
	}
	return &b, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

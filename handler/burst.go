package handler

import (
	"context"
	"errors"
	"fmt"

	"dpsdeprov/deprovision"
)

// BurstQueue is the Storage queue the BurstWork function reads (BurstWork/function.json): the
// revocations a burst deferred because every instance's slots for coalesced work were taken
// (deprovision.Burst). Each message is deprovision.DeferredRequests, JSON, base64 encoded: the
// normalized requests deferred at about the same time (one bare request in earlier versions).
const BurstQueue = "deprovision-burst"

// BurstRequests reads a burst queue message's body: the deferred requests it holds, each with
// its event id and source.
func BurstRequests(body []byte) ([]deprovision.Request, error) {
	var batch deprovision.DeferredRequests
	if err := decodeStrict(body, &batch); err != nil {
		// Earlier versions wrote one bare request a message.
		var req deprovision.Request
		if err1 := decodeStrict(body, &req); err1 != nil {
			return nil, fmt.Errorf("neither deferred requests (%v) nor one request (%v)", err, err1)
		}
		batch.Requests = []deprovision.Request{req}
	}
	if len(batch.Requests) == 0 {
		return nil, errors.New("a message of no deferred requests")
	}
	for i, req := range batch.Requests {
		if req.EventID == "" || req.Source == "" {
			return nil, fmt.Errorf("deferred request %d of %d has no event id or source", i+1, len(batch.Requests))
		}
	}
	return batch.Requests, nil
}

// maxBurstConcurrency bounds the requests of one burst message submitted at once (a message
// holds 10; the coalescer's slots bound the work of the whole instance).
const maxBurstConcurrency = 32

// burstWork submits deferred revocations again, concurrently, so that they are coalesced with
// the rest of the burst. Each operation was journaled
// when its event came; the engine takes it up where it stands (running, or already ended by a
// redelivery of the event). A failure of any that is worth retrying fails the invocation, so
// the queue delivers the message again (the operations that ended are not redone); after the
// last delivery it goes to the poison queue and the operations still running are resumed by the
// Cleanup timer.
func (h *Handler) burstWork(ctx context.Context, c *call) error {
	msg, err := decodeQueueMessage(&c.inv)
	if err != nil {
		return fmt.Errorf("burst message %s cannot be read: %w", c.id, err)
	}
	reqs, err := BurstRequests(msg.Body)
	if err != nil {
		return fmt.Errorf("burst message %s: %w", msg.ID, err)
	}
	ctx = deprovision.Deferred(ctx)
	return each(ctx, len(reqs), maxBurstConcurrency, "deferred request", func(i int) (err error) {
		req := reqs[i]
		ctx := withEvent(ctx, req)
		defer func() {
			if p := recover(); p != nil {
				err = h.journalPanic(ctx, c, req, p) // as for an event: the others go on
			}
		}()
		return h.submit(ctx, c, req)
	})
}

package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"dpsdeprov/deprovision"
)

// BurstQueue is the Storage queue the BurstWork function reads (BurstWork/function.json): the
// revocations a burst deferred because every instance's slots for coalesced work were taken
// (deprovision.Burst). Each message is one normalized request, JSON, base64 encoded.
const BurstQueue = "deprovision-burst"

// burstWork submits a deferred revocation again. Its operation was journaled when its event
// came; the engine takes it up where it stands (running, or already ended by a redelivery of
// the event), coalesced with the rest of the burst. A failure that is worth retrying fails the
// invocation, so the queue delivers the message again; after the last delivery it goes to the
// poison queue and the operation, still running, is resumed by the Cleanup timer.
func (h *Handler) burstWork(ctx context.Context, c *call) error {
	msg, err := decodeQueueMessage(&c.inv)
	if err != nil {
		return fmt.Errorf("burst message %s cannot be read: %w", c.id, err)
	}
	var req deprovision.Request
	dec := json.NewDecoder(strings.NewReader(string(msg.Body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.EventID == "" || req.Source == "" {
		return fmt.Errorf("burst message %s is not a deferred request (event id and source): %v", msg.ID, err)
	}
	return h.submit(deprovision.Deferred(ctx), c, req)
}

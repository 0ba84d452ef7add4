package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"dpsdeprov/deprovision"
)

// QueueMessage is one Storage queue message as the host delivers it: the text double-encoded
// in Data, DequeueCount, Id, PopReceipt and the times in Metadata (the queue extension's
// QueueTriggerBinding).
type QueueMessage struct {
	// Body is the message text after undoing the host's encodings: the double encoding of a
	// string trigger, an extra level added by a sender that serialised its payload, and the
	// base64 of `dataType: "binary"` when that yields JSON.
	Body            []byte
	ID              string
	PopReceipt      string
	DequeueCount    int64
	InsertionTime   time.Time
	ExpirationTime  time.Time
	NextVisibleTime time.Time
}

// decodeStrict decodes the JSON body into v, refusing fields v does not have: a message or
// a request body of another shape is an error that names the field, not half a value.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// decodeQueueMessage decodes a queueTrigger invocation body's value and metadata.
func decodeQueueMessage(inv *invocation) (QueueMessage, error) {
	var m QueueMessage
	raw, err := inv.binding(BindingMessage)
	if err != nil {
		return m, err
	}
	text, err := decodeText(raw)
	if err != nil {
		return m, fmt.Errorf("the queue message: %w", err)
	}
	t := strings.TrimSpace(text)
	switch {
	case strings.HasPrefix(t, "{") || strings.HasPrefix(t, "["):
		m.Body = []byte(t)
	default:
		if b, ok := decodeBase64JSON(t); ok {
			m.Body = b
		} else {
			m.Body = []byte(text)
		}
	}
	m.ID, _ = inv.meta("Id")
	m.PopReceipt, _ = inv.meta("PopReceipt")
	if s, ok := inv.meta("DequeueCount"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return m, fmt.Errorf("metadata DequeueCount %q is not a number", s)
		}
		m.DequeueCount = n
	}
	// In a fixed order, so that the same bad message always gets the same error.
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"InsertionTime", &m.InsertionTime}, {"ExpirationTime", &m.ExpirationTime}, {"NextVisibleTime", &m.NextVisibleTime}} {
		if s, ok := inv.meta(f.name); ok && s != "" {
			t, err := hostTime(s)
			if err != nil {
				return m, fmt.Errorf("metadata %s: %w", f.name, err)
			}
			*f.dst = t
		}
	}
	return m, nil
}

func (h *Handler) groupWork(ctx context.Context, c *call) error {
	if h.o.GroupWorker == nil {
		return errors.New("no group worker is configured")
	}
	msg, err := decodeQueueMessage(&c.inv)
	if err != nil {
		// A message the handler cannot read will not become readable: say so and let the
		// host retry it into the poison queue, where an operator finds it.
		return fmt.Errorf("group work message %s cannot be read: %w", c.id, err)
	}
	if err := h.o.GroupWorker.Apply(ctx, msg); err != nil {
		// Transient or not, the invocation fails: the queue retries the message and, after
		// maxDequeueCount tries, moves it to the poison queue, where an operator finds what
		// could not be applied. Nothing is completed without being applied.
		kind := "permanent"
		if deprovision.IsTransient(err) {
			kind = "transient"
		}
		return fmt.Errorf("group work message %s (dequeue %d, %s failure): %w", msg.ID, msg.DequeueCount, kind, err)
	}
	c.logf(slog.LevelInfo, "group work message %s applied (dequeue %d)", msg.ID, msg.DequeueCount)
	return nil
}

// TimerInfo is the timer trigger's value, an object (the timers extension's TimerInfo).
type TimerInfo struct {
	Schedule struct {
		AdjustForDST flexBool
	}
	// ScheduleStatus is nil when schedule monitoring is off.
	ScheduleStatus *ScheduleStatus
	IsPastDue      flexBool
}

// ScheduleStatus is the timer's last and next occurrences.
type ScheduleStatus struct {
	Last, Next, LastUpdated flexTime
}

func decodeTimer(inv *invocation) (TimerInfo, error) {
	var t TimerInfo
	raw, err := inv.binding(BindingTimer)
	if err != nil {
		return t, err
	}
	doc, err := decodeJSON(raw)
	if err != nil {
		return t, fmt.Errorf("the timer info: %w", err)
	}
	if err := json.Unmarshal(doc, &t); err != nil {
		return t, fmt.Errorf("the timer info: %w", err)
	}
	return t, nil
}

func (h *Handler) cleanup(ctx context.Context, c *call) error {
	if h.o.Cleaner == nil {
		return errors.New("no cleaner is configured")
	}
	t, err := decodeTimer(&c.inv)
	if err != nil {
		return err
	}
	if t.IsPastDue {
		c.logf(slog.LevelInfo, "cleanup is past due (an occurrence was missed)")
	}
	summary, err := h.o.Cleaner.Run(ctx, t)
	if err != nil {
		// A failed timer run is not retried; the next occurrence runs again (Microsoft's timer
		// trigger documentation, "Retry behavior").
		return fmt.Errorf("cleanup: %w", err)
	}
	c.logf(slog.LevelInfo, "cleanup: %s", summary)
	return nil
}

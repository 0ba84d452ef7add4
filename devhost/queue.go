package devhost

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
)

// Queue defaults of the Storage Queues extension (host.json extensions.queues); the polling
// default is the one the host uses when it runs locally.
const (
	defaultBatchSize          = 16
	defaultMaxDequeueCount    = 5
	defaultMaxPollingInterval = 2 * time.Second
	minPollingInterval        = 100 * time.Millisecond
	// The extension dequeues with a 10-minute visibility timeout and keeps renewing it while
	// the function runs; devhost invocations are bounded by functionTimeout instead.
	dequeueVisibility = 10 * time.Minute
)

// developmentStorage is what "UseDevelopmentStorage=true" means: Azurite on its default ports.
const developmentStorage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;" +
	"TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"

// storageConnection resolves a binding's connection property to a connection string: the app
// setting of that name, or of "AzureWebJobs"+name; empty means AzureWebJobsStorage.
func (h *Host) storageConnection(b *Binding) (string, error) {
	name := b.String("connection")
	if name == "" {
		name = "AzureWebJobsStorage"
	}
	v, ok := h.settings[name]
	if !ok {
		v, ok = h.settings["AzureWebJobs"+name]
	}
	if !ok || v == "" {
		return "", fmt.Errorf("binding %q: storage connection %q is not an app setting", b.Name, name)
	}
	if strings.EqualFold(strings.TrimSpace(strings.TrimSuffix(v, ";")), "UseDevelopmentStorage=true") {
		return developmentStorage, nil
	}
	return v, nil
}

// queueClient returns a client for the binding's queue (queueName resolved from app settings).
func (h *Host) queueClient(b *Binding, suffix string) (*azqueue.QueueClient, string, error) {
	cs, err := h.storageConnection(b)
	if err != nil {
		return nil, "", err
	}
	name, err := resolve(b.String("queueName"), h.settings)
	if err != nil {
		return nil, "", fmt.Errorf("binding %q: %w", b.Name, err)
	}
	if name == "" {
		return nil, "", fmt.Errorf("binding %q: queueName is required", b.Name)
	}
	name = strings.ToLower(name) + suffix
	svc, err := azqueue.NewServiceClientFromConnectionString(cs, nil)
	if err != nil {
		return nil, "", fmt.Errorf("binding %q: storage connection: %w", b.Name, err)
	}
	return svc.NewQueueClient(name), name, nil
}

// queueSettings are host.json extensions.queues with the extension's defaults applied.
type queueSettings struct {
	batchSize, newBatchThreshold, maxDequeueCount int
	maxPolling, visibilityTimeout                 time.Duration
	base64                                        bool
}

func (h *Host) queueSettings() (queueSettings, error) {
	c := h.app.Host.Extensions.Queues
	s := queueSettings{batchSize: c.BatchSize, maxDequeueCount: c.MaxDequeueCount, maxPolling: defaultMaxPollingInterval, base64: true}
	if s.batchSize == 0 {
		s.batchSize = defaultBatchSize
	}
	if s.batchSize < 1 || s.batchSize > 32 {
		return s, fmt.Errorf("host.json extensions.queues.batchSize %d: must be 1 to 32", s.batchSize)
	}
	if s.maxDequeueCount == 0 {
		s.maxDequeueCount = defaultMaxDequeueCount
	}
	s.newBatchThreshold = s.batchSize / 2
	if c.NewBatchThreshold != nil {
		s.newBatchThreshold = *c.NewBatchThreshold
	}
	var err error
	if c.MaxPollingInterval != "" {
		if s.maxPolling, err = parseTimeSpan(c.MaxPollingInterval); err != nil {
			return s, fmt.Errorf("host.json extensions.queues.maxPollingInterval: %w", err)
		}
		if s.maxPolling < minPollingInterval {
			return s, fmt.Errorf("host.json extensions.queues.maxPollingInterval %s: the minimum is 100 ms", c.MaxPollingInterval)
		}
	}
	if c.VisibilityTimeout != "" {
		if s.visibilityTimeout, err = parseTimeSpan(c.VisibilityTimeout); err != nil {
			return s, fmt.Errorf("host.json extensions.queues.visibilityTimeout: %w", err)
		}
	}
	switch strings.ToLower(c.MessageEncoding) {
	case "", "base64":
	case "none":
		s.base64 = false
	default:
		return s, fmt.Errorf("host.json extensions.queues.messageEncoding %q: want base64 or none", c.MessageEncoding)
	}
	return s, nil
}

// queueListener feeds one queue-triggered function.
type queueListener struct {
	h      *Host
	f      *Function
	q      *azqueue.QueueClient
	poison *azqueue.QueueClient
	name   string
	s      queueSettings
}

func (h *Host) startQueueListener(ctx context.Context, f *Function) error {
	s, err := h.queueSettings()
	if err != nil {
		return err
	}
	q, name, err := h.queueClient(f.Trigger, "")
	if err != nil {
		return fmt.Errorf("function %s: %w", f.Name, err)
	}
	poison, _, err := h.queueClient(f.Trigger, "-poison")
	if err != nil {
		return fmt.Errorf("function %s: %w", f.Name, err)
	}
	l := &queueListener{h: h, f: f, q: q, poison: poison, name: name, s: s}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		l.run(h.ctx)
	}()
	h.log.Info("queue listener started", "function", f.Name, "queue", name, "maxDequeueCount", s.maxDequeueCount)
	return nil
}

// run polls the queue: a new batch whenever the messages in flight drop to newBatchThreshold;
// an empty (or missing) queue is polled again after a delay that doubles up to
// maxPollingInterval, and at once again after a batch was found.
func (l *queueListener) run(ctx context.Context) {
	inFlight := make(chan struct{}, l.s.batchSize+l.s.newBatchThreshold+1)
	delay := minPollingInterval
	for ctx.Err() == nil {
		if len(inFlight) > l.s.newBatchThreshold {
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		resp, err := l.q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{
			NumberOfMessages:  to.Ptr(int32(l.s.batchSize)),
			VisibilityTimeout: to.Ptr(int32(dequeueVisibility / time.Second)),
		})
		if err != nil && ctx.Err() == nil && !isQueueNotFound(err) {
			l.h.log.Warn("dequeuing", "queue", l.name, "err", err)
		}
		if err != nil || len(resp.Messages) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, l.s.maxPolling)
			continue
		}
		delay = minPollingInterval
		for _, m := range resp.Messages {
			inFlight <- struct{}{}
			l.h.wg.Add(1)
			go func() {
				defer l.h.wg.Done()
				defer func() { <-inFlight }()
				l.process(ctx, m)
			}()
		}
	}
}

func isQueueNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == 404
}

// process invokes the function for one message, then deletes it (success), makes it visible
// again after visibilityTimeout (failure), or moves it to the poison queue (failure at
// maxDequeueCount).
func (l *queueListener) process(ctx context.Context, m *azqueue.DequeuedMessage) {
	text := deref(m.MessageText)
	body := []byte(text)
	if l.s.base64 {
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			// The extension cannot decode it and moves it to the poison queue straight away.
			l.h.log.Warn("queue message is not base64; moving it to the poison queue", "queue", l.name, "id", deref(m.MessageID))
			l.toPoison(ctx, m)
			return
		}
		body = b
	}
	inv := l.invocation(m, body)
	_, err := l.h.run(ctx, l.f, inv)
	if ctx.Err() != nil {
		return // shutting down: the message becomes visible again on its own
	}
	if err == nil {
		if _, derr := l.q.DeleteMessage(ctx, deref(m.MessageID), deref(m.PopReceipt), nil); derr != nil {
			l.h.log.Warn("deleting processed message", "queue", l.name, "err", derr)
		}
		return
	}
	if m.DequeueCount != nil && int(*m.DequeueCount) >= l.s.maxDequeueCount {
		l.h.log.Warn("message reached maxDequeueCount; moving it to the poison queue", "queue", l.name,
			"id", deref(m.MessageID), "dequeueCount", *m.DequeueCount)
		l.toPoison(ctx, m)
		return
	}
	_, uerr := l.q.UpdateMessage(ctx, deref(m.MessageID), deref(m.PopReceipt), text, &azqueue.UpdateMessageOptions{
		VisibilityTimeout: to.Ptr(int32(l.s.visibilityTimeout / time.Second)),
	})
	if uerr != nil {
		l.h.log.Warn("releasing failed message", "queue", l.name, "err", uerr)
	}
}

// toPoison copies the message, as it is stored, to <queue>-poison (created if needed) and deletes
// the original.
func (l *queueListener) toPoison(ctx context.Context, m *azqueue.DequeuedMessage) {
	if _, err := l.poison.Create(ctx, nil); err != nil && !isQueueExists(err) {
		l.h.log.Error("creating poison queue", "queue", l.name+"-poison", "err", err)
		return
	}
	if _, err := l.poison.EnqueueMessage(ctx, deref(m.MessageText), &azqueue.EnqueueMessageOptions{TimeToLive: to.Ptr(int32(-1))}); err != nil {
		l.h.log.Error("writing poison message", "queue", l.name+"-poison", "err", err)
		return
	}
	if _, err := l.q.DeleteMessage(ctx, deref(m.MessageID), deref(m.PopReceipt), nil); err != nil {
		l.h.log.Warn("deleting poisoned message", "queue", l.name, "err", err)
	}
}

func isQueueExists(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == 409
}

// invocation builds the invocation for a queue message as the queue extension's
// QueueTriggerBinding does: the text double-encoded
// (base64 when dataType is binary), and metadata DequeueCount as a string, times as
// DateTimeOffsets, Id and PopReceipt double-encoded, plus the top-level properties of a message
// that is a JSON object.
func (l *queueListener) invocation(m *azqueue.DequeuedMessage, body []byte) *Invocation {
	inv := newInvocation(l.f, time.Now())
	if strings.EqualFold(l.f.Trigger.DataType, "binary") {
		inv.Data[l.f.Trigger.Name], _ = marshalHost(base64.StdEncoding.EncodeToString(body))
	} else {
		inv.Data[l.f.Trigger.Name] = hostString(string(body))
	}
	var count int64
	if m.DequeueCount != nil {
		count = *m.DequeueCount
	}
	cb, _ := marshalHost(strconv.FormatInt(count, 10))
	inv.setMetadata("DequeueCount", cb)
	exp := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) // DateTimeOffset.MaxValue: no expiry
	if m.ExpirationTime != nil {
		exp = *m.ExpirationTime
	}
	inv.setMetadata("ExpirationTime", hostTimeOffset(exp))
	inv.setMetadata("Id", hostString(deref(m.MessageID)))
	if m.InsertionTime != nil {
		inv.setMetadata("InsertionTime", hostTimeOffset(*m.InsertionTime))
	}
	if m.TimeNextVisible != nil {
		inv.setMetadata("NextVisibleTime", hostTimeOffset(*m.TimeNextVisible))
	}
	inv.setMetadata("PopReceipt", hostString(deref(m.PopReceipt)))
	inv.setMetadata("QueueTrigger", hostString(string(body))) // dropped: its key ends in "trigger"
	applyJSONBindingData(inv, body)
	return inv
}

// applyJSONBindingData adds the top-level, non-array properties of a message that is a JSON
// object (Utility.ApplyBindingData): objects as objects, other values as their string form,
// which the host then double-encodes. Booleans print as .NET prints them ("True").
func applyJSONBindingData(inv *Invocation, body []byte) {
	t := strings.TrimSpace(string(body))
	if !strings.HasPrefix(t, "{") || !strings.HasSuffix(t, "}") {
		return
	}
	var props map[string]json.RawMessage
	if json.Unmarshal([]byte(t), &props) != nil {
		return
	}
	for k, v := range props {
		s := strings.TrimSpace(string(v))
		switch {
		case s == "" || s == "null" || s[0] == '[':
		case s[0] == '{':
			inv.setMetadata(k, json.RawMessage(s))
		case s[0] == '"':
			var str string
			_ = json.Unmarshal(v, &str)
			inv.setMetadata(k, hostString(str))
		case s == "true":
			inv.setMetadata(k, hostString("True"))
		case s == "false":
			inv.setMetadata(k, hostString("False"))
		default:
			inv.setMetadata(k, hostString(s))
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// writeOutputs applies a successful invocation's output bindings: queue outputs are enqueued
// (the http output is written by the HTTP trigger itself).
func (h *Host) writeOutputs(ctx context.Context, f *Function, res *Result) error {
	outs := outputValues(f, res)
	for i := range f.Bindings {
		b := &f.Bindings[i]
		if b.Direction != "out" || !strings.EqualFold(b.Type, TypeQueue) {
			continue
		}
		v, ok := outs[b.Name]
		if !ok {
			continue
		}
		msgs, err := queueMessages(v, strings.EqualFold(b.DataType, "binary"))
		if err != nil {
			return fmt.Errorf("output binding %s: %w", b.Name, err)
		}
		if len(msgs) == 0 {
			continue
		}
		q, name, err := h.queueClient(b, "")
		if err != nil {
			return err
		}
		s, err := h.queueSettings()
		if err != nil {
			return err
		}
		if _, err := q.Create(ctx, nil); err != nil && !isQueueExists(err) {
			return fmt.Errorf("output binding %s: creating queue %s: %w", b.Name, name, err)
		}
		for _, m := range msgs {
			text := string(m)
			if s.base64 {
				text = base64.StdEncoding.EncodeToString(m)
			}
			if _, err := q.EnqueueMessage(ctx, text, nil); err != nil {
				return fmt.Errorf("output binding %s: enqueuing to %s: %w", b.Name, name, err)
			}
		}
	}
	return nil
}

package outcome

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"

	"dpsdeprov/deprovision"
)

// Event types of the outcome events.
const (
	TypeCompleted = "Deprovisioning.Completed"
	TypeFailed    = "Deprovisioning.Failed"
	TypeRejected  = "Deprovisioning.Rejected"
)

// StepPublish is the kind of the journal step that records a publish that failed for good.
const StepPublish deprovision.StepKind = "outcome.publish"

// PublishStepIndex is the step index of that record: far above any plan's steps, so it never
// collides with one.
const PublishStepIndex = 9999

// StepRecorder is where failed publishes are journaled; deprovision.Journal satisfies it.
type StepRecorder interface {
	RecordStep(ctx context.Context, rec deprovision.StepRecord) error
}

// Sender publishes CloudEvents; *azeventgrid.Client satisfies it.
type Sender interface {
	PublishCloudEvents(ctx context.Context, events []messaging.CloudEvent, options *azeventgrid.PublishCloudEventsOptions) (azeventgrid.PublishCloudEventsResponse, error)
}

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	// Source is the CloudEvents source of the outcome events (default "/dpsdeprov").
	Source string
	// Attempts bounds the publishes of one event, each itself retried by the client's
	// pipeline (default 3).
	Attempts int
	// Backoff is the wait before the second attempt, doubled for each later one (default 2s).
	Backoff time.Duration
	// Journal records publishes that failed for good (optional).
	Journal StepRecorder
	Logger  *slog.Logger
	Clock   deprovision.Clock
}

// Publisher is a deprovision.Notifier (and deprovision.ApprovalNotifier) that publishes one
// CloudEvent per ended operation, and one per operation held for approval. It
// publishes in the background so that a slow or failing topic never delays or fails an
// operation; Close waits for publishes in flight.
type Publisher struct {
	sender Sender
	o      PublisherOptions
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
}

// NewClientOptions returns the azcore client options the publisher's azeventgrid client should
// use: a short per-try timeout and a few fast retries, since Attempts retries again on top.
func NewClientOptions(transport policy.Transporter) *azeventgrid.ClientOptions {
	o := &azeventgrid.ClientOptions{}
	o.Retry = policy.RetryOptions{MaxRetries: 2, TryTimeout: 10 * time.Second, RetryDelay: 500 * time.Millisecond, MaxRetryDelay: 4 * time.Second}
	o.Transport = transport
	return o
}

// NewPublisher returns a Publisher sending through sender.
func NewPublisher(sender Sender, o PublisherOptions) *Publisher {
	if o.Source == "" {
		o.Source = "/dpsdeprov"
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = deprovision.SystemClock{}
	}
	return &Publisher{sender: sender, o: o}
}

// EventType returns the outcome event type for a terminal status; ok is false for statuses
// that are not announced (a dry run's "planned" changes nothing, and announcing it as
// completed would mislead a consumer that acts on completions).
func EventType(s deprovision.Status) (string, bool) {
	switch s {
	case deprovision.StatusSucceeded:
		return TypeCompleted, true
	case deprovision.StatusFailed:
		return TypeFailed, true
	case deprovision.StatusRejected:
		return TypeRejected, true
	}
	return "", false
}

// NewEvent builds the outcome CloudEvent of op. Its id is derived from the operation, so a
// repeated announcement of one outcome is recognisably the same event.
func NewEvent(source string, op *deprovision.Operation, now time.Time) (messaging.CloudEvent, bool, error) {
	typ, ok := EventType(op.Status)
	if !ok {
		return messaging.CloudEvent{}, false, nil
	}
	subject := subjectOf(op)
	ct := "application/json"
	ev, err := messaging.NewCloudEvent(source, typ, Summarize(op), &messaging.CloudEventOptions{Subject: &subject, DataContentType: &ct, Time: &now})
	if err != nil {
		return ev, false, err
	}
	ev.ID = op.ID + "/" + string(op.Status)
	return ev, true, nil
}

// subjectOf is the CloudEvents subject of op's events: the device, else the group.
func subjectOf(op *deprovision.Operation) string {
	switch {
	case op.Request.RegistrationID != "":
		return "devices/" + op.Request.RegistrationID
	case op.Request.EnrollmentGroupID != "":
		return "enrollmentGroups/" + op.Request.EnrollmentGroupID
	}
	return "operations/" + op.ID
}

// OperationEnded implements deprovision.Notifier.
func (p *Publisher) OperationEnded(ctx context.Context, op *deprovision.Operation) {
	ev, ok, err := NewEvent(p.o.Source, op, p.o.Clock.Now())
	if err != nil {
		p.o.Logger.Error("building the outcome event", "operationId", op.ID, "error", err)
		return
	}
	if !ok {
		return
	}
	p.send(ctx, op.ID, ev)
}

// send publishes ev of operation opID in the background. The publish outlives the invocation
// that handed it over, but not the process: Close waits for it.
func (p *Publisher) send(ctx context.Context, opID string, ev messaging.CloudEvent) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.o.Logger.Error("outcome event not published: the publisher is closed", "operationId", opID, "type", ev.Type)
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	bg := context.WithoutCancel(ctx)
	go func() {
		defer p.wg.Done()
		p.publish(bg, opID, ev)
	}()
}

func (p *Publisher) publish(ctx context.Context, opID string, ev messaging.CloudEvent) {
	var err error
	start := p.o.Clock.Now()
	wait := p.o.Backoff
	for attempt := 1; attempt <= p.o.Attempts; attempt++ {
		_, err = p.sender.PublishCloudEvents(ctx, []messaging.CloudEvent{ev}, nil)
		if err == nil {
			p.o.Logger.Info("outcome event published", "operationId", opID, "type", ev.Type, "attempt", attempt)
			return
		}
		if !retriable(err) {
			break
		}
		if attempt < p.o.Attempts {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			wait *= 2
		}
	}
	rec := deprovision.StepRecord{
		OperationID: opID, Index: PublishStepIndex, Kind: StepPublish, Target: "outcome/" + ev.Type,
		Outcome: deprovision.StepFailed, Error: fmt.Sprintf("publishing the outcome event: %v", err),
		Duration: p.o.Clock.Now().Sub(start), Time: p.o.Clock.Now(),
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		rec.HTTPStatus, rec.ErrorCode = re.StatusCode, re.ErrorCode
		rec.Error = fmt.Sprintf("publishing the outcome event: topic answered %d %s", re.StatusCode, re.ErrorCode)
	}
	p.o.Logger.Error("outcome event not published", "operationId", opID, "type", ev.Type, "error", rec.Error)
	if p.o.Journal != nil {
		if jerr := p.o.Journal.RecordStep(ctx, rec); jerr != nil {
			p.o.Logger.Error("journaling the failed outcome publish", "operationId", opID, "error", jerr)
		}
	}
}

// retriable reports whether another attempt may succeed: not after the topic refused the
// request itself (400, 401, 403, 404, 413).
func retriable(err error) bool {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case 400, 401, 403, 404, 413:
			return false
		}
	}
	return true
}

// Close stops accepting announcements and waits for publishes in flight, or for ctx.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("outcome events still publishing: %w", ctx.Err())
	}
}

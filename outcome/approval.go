package outcome

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"

	"dpsdeprov/deprovision"
)

// TypeApprovalRequired is the type of the event announcing that a guardrail holds an
// operation until a person approves (or denies) it through the Operations endpoint.
const TypeApprovalRequired = "Deprovisioning.ApprovalRequired"

// ApprovalSummary is the data of a Deprovisioning.ApprovalRequired event: the operation's
// summary (its reason says, for a person, why it is held), the limit that holds it, and the
// Operations endpoint routes that decide it.
type ApprovalSummary struct {
	Summary
	// Limit is the setting that holds the operation (MAX_GROUP_DEVICES or
	// MAX_DESTRUCTIVE_PER_HOUR), Max its value and Count what was counted against it.
	Limit string `json:"limit,omitempty"`
	Max   int    `json:"max,omitempty"`
	Count int    `json:"count,omitempty"`
	// ApproveRoute and DenyRoute are the Operations endpoint's routes, relative to the
	// function app's API prefix (by default https://{app}/api/): POST there with
	// {"reason": "…"} to let the operation run, or to end it rejected.
	ApproveRoute string `json:"approveRoute"`
	DenyRoute    string `json:"denyRoute"`
}

// ApproveRoute is the Operations endpoint route that approves held operation id.
func ApproveRoute(id string) string { return "deprovision/approvals/" + id }

// DenyRoute is the Operations endpoint route that denies held operation id.
func DenyRoute(id string) string { return "deprovision/denials/" + id }

// NewApprovalEvent builds the Deprovisioning.ApprovalRequired CloudEvent of op, which must be
// awaiting approval. Its id is derived from the operation, so an announcement repeated (by
// the cleanup, after a crash) is recognisably the same event.
func NewApprovalEvent(source string, op *deprovision.Operation, now time.Time) (messaging.CloudEvent, error) {
	if op.Status != deprovision.StatusAwaitingApproval {
		return messaging.CloudEvent{}, fmt.Errorf("operation %s is %s, not %s: no approval to ask for", op.ID, op.Status, deprovision.StatusAwaitingApproval)
	}
	data := ApprovalSummary{Summary: Summarize(op), ApproveRoute: ApproveRoute(op.ID), DenyRoute: DenyRoute(op.ID)}
	if h := op.Hold; h != nil {
		data.Limit, data.Max, data.Count = h.Limit, h.Max, h.Count
	}
	subject := subjectOf(op)
	ct := "application/json"
	ev, err := messaging.NewCloudEvent(source, TypeApprovalRequired, data, &messaging.CloudEventOptions{Subject: &subject, DataContentType: &ct, Time: &now})
	if err != nil {
		return ev, err
	}
	ev.ID = op.ID + "/" + string(op.Status)
	return ev, nil
}

// ApprovalRequired implements deprovision.ApprovalNotifier: it publishes in the background,
// as OperationEnded does, and journals a publish that fails for good on the operation.
func (p *Publisher) ApprovalRequired(ctx context.Context, op *deprovision.Operation) {
	ev, err := NewApprovalEvent(p.o.Source, op, p.o.Clock.Now())
	if err != nil {
		p.o.Logger.Error("building the approval event", "operationId", op.ID, "error", err)
		return
	}
	p.send(ctx, op.ID, ev)
}

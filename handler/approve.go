package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"dpsdeprov/deprovision"
	"dpsdeprov/internal/hostlog"
	"dpsdeprov/opsapi"
	"dpsdeprov/outcome"
)

// Approver decides on an operation held by a guardrail: Approve lets it run, Deny ends it
// rejected; *deprovision.Engine satisfies it. The Operations function serves approvals and
// denials only when its Engine is one.
type Approver interface {
	Approve(ctx context.Context, id string, a deprovision.Approval) (*deprovision.Operation, error)
	Deny(ctx context.Context, id string, a deprovision.Approval) (*deprovision.Operation, error)
}

// flexStrs is a header value: an array of strings (the host's form) or one string.
type flexStrs []string

// UnmarshalJSON reads an array of strings or one string; anything else leaves it empty.
func (s *flexStrs) UnmarshalJSON(b []byte) error {
	var many []string
	if err := json.Unmarshal(b, &many); err == nil {
		*s = many
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = flexStrs{one}
	}
	return nil
}

func (r *httpRequest) header(name string) string {
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) {
			for _, x := range v {
				if x = strings.TrimSpace(x); x != "" {
					return x
				}
			}
		}
	}
	return ""
}

// ApprovalBody is what POST deprovision/approvals/{operationId} and
// deprovision/denials/{operationId} take.
type ApprovalBody = opsapi.Decision

// approve serves POST deprovision/approvals/{operationId} (deny false): it journals who
// approved the held operation and why, and runs it in this call; and POST
// deprovision/denials/{operationId} (deny true): it journals who denied it and why, and ends
// it rejected without running any of it. An operation a signed-in person submitted is approved
// by another signed-in person only (four eyes); its submitter may still deny it.
func (h *Handler) approve(ctx context.Context, c *call, r *httpRequest, id string, deny bool, who caller) {
	verb, noun := "approve", "approval"
	if deny {
		verb, noun = "deny", "denial"
	}
	ap, ok := h.o.Engine.(Approver)
	if !ok {
		c.respond(http.StatusNotImplemented, apiError{"this deployment's engine does not take approvals or denials"})
		return
	}
	if id == "" {
		id = r.param("operation")
	}
	if id == "" {
		c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("name the operation: POST deprovision/%ss/{operationId}", noun)})
		return
	}
	var body ApprovalBody
	if b := r.body(); len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("the %s body is not a JSON object {\"approvedBy\":…,\"reason\":…}: %v", noun, err)})
			return
		}
		if rej := refuseDuplicateKeys("the "+noun+" body", b); rej != nil {
			c.respond(http.StatusBadRequest, apiError{rej.Reason})
			return
		}
	}
	a := deprovision.Approval{Reason: body.Reason}
	claimed := strings.TrimSpace(body.ApprovedBy)
	if claimed == "" {
		claimed = strings.TrimSpace(body.DeniedBy)
	}
	switch {
	case who.verified():
		a.By, a.Via = who.who.Label(), who.who.Details()
	case claimed != "":
		a.By, a.Via = claimed, "request body, claimed, not verified"
	case who.who != nil:
		a.By, a.Via = who.who.Label(), who.who.Details()+", from the "+who.claimedVia+" with App Service authentication off"
	}
	if a.By == "" {
		c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("the %s names no approver: sign in through App Service authentication, or add \"approvedBy\" to the body", noun)})
		return
	}
	if strings.TrimSpace(a.Reason) == "" {
		c.respond(http.StatusBadRequest, apiError{fmt.Sprintf("the %s gives no reason: add \"reason\" to the body", noun)})
		return
	}
	ctx = hostlog.With(ctx, "operation", id)
	if !deny && !h.fourEyes(ctx, c, r, id, who) {
		return
	}
	decide := ap.Approve
	if deny {
		decide = ap.Deny
	}
	op, err := decide(ctx, id, a)
	switch {
	case errors.Is(err, deprovision.ErrNotAwaitingApproval):
		c.respond(http.StatusConflict, apiError{fmt.Sprintf("operation %s is %s: only an operation awaiting approval can be %sd", id, op.Status, verb)})
		return
	case err != nil:
		if r, ok := deprovision.AsRefusal(err); ok {
			c.respond(http.StatusBadRequest, apiError{r.Reason})
			return
		}
		if op == nil {
			c.respondError(noun+" of operation "+id, err)
			return
		}
		// Approved, then interrupted: the journal has the approval, and a redelivery or
		// the cleanup timer carries the operation on.
		c.note(ctx, slog.LevelWarn, fmt.Sprintf("operation %s approved by %s, then interrupted: %v", id, a.By, err),
			"approved operation interrupted", "operation", id, "error", err.Error())
	}
	c.note(ctx, slog.LevelInfo, fmt.Sprintf("operation %s: %s by %s (%s) → %s", id, noun, a.By, a.Via, op.Status),
		"operation "+noun, "operation", id, "by", a.By, "via", a.Via, "status", op.Status)
	status := http.StatusOK
	if !op.Status.Terminal() {
		status = http.StatusAccepted
	}
	c.respond(status, outcome.Summarize(op))
}

// fourEyes refuses the approval of an operation by the verified identity that submitted it
// (409), and by anyone not signed in when a signed-in person submitted it (401: nothing shows
// that the key holder is someone else). It reports whether the approval may go on; an unknown
// operation goes on, for the engine to answer.
func (h *Handler) fourEyes(ctx context.Context, c *call, r *httpRequest, id string, who caller) bool {
	op, _, err := h.o.Engine.Operation(ctx, id)
	switch {
	case errors.Is(err, deprovision.ErrNotFound):
		return true
	case err != nil:
		c.respondError("approval of operation "+id, err)
		return false
	}
	sub := op.Request.SubmittedBy
	if sub == nil || !sub.Verified {
		return true
	}
	route := "POST " + r.route()
	if !who.verified() {
		h.refuse(ctx, c, who, route, &refusal{http.StatusUnauthorized, fmt.Sprintf(
			"operation %s was submitted by %s; four eyes: only another person, signed in through App Service authentication with the app role %s, may approve it", id, sub, RoleApprover)})
		return false
	}
	if sub.Same(who.who) {
		h.refuse(ctx, c, who, route, &refusal{http.StatusConflict, fmt.Sprintf(
			"%s submitted operation %s and may not approve it too (four eyes): another person with the app role %s must approve it; its submitter may still deny it", who.who, id, RoleApprover)})
		return false
	}
	return true
}

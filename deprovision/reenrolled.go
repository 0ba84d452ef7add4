package deprovision

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// IntentReEnrolled ends a compromise on record: the operator re-enrolled the device
// deliberately with new credentials, which is what the refusal of `recovered` after
// `compromised` tells them to do. Without it the cleanup's drift pass would revoke the new
// enrollment again on every sweep. It changes nothing in DPS or the hub: its one step checks
// the evidence again when it runs, and the device row then records `re-enrolled`, which is not
// a revoking intent. Every re-enrolled operation waits for a person's approval.
const IntentReEnrolled Intent = "re-enrolled"

// StepVerifyReEnrollment checks, when the approved operation runs, that the device's
// individual enrollment is enabled and (X.509) holds the certificate given as evidence. It
// changes nothing; it fails when the evidence no longer holds.
const StepVerifyReEnrollment StepKind = "dps.verify-re-enrollment"

// ParamThumbprint is the SHA-1 thumbprint (hex, upper case) of the certificate given as
// evidence of a re-enrollment.
const ParamThumbprint = "thumbprint"

// HoldReEnrolled is the [Hold] limit of a re-enrolled operation: always a person's decision.
const HoldReEnrolled = "RE_ENROLLED"

// planSpecial plans the intents that have a path of their own outside the policy matrix
// (re-enrolled here, orphaned in orphaned.go); ok is false for every other intent.
func planSpecial(r *Resolved, req Request, prior *DeviceState) (p *Plan, ok bool, err error) {
	switch req.Intent {
	case IntentReEnrolled:
		p, err = planReEnrolled(r, req, prior)
	case IntentOrphaned:
		p, err = planOrphaned(r, req, prior)
	default:
		return nil, false, nil
	}
	if p != nil {
		p.Notes = append(append([]string(nil), r.Notes...), p.Notes...)
	}
	return p, true, err
}

// planReEnrolled checks the evidence of a re-enrollment against what DPS holds now.
func planReEnrolled(r *Resolved, req Request, prior *DeviceState) (*Plan, error) {
	rid := r.RegistrationID
	if req.Action != ActionDefault {
		return nil, refuse("re-enrolled takes no action (got %q): it changes nothing in DPS or the hub", req.Action)
	}
	if prior == nil || prior.Intent != IntentCompromised {
		last := "none on record"
		if prior != nil {
			last = string(prior.Intent) + " (operation " + prior.OperationID + ")"
		}
		return nil, refuse("re-enrolled ends a compromise this system revoked, and %s is not compromised (its last change: %s)", rid, last)
	}
	if !req.EventTime.IsZero() && !prior.EventTime.IsZero() && req.EventTime.Before(prior.EventTime) {
		return nil, refuse("stale event: the re-enrollment it reports (at %s) is older than the compromise (at %s, operation %s)",
			req.EventTime.UTC().Format("2006-01-02T15:04:05Z07:00"), prior.EventTime.UTC().Format("2006-01-02T15:04:05Z07:00"), prior.OperationID)
	}
	if r.Kind != KindIndividual || r.Enrollment == nil {
		return nil, refuse("%s has no individual enrollment: re-enroll it first with new credentials (for a group member, replace the blocking enrollment with one holding new credentials), then send re-enrolled", rid)
	}
	if !r.Enrollment.Enabled {
		return nil, refuse("the individual enrollment of %s is disabled: a re-enrolled device has an enabled enrollment with new credentials", rid)
	}
	p := &Plan{Intent: IntentReEnrolled, Path: "individual/" + string(r.Enrollment.Attestation) + "/re-enrolled"}
	params := map[string]string{ParamAttestation: string(r.Enrollment.Attestation)}
	var evidence string
	switch r.Enrollment.Attestation {
	case AttestationX509:
		if r.Leaf == nil {
			return nil, refuse("re-enrolled of an X.509 device needs the new leaf certificate (field certificate): its thumbprint must be the enrollment's")
		}
		if !holdsCert(r.Enrollment, *r.Leaf) {
			return nil, refuse("the certificate given (thumbprint %s) is not the one the enrollment of %s holds: re-enroll with it first", r.Leaf.SHA1Thumbprint, rid)
		}
		params[ParamThumbprint] = normThumb(r.Leaf.SHA1Thumbprint)
		evidence = "the enrollment holds the new certificate " + params[ParamThumbprint]
	default:
		// DPS returns no keys and no TPM secret: the evidence is the operator's statement,
		// journaled with the request and checked by the person who approves.
		if strings.TrimSpace(req.Reason) == "" {
			return nil, refuse("re-enrolled of a %s device needs its evidence in reason (which new credentials, issued how): DPS returns no keys to compare", r.Enrollment.Attestation)
		}
		evidence = "the operator states: " + req.Reason
	}
	p.add(StepVerifyReEnrollment, enrollmentTarget(rid),
		fmt.Sprintf("re-enrolled after the compromise of operation %s: check again, when approved, that the enrollment is enabled (%s)", prior.OperationID, evidence), params)
	p.note("a person must approve: re-enrolled ends the compromise on record, after which the cleanup no longer revokes the device again")
	return p, nil
}

// personalDecision returns the reason and hold of a plan that waits for a person whatever the
// limits: every re-enrolled operation.
func personalDecision(op *Operation) (string, *Hold) {
	if op.Request.Intent != IntentReEnrolled {
		return "", nil
	}
	return fmt.Sprintf("re-enrolled ends the compromise of %s on record: a person checks the evidence and approves", op.Request.RegistrationID),
		&Hold{Limit: HoldReEnrolled, Max: 0, Count: 1}
}

// verifyReEnrollment is StepVerifyReEnrollment's check.
func verifyReEnrollment(ctx context.Context, en Enrollments, st Step) stepResult {
	rid := strings.TrimPrefix(st.Target, "dps/enrollments/")
	e, err := en.GetEnrollment(ctx, rid)
	if errors.Is(err, ErrNotFound) {
		return failed(fmt.Errorf("the enrollment of %s is gone: it is not re-enrolled", rid))
	}
	if err != nil {
		return failed(fmt.Errorf("reading enrollment %s: %w", rid, err))
	}
	if !e.Enabled {
		return failed(fmt.Errorf("the enrollment of %s is disabled: it is not re-enrolled", rid))
	}
	if t := st.Params[ParamThumbprint]; t != "" && !holdsCert(e, CertInfo{SHA1Thumbprint: t}) {
		return failed(fmt.Errorf("the enrollment of %s no longer holds the certificate %s given as evidence", rid, t))
	}
	return stepResult{note: "verified: the enrollment is enabled" + map[bool]string{true: " and holds certificate " + st.Params[ParamThumbprint], false: ""}[st.Params[ParamThumbprint] != ""]}
}

// holdsCert reports whether e's client certificates include c (by thumbprint).
func holdsCert(e *Enrollment, c CertInfo) bool {
	for _, have := range e.ClientCerts {
		if t := normThumb(c.SHA1Thumbprint); t != "" && t == normThumb(have.SHA1Thumbprint) {
			return true
		}
		if t := normThumb(c.SHA256Thumbprint); t != "" && t == normThumb(have.SHA256Thumbprint) {
			return true
		}
	}
	return false
}

func normThumb(t string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(t), ":", ""))
}

package deprovision

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// stepResult is what applying one step did.
type stepResult struct {
	changed bool
	status  int
	code    string
	note    string
	err     error
}

func failed(err error) stepResult { return stepResult{err: err} }

func gone(what string, err error) stepResult {
	s, c := ServiceStatus(err)
	return stepResult{status: s, code: c, note: what + " not found: nothing to change"}
}

// apply runs one step. Every step decides from a read of its target taken in this invocation
// (its own, or for a hub identity the one resolution took: seen), so a step that already
// happened is a no-change, and a 412 leads to another read, not an overwrite.
func (e *Engine) apply(ctx context.Context, op *Operation, st Step, seen *deviceRead, resumed bool) stepResult {
	rid := strings.TrimPrefix(st.Target, "dps/enrollments/")
	p := st.Params
	switch st.Kind {
	case StepDisableEnrollment:
		return e.setEnrollment(ctx, rid, false)
	case StepEnableEnrollment:
		return e.setEnrollment(ctx, rid, true)
	case StepDeleteEnrollment, StepDeleteBlockingEnrollment:
		return e.deleteEnrollment(ctx, rid)
	case StepCreateBlockingEnrollment:
		if p[ParamProbe] != "" {
			return e.probeBlock(ctx, op, rid, AttestationType(p[ParamAttestation]), resumed)
		}
		return e.createEnrollment(ctx, op, rid, AttestationType(p[ParamAttestation]), false, "", "")
	case StepCreateMoveEnrollment:
		return e.createEnrollment(ctx, op, rid, AttestationType(p[ParamAttestation]), true, p[ParamTargetHub], p[ParamGroupID])
	case StepRetargetEnrollment:
		return e.retarget(ctx, rid, p[ParamTargetHub])
	case StepDeleteRegistration:
		rid := strings.TrimPrefix(st.Target, "dps/registrations/")
		err := e.d.Registrations.DeleteRegistration(ctx, rid, "")
		if errors.Is(err, ErrNotFound) {
			return gone("registration record", err)
		}
		if err != nil {
			return failed(fmt.Errorf("deleting registration record %s: %w", rid, err))
		}
		return stepResult{changed: true}
	case StepDisableGroup:
		return e.disableGroup(ctx, strings.TrimPrefix(st.Target, "dps/enrollmentGroups/"))
	case StepDeleteGroup:
		return e.deleteGroup(ctx, strings.TrimPrefix(st.Target, "dps/enrollmentGroups/"))
	case StepGroupMembers:
		return e.groupMembers(ctx, op, st)
	case StepDeleteGroupRegistrations:
		res := e.deleteGroupRegistrations(ctx, p[ParamGroupID])
		if n := op.Progress.Records; n > 0 && res.err == nil {
			// The member batches deleted the records as they went: the step is done however
			// few were left for it (which a resume after an interruption could not tell).
			res.changed, res.note = true, fmt.Sprintf("%d deleted by the member batches; %s", n, res.note)
		}
		return res
	case StepDisableDevice:
		return e.setDevice(ctx, p[ParamHub], p[ParamDeviceID], false, p[ParamStatusReason], seen.take(p[ParamHub], p[ParamDeviceID]))
	case StepEnableDevice:
		return e.setDevice(ctx, p[ParamHub], p[ParamDeviceID], true, "dpsdeprov recovered", seen.take(p[ParamHub], p[ParamDeviceID]))
	case StepDeleteDevice:
		return e.deleteDevice(ctx, p[ParamHub], p[ParamDeviceID])
	case StepVerifyReEnrollment:
		return verifyReEnrollment(ctx, e.d.Enrollments, st)
	case StepDisableDerivedEnrollments:
		return e.disableDerived(ctx, op, p[ParamGroupID])
	case StepAwaitMove:
		return stepResult{note: fmt.Sprintf("the identity stays until DPS shows the device assigned to %s; the Cleanup timer confirms the move", p[ParamTargetHub])}
	}
	return failed(fmt.Errorf("unknown step kind %q", st.Kind))
}

// etagLoop runs try until it asks for no retry, or gives up after the configured retries
// with a transient error (someone keeps changing the target: try the delivery again later).
func (e *Engine) etagLoop(what string, try func() (stepResult, bool)) stepResult {
	for attempt := 0; attempt <= e.c.ETagRetries; attempt++ {
		if res, retry := try(); !retry {
			return res
		}
	}
	return failed(Transient(fmt.Errorf("%s: the target kept changing (412 after %d re-reads)", what, e.c.ETagRetries)))
}

func (e *Engine) setEnrollment(ctx context.Context, rid string, enabled bool) stepResult {
	verb := map[bool]string{true: "enabling", false: "disabling"}[enabled]
	return e.etagLoop(verb+" enrollment "+rid, func() (stepResult, bool) {
		en, err := e.d.Enrollments.GetEnrollment(ctx, rid)
		if errors.Is(err, ErrNotFound) {
			return gone("enrollment", err), false
		}
		if err != nil {
			return failed(fmt.Errorf("reading enrollment %s: %w", rid, err)), false
		}
		if en.Enabled == enabled {
			return stepResult{}, false
		}
		en.Enabled = enabled
		_, err = e.d.Enrollments.PutEnrollment(ctx, en, en.ETag)
		if errors.Is(err, ErrPreconditionFailed) {
			return stepResult{}, true
		}
		if err != nil {
			return failed(fmt.Errorf("%s enrollment %s: %w", verb, rid, err)), false
		}
		return stepResult{changed: true}, false
	})
}

func (e *Engine) deleteEnrollment(ctx context.Context, rid string) stepResult {
	return e.etagLoop("deleting enrollment "+rid, func() (stepResult, bool) {
		en, err := e.d.Enrollments.GetEnrollment(ctx, rid)
		if errors.Is(err, ErrNotFound) {
			return gone("enrollment", err), false
		}
		if err != nil {
			return failed(fmt.Errorf("reading enrollment %s: %w", rid, err)), false
		}
		err = e.d.Enrollments.DeleteEnrollment(ctx, rid, en.ETag)
		switch {
		case errors.Is(err, ErrPreconditionFailed):
			return stepResult{}, true
		case errors.Is(err, ErrNotFound):
			return gone("enrollment", err), false
		case err != nil:
			return failed(fmt.Errorf("deleting enrollment %s: %w", rid, err)), false
		}
		return stepResult{changed: true}, false
	})
}

// createEnrollment creates the blocking (disabled) or moving (enabled, pointed at targetHub)
// individual enrollment of a group member. Its keys are generated or derived here and never
// leave this function: they are secrets, and are never journaled.
func (e *Engine) createEnrollment(ctx context.Context, op *Operation, rid string, att AttestationType, enabled bool, targetHub, groupID string) stepResult {
	want, res := e.enrollmentFor(ctx, op, rid, att, enabled, targetHub, groupID)
	if want == nil {
		return res
	}
	_, err := e.d.Enrollments.PutEnrollment(ctx, want, "")
	if err == nil {
		return stepResult{changed: true}
	}
	if !errors.Is(err, ErrConflict) {
		return failed(fmt.Errorf("creating enrollment %s: %w", rid, err))
	}
	return e.makeEnrollment(ctx, rid, want, enabled, targetHub)
}

// probeBlock creates the blocking enrollment of a coalesced revocation, planned without
// reading the individual enrollment: in the burst's bulk call when the request is part of
// one. A conflict on a resumed step is read: the block an earlier delivery of this operation
// created is no change. Anything else (an individual enrollment, or a block made by hand,
// which the single-device path would have read before planning) has the operation planned
// again from a full read (errIndividual), so that both paths record the same.
func (e *Engine) probeBlock(ctx context.Context, op *Operation, rid string, att AttestationType, resumed bool) stepResult {
	want, res := e.enrollmentFor(ctx, op, rid, att, false, "", "")
	if want == nil {
		return res
	}
	var err error
	if e.d.Burst != nil && burstModeOf(ctx) == burstCoalesce {
		err = e.d.Burst.Block(ctx, want)
	} else {
		_, err = e.d.Enrollments.PutEnrollment(ctx, want, "")
	}
	if err == nil {
		return stepResult{changed: true}
	}
	if !errors.Is(err, ErrConflict) {
		return failed(fmt.Errorf("creating enrollment %s: %w", rid, err))
	}
	if !resumed {
		return stepResult{note: "an individual enrollment exists: it is read before planning again", err: errIndividual}
	}
	en, err := e.d.Enrollments.GetEnrollment(ctx, rid)
	if errors.Is(err, ErrNotFound) {
		return e.makeEnrollment(ctx, rid, want, false, "") // deleted since: create it
	}
	if err != nil {
		return failed(fmt.Errorf("reading enrollment %s: %w", rid, err))
	}
	var leaf *CertInfo
	if att == AttestationX509 {
		if certs, err := ParseCertificates(op.Request.CertificatePEM); err == nil {
			info := InfoOf(certs[0])
			leaf = &info
		}
	}
	if isBlock(en, want, leaf) {
		return stepResult{note: "the blocking enrollment an earlier delivery created is in place"}
	}
	return stepResult{note: "an individual enrollment exists: the device is not a group member", err: errIndividual}
}

// enrollmentFor builds the blocking (disabled) or moving (enabled, pointed at targetHub)
// individual enrollment of a group member. Its keys are generated or derived here and never
// leave the step: they are secrets, and are never journaled. A nil enrollment comes with
// the step's failure.
func (e *Engine) enrollmentFor(ctx context.Context, op *Operation, rid string, att AttestationType, enabled bool, targetHub, groupID string) (*Enrollment, stepResult) {
	want := &Enrollment{RegistrationID: rid, Attestation: att, Enabled: enabled}
	if targetHub != "" {
		want.IoTHubs, want.AllocationPolicy = []string{targetHub}, "static"
	}
	switch att {
	case AttestationX509:
		leaf, err := leafPEM(op.Request.CertificatePEM)
		if err != nil {
			return nil, failed(fmt.Errorf("enrollment %s: %w", rid, err))
		}
		want.CertificatePEM = leaf
	case AttestationSymmetricKey:
		if enabled {
			// A moved member keeps both keys it holds: the ones DPS derived from the group's
			// primary and secondary key.
			gk, err := e.d.Enrollments.GroupKeys(ctx, groupID)
			if err != nil {
				return nil, failed(fmt.Errorf("reading the keys of group %s: %w", groupID, err))
			}
			k, err := DerivedKeys(gk, rid)
			if err != nil {
				return nil, failed(fmt.Errorf("group %s: %w", groupID, err))
			}
			want.PrimaryKey, want.SecondaryKey = k.Primary, k.Secondary
		} else {
			// The keys of a blocking enrollment never match anything: DPS only needs it to exist.
			want.PrimaryKey, want.SecondaryKey = NewSymmetricKey(), NewSymmetricKey()
		}
	default:
		return nil, failed(fmt.Errorf("enrollment %s: cannot create an enrollment with attestation %q", rid, att))
	}
	return want, stepResult{}
}

// makeEnrollment makes an enrollment that exists (created before an interruption, or by
// someone else) what the step wants.
func (e *Engine) makeEnrollment(ctx context.Context, rid string, want *Enrollment, enabled bool, targetHub string) stepResult {
	return e.etagLoop("updating enrollment "+rid, func() (stepResult, bool) {
		en, err := e.d.Enrollments.GetEnrollment(ctx, rid)
		if errors.Is(err, ErrNotFound) {
			_, err = e.d.Enrollments.PutEnrollment(ctx, want, "")
			if errors.Is(err, ErrConflict) {
				return stepResult{}, true
			}
			if err != nil {
				return failed(fmt.Errorf("creating enrollment %s: %w", rid, err)), false
			}
			return stepResult{changed: true}, false
		}
		if err != nil {
			return failed(fmt.Errorf("reading enrollment %s: %w", rid, err)), false
		}
		same := en.Enabled == enabled && (targetHub == "" || pointsAt(en, targetHub))
		if same {
			return stepResult{note: "enrollment already in place"}, false
		}
		en.Enabled = enabled
		if targetHub != "" {
			en.IoTHubs, en.AllocationPolicy = want.IoTHubs, want.AllocationPolicy
		}
		_, err = e.d.Enrollments.PutEnrollment(ctx, en, en.ETag)
		if errors.Is(err, ErrPreconditionFailed) {
			return stepResult{}, true
		}
		if err != nil {
			return failed(fmt.Errorf("updating enrollment %s: %w", rid, err)), false
		}
		return stepResult{changed: true, note: "an individual enrollment already existed; it was updated"}, false
	})
}

func pointsAt(en *Enrollment, hub string) bool {
	return len(en.IoTHubs) == 1 && strings.EqualFold(en.IoTHubs[0], hub) && en.AllocationPolicy == "static"
}

func (e *Engine) retarget(ctx context.Context, rid, hub string) stepResult {
	return e.etagLoop("retargeting enrollment "+rid, func() (stepResult, bool) {
		en, err := e.d.Enrollments.GetEnrollment(ctx, rid)
		if err != nil {
			return failed(fmt.Errorf("reading enrollment %s: %w", rid, err)), false
		}
		if pointsAt(en, hub) {
			return stepResult{}, false
		}
		en.IoTHubs, en.AllocationPolicy = []string{hub}, "static"
		_, err = e.d.Enrollments.PutEnrollment(ctx, en, en.ETag)
		if errors.Is(err, ErrPreconditionFailed) {
			return stepResult{}, true
		}
		if err != nil {
			return failed(fmt.Errorf("pointing enrollment %s at %s: %w", rid, hub, err)), false
		}
		return stepResult{changed: true}, false
	})
}

func (e *Engine) disableGroup(ctx context.Context, gid string) stepResult {
	return e.etagLoop("disabling group "+gid, func() (stepResult, bool) {
		g, err := e.d.Enrollments.GetGroup(ctx, gid)
		if errors.Is(err, ErrNotFound) {
			return gone("enrollment group", err), false
		}
		if err != nil {
			return failed(fmt.Errorf("reading group %s: %w", gid, err)), false
		}
		if !g.Enabled {
			return stepResult{}, false
		}
		g.Enabled = false
		_, err = e.d.Enrollments.PutGroup(ctx, g, g.ETag)
		if errors.Is(err, ErrPreconditionFailed) {
			return stepResult{}, true
		}
		if err != nil {
			return failed(fmt.Errorf("disabling group %s: %w", gid, err)), false
		}
		return stepResult{changed: true}, false
	})
}

func (e *Engine) deleteGroup(ctx context.Context, gid string) stepResult {
	return e.etagLoop("deleting group "+gid, func() (stepResult, bool) {
		g, err := e.d.Enrollments.GetGroup(ctx, gid)
		if errors.Is(err, ErrNotFound) {
			return gone("enrollment group", err), false
		}
		if err != nil {
			return failed(fmt.Errorf("reading group %s: %w", gid, err)), false
		}
		if g.Enabled {
			// Someone enabled it again since it was disabled: deleting it now is not our call.
			return failed(fmt.Errorf("group %s was enabled again after this operation disabled it; not deleting it", gid)), false
		}
		err = e.d.Enrollments.DeleteGroup(ctx, gid, g.ETag)
		switch {
		case errors.Is(err, ErrPreconditionFailed):
			return stepResult{}, true
		case errors.Is(err, ErrNotFound):
			return gone("enrollment group", err), false
		case err != nil:
			return failed(fmt.Errorf("deleting group %s: %w", gid, err)), false
		}
		return stepResult{changed: true}, false
	})
}

// setDevice enables or disables a hub identity. read, when not nil, is the identity as this
// invocation read it while planning: the first decision and write use it, so that a disable
// costs two registry operations in all (that read and the write: a write needs the whole
// identity, or the device's keys would be replaced), and a 412 re-reads as always.
func (e *Engine) setDevice(ctx context.Context, hub, id string, enabled bool, reason string, read *Device) stepResult {
	verb := map[bool]string{true: "enabling", false: "disabling"}[enabled]
	return e.etagLoop(verb+" device "+id+" in "+hub, func() (stepResult, bool) {
		d := read
		read = nil // a retry after a 412 reads afresh
		var err error
		if d == nil {
			d, err = e.d.Devices.GetDevice(ctx, hub, id)
		}
		if errors.Is(err, ErrNotFound) {
			return gone("hub identity", err), false
		}
		if err != nil {
			return failed(fmt.Errorf("reading device %s in %s: %w", id, hub, err)), false
		}
		if d.Enabled == enabled {
			return stepResult{}, false
		}
		d.Enabled, d.StatusReason = enabled, reason
		_, err = e.d.Devices.PutDevice(ctx, d, d.ETag)
		if errors.Is(err, ErrPreconditionFailed) {
			return stepResult{}, true
		}
		if errors.Is(err, ErrNotFound) {
			return gone("hub identity", err), false
		}
		if err != nil {
			return failed(fmt.Errorf("%s device %s in %s: %w", verb, id, hub, err)), false
		}
		return stepResult{changed: true}, false
	})
}

// deleteDevice deletes a hub identity with one registry operation: an unconditional DELETE
// ("*", as the service SDKs send). Unlike a disable, the step has nothing to decide from the
// identity's state (it deletes whatever identity is there), so a read and an etag would only
// turn a concurrent change into a 412, a re-read and the same DELETE.
func (e *Engine) deleteDevice(ctx context.Context, hub, id string) stepResult {
	err := e.d.Devices.DeleteDevice(ctx, hub, id, "*")
	switch {
	case errors.Is(err, ErrNotFound):
		return gone("hub identity", err)
	case err != nil:
		return failed(fmt.Errorf("deleting device %s in %s: %w", id, hub, err))
	}
	return stepResult{changed: true}
}

// leafPEM returns the first certificate of text as PEM: only the leaf goes into an enrollment.
func leafPEM(text string) (string, error) {
	certs, err := ParseCertificates(text)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})), nil
}

// disableDerived disables every symmetric-key individual enrollment whose keys derive from
// group gid's keys, since whoever holds the group's key can derive them, and records each such
// device as compromised in its device row, so that no later `recovered` enables its enrollment
// again (a compromise is never undone). It lists the individual enrollments (a DPS query call
// a page) and reads the keys of each symmetric-key one (one call each): DPS shows an
// enrollment's keys no other way, and a disabled one matters as much as an enabled one, since
// this system may have disabled it for `lost`. Every part is idempotent, so a resume runs it
// again.
func (e *Engine) disableDerived(ctx context.Context, op *Operation, gid string) stepResult {
	gk, err := e.d.Enrollments.GroupKeys(ctx, gid)
	if errors.Is(err, ErrNotFound) {
		return gone("enrollment group", err)
	}
	if err != nil {
		return failed(fmt.Errorf("reading the keys of group %s: %w", gid, err))
	}
	checked, changed := 0, false
	var found []string
	for en, err := range e.d.Enrollments.IndividualEnrollments(ctx) {
		if err != nil {
			return failed(fmt.Errorf("listing individual enrollments: %w", err))
		}
		if en.Attestation != AttestationSymmetricKey {
			continue
		}
		checked++
		k, err := e.d.Enrollments.EnrollmentKeys(ctx, en.RegistrationID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return failed(fmt.Errorf("reading the keys of enrollment %s: %w", en.RegistrationID, err))
		}
		dk, err := DerivedKeys(gk, en.RegistrationID)
		if err != nil || !sharesKey(k, dk) {
			continue
		}
		if en.Enabled {
			res := e.setEnrollment(ctx, en.RegistrationID, false)
			if res.err != nil {
				return res
			}
			changed = changed || res.changed
		}
		if err := e.markCompromised(ctx, op, en.RegistrationID); err != nil {
			return failed(err)
		}
		found = append(found, en.RegistrationID)
	}
	note := fmt.Sprintf("%d symmetric-key individual enrollments checked; none is keyed from group %s", checked, gid)
	if len(found) > 0 {
		shown := found[:min(len(found), 20)]
		note = fmt.Sprintf("%d symmetric-key individual enrollments checked; %d keyed from group %s, disabled and recorded compromised: %s", checked, len(found), gid, strings.Join(shown, ", "))
		if len(found) > len(shown) {
			note += ", …"
		}
	}
	return stepResult{changed: changed, note: note}
}

// markCompromised records in rid's device row that group-wide operation op compromised it:
// its enrollment's keys derive from a compromised group's (precedence then refuses
// `recovered`, and the enrollment stands in front of the group for good). A row that says
// sold or retired keeps saying so.
func (e *Engine) markCompromised(ctx context.Context, op *Operation, rid string) error {
	key := deviceKey(rid)
	for attempt := 0; attempt <= e.c.ETagRetries; attempt++ {
		ds, err := e.d.Journal.GetDevice(ctx, key)
		if errors.Is(err, ErrNotFound) {
			ds, err = &DeviceState{RegistrationID: key}, nil
		}
		if err != nil {
			return asTransient(fmt.Errorf("reading device row %s: %w", rid, err))
		}
		if ds.Intent.rank() > IntentCompromised.rank() || ds.OperationID == op.ID {
			return nil
		}
		ds.Intent, ds.OperationID = IntentCompromised, op.ID
		ds.EventTime = op.Request.EventTime
		if ds.EventTime.IsZero() {
			ds.EventTime = op.Created
		}
		ds.GroupMember, ds.EnrollmentAction, ds.MoveTarget = true, "disabled", ""
		ds.Updated = e.d.Clock.Now()
		err = e.d.Journal.PutDevice(ctx, ds)
		if errors.Is(err, ErrPreconditionFailed) || errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return asTransient(fmt.Errorf("writing device row %s: %w", rid, err))
		}
		return nil
	}
	return Transient(fmt.Errorf("device row %s kept changing: %w", rid, ErrBusy))
}

package deprovision

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Burst coalesces the DPS work of single-device revocations that arrive together: security
// tooling that detects a compromise across a fleet sends one event per device, thousands a
// minute. Each event stays its own operation (journaled, planned, announced), but while a
// burst lasts their registration lookups and blocking enrollments share DPS calls: a group's
// registration states read a thousand a call instead of one per device, blocking
// enrollments created ten per bulk call, and no individual enrollment read first (the bulk
// create's per-item answer tells an individual from a group member). docs/scale.md derives
// what that saves. Package deprovision/coalesce implements it.
type Burst interface {
	// Join counts a revocation request in flight until leave is called, and says how the
	// engine takes it: BurstSingle, the single-device path unchanged (a lone event);
	// BurstCoalesce, part of a burst, resolved with Lookup, its blocking enrollment created
	// with Block, its calls run with the returned context; BurstDefer, part of a burst that
	// is more than the instance can work on at once: journaled now, handed to Defer, carried
	// out later by the burst queue's worker. An error (wrapping ErrBusy) says to deliver the
	// request again later.
	Join(ctx context.Context, req Request) (_ context.Context, mode BurstMode, leave func(), _ error)
	// Defer hands req, journaled, to the burst queue: its worker submits it again with a
	// context marked Deferred, and Join then waits for its turn instead of deferring it again.
	Defer(ctx context.Context, req Request) error
	// Lookup returns a device's registration state (ErrNotFound when it has none), reading
	// its group's states (groupID, when known) when that costs fewer DPS operations than a
	// read per device.
	Lookup(ctx context.Context, groupID, registrationID string) (*Registration, error)
	// Block creates e (create-only) as an item of a bulk call: ErrConflict when an individual
	// enrollment with its registration id exists.
	Block(ctx context.Context, e *Enrollment) error
}

// BurstMode is how Join has the engine take a revocation request.
type BurstMode int

// Burst modes.
const (
	BurstSingle BurstMode = iota
	BurstCoalesce
	BurstDefer
)

type deferredKey struct{}

// Deferred marks the context of a request the burst queue delivers: it was deferred once, and
// is coalesced now however busy the instance is.
func Deferred(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferredKey{}, true)
}

// IsDeferred reports whether ctx is marked Deferred.
func IsDeferred(ctx context.Context) bool {
	d, _ := ctx.Value(deferredKey{}).(bool)
	return d
}

// BulkEnrollments creates individual enrollments in bulk: DPS takes up to 10 a call and
// answers each item.
type BulkEnrollments interface {
	// CreateEnrollments creates es (create-only). errs has one entry per item: nil when
	// created, ErrConflict (wrapped) when the registration id is taken, transient when worth
	// trying again. err is for the whole call.
	CreateEnrollments(ctx context.Context, es []*Enrollment) (errs []error, err error)
}

// ParamProbe marks a blocking enrollment planned without reading the individual enrollment
// (a coalesced revocation): its create is the check, and a conflict that is not a block
// means the device is an individual, which is then planned again from a full read.
const ParamProbe = "probe"

// errIndividual is the probe's finding: an individual enrollment stands where a group
// member's block was to be created.
var errIndividual = errors.New("the device has an individual enrollment: it is not a group member")

type burstKey struct{}

// burstMode is how a request is resolved: coalesced in a burst, or with a full read after a
// coalesced plan met an individual enrollment.
type burstMode int

const (
	burstCoalesce burstMode = iota + 1
	burstReplan
)

func burstModeOf(ctx context.Context) burstMode {
	m, _ := ctx.Value(burstKey{}).(burstMode)
	return m
}

// coalescible reports whether req may be coalesced: a single-device revocation that is
// carried out (not a dry run) and keeps what it blocks (sold and retired weigh deletions on
// full reads).
func coalescible(req Request) bool {
	switch req.Intent {
	case IntentCompromised, IntentLost, IntentStolen:
		return !req.DryRun
	}
	return false
}

// joinBurst counts req in the engine's Burst, if any, and returns the context its work runs
// with and how to take it; a transient ErrBusy when the burst cannot take it up now.
func joinBurst(ctx context.Context, b Burst, req Request) (context.Context, BurstMode, func(), error) {
	if b == nil || !coalescible(req) {
		return ctx, BurstSingle, func() {}, nil
	}
	ctx, mode, leave, err := b.Join(ctx, req)
	if err != nil {
		return ctx, mode, leave, Transient(fmt.Errorf("event %s: %w", req.EventID, err))
	}
	if mode == BurstCoalesce {
		ctx = context.WithValue(ctx, burstKey{}, burstCoalesce)
	}
	return ctx, mode, leave, nil
}

// resolveCoalesced classifies a coalesced revocation from its registration state alone: a
// device DPS registered through a group, or named with its group, is taken for a member
// without reading its individual enrollment (the blocking enrollment's create checks it).
// ok is false when the lookup finds nothing: the caller resolves in full (an individual, or
// an unknown device, whose refusal says why).
func resolveCoalesced(ctx context.Context, b Burst, rg Registrations, dv Devices, req Request) (_ *Resolved, ok bool, _ error) {
	r := &Resolved{Kind: KindUnknown, RegistrationID: req.RegistrationID}
	if err := readLeaf(r, req); err != nil {
		return nil, false, err
	}
	if r.RegistrationID == "" {
		return nil, false, nil
	}
	reg, err := b.Lookup(ctx, req.EnrollmentGroupID, r.RegistrationID)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading registration state %s: %w", r.RegistrationID, err)
	}
	r.Registration, r.Kind, r.EnrollmentUnread = reg, KindGroupMember, true
	if err := locate(ctx, dv, r, req); err != nil {
		return nil, false, err
	}
	if r.Device == nil && r.Hub != "" && req.EnrollmentGroupID != "" {
		// Not in the hub the group's listing gave: the device may have provisioned again
		// since. Its own registration state says where it is now.
		reg, err := rg.GetRegistration(ctx, r.RegistrationID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, false, fmt.Errorf("reading registration state %s: %w", r.RegistrationID, err)
		}
		if reg == nil || !strings.EqualFold(reg.AssignedHub, r.Hub) {
			return nil, false, nil // resolved in full
		}
	}
	r.Notes = append(r.Notes, "coalesced with a burst of revocations: the individual enrollment was not read; creating the blocking enrollment checks that there is none")
	return r, true, nil
}

// isBlock reports whether en, found where a blocking enrollment was to be created, is one: a
// disabled enrollment of the block's attestation (for X.509, of the request's leaf). It was
// made by an earlier delivery of this operation, or by hand after Microsoft's recipe for
// blocking one group member; either way the member is blocked.
func isBlock(en *Enrollment, want *Enrollment, leaf *CertInfo) bool {
	if en == nil || en.Enabled || en.Attestation != want.Attestation {
		return false
	}
	if want.Attestation != AttestationX509 {
		return true
	}
	if leaf == nil {
		return false
	}
	for _, c := range en.ClientCerts {
		if t := thumb(c.SHA1Thumbprint); t != "" && t == thumb(leaf.SHA1Thumbprint) {
			return true
		}
		if t := thumb(c.SHA256Thumbprint); t != "" && t == thumb(leaf.SHA256Thumbprint) {
			return true
		}
	}
	return false
}

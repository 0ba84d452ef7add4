package deprovision

import (
	"context"
	"errors"
	"fmt"
)

// Evidence is what DPS and the hub say about the individual enrollment of a device that
// sold or retired would delete: whether an enabled enrollment group could admit the device
// once the enrollment is gone (a block made by hand following Microsoft's recipe, or a moved
// group member), and whether the device provisioned through the enrollment itself. It is
// read by [Resolve] (keys are compared there and never leave it) and decided by the planner.
type Evidence struct {
	// Group is Covered when DPS or the hub shows that an enabled group admitted, or would
	// admit, the device; the reason says what shows it.
	Group Cover
	// Own is true when the hub identity is the one this enrollment gave the device (a
	// symmetric-key identity with the enrollment's own keys).
	Own bool
}

// enabledGroups counts r's enabled groups, of any attestation and of X.509.
func enabledGroups(r *Resolved) (all, x509 int) {
	for _, g := range r.Groups {
		if g != nil && g.Enabled {
			all++
			if g.Attestation == AttestationX509 {
				x509++
			}
		}
	}
	return all, x509
}

// Membership is the check that a symmetric-key group named by a `moved` event is the device's
// own group before the device is locked to an individual enrollment keyed from that group.
type Membership string

// Outcomes of the membership check.
const (
	// MemberConfirmed: a key derived from the group's primary or secondary key is the hub
	// identity's.
	MemberConfirmed Membership = "confirmed"
	// MemberMismatch: the hub identity's keys are not derived from the group's keys.
	MemberMismatch Membership = "mismatch"
	// MemberUnknown: there is no SAS hub identity to compare with.
	MemberUnknown Membership = "unknown"
)

// DerivedKeys derives a member's two keys (from the group's primary and secondary key), as
// DPS does for a device of a symmetric-key group.
func DerivedKeys(group SymmetricKeys, registrationID string) (SymmetricKeys, error) {
	p, err := DeriveDeviceKey(group.Primary, registrationID)
	if err != nil {
		return SymmetricKeys{}, fmt.Errorf("primary key: %w", err)
	}
	s, err := DeriveDeviceKey(group.Secondary, registrationID)
	if err != nil {
		return SymmetricKeys{}, fmt.Errorf("secondary key: %w", err)
	}
	return SymmetricKeys{Primary: p, Secondary: s}, nil
}

// sharesKey reports whether a and b have a key in common.
func sharesKey(a, b SymmetricKeys) bool { return b.Has(a.Primary) || b.Has(a.Secondary) }

// gatherEvidence reads the evidence about r's individual enrollment. r.Groups must be loaded.
// It reads the enrollment's keys (one DPS call) and every enabled symmetric-key group's keys
// (one call each) only when a key comparison can still tell something.
func gatherEvidence(ctx context.Context, en Enrollments, r *Resolved) error {
	ev := &Evidence{}
	r.Evidence = ev
	var skGroups []*Group
	for _, g := range r.Groups {
		if g != nil && g.Enabled && g.Attestation == AttestationSymmetricKey {
			skGroups = append(skGroups, g)
		}
	}
	_, enabledX509 := enabledGroups(r)
	d := r.Device
	// DPS writes certificateAuthority only for a device it provisioned through an X.509
	// enrollment group (an individual X.509 enrollment gives selfSigned, symmetric key and TPM
	// give sas): such an identity is a group member's, whatever enrollment stands in front of it.
	if d != nil && d.AuthType == "certificateAuthority" && enabledX509 > 0 {
		ev.Group = Cover{Covered: true, Reason: fmt.Sprintf("the hub identity of %s authenticates as certificateAuthority, which DPS gives only to devices it provisioned through an X.509 enrollment group, and %d X.509 groups are enabled", r.DeviceID, enabledX509)}
		return nil
	}
	var own SymmetricKeys
	if r.Enrollment.Attestation == AttestationSymmetricKey {
		k, err := en.EnrollmentKeys(ctx, r.RegistrationID)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return fmt.Errorf("reading the keys of enrollment %s: %w", r.RegistrationID, err)
		default:
			own = k
		}
	}
	var hubKeys SymmetricKeys
	if d != nil && d.AuthType == "sas" {
		hubKeys = d.Keys
	}
	ev.Own = own.Primary != "" && sharesKey(own, hubKeys)
	if own.Primary == "" && hubKeys.Primary == "" {
		return nil
	}
	for _, g := range skGroups {
		gk, err := en.GroupKeys(ctx, g.ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading the keys of enrollment group %s: %w", g.ID, err)
		}
		dk, err := DerivedKeys(gk, r.RegistrationID)
		if err != nil {
			continue // a group key that is not base64 derives nothing DPS would accept
		}
		switch {
		case sharesKey(own, dk):
			ev.Group = Cover{Covered: true, Group: g.ID, Reason: fmt.Sprintf("the keys of enrollment %s are derived from the keys of enabled symmetric-key group %s: the device holds a key that group admits", r.RegistrationID, g.ID)}
			return nil
		case sharesKey(hubKeys, dk):
			ev.Group = Cover{Covered: true, Group: g.ID, Reason: fmt.Sprintf("the hub identity of %s has a key derived from the keys of enabled symmetric-key group %s: the device provisioned through that group", r.DeviceID, g.ID)}
			return nil
		}
	}
	return nil
}

// checkMembership compares the hub identity's keys with the keys derived from the named
// symmetric-key group (item: a move locks the device to an individual enrollment with those
// keys, so the group must really be the device's).
func checkMembership(ctx context.Context, en Enrollments, r *Resolved) error {
	d := r.Device
	if d == nil || d.AuthType != "sas" || d.Keys.Primary == "" && d.Keys.Secondary == "" {
		r.Membership = MemberUnknown
		return nil
	}
	gk, err := en.GroupKeys(ctx, r.Group.ID)
	if err != nil {
		return fmt.Errorf("reading the keys of enrollment group %s: %w", r.Group.ID, err)
	}
	dk, err := DerivedKeys(gk, r.RegistrationID)
	if err != nil {
		return fmt.Errorf("enrollment group %s: %w", r.Group.ID, err)
	}
	r.Membership = MemberMismatch
	if sharesKey(d.Keys, dk) {
		r.Membership = MemberConfirmed
	}
	return nil
}

// removeCover decides whether an individual enrollment that sold or retired would delete
// must stay, disabled: a group could admit the device without it. It joins the X.509 chain
// check (x509Cover), the evidence of DPS and the hub, and, for a disabled enrollment that
// this system did not disable, the documented shape of a block made by hand.
func removeCover(p *Plan, r *Resolved, req Request, prior *DeviceState) Cover {
	var chain Cover
	if r.Attestation == AttestationX509 {
		if chain = x509Cover(p, r, req); chain.Covered {
			return chain
		}
	}
	ev := r.Evidence
	if ev == nil {
		ev = &Evidence{} // nothing read: nothing shown either way
	}
	if ev.Group.Covered {
		return ev.Group
	}
	enabled, _ := enabledGroups(r)
	disabledByUs := prior != nil && prior.EnrollmentAction == "disabled" && !prior.FoundDisabled
	if r.Attestation != AttestationX509 && !r.Enrollment.Enabled && !ev.Own && !disabledByUs && enabled > 0 {
		// "Create a disabled individual enrollment ... never delete it" is Microsoft's recipe
		// for blocking one device of a group; a symmetric-key group admits any registration id
		// whose key derives from its own, and nothing here shows this device is not such a member.
		return Cover{Covered: true, Reason: fmt.Sprintf("the enrollment is disabled and this system did not disable it, which is how a device of an enrollment group is blocked by hand; %d enrollment groups are enabled and nothing shows that none of them admits %s", enabled, r.RegistrationID)}
	}
	switch {
	case r.Attestation == AttestationX509:
		return chain
	case enabled == 0:
		return Cover{Reason: "no enrollment group is enabled"}
	case ev.Own:
		return Cover{Reason: "the hub identity carries the enrollment's own keys, and no key of the enrollment or the identity derives from an enabled group's key"}
	}
	return Cover{Reason: "no key of the enrollment or the hub identity derives from an enabled group's key, and the hub identity is no X.509 group member's"}
}

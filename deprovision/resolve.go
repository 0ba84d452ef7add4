package deprovision

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Kind is how a device is enrolled in DPS.
type Kind string

// Kinds of devices (and groups) the planner distinguishes.
const (
	KindIndividual  Kind = "individual"
	KindGroupMember Kind = "group-member"
	KindGroup       Kind = "group"
	KindUnknown     Kind = "unknown"
)

// Resolved is what DPS and the hub say about the subject of a request: the input of [Plan].
type Resolved struct {
	Kind           Kind
	RegistrationID string
	// Attestation is the individual enrollment's, or for a group member the group's (from the
	// group, the hub identity's authentication type, or the certificate in the request);
	// empty when unknown.
	Attestation AttestationType
	// Enrollment is the device's individual enrollment, nil when there is none.
	Enrollment *Enrollment
	// Registration is the device's registration state, nil when it never registered.
	Registration *Registration
	// Group is the group of a group-wide request, or the group named in a device request.
	Group *Group
	// Groups are all enrollment groups, loaded when an X.509 safety check needs them.
	Groups []*Group
	// Hub and DeviceID locate the hub identity ("" when the device was never assigned).
	Hub, DeviceID string
	// Device is the hub identity, nil when missing or the hub is unknown.
	Device *Device
	// Leaf is the leaf certificate of the request, parsed; nil when absent or unreadable.
	Leaf *CertInfo
	// Evidence is what DPS and the hub say about whether a group could admit the device of
	// an individual enrollment that sold or retired would delete (evidence.go); nil otherwise.
	Evidence *Evidence
	// Membership is the check of the symmetric-key group named by a move (evidence.go); ""
	// when no check was made.
	Membership Membership
	// Notes record what resolution noticed (mismatches, fallbacks).
	Notes []string
	// EnrollmentUnread says the individual enrollment was not read (a revocation coalesced
	// in a burst, see [Burst]): the device is taken for a group member, and creating its
	// blocking enrollment is the check (it fails if an individual enrollment exists).
	EnrollmentUnread bool
}

// Resolve reads DPS and the hub to classify the subject of req. Errors other than "not found"
// are returned (wrapped; transient ones stay transient); an unknown device is not an error
// (Kind is KindUnknown, and [Plan] refuses it with a reason).
func Resolve(ctx context.Context, en Enrollments, rg Registrations, dv Devices, req Request) (*Resolved, error) {
	r := &Resolved{Kind: KindUnknown, RegistrationID: req.RegistrationID}
	if err := readLeaf(r, req); err != nil {
		return nil, err
	}
	if req.Intent.GroupWide() {
		return resolveGroup(ctx, en, r, req)
	}
	if r.RegistrationID == "" {
		return nil, refuse("no registration id: the request has none and the certificate has no CN")
	}

	// The individual enrollment and the registration state are independent reads.
	var wg sync.WaitGroup
	var enErr, rgErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.Enrollment, enErr = en.GetEnrollment(ctx, r.RegistrationID)
	}()
	go func() {
		defer wg.Done()
		r.Registration, rgErr = rg.GetRegistration(ctx, r.RegistrationID)
	}()
	wg.Wait()
	if enErr != nil {
		r.Enrollment = nil
		if !errors.Is(enErr, ErrNotFound) {
			return nil, fmt.Errorf("reading enrollment %s: %w", r.RegistrationID, enErr)
		}
	}
	if rgErr != nil {
		r.Registration = nil
		if !errors.Is(rgErr, ErrNotFound) {
			return nil, fmt.Errorf("reading registration state %s: %w", r.RegistrationID, rgErr)
		}
	}
	if req.EnrollmentGroupID != "" {
		g, err := en.GetGroup(ctx, req.EnrollmentGroupID)
		switch {
		case err == nil:
			r.Group = g
		case errors.Is(err, ErrNotFound):
			r.Notes = append(r.Notes, fmt.Sprintf("enrollment group %s named in the request does not exist", req.EnrollmentGroupID))
		default:
			return nil, fmt.Errorf("reading enrollment group %s: %w", req.EnrollmentGroupID, err)
		}
	}

	switch {
	case r.Enrollment != nil:
		r.Kind = KindIndividual
		r.Attestation = r.Enrollment.Attestation
	case r.Registration != nil || r.Group != nil:
		r.Kind = KindGroupMember
	}

	if err := locate(ctx, dv, r, req); err != nil {
		return nil, err
	}
	// X.509 safety checks need every group's signing certificates, and the evidence about an
	// individual enrollment that sold or retired would delete needs every group.
	individualRemove := r.Kind == KindIndividual && req.Intent.Final()
	if individualRemove || r.Attestation == AttestationX509 && (req.Intent.Final() || req.Intent == IntentMoved) {
		if err := loadGroups(ctx, en, r); err != nil {
			return nil, err
		}
	}
	if individualRemove {
		if err := gatherEvidence(ctx, en, r); err != nil {
			return nil, err
		}
	}
	if req.Intent == IntentMoved && r.Kind == KindGroupMember && r.Group != nil && r.Group.Attestation == AttestationSymmetricKey {
		if err := checkMembership(ctx, en, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// readLeaf parses the request's certificate into r.Leaf, and takes the registration id from
// its CN when the request names none.
func readLeaf(r *Resolved, req Request) error {
	if req.CertificatePEM == "" {
		return nil
	}
	certs, err := ParseCertificates(req.CertificatePEM)
	if err != nil {
		return &Refusal{Reason: "the certificate in the request is unreadable: " + err.Error()}
	}
	leaf := InfoOf(certs[0])
	r.Leaf = &leaf
	if r.RegistrationID == "" {
		r.RegistrationID = certs[0].Subject.CommonName
	}
	return nil
}

// locate finds the hub identity of a classified device (DPS's registration state is
// authoritative; the request is a hint), reads it, and takes a group member's attestation
// from what is known.
func locate(ctx context.Context, dv Devices, r *Resolved, req Request) error {
	r.DeviceID = req.DeviceID
	if r.Registration != nil {
		r.Hub = r.Registration.AssignedHub
		if r.Registration.DeviceID != "" {
			if req.DeviceID != "" && req.DeviceID != r.Registration.DeviceID {
				r.Notes = append(r.Notes, fmt.Sprintf("the request names device %s but DPS assigned %s; using DPS's", req.DeviceID, r.Registration.DeviceID))
			}
			r.DeviceID = r.Registration.DeviceID
		}
		if req.Hub != "" && r.Hub != "" && !strings.EqualFold(req.Hub, r.Hub) {
			r.Notes = append(r.Notes, fmt.Sprintf("the request names hub %s but DPS assigned %s; using DPS's", req.Hub, r.Hub))
		}
	}
	if r.Hub == "" && req.Hub != "" && r.Kind != KindUnknown {
		r.Hub = req.Hub
	}
	if r.DeviceID == "" && r.Enrollment != nil {
		r.DeviceID = r.Enrollment.DeviceID
	}
	if r.DeviceID == "" {
		r.DeviceID = r.RegistrationID
	}
	if r.Hub != "" && dv != nil {
		d, err := dv.GetDevice(ctx, r.Hub, r.DeviceID)
		switch {
		case err == nil:
			r.Device = d
		case errors.Is(err, ErrNotFound):
		default:
			return fmt.Errorf("reading device %s in hub %s: %w", r.DeviceID, r.Hub, err)
		}
	}

	if r.Kind == KindGroupMember {
		switch {
		case r.Group != nil:
			r.Attestation = r.Group.Attestation
		case r.Device != nil && (r.Device.AuthType == "certificateAuthority" || r.Device.AuthType == "selfSigned"):
			r.Attestation = AttestationX509
		case r.Device != nil && r.Device.AuthType == "sas":
			r.Attestation = AttestationSymmetricKey
		case r.Leaf != nil:
			r.Attestation = AttestationX509
		}
	}
	return nil
}

func resolveGroup(ctx context.Context, en Enrollments, r *Resolved, req Request) (*Resolved, error) {
	g, err := en.GetGroup(ctx, req.EnrollmentGroupID)
	if errors.Is(err, ErrNotFound) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading enrollment group %s: %w", req.EnrollmentGroupID, err)
	}
	r.Kind = KindGroup
	r.Group = g
	r.Attestation = g.Attestation
	if req.Intent == IntentGroupRetired && g.Attestation == AttestationX509 {
		if err := loadGroups(ctx, en, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func loadGroups(ctx context.Context, en Enrollments, r *Resolved) error {
	for g, err := range en.Groups(ctx) {
		if err != nil {
			return fmt.Errorf("listing enrollment groups: %w", err)
		}
		r.Groups = append(r.Groups, g)
	}
	return nil
}

package adapter

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"dpsdeprov/azure/dps"
	"dpsdeprov/azure/internal/azerr"
	"dpsdeprov/deprovision"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// DPS adapts a *dps.Client to deprovision.Enrollments and deprovision.Registrations.
type DPS struct {
	c *dps.Client
}

var (
	_ deprovision.Enrollments     = (*DPS)(nil)
	_ deprovision.Registrations   = (*DPS)(nil)
	_ deprovision.BulkEnrollments = (*DPS)(nil)
)

// NewDPS returns the adapter over c.
func NewDPS(c *dps.Client) *DPS { return &DPS{c: c} }

// updateAttempts bounds the read-modify-write loop of an unconditional ("*") update that
// keeps losing races to other writers.
const updateAttempts = 3

// GetEnrollment reads an individual enrollment.
func (a *DPS) GetEnrollment(ctx context.Context, registrationID string) (*deprovision.Enrollment, error) {
	r, err := a.c.GetEnrollment(ctx, registrationID, nil)
	if err != nil {
		return nil, mapError(err, "reading enrollment %s", registrationID)
	}
	return enrollmentFromDPS(&r.IndividualEnrollment), nil
}

// PutEnrollment creates (etag ""), replaces unconditionally ("*") or replaces one version
// (an etag) of an individual enrollment.
//
// A create builds the enrollment from e: X.509 from e.CertificatePEM, or a symmetric key from
// e.PrimaryKey/SecondaryKey (random keys when blank, as blocking enrollments need no usable
// keys). An update reads the stored enrollment and changes only what the engine owns
// (provisioning status, device id, hubs and allocation, and the attestation when e carries
// new material), so that fields the engine does not model (TPM keys, the stored
// certificate, symmetric keys, the initial twin) survive. The stored symmetric keys are read
// through the attestation-mechanism call, because GET blanks them and a blank key might be
// taken as a request for new keys.
func (a *DPS) PutEnrollment(ctx context.Context, e *deprovision.Enrollment, etag string) (*deprovision.Enrollment, error) {
	if e == nil || e.RegistrationID == "" {
		return nil, errors.New("writing enrollment: no registration id")
	}
	if etag == "" {
		body, err := newEnrollment(e)
		if err != nil {
			return nil, fmt.Errorf("writing enrollment %s: %w", e.RegistrationID, err)
		}
		r, err := a.c.CreateOrUpdateEnrollment(ctx, *body, nil)
		if err != nil {
			return nil, mapError(err, "creating enrollment %s", e.RegistrationID)
		}
		return enrollmentFromDPS(&r.IndividualEnrollment), nil
	}
	var lastErr error
	for range updateAttempts {
		cur, err := a.c.GetEnrollment(ctx, e.RegistrationID, nil)
		if err != nil {
			if etag == string(azcore.ETagAny) && dps.IsNotFound(err) {
				// Unconditional replace of a missing enrollment is a create.
				body, berr := newEnrollment(e)
				if berr != nil {
					return nil, fmt.Errorf("writing enrollment %s: %w", e.RegistrationID, berr)
				}
				star := azcore.ETagAny
				r, err := a.c.CreateOrUpdateEnrollment(ctx, *body, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: &star})
				if err != nil {
					return nil, mapError(err, "creating enrollment %s", e.RegistrationID)
				}
				return enrollmentFromDPS(&r.IndividualEnrollment), nil
			}
			return nil, mapError(err, "reading enrollment %s to update it", e.RegistrationID)
		}
		body := cur.IndividualEnrollment
		if err := a.applyEnrollment(ctx, &body, e); err != nil {
			return nil, err
		}
		// The caller's etag guards the write; for "*", the etag just read does, so that a
		// concurrent change between the read and the write is not overwritten with stale data.
		match := azcore.ETag(etag)
		if etag == string(azcore.ETagAny) {
			match = azcore.ETag(cur.ETag)
		}
		r, err := a.c.CreateOrUpdateEnrollment(ctx, body, &dps.CreateOrUpdateEnrollmentOptions{IfMatch: &match})
		if err == nil {
			return enrollmentFromDPS(&r.IndividualEnrollment), nil
		}
		lastErr = mapError(err, "updating enrollment %s", e.RegistrationID)
		if etag != string(azcore.ETagAny) || !dps.IsPreconditionFailed(err) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// applyEnrollment changes the stored enrollment body to what e asks for.
func (a *DPS) applyEnrollment(ctx context.Context, body *dps.IndividualEnrollment, e *deprovision.Enrollment) error {
	body.ProvisioningStatus = status(e.Enabled)
	if e.DeviceID != "" {
		body.DeviceID = e.DeviceID
	}
	// Hubs and allocation change only when the engine asks for different ones (a move), so
	// that disabling an enrollment leaves its allocation and re-provisioning policy alone.
	stored := body.IoTHubs
	if len(stored) == 0 && body.IoTHubHostName != "" {
		stored = []string{body.IoTHubHostName}
	}
	if (len(e.IoTHubs) > 0 && !slices.Equal(e.IoTHubs, stored)) || (e.AllocationPolicy != "" && e.AllocationPolicy != string(body.AllocationPolicy)) {
		pointAt(&body.IoTHubs, &body.AllocationPolicy, &body.ReprovisionPolicy, &body.IoTHubHostName, e.IoTHubs, e.AllocationPolicy)
	}
	switch {
	case e.CertificatePEM != "" || e.PrimaryKey != "":
		att, err := attestationFor(e)
		if err != nil {
			return fmt.Errorf("writing enrollment %s: %w", e.RegistrationID, err)
		}
		body.Attestation = att
	case body.Attestation != nil && body.Attestation.Type == dps.AttestationTypeSymmetricKey:
		am, err := a.c.GetEnrollmentAttestationMechanism(ctx, e.RegistrationID, nil)
		if err != nil {
			return mapError(err, "reading the keys of enrollment %s to keep them", e.RegistrationID)
		}
		body.Attestation = &am.AttestationMechanism
	}
	return nil
}

// DeleteEnrollment deletes an individual enrollment (etag "" = unconditional).
func (a *DPS) DeleteEnrollment(ctx context.Context, registrationID, etag string) error {
	_, err := a.c.DeleteEnrollment(ctx, registrationID, &dps.DeleteEnrollmentOptions{IfMatch: ifMatch(etag)})
	return mapError(err, "deleting enrollment %s", registrationID)
}

// GetGroup reads an enrollment group.
func (a *DPS) GetGroup(ctx context.Context, groupID string) (*deprovision.Group, error) {
	r, err := a.c.GetEnrollmentGroup(ctx, groupID, nil)
	if err != nil {
		return nil, mapError(err, "reading enrollment group %s", groupID)
	}
	return groupFromDPS(&r.EnrollmentGroup), nil
}

// PutGroup creates (etag "") or updates an enrollment group. An update reads the stored
// group and changes only its provisioning status, keeping certificates and keys. A create
// can only build a symmetric-key group (random keys) or an X.509 group that references
// DPS-registered CAs: the engine's Group carries no certificate to upload.
func (a *DPS) PutGroup(ctx context.Context, g *deprovision.Group, etag string) (*deprovision.Group, error) {
	if g == nil || g.ID == "" {
		return nil, errors.New("writing enrollment group: no group id")
	}
	if etag == "" {
		att, err := groupAttestation(g)
		if err != nil {
			return nil, fmt.Errorf("creating enrollment group %s: %w", g.ID, err)
		}
		r, err := a.c.CreateOrUpdateEnrollmentGroup(ctx, dps.EnrollmentGroup{EnrollmentGroupID: g.ID, Attestation: att, ProvisioningStatus: status(g.Enabled)}, nil)
		if err != nil {
			return nil, mapError(err, "creating enrollment group %s", g.ID)
		}
		return groupFromDPS(&r.EnrollmentGroup), nil
	}
	var lastErr error
	for range updateAttempts {
		cur, err := a.c.GetEnrollmentGroup(ctx, g.ID, nil)
		if err != nil {
			return nil, mapError(err, "reading enrollment group %s to update it", g.ID)
		}
		body := cur.EnrollmentGroup
		body.ProvisioningStatus = status(g.Enabled)
		if body.Attestation != nil && body.Attestation.Type == dps.AttestationTypeSymmetricKey {
			am, err := a.c.GetEnrollmentGroupAttestationMechanism(ctx, g.ID, nil)
			if err != nil {
				return nil, mapError(err, "reading the keys of enrollment group %s to keep them", g.ID)
			}
			body.Attestation = &am.AttestationMechanism
		}
		match := azcore.ETag(etag)
		if etag == string(azcore.ETagAny) {
			match = azcore.ETag(cur.ETag)
		}
		r, err := a.c.CreateOrUpdateEnrollmentGroup(ctx, body, &dps.CreateOrUpdateEnrollmentGroupOptions{IfMatch: &match})
		if err == nil {
			return groupFromDPS(&r.EnrollmentGroup), nil
		}
		lastErr = mapError(err, "updating enrollment group %s", g.ID)
		if etag != string(azcore.ETagAny) || !dps.IsPreconditionFailed(err) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// DeleteGroup deletes an enrollment group (etag "" = unconditional).
func (a *DPS) DeleteGroup(ctx context.Context, groupID, etag string) error {
	_, err := a.c.DeleteEnrollmentGroup(ctx, groupID, &dps.DeleteEnrollmentGroupOptions{IfMatch: ifMatch(etag)})
	return mapError(err, "deleting enrollment group %s", groupID)
}

// Groups lists every enrollment group, page by page.
func (a *DPS) Groups(ctx context.Context) iter.Seq2[*deprovision.Group, error] {
	return func(yield func(*deprovision.Group, error) bool) {
		p := a.c.NewQueryEnrollmentGroupsPager("SELECT * FROM enrollmentGroups", nil)
		for p.More() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(nil, mapError(err, "listing enrollment groups"))
				return
			}
			for i := range page.EnrollmentGroups {
				if !yield(groupFromDPS(&page.EnrollmentGroups[i]), nil) {
					return
				}
			}
		}
	}
}

// GroupKeys reads a symmetric-key group's two keys through the attestation-mechanism call.
// The keys are secrets: the caller must never log or journal them.
func (a *DPS) GroupKeys(ctx context.Context, groupID string) (deprovision.SymmetricKeys, error) {
	r, err := a.c.GetEnrollmentGroupAttestationMechanism(ctx, groupID, nil)
	if err != nil {
		return deprovision.SymmetricKeys{}, mapError(err, "reading the keys of enrollment group %s", groupID)
	}
	if r.Type != dps.AttestationTypeSymmetricKey || r.SymmetricKey == nil || r.SymmetricKey.PrimaryKey == "" {
		return deprovision.SymmetricKeys{}, fmt.Errorf("reading the keys of enrollment group %s: its attestation is %q, not a symmetric key", groupID, r.Type)
	}
	return deprovision.SymmetricKeys{Primary: r.SymmetricKey.PrimaryKey, Secondary: r.SymmetricKey.SecondaryKey}, nil
}

// EnrollmentKeys reads an individual enrollment's symmetric keys through the
// attestation-mechanism call (GET never returns them); none for another attestation.
func (a *DPS) EnrollmentKeys(ctx context.Context, registrationID string) (deprovision.SymmetricKeys, error) {
	r, err := a.c.GetEnrollmentAttestationMechanism(ctx, registrationID, nil)
	if err != nil {
		return deprovision.SymmetricKeys{}, mapError(err, "reading the keys of enrollment %s", registrationID)
	}
	if r.Type != dps.AttestationTypeSymmetricKey || r.SymmetricKey == nil {
		return deprovision.SymmetricKeys{}, nil
	}
	return deprovision.SymmetricKeys{Primary: r.SymmetricKey.PrimaryKey, Secondary: r.SymmetricKey.SecondaryKey}, nil
}

// IndividualEnrollments lists every individual enrollment, page by page.
func (a *DPS) IndividualEnrollments(ctx context.Context) iter.Seq2[*deprovision.Enrollment, error] {
	return func(yield func(*deprovision.Enrollment, error) bool) {
		p := a.c.NewQueryEnrollmentsPager("SELECT * FROM enrollments", nil)
		for p.More() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(nil, mapError(err, "listing individual enrollments"))
				return
			}
			for i := range page.Enrollments {
				if !yield(enrollmentFromDPS(&page.Enrollments[i]), nil) {
					return
				}
			}
		}
	}
}

// GetRegistration reads a device registration state.
func (a *DPS) GetRegistration(ctx context.Context, registrationID string) (*deprovision.Registration, error) {
	r, err := a.c.GetRegistrationState(ctx, registrationID, nil)
	if err != nil {
		return nil, mapError(err, "reading registration %s", registrationID)
	}
	reg := registrationFromDPS(&r.DeviceRegistrationState)
	return &reg, nil
}

// DeleteRegistration deletes a registration record (etag "" = unconditional).
func (a *DPS) DeleteRegistration(ctx context.Context, registrationID, etag string) error {
	_, err := a.c.DeleteRegistrationState(ctx, registrationID, &dps.DeleteRegistrationStateOptions{IfMatch: ifMatch(etag)})
	return mapError(err, "deleting registration %s", registrationID)
}

// GroupRegistrations pages a group's registration states from continuation on.
func (a *DPS) GroupRegistrations(ctx context.Context, groupID, continuation string, pageSize int) iter.Seq2[deprovision.RegistrationPage, error] {
	return func(yield func(deprovision.RegistrationPage, error) bool) {
		if pageSize < 0 || pageSize > 1<<20 {
			yield(deprovision.RegistrationPage{}, fmt.Errorf("listing registrations of group %s: page size %d is out of range", groupID, pageSize))
			return
		}
		p := a.c.NewQueryRegistrationStatesPager(groupID, &dps.QueryOptions{PageSize: int32(pageSize), ContinuationToken: continuation})
		for p.More() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(deprovision.RegistrationPage{}, mapError(err, "listing registrations of group %s", groupID))
				return
			}
			out := deprovision.RegistrationPage{Items: make([]deprovision.Registration, 0, len(page.RegistrationStates)), Next: page.ContinuationToken}
			for i := range page.RegistrationStates {
				out.Items = append(out.Items, registrationFromDPS(&page.RegistrationStates[i]))
			}
			if !yield(out, nil) {
				return
			}
		}
	}
}

// CreateEnrollments creates up to dps.MaxBulkItems individual enrollments in one bulk
// operation (mode create), each item answered on its own: an item whose registration id is
// taken fails with deprovision.ErrConflict (DPS answers 409201, "Enrollment already
// exists."), a throttled or failed one is transient.
func (a *DPS) CreateEnrollments(ctx context.Context, es []*deprovision.Enrollment) ([]error, error) {
	op := dps.BulkEnrollmentOperation{Mode: dps.BulkOperationModeCreate, Enrollments: make([]dps.IndividualEnrollment, len(es))}
	for i, e := range es {
		body, err := newEnrollment(e)
		if err != nil {
			return nil, fmt.Errorf("writing enrollment %s: %w", e.RegistrationID, err)
		}
		op.Enrollments[i] = *body
	}
	r, err := a.c.RunEnrollmentBulkOperation(ctx, op, nil)
	if err != nil {
		return nil, mapError(err, "creating %d enrollments in bulk", len(es))
	}
	failed := make(map[string]dps.BulkEnrollmentOperationError, len(r.Errors))
	for _, e := range r.Errors {
		failed[strings.ToLower(e.RegistrationID)] = e
	}
	if !r.IsSuccessful && len(r.Errors) == 0 {
		return nil, fmt.Errorf("creating %d enrollments in bulk: DPS reported failure without per-item errors", len(es))
	}
	out := make([]error, len(es))
	for i, e := range es {
		if f, ok := failed[strings.ToLower(e.RegistrationID)]; ok {
			out[i] = bulkEnrollmentError(f)
		}
	}
	return out, nil
}

// bulkEnrollmentError classifies one failed item of a bulk enrollment operation as
// [mapError] classifies a call's answer: a deprovision.ServiceError with the HTTP status in the
// item's six-digit code (409201: 409, already exists) and the code itself, also ErrConflict,
// ErrPreconditionFailed or ErrNotFound for 409, 412 and 404, and transient by the one rule
// (azerr.TransientStatus).
func bulkEnrollmentError(f dps.BulkEnrollmentOperationError) error {
	status := int(f.ErrorCode) / 1000
	se := &deprovision.ServiceError{StatusCode: status, ErrorCode: strconv.Itoa(int(f.ErrorCode)),
		Err: fmt.Errorf("creating enrollment %s in bulk: %d: %s", f.RegistrationID, f.ErrorCode, f.ErrorStatus)}
	switch {
	case status == http.StatusConflict:
		return fmt.Errorf("%w: %w", deprovision.ErrConflict, se)
	case status == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %w", deprovision.ErrPreconditionFailed, se)
	case status == http.StatusNotFound:
		return fmt.Errorf("%w: %w", deprovision.ErrNotFound, se)
	case azerr.TransientStatus(status):
		return deprovision.Transient(se)
	}
	return se
}

// --- mapping ---

func ifMatch(etag string) *azcore.ETag {
	if etag == "" {
		return nil
	}
	e := azcore.ETag(etag)
	return &e
}

func status(enabled bool) dps.ProvisioningStatus {
	if enabled {
		return dps.ProvisioningStatusEnabled
	}
	return dps.ProvisioningStatusDisabled
}

// pointAt sets the hubs of an enrollment. With static allocation (a move), re-provisioning
// moves the device to the new hub: updateHubAssignment true, and its twin data migrates.
func pointAt(hubs *[]string, alloc *dps.AllocationPolicy, rp **dps.ReprovisionPolicy, hostName *string, wantHubs []string, wantAlloc string) {
	*hubs = append([]string(nil), wantHubs...)
	if wantAlloc != "" {
		*alloc = dps.AllocationPolicy(wantAlloc)
	}
	// iotHubHostName is the legacy single-hub field; with iotHubs set it must not disagree.
	*hostName = ""
	if *alloc == dps.AllocationPolicyStatic {
		*rp = &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
	}
}

// newEnrollment builds a new enrollment from the engine's.
func newEnrollment(e *deprovision.Enrollment) (*dps.IndividualEnrollment, error) {
	att, err := attestationFor(e)
	if err != nil {
		return nil, err
	}
	body := &dps.IndividualEnrollment{
		RegistrationID:     e.RegistrationID,
		DeviceID:           e.DeviceID,
		Attestation:        att,
		ProvisioningStatus: status(e.Enabled),
	}
	if len(e.IoTHubs) > 0 || e.AllocationPolicy != "" {
		pointAt(&body.IoTHubs, &body.AllocationPolicy, &body.ReprovisionPolicy, &body.IoTHubHostName, e.IoTHubs, e.AllocationPolicy)
	}
	return body, nil
}

// attestationFor builds the attestation of a written enrollment.
func attestationFor(e *deprovision.Enrollment) (*dps.AttestationMechanism, error) {
	typ := e.Attestation
	if typ == "" {
		switch {
		case e.CertificatePEM != "":
			typ = deprovision.AttestationX509
		default:
			typ = deprovision.AttestationSymmetricKey
		}
	}
	switch typ {
	case deprovision.AttestationX509:
		if !strings.Contains(e.CertificatePEM, "-----BEGIN CERTIFICATE-----") {
			return nil, errors.New("an X.509 enrollment needs the leaf certificate as PEM")
		}
		if strings.Contains(e.CertificatePEM, "PRIVATE KEY") {
			return nil, errors.New("the certificate PEM holds a private key; send the certificate only")
		}
		return &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{
			ClientCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: e.CertificatePEM}},
		}}, nil
	case deprovision.AttestationSymmetricKey:
		pk, sk := e.PrimaryKey, e.SecondaryKey
		if pk == "" {
			pk = deprovision.NewSymmetricKey()
		}
		if sk == "" {
			sk = deprovision.NewSymmetricKey()
		}
		for _, k := range []string{pk, sk} {
			if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) < 16 {
				return nil, errors.New("a symmetric key must be base64 of at least 16 bytes")
			}
		}
		return &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: pk, SecondaryKey: sk}}, nil
	default:
		return nil, fmt.Errorf("cannot create an enrollment with %q attestation from what the engine knows", typ)
	}
}

// groupAttestation builds the attestation of a new group.
func groupAttestation(g *deprovision.Group) (*dps.AttestationMechanism, error) {
	switch {
	case g.Attestation == deprovision.AttestationSymmetricKey:
		return &dps.AttestationMechanism{Type: dps.AttestationTypeSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{
			PrimaryKey: deprovision.NewSymmetricKey(), SecondaryKey: deprovision.NewSymmetricKey()}}, nil
	case g.Attestation == deprovision.AttestationX509 && len(g.CAReferences) > 0:
		ref := &dps.X509CAReferences{Primary: g.CAReferences[0]}
		if len(g.CAReferences) > 1 {
			ref.Secondary = g.CAReferences[1]
		}
		return &dps.AttestationMechanism{Type: dps.AttestationTypeX509, X509: &dps.X509Attestation{CAReferences: ref}}, nil
	default:
		return nil, fmt.Errorf("cannot create a group with %q attestation and no CA reference from what the engine knows", g.Attestation)
	}
}

func enrollmentFromDPS(d *dps.IndividualEnrollment) *deprovision.Enrollment {
	e := &deprovision.Enrollment{
		RegistrationID:   d.RegistrationID,
		DeviceID:         d.DeviceID,
		Enabled:          d.ProvisioningStatus != dps.ProvisioningStatusDisabled,
		IoTHubs:          append([]string(nil), d.IoTHubs...),
		AllocationPolicy: string(d.AllocationPolicy),
		ETag:             d.ETag,
	}
	if d.Attestation != nil {
		e.Attestation = deprovision.AttestationType(d.Attestation.Type)
		if x := d.Attestation.X509; x != nil {
			e.ClientCerts = certInfos(x.ClientCertificates)
		}
	}
	if len(e.IoTHubs) == 0 && d.IoTHubHostName != "" {
		e.IoTHubs = []string{d.IoTHubHostName}
	}
	return e
}

func groupFromDPS(d *dps.EnrollmentGroup) *deprovision.Group {
	g := &deprovision.Group{
		ID:      d.EnrollmentGroupID,
		Enabled: d.ProvisioningStatus != dps.ProvisioningStatusDisabled,
		ETag:    d.ETag,
	}
	if d.Attestation != nil {
		g.Attestation = deprovision.AttestationType(d.Attestation.Type)
		if x := d.Attestation.X509; x != nil {
			g.SigningCerts = certInfos(x.SigningCertificates)
			if r := x.CAReferences; r != nil {
				for _, n := range []string{r.Primary, r.Secondary} {
					if n != "" {
						g.CAReferences = append(g.CAReferences, n)
					}
				}
			}
		}
	}
	return g
}

// certInfos lists an enrollment's distinct certificates. DPS answers an enrollment written
// with a primary certificate only with the primary's info in the secondary slot too
// (recorded by azure-sdk-for-python's DPS tests, both X.509 lifecycles), which is one
// certificate, not two.
func certInfos(c *dps.X509Certificates) []deprovision.CertInfo {
	if c == nil {
		return nil
	}
	var out []deprovision.CertInfo
	for i, ci := range []*dps.X509CertificateWithInfo{c.Primary, c.Secondary} {
		if ci == nil || ci.Info == nil {
			continue
		}
		if i == 1 && c.Primary != nil && c.Primary.Info != nil && c.Primary.Info.SHA256Thumbprint == ci.Info.SHA256Thumbprint {
			continue
		}
		out = append(out, deprovision.CertInfo{
			SubjectName:      ci.Info.SubjectName,
			IssuerName:       ci.Info.IssuerName,
			SHA1Thumbprint:   ci.Info.SHA1Thumbprint,
			SHA256Thumbprint: ci.Info.SHA256Thumbprint,
			NotBefore:        ci.Info.NotBeforeUTC,
			NotAfter:         ci.Info.NotAfterUTC,
		})
	}
	return out
}

func registrationFromDPS(d *dps.DeviceRegistrationState) deprovision.Registration {
	return deprovision.Registration{
		RegistrationID: d.RegistrationID,
		DeviceID:       d.DeviceID,
		AssignedHub:    d.AssignedHub,
		Status:         string(d.Status),
		ETag:           d.ETag,
	}
}

package deprovision

import (
	"context"
	"errors"
	"iter"
	"time"
)

// Errors the ports return, wrapped, so the engine can decide without knowing the transport.
// Adapters map service answers onto them (404 → ErrNotFound, 409 → ErrConflict,
// 412 → ErrPreconditionFailed); anything that is worth retrying later (429, 5xx, timeouts,
// connection failures, the journal being unavailable) is marked with [Transient].
var (
	ErrNotFound           = errors.New("not found")
	ErrConflict           = errors.New("already exists")
	ErrPreconditionFailed = errors.New("precondition failed (etag mismatch)")
)

// TransientError marks a failure that may succeed if the whole invocation is tried again.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return "transient: " + e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// Transient wraps err as a [TransientError]; it returns nil for a nil err.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &TransientError{Err: err}
}

// IsTransient reports whether err, or any error it wraps, is a [TransientError].
func IsTransient(err error) bool {
	var t *TransientError
	return errors.As(err, &t)
}

// AttestationType is the attestation mechanism of an enrollment.
type AttestationType string

// Attestation types, spelled as DPS spells them.
const (
	AttestationNone         AttestationType = "none"
	AttestationTPM          AttestationType = "tpm"
	AttestationX509         AttestationType = "x509"
	AttestationSymmetricKey AttestationType = "symmetricKey"
)

// CertInfo is what DPS returns about a stored certificate (it never returns the certificate).
type CertInfo struct {
	SubjectName      string
	IssuerName       string
	SHA1Thumbprint   string
	SHA256Thumbprint string
	NotBefore        time.Time
	NotAfter         time.Time
}

// Enrollment is the part of a DPS individual enrollment the engine reads and writes.
type Enrollment struct {
	RegistrationID string
	DeviceID       string
	Attestation    AttestationType
	Enabled        bool
	// ClientCerts are the infos of the X.509 client certificates (primary, secondary).
	ClientCerts []CertInfo
	// CertificatePEM is set only on writes: the leaf certificate of a blocking or moving enrollment.
	CertificatePEM string
	// SymmetricKeys are set only on writes (primary, secondary), base64; DPS never returns them on GET.
	PrimaryKey, SecondaryKey string
	// IoTHubs and AllocationPolicy point the enrollment at hubs ("static" with one hub for moves).
	IoTHubs          []string
	AllocationPolicy string
	ETag             string
}

// Group is the part of a DPS enrollment group the engine reads and writes.
type Group struct {
	ID          string
	Attestation AttestationType
	Enabled     bool
	// SigningCerts are the infos of the group's signing (CA) certificates.
	SigningCerts []CertInfo
	// CAReferences name DPS-registered CA certificates instead of inline signing certificates.
	CAReferences []string
	ETag         string
}

// Registration is a DPS device registration state: where a device was provisioned.
type Registration struct {
	RegistrationID string
	DeviceID       string
	AssignedHub    string
	Status         string
	ETag           string
}

// SymmetricKeys are the two keys of a symmetric-key attestation or identity, base64. They are
// secrets: never log, journal or publish them (the JSON form is empty on purpose).
type SymmetricKeys struct {
	Primary   string `json:"-"`
	Secondary string `json:"-"`
}

// String keeps the keys out of anything printed: logs, errors, test failures.
func (k SymmetricKeys) String() string {
	if k.Primary == "" && k.Secondary == "" {
		return "{}"
	}
	return "{redacted}"
}

// GoString is String for %#v.
func (k SymmetricKeys) GoString() string { return k.String() }

// Has reports whether k holds key (either one); an empty key is never held.
func (k SymmetricKeys) Has(key string) bool {
	return key != "" && (k.Primary == key || k.Secondary == key)
}

// Device is the part of an IoT Hub device identity the engine reads and writes.
type Device struct {
	Hub          string
	DeviceID     string
	Enabled      bool
	StatusReason string
	// AuthType is the hub's authentication type: "sas", "selfSigned", "certificateAuthority" or "none".
	// A device provisioned through an X.509 group shows "certificateAuthority"; through a
	// symmetric-key group, "sas". The engine uses it to classify a group member.
	AuthType string
	// Keys are the identity's SAS keys when GetDevice read it (AuthType "sas"); empty from
	// [Devices.Identities], which the hub answers without keys.
	Keys SymmetricKeys `json:"-"`
	ETag string
	// Identity is the whole identity as the Devices implementation read it (for a hub: keys
	// and thumbprints included), opaque to the engine: PutDevice writes it back with Enabled
	// and StatusReason changed, so an update of a device just read costs no second read
	// (see [PutDeviceReads]). It may hold secrets: never log, journal or publish it.
	Identity any `json:"-"`
}

// PutDeviceReads reports whether PutDevice(d, etag) must read the identity before writing it
// (a rate limit counts that read too): an update (etag not "") that is unconditional ("*"),
// or of a device that does not carry the Identity read with that very etag. An update of a
// device as GetDevice returned it, with its own ETag, is the write alone: one registry
// operation, guarded by the etag of the read that decided it.
func PutDeviceReads(d *Device, etag string) bool {
	return etag != "" && (etag == "*" || d == nil || d.Identity == nil || etag != d.ETag)
}

// BulkMode is what a bulk hub operation does to each device.
type BulkMode string

// Bulk modes the engine uses.
const (
	BulkDisable BulkMode = "disable"
	BulkDelete  BulkMode = "delete"
)

// BulkItem is one device of a bulk hub operation.
type BulkItem struct {
	DeviceID     string
	StatusReason string
	// Device is the identity to disable, as [Devices.GetDevice] or [Devices.Identities] read
	// it (BulkDisable only): a bulk update replaces the whole identity, so the write carries
	// it back, changed in status and status reason alone, guarded by its ETag.
	Device *Device
}

// BulkItemResult is the outcome of one device of a bulk hub operation. Err is nil on success;
// a device that was already gone counts as success for delete.
type BulkItemResult struct {
	DeviceID string
	Err      error
}

// Enrollments is DPS's enrollment side: individual enrollments and enrollment groups.
type Enrollments interface {
	// GetEnrollment returns ErrNotFound (wrapped) when there is no individual enrollment.
	GetEnrollment(ctx context.Context, registrationID string) (*Enrollment, error)
	// PutEnrollment creates (etag "" = create only, ErrConflict if it exists) or replaces
	// (etag = the enrollment's etag, ErrPreconditionFailed if stale; "*" = unconditional).
	PutEnrollment(ctx context.Context, e *Enrollment, etag string) (*Enrollment, error)
	// DeleteEnrollment deletes (etag "" = unconditional); ErrNotFound when missing.
	DeleteEnrollment(ctx context.Context, registrationID, etag string) error
	GetGroup(ctx context.Context, groupID string) (*Group, error)
	PutGroup(ctx context.Context, g *Group, etag string) (*Group, error)
	DeleteGroup(ctx context.Context, groupID, etag string) error
	// Groups lists every enrollment group (there are at most a few hundred).
	Groups(ctx context.Context) iter.Seq2[*Group, error]
	// GroupKeys returns a symmetric-key group's two keys, read through the
	// attestation-mechanism call (secrets: never journal them).
	GroupKeys(ctx context.Context, groupID string) (SymmetricKeys, error)
	// EnrollmentKeys returns a symmetric-key individual enrollment's two keys, the same way.
	EnrollmentKeys(ctx context.Context, registrationID string) (SymmetricKeys, error)
	// IndividualEnrollments lists every individual enrollment, page by page (a DPS query call a page).
	IndividualEnrollments(ctx context.Context) iter.Seq2[*Enrollment, error]
}

// Registrations is DPS's device registration states.
type Registrations interface {
	GetRegistration(ctx context.Context, registrationID string) (*Registration, error)
	DeleteRegistration(ctx context.Context, registrationID, etag string) error
	// GroupRegistrations pages a group's registration states, starting after continuation
	// ("" = from the start). Each page comes with the token that resumes after it ("" = last
	// page), so a group-wide operation can journal where it is and never hold a whole group.
	GroupRegistrations(ctx context.Context, groupID, continuation string, pageSize int) iter.Seq2[RegistrationPage, error]
}

// RegistrationPage is one page of a group's registration states.
type RegistrationPage struct {
	Items []Registration
	// Next resumes after this page; "" when this is the last page.
	Next string
}

// Devices is the IoT Hub identity registry of every configured hub.
type Devices interface {
	// GetDevice reads a device identity; the Device carries the whole identity read (Identity).
	GetDevice(ctx context.Context, hub, deviceID string) (*Device, error)
	// PutDevice replaces the device's status and statusReason (etag as for PutEnrollment, "*"
	// unconditional), keeping the rest of the identity: written back from d.Identity when d
	// was read with etag, otherwise read first ([PutDeviceReads]).
	PutDevice(ctx context.Context, d *Device, etag string) (*Device, error)
	// DeleteDevice deletes a device identity (etag "" or "*" = unconditional); ErrNotFound when missing.
	DeleteDevice(ctx context.Context, hub, deviceID, etag string) error
	// Bulk applies mode to up to 100 devices of one hub in one call, with one result per item.
	// BulkDisable writes each item's Device back disabled (updateIfMatchETag: a device changed
	// since it was read fails with ErrPreconditionFailed); BulkDelete deletes.
	Bulk(ctx context.Context, hub string, mode BulkMode, items []BulkItem) ([]BulkItemResult, error)
	// Identities reads up to 100 devices of one hub with the hub's query (one call of the
	// query budget, none of the registry's): authentication type, thumbprints, capabilities,
	// scopes, status and ETag, but no keys. Devices that do not exist are left out.
	Identities(ctx context.Context, hub string, deviceIDs []string) ([]*Device, error)
}

// Clock is the time source; tests use a fixed one.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns the current time in UTC.
func (SystemClock) Now() time.Time { return time.Now().UTC() }

// Notifier announces the end of an operation (the outcome event). A failed announcement is
// the notifier's to retry and journal; it never fails the operation.
type Notifier interface {
	OperationEnded(ctx context.Context, op *Operation)
}

// DeferredRequests is the body of a burst queue message: revocations a burst deferred at about
// the same time (Burst.Defer), each submitted again by the BurstWork function. Its JSON names
// are part of the message contract. (A message holding one bare Request, as earlier versions
// wrote, is read too.)
type DeferredRequests struct {
	Requests []Request `json:"requests"`
}

// WorkBatch is one batch of a group-wide operation's fan-out: members of the group, all
// assigned to one hub, to which one hub action applies. It is also the body of a GroupWork
// queue message, so its JSON names are part of the message contract.
type WorkBatch struct {
	OperationID  string `json:"operationId"`
	Hub          string `json:"hub"`
	Action       Action `json:"action"`
	StatusReason string `json:"statusReason,omitempty"`
	// Seq numbers the batch within its operation, from 1, in the order the fan-out pages the
	// group; the same page read again after a crash gives the same numbers, so a batch
	// enqueued twice is still counted once. 0 means a batch the fan-out did not number (one
	// an operator enqueued by hand): it is applied and journaled, but not counted.
	Seq     int          `json:"batch,omitempty"`
	Members []WorkMember `json:"members"`
	// Again says the fan-out enqueued this batch a second time (it died after enqueuing the
	// page before journaling it): the worker first looks for the journaled outcome of the
	// first copy, and counts that instead of calling the hub again.
	Again bool `json:"again,omitempty"`
	// Registrations says the members' DPS registration records go too (group retirement):
	// each batch deletes its members' records once its hub call succeeded for every member,
	// so that a member whose identity is still there keeps the record that lists it.
	Registrations bool `json:"registrations,omitempty"`
	// HubDone, when set, is the journaled outcome of the batch's hub call: the batch is a
	// continuation that only deletes the records of the members left (a worker ran out of
	// time waiting for the DPS budget and enqueued the rest).
	HubDone *MemberResult `json:"hubDone,omitempty"`
}

// WorkMember is one device of a [WorkBatch].
type WorkMember struct {
	RegistrationID string `json:"registrationId"`
	DeviceID       string `json:"deviceId,omitempty"`
}

// WorkQueue carries the batches of a group-wide operation to the workers that apply them
// (the GroupWork function). Delivery is at least once: a batch may be applied more than once.
type WorkQueue interface {
	// Enqueue adds one batch; an error that is worth retrying is marked [Transient].
	Enqueue(ctx context.Context, b *WorkBatch) error
}

package deprovision

import (
	"context"
	"iter"
	"time"
)

// Sighting is the last this system heard of a device from its hub's lifecycle events
// (DeviceConnected, DeviceDisconnected, DeviceTelemetry, DeviceCreated, DeviceDeleted). The
// hub's own lastActivityTime is documented as unfit for production, so stale-device cleanup
// reads these instead.
type Sighting struct {
	// Key is the store's opaque, ordered key of the sighting (set by the store when listing);
	// a cleanup cursor keeps it to resume after this sighting.
	Key string
	// Hub is the hub's name as the events give it (hubName, e.g. "contoso-hub"), lower case.
	Hub      string
	DeviceID string
	// LastSeen is the time of the latest event that showed the device alive, and LastEvent its type.
	LastSeen  time.Time
	LastEvent string
	// Created is the time of the latest DeviceCreated; Deleted that of a DeviceDeleted not
	// followed by a later DeviceCreated (zero while the identity exists).
	Created time.Time
	Deleted time.Time
	ETag    string
}

// LastSeenStore keeps one [Sighting] per (hub, device).
type LastSeenStore interface {
	// RecordSighting merges s into the stored sighting: each time only moves forward, so events
	// arriving out of order or twice do no harm. It returns the stored result.
	RecordSighting(ctx context.Context, s Sighting) (*Sighting, error)
	// GetSighting returns ErrNotFound when no event about the device ever arrived.
	GetSighting(ctx context.Context, hub, deviceID string) (*Sighting, error)
	// Sightings lists sightings in key order, starting after the key after ("" = from the start).
	Sightings(ctx context.Context, after string) iter.Seq2[*Sighting, error]
}

// Cursor is where a cleanup pass stopped: the key of the last item it finished, and the run
// that got there. The next run of the pass resumes after it.
type Cursor struct {
	Pass string
	// After is the pass's position ("" = start a new sweep); its form is the pass's own.
	After string
	RunID string
	// Sweeps counts the complete sweeps of the pass, and SweptAt is when the last one ended.
	Sweeps  int
	SweptAt time.Time
	Updated time.Time
	ETag    string
}

// Finding is one thing a cleanup pass found and what it did about it: a journal row, and for
// drift an outcome event.
type Finding struct {
	// ID is deterministic (pass, subject and the state found), so a re-run rewrites the same row.
	ID   string `json:"id"`
	Pass string `json:"pass"`
	// Kind says what was found: "enrollment-enabled", "device-enabled", "blocking-enrollment-missing",
	// "enrollment-present", "device-present", "group-member-enabled", "grace-expired", "stale",
	// "orphan-registration".
	Kind           string `json:"kind"`
	RegistrationID string `json:"registrationId,omitempty"`
	DeviceID       string `json:"deviceId,omitempty"`
	Hub            string `json:"iotHub,omitempty"`
	GroupID        string `json:"enrollmentGroupId,omitempty"`
	// Intent is the device's intent in the journal (what this system did to it).
	Intent Intent `json:"intent,omitempty"`
	Detail string `json:"detail"`
	// Action is what the pass did: "re-revoked", "reported", "escalated", "planned (dry run)",
	// "deleted", "retire requested", "skipped".
	Action string `json:"action"`
	// OperationID is the operation the pass submitted, if any, and OperationStatus where it stands.
	OperationID     string    `json:"operationId,omitempty"`
	OperationStatus Status    `json:"operationStatus,omitempty"`
	RunID           string    `json:"runId"`
	Time            time.Time `json:"time"`
}

// CleanupJournal is what the cleanup passes keep in the journal besides operations: their
// cursors, their findings, the enrollment groups seen, and a way to walk the device rows.
// Every method may return a [TransientError] when the store is unavailable.
type CleanupJournal interface {
	// GetCursor returns ErrNotFound when the pass never ran.
	GetCursor(ctx context.Context, pass string) (*Cursor, error)
	// PutCursor creates (ETag "") or replaces (ETag matching, else ErrPreconditionFailed) a cursor.
	PutCursor(ctx context.Context, c *Cursor) error
	// RecordFinding writes (upserts) a finding.
	RecordFinding(ctx context.Context, f Finding) error
	// Findings lists the findings of one run, or of every run when runID is "".
	Findings(ctx context.Context, runID string) iter.Seq2[*Finding, error]
	// DeviceRows lists the device rows in key order, starting after the row whose registration
	// id (lower case, as the rows hold it) is after ("" = from the start).
	DeviceRows(ctx context.Context, after string) iter.Seq2[*DeviceState, error]
	// KnownGroups lists every enrollment group id ever remembered; RememberGroup adds one.
	KnownGroups(ctx context.Context) iter.Seq2[string, error]
	RememberGroup(ctx context.Context, groupID string) error
}

// DriftReporter announces a drift finding (the Deprovisioning.DriftDetected outcome event). A
// failed announcement is the reporter's to retry and journal; it never fails the pass.
type DriftReporter interface {
	DriftDetected(ctx context.Context, f Finding)
}

package emulator

import (
	"crypto/x509"
	"encoding/json"
)

// Wire types of the DPS service API (api-version 2021-10-01). One struct serves individual
// enrollments and enrollment groups; omitempty keeps each to its own fields.
//
// What the service echoes is what it was sent: a field sent as null (or left out) is left
// out of the answer, except provisioningStatus, which the service answers as null (recorded:
// Azure/azure-sdk-for-python, sdk/deviceprovisioningservices/azure-iot-deviceprovisioning/
// tests/recordings, test_enrollment_symmetrickey_lifecycle and
// test_enrollment_group_symmetrickey_lifecycle at bb00d3a6: a PUT with "capabilities": null
// and "reprovisionPolicy": null answers without either key and with "provisioningStatus":
// null). Nothing is filled in with a default.

type enrollmentJSON struct {
	RegistrationID             string             `json:"registrationId,omitempty"`
	EnrollmentGroupID          string             `json:"enrollmentGroupId,omitempty"`
	DeviceID                   string             `json:"deviceId,omitempty"`
	RegistrationState          *registrationState `json:"registrationState,omitempty"`
	OptionalDeviceInformation  json.RawMessage    `json:"optionalDeviceInformation,omitempty"`
	Attestation                *attestation       `json:"attestation"`
	Capabilities               *capabilities      `json:"capabilities,omitempty"`
	IotHubHostName             string             `json:"iotHubHostName,omitempty"`
	InitialTwin                *initialTwin       `json:"initialTwin,omitempty"`
	Etag                       string             `json:"etag,omitempty"`
	ProvisioningStatus         *string            `json:"provisioningStatus"`
	ReprovisionPolicy          *reprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUtc         string             `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc     string             `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string             `json:"allocationPolicy,omitempty"`
	IotHubs                    []string           `json:"iotHubs,omitempty"`
	CustomAllocationDefinition json.RawMessage    `json:"customAllocationDefinition,omitempty"`
}

type attestation struct {
	Type         string           `json:"type"`
	TPM          *tpmAttestation  `json:"tpm,omitempty"`
	X509         *x509Attestation `json:"x509,omitempty"`
	SymmetricKey *symmetricKey    `json:"symmetricKey,omitempty"`
}

type tpmAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

type symmetricKey struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

type x509Attestation struct {
	ClientCertificates  *x509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *x509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *caReferences     `json:"caReferences,omitempty"`
}

type caReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

type x509Certificates struct {
	Primary   *x509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *x509CertificateWithInfo `json:"secondary,omitempty"`
}

type x509CertificateWithInfo struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *x509CertificateInfo `json:"info,omitempty"`
}

type capabilities struct {
	IotEdge bool `json:"iotEdge"`
}

type reprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

type initialTwin struct {
	Tags       map[string]any `json:"tags,omitempty"`
	Properties *struct {
		Desired map[string]any `json:"desired,omitempty"`
	} `json:"properties,omitempty"`
}

// registrationState is DeviceRegistrationState.
type registrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUtc     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	Etag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
}

// enrollment is a stored individual enrollment or enrollment group, secrets included.
type enrollment struct {
	body  enrollmentJSON
	group bool
	// certs are the parsed primary and secondary certificates: client certificates of an
	// individual enrollment, signing certificates of a group (nil where absent).
	certs [2]*x509.Certificate
}

func (en *enrollment) id() string {
	if en.group {
		return en.body.EnrollmentGroupID
	}
	return en.body.RegistrationID
}

// enabled reports whether the enrollment admits devices: anything but "disabled", including
// a provisioningStatus never set (null), which the spec defaults to "enabled".
func (en *enrollment) enabled() bool {
	return en.body.ProvisioningStatus == nil || *en.body.ProvisioningStatus != "disabled"
}

func (en *enrollment) keys() []string {
	if a := en.body.Attestation; a != nil && a.SymmetricKey != nil {
		return []string{a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey}
	}
	return nil
}

// registration is a stored device registration state.
type registration struct {
	state   registrationState
	groupID string // enrollment group id when provisioned through a group
}

// view is one of the ways the service answers with an enrollment.
type view int

const (
	// viewWrite is the answer to a PUT: symmetric keys are echoed, including keys the service
	// generated (recorded: test_enrollment_symmetrickey_lifecycle, the PUT of
	// sym_enrollment2 sends null keys and the answer carries keys).
	viewWrite view = iota
	// viewGet is the answer to a GET: symmetric keys are left out ("attestation":
	// {"type":"symmetricKey"}), and an individual enrollment carries its registration state,
	// {"registrationId","status":"unassigned"} for a device that never registered (recorded:
	// test_enrollment_symmetrickey_lifecycle, test_enrollment_x509_lifecycle,
	// test_enrollment_tpm_lifecycle).
	viewGet
	// viewQuery is an item of a query page: as GET, without the registration state (the same
	// recordings' query answers have none).
	viewQuery
)

// public returns the enrollment as the service answers with it in view v: certificates
// replaced by their info (a secondary slot never written echoes the primary's info, as both
// X.509 recordings show: test_enrollment_x509_lifecycle and
// test_enrollment_group_x509_lifecycle send only a primary certificate and are answered with
// primary and secondary info), symmetric keys per view. rs is the enrollment's registration
// state for viewGet (nil: never registered).
func (en *enrollment) public(v view, rs *registrationState) enrollmentJSON {
	out := en.body
	out.RegistrationState = nil
	if v == viewGet && !en.group {
		st := registrationState{RegistrationID: en.body.RegistrationID, Status: "unassigned"}
		if rs != nil {
			st = *rs
		}
		out.RegistrationState = &st
	}
	if a := en.body.Attestation; a != nil {
		ac := *a
		if a.SymmetricKey != nil && v != viewWrite {
			ac.SymmetricKey = nil
		}
		if a.X509 != nil {
			xc := *a.X509
			xc.ClientCertificates = stripCerts(a.X509.ClientCertificates)
			xc.SigningCertificates = stripCerts(a.X509.SigningCertificates)
			ac.X509 = &xc
		}
		out.Attestation = &ac
	}
	return out
}

// stripCerts keeps only the info of stored certificates, and echoes the primary's info as
// the secondary when no secondary was ever written.
func stripCerts(c *x509Certificates) *x509Certificates {
	if c == nil {
		return nil
	}
	out := &x509Certificates{}
	if c.Primary != nil {
		out.Primary = &x509CertificateWithInfo{Info: c.Primary.Info}
	}
	switch {
	case c.Secondary != nil:
		out.Secondary = &x509CertificateWithInfo{Info: c.Secondary.Info}
	case c.Primary != nil:
		out.Secondary = &x509CertificateWithInfo{Info: c.Primary.Info}
	}
	return out
}

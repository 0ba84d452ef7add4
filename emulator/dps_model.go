package emulator

import (
	"crypto/x509"
	"encoding/json"
)

// Wire types of the DPS service API (api-version 2021-10-01). One struct serves individual
// enrollments and enrollment groups; omitempty keeps each to its own fields.

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
	ProvisioningStatus         string             `json:"provisioningStatus,omitempty"`
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

func (en *enrollment) enabled() bool { return en.body.ProvisioningStatus != "disabled" }

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

// public returns the enrollment as GET and query return it: certificates replaced by their
// info, symmetric keys blanked.
func (en *enrollment) public(rs *registrationState) enrollmentJSON {
	out := en.body
	if rs != nil && !en.group {
		c := *rs
		out.RegistrationState = &c
	}
	if a := en.body.Attestation; a != nil {
		ac := *a
		if a.SymmetricKey != nil {
			ac.SymmetricKey = &symmetricKey{}
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

func stripCerts(c *x509Certificates) *x509Certificates {
	if c == nil {
		return nil
	}
	out := &x509Certificates{}
	if c.Primary != nil {
		out.Primary = &x509CertificateWithInfo{Info: c.Primary.Info}
	}
	if c.Secondary != nil {
		out.Secondary = &x509CertificateWithInfo{Info: c.Secondary.Info}
	}
	return out
}

package dps

import "time"

// ProvisioningStatus is whether an enrollment or group admits devices.
type ProvisioningStatus string

// Provisioning statuses.
const (
	ProvisioningStatusEnabled  ProvisioningStatus = "enabled"
	ProvisioningStatusDisabled ProvisioningStatus = "disabled"
)

// AllocationPolicy is how DPS picks a hub for a device.
type AllocationPolicy string

// Allocation policies.
const (
	AllocationPolicyHashed     AllocationPolicy = "hashed"
	AllocationPolicyGeoLatency AllocationPolicy = "geoLatency"
	AllocationPolicyStatic     AllocationPolicy = "static"
	AllocationPolicyCustom     AllocationPolicy = "custom"
)

// AttestationType is the attestation mechanism of an enrollment or group.
type AttestationType string

// Attestation types.
const (
	AttestationTypeNone         AttestationType = "none"
	AttestationTypeTPM          AttestationType = "tpm"
	AttestationTypeX509         AttestationType = "x509"
	AttestationTypeSymmetricKey AttestationType = "symmetricKey"
)

// RegistrationStatus is the status of a device registration state.
type RegistrationStatus string

// Registration statuses.
const (
	RegistrationStatusUnassigned RegistrationStatus = "unassigned"
	RegistrationStatusAssigning  RegistrationStatus = "assigning"
	RegistrationStatusAssigned   RegistrationStatus = "assigned"
	RegistrationStatusFailed     RegistrationStatus = "failed"
	RegistrationStatusDisabled   RegistrationStatus = "disabled"
)

// BulkOperationMode is what a bulk operation does to each item.
type BulkOperationMode string

// Bulk operation modes.
const (
	BulkOperationModeCreate            BulkOperationMode = "create"
	BulkOperationModeUpdate            BulkOperationMode = "update"
	BulkOperationModeUpdateIfMatchETag BulkOperationMode = "updateIfMatchETag"
	BulkOperationModeDelete            BulkOperationMode = "delete"
)

// TwinCollection is a free-form set of twin properties (it may carry version, count and
// metadata, as the service returns them).
type TwinCollection map[string]any

// IndividualEnrollment is a DPS individual enrollment (the spec's IndividualEnrollment).
// Read-only fields are ignored on writes.
type IndividualEnrollment struct {
	RegistrationID             string                      `json:"registrationId"`
	DeviceID                   string                      `json:"deviceId,omitempty"`
	RegistrationState          *DeviceRegistrationState    `json:"registrationState,omitempty"`
	OptionalDeviceInformation  TwinCollection              `json:"optionalDeviceInformation,omitempty"`
	Attestation                *AttestationMechanism       `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin                `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         ProvisioningStatus          `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         *time.Time                  `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC     *time.Time                  `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           AllocationPolicy            `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
}

// EnrollmentGroup is a DPS enrollment group (the spec's EnrollmentGroup).
type EnrollmentGroup struct {
	EnrollmentGroupID          string                      `json:"enrollmentGroupId"`
	Attestation                *AttestationMechanism       `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin                `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         ProvisioningStatus          `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         *time.Time                  `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC     *time.Time                  `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           AllocationPolicy            `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
}

// AttestationMechanism is how a device proves its identity; Type says which variant is set.
type AttestationMechanism struct {
	Type         AttestationType          `json:"type"`
	TPM          *TPMAttestation          `json:"tpm,omitempty"`
	X509         *X509Attestation         `json:"x509,omitempty"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty"`
}

// TPMAttestation is TPM attestation.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// X509Attestation is X.509 attestation: client certificates for individual enrollments,
// signing certificates or CA references for groups.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// X509Certificates is a primary and an optional secondary certificate.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CertificateWithInfo holds a certificate on writes (PEM text or base64 DER) and its
// info on reads: the service never returns the certificate itself.
type X509CertificateWithInfo struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *X509CertificateInfo `json:"info,omitempty"`
}

// X509CertificateInfo is what DPS reports about a stored certificate.
type X509CertificateInfo struct {
	SubjectName      string    `json:"subjectName"`
	SHA1Thumbprint   string    `json:"sha1Thumbprint"`
	SHA256Thumbprint string    `json:"sha256Thumbprint"`
	IssuerName       string    `json:"issuerName"`
	NotBeforeUTC     time.Time `json:"notBeforeUtc"`
	NotAfterUTC      time.Time `json:"notAfterUtc"`
	SerialNumber     string    `json:"serialNumber"`
	Version          int32     `json:"version"`
}

// X509CAReferences names CA certificates registered with the DPS instance.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// SymmetricKeyAttestation holds base64 keys. The service blanks them in GET and query
// results; read them with the attestation-mechanism calls.
type SymmetricKeyAttestation struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// DeviceCapabilities are the device's capabilities.
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// InitialTwin is the twin a newly provisioned device starts with.
type InitialTwin struct {
	Tags       TwinCollection         `json:"tags,omitempty"`
	Properties *InitialTwinProperties `json:"properties,omitempty"`
}

// InitialTwinProperties are the initial twin's desired properties.
type InitialTwinProperties struct {
	Desired TwinCollection `json:"desired,omitempty"`
}

// ReprovisionPolicy says what happens when a device re-provisions after its enrollment
// changed. Both fields are required by the service.
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// CustomAllocationDefinition is the webhook of the custom allocation policy.
type CustomAllocationDefinition struct {
	WebhookURL string `json:"webhookUrl"`
	APIVersion string `json:"apiVersion"`
}

// DeviceRegistrationState is where and how a device was provisioned. All fields are read-only.
type DeviceRegistrationState struct {
	RegistrationID         string             `json:"registrationId,omitempty"`
	CreatedDateTimeUTC     *time.Time         `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string             `json:"assignedHub,omitempty"`
	DeviceID               string             `json:"deviceId,omitempty"`
	Status                 RegistrationStatus `json:"status,omitempty"`
	Substatus              string             `json:"substatus,omitempty"`
	ErrorCode              int32              `json:"errorCode,omitempty"`
	ErrorMessage           string             `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC *time.Time         `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string             `json:"etag,omitempty"`
	Payload                map[string]any     `json:"payload,omitempty"`
}

// BulkEnrollmentOperation applies one mode to up to 10 individual enrollments.
type BulkEnrollmentOperation struct {
	Mode        BulkOperationMode      `json:"mode"`
	Enrollments []IndividualEnrollment `json:"enrollments"`
}

// BulkEnrollmentGroupOperation applies one mode to up to 10 enrollment groups.
type BulkEnrollmentGroupOperation struct {
	Mode             BulkOperationMode `json:"mode"`
	EnrollmentGroups []EnrollmentGroup `json:"enrollmentGroups"`
}

// BulkEnrollmentOperationResult is the outcome of a bulk enrollment operation; Errors has
// one entry per failed item.
type BulkEnrollmentOperationResult struct {
	IsSuccessful bool                           `json:"isSuccessful"`
	Errors       []BulkEnrollmentOperationError `json:"errors,omitempty"`
}

// BulkEnrollmentOperationError is one failed item of a bulk enrollment operation.
type BulkEnrollmentOperationError struct {
	RegistrationID string `json:"registrationId"`
	ErrorCode      int32  `json:"errorCode"`
	ErrorStatus    string `json:"errorStatus"`
}

// BulkEnrollmentGroupOperationResult is the outcome of a bulk group operation.
type BulkEnrollmentGroupOperationResult struct {
	IsSuccessful bool                                `json:"isSuccessful"`
	Errors       []BulkEnrollmentGroupOperationError `json:"errors,omitempty"`
}

// BulkEnrollmentGroupOperationError is one failed item of a bulk group operation.
type BulkEnrollmentGroupOperationError struct {
	EnrollmentGroupID string `json:"enrollmentGroupId"`
	ErrorCode         int32  `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

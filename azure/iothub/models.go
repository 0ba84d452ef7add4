package iothub

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// DeviceStatus is whether a device may connect.
type DeviceStatus string

// Device statuses.
const (
	DeviceStatusEnabled  DeviceStatus = "enabled"
	DeviceStatusDisabled DeviceStatus = "disabled"
)

// ConnectionState is a device's connection state.
type ConnectionState string

// Connection states.
const (
	ConnectionStateDisconnected ConnectionState = "Disconnected"
	ConnectionStateConnected    ConnectionState = "Connected"
)

// AuthenticationType is how a device authenticates to the hub.
type AuthenticationType string

// Authentication types.
const (
	AuthenticationTypeSAS                  AuthenticationType = "sas"
	AuthenticationTypeSelfSigned           AuthenticationType = "selfSigned"
	AuthenticationTypeCertificateAuthority AuthenticationType = "certificateAuthority"
	AuthenticationTypeNone                 AuthenticationType = "none"
)

// ImportMode is what a bulk registry operation does to one device.
type ImportMode string

// Import modes.
const (
	ImportModeCreate                ImportMode = "create"
	ImportModeUpdate                ImportMode = "update"
	ImportModeUpdateIfMatchETag     ImportMode = "updateIfMatchETag"
	ImportModeDelete                ImportMode = "delete"
	ImportModeDeleteIfMatchETag     ImportMode = "deleteIfMatchETag"
	ImportModeUpdateTwin            ImportMode = "updateTwin"
	ImportModeUpdateTwinIfMatchETag ImportMode = "updateTwinIfMatchETag"
)

// Device is a device identity in the hub's identity registry (the spec's Device).
type Device struct {
	DeviceID                   string                   `json:"deviceId"`
	GenerationID               string                   `json:"generationId,omitempty"`
	ETag                       string                   `json:"etag,omitempty"`
	ConnectionState            ConnectionState          `json:"connectionState,omitempty"`
	Status                     DeviceStatus             `json:"status,omitempty"`
	StatusReason               string                   `json:"statusReason,omitempty"`
	ConnectionStateUpdatedTime *time.Time               `json:"connectionStateUpdatedTime,omitempty"`
	StatusUpdatedTime          *time.Time               `json:"statusUpdatedTime,omitempty"`
	LastActivityTime           *time.Time               `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount  int32                    `json:"cloudToDeviceMessageCount,omitempty"`
	Authentication             *AuthenticationMechanism `json:"authentication,omitempty"`
	Capabilities               *DeviceCapabilities      `json:"capabilities,omitempty"`
	DeviceScope                string                   `json:"deviceScope,omitempty"`
	ParentScopes               []string                 `json:"parentScopes,omitempty"`
}

// AuthenticationMechanism is a device's credentials: symmetric keys or X.509 thumbprints.
// Left out on create, the hub generates symmetric keys.
type AuthenticationMechanism struct {
	SymmetricKey   *SymmetricKey      `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint    `json:"x509Thumbprint,omitempty"`
	Type           AuthenticationType `json:"type,omitempty"`
}

// SymmetricKey is a pair of base64 keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// X509Thumbprint is a pair of certificate thumbprints.
type X509Thumbprint struct {
	PrimaryThumbprint   string `json:"primaryThumbprint,omitempty"`
	SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
}

// DeviceCapabilities are the device's capabilities.
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// ExportImportDevice is one item of a bulk registry operation. ETag (JSON "eTag") is used
// only by the *IfMatchETag modes.
type ExportImportDevice struct {
	ID             string                   `json:"id"`
	ModuleID       string                   `json:"moduleId,omitempty"`
	ETag           string                   `json:"eTag,omitempty"`
	ImportMode     ImportMode               `json:"importMode"`
	Status         DeviceStatus             `json:"status,omitempty"`
	StatusReason   string                   `json:"statusReason,omitempty"`
	Authentication *AuthenticationMechanism `json:"authentication,omitempty"`
	TwinETag       string                   `json:"twinETag,omitempty"`
	Tags           map[string]any           `json:"tags,omitempty"`
	Properties     *PropertyContainer       `json:"properties,omitempty"`
	Capabilities   *DeviceCapabilities      `json:"capabilities,omitempty"`
	DeviceScope    string                   `json:"deviceScope,omitempty"`
	ParentScopes   []string                 `json:"parentScopes,omitempty"`
}

// PropertyContainer holds twin desired and reported properties.
type PropertyContainer struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
}

// BulkRegistryOperationResult is the outcome of a bulk registry operation: one error per
// failed device and any warnings.
type BulkRegistryOperationResult struct {
	IsSuccessful bool                             `json:"isSuccessful"`
	Errors       []DeviceRegistryOperationError   `json:"errors,omitempty"`
	Warnings     []DeviceRegistryOperationWarning `json:"warnings,omitempty"`
}

// DeviceRegistryOperationError is one failed device of a bulk registry operation.
type DeviceRegistryOperationError struct {
	DeviceID string `json:"deviceId"`
	// ErrorCode is the error name, such as "DeviceNotFound". The service documents names;
	// numbers (404001) seen in the wild are turned into their names where known.
	ErrorCode   ErrorCode `json:"errorCode"`
	ErrorStatus string    `json:"errorStatus,omitempty"`
	ModuleID    string    `json:"moduleId,omitempty"`
	Operation   string    `json:"operation,omitempty"`
}

// DeviceRegistryOperationWarning is a warning about one device of a bulk registry operation.
type DeviceRegistryOperationWarning struct {
	DeviceID      string `json:"deviceId"`
	WarningCode   string `json:"warningCode"`
	WarningStatus string `json:"warningStatus,omitempty"`
}

// ErrorCode is an IoT Hub error name. It decodes from either a JSON string or the numeric
// code, which is turned into its name when known and kept as digits otherwise.
type ErrorCode string

// Error names the hub uses that callers commonly branch on.
const (
	ErrorCodeDeviceNotFound      ErrorCode = "DeviceNotFound"
	ErrorCodeDeviceAlreadyExists ErrorCode = "DeviceAlreadyExists"
	ErrorCodePreconditionFailed  ErrorCode = "PreconditionFailed"
	ErrorCodeEtagDoesNotMatch    ErrorCode = "EtagDoesNotMatch"
	ErrorCodeThrottlingException ErrorCode = "ThrottlingException"
)

// UnmarshalJSON implements json.Unmarshaler.
func (c *ErrorCode) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = ErrorCode(s)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*c = codeName(n)
	return nil
}

// errorNames maps the numeric hub error codes to their names (C# SDK ErrorCode.cs).
var errorNames = map[int64]ErrorCode{
	400004: "ArgumentInvalid",
	400011: "DeviceDefinedMultipleTimes",
	400013: "BulkRegistryOperationFailure",
	401002: "IotHubUnauthorizedAccess",
	403002: "IotHubQuotaExceeded",
	404001: ErrorCodeDeviceNotFound,
	404010: "ModuleNotFound",
	409001: ErrorCodeDeviceAlreadyExists,
	409301: "ModuleAlreadyExistsOnDevice",
	412001: ErrorCodePreconditionFailed,
	413002: "TooManyDevices",
	429001: ErrorCodeThrottlingException,
	429002: "ThrottleBacklogLimitExceeded",
	429003: "ThrottlingBacklogTimeout",
	500001: "ServerError",
	503001: "ServiceUnavailable",
}

func codeName(n int64) ErrorCode {
	if name, ok := errorNames[n]; ok {
		return name
	}
	return ErrorCode(strconv.FormatInt(n, 10))
}

// Twin is a device twin as the device query returns it.
type Twin struct {
	DeviceID                  string              `json:"deviceId"`
	ModuleID                  string              `json:"moduleId,omitempty"`
	Tags                      map[string]any      `json:"tags,omitempty"`
	Properties                *TwinProperties     `json:"properties,omitempty"`
	ETag                      string              `json:"etag,omitempty"`
	Version                   int64               `json:"version,omitempty"`
	DeviceETag                string              `json:"deviceEtag,omitempty"`
	Status                    DeviceStatus        `json:"status,omitempty"`
	StatusReason              string              `json:"statusReason,omitempty"`
	StatusUpdateTime          *time.Time          `json:"statusUpdateTime,omitempty"`
	ConnectionState           ConnectionState     `json:"connectionState,omitempty"`
	LastActivityTime          *time.Time          `json:"lastActivityTime,omitempty"`
	CloudToDeviceMessageCount int32               `json:"cloudToDeviceMessageCount,omitempty"`
	AuthenticationType        AuthenticationType  `json:"authenticationType,omitempty"`
	X509Thumbprint            *X509Thumbprint     `json:"x509Thumbprint,omitempty"`
	Capabilities              *DeviceCapabilities `json:"capabilities,omitempty"`
	DeviceScope               string              `json:"deviceScope,omitempty"`
	ParentScopes              []string            `json:"parentScopes,omitempty"`
}

// TwinProperties are a twin's desired and reported properties.
type TwinProperties struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
}

// isBulkResult reports whether body is a BulkRegistryOperationResult (it has isSuccessful).
func isBulkResult(body []byte) bool {
	var probe struct {
		IsSuccessful *bool `json:"isSuccessful"`
	}
	return json.Unmarshal(body, &probe) == nil && probe.IsSuccessful != nil
}

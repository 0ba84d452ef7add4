package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// writeJSON writes v as the JSON body with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// dpsErrorBody is ProvisioningServiceErrorDetails from the DPS service spec.
type dpsErrorBody struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	Info         map[string]string `json:"info,omitempty"`
	TimestampUtc string            `json:"timestampUtc"`
}

// dpsError writes a DPS error: the ProvisioningServiceErrorDetails body and the
// x-ms-error-code header. Six-digit codes other than 404201/404202/401002 are not
// documented; the emulator uses <status>001 for them, and clients must not depend on them.
func dpsError(w http.ResponseWriter, status, code int, format string, args ...any) {
	if code == 0 {
		code = status*1000 + 1
	}
	w.Header().Set("x-ms-error-code", strconv.Itoa(code))
	writeJSON(w, status, dpsErrorBody{
		ErrorCode:    code,
		TrackingID:   newTrackingID(),
		Message:      fmt.Sprintf(format, args...),
		TimestampUtc: nowUTC(),
	})
}

// hubErrorCodes maps the IoT Hub error names the emulator emits to their numeric codes
// (C# SDK ErrorCode.cs).
var hubErrorCodes = map[string]int{
	"ArgumentInvalid":              400004,
	"DeviceDefinedMultipleTimes":   400011,
	"BulkRegistryOperationFailure": 400013,
	"IotHubUnauthorizedAccess":     401002,
	"DeviceNotFound":               404001,
	"IotHubNotFound":               404000,
	"DeviceAlreadyExists":          409001,
	"PreconditionFailed":           412001,
	"TooManyDevices":               413002,
	"ThrottlingException":          429001,
	"ServerError":                  500001,
	"ServiceUnavailable":           503001,
}

// hubError writes an IoT Hub error in the current shape: the iothub-errorcode header and a
// body whose Message is itself a JSON string holding the error object.
func hubError(w http.ResponseWriter, status int, name string, format string, args ...any) {
	code, ok := hubErrorCodes[name]
	if !ok {
		code = status*1000 + 1
	}
	inner, _ := json.Marshal(map[string]any{
		"errorCode":    code,
		"trackingId":   newTrackingID(),
		"message":      fmt.Sprintf(format, args...),
		"info":         map[string]any{},
		"timestampUtc": nowUTC(),
	})
	w.Header().Set("iothub-errorcode", name)
	writeJSON(w, status, map[string]string{"Message": string(inner), "ExceptionMessage": ""})
}

// nowUTC formats the current time as the services do.
func nowUTC() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func newTrackingID() string { return randomHex(16) }

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

// dpsError writes a DPS error: the ProvisioningServiceErrorDetails body of the DPS spec and
// the x-ms-error-code header its every error response declares. The recorded six-digit codes
// are 409201/409202 (an enrollment or group that exists, in bulk results); 401002 and
// 404201/404202 are seen in the wild; for the others the emulator uses <status>001
// (UNCONFIRMED; clients must branch on the status, not on these).
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
// (C# SDK ErrorCode.cs; 429002 and 429003 also in MicrosoftDocs/azure-docs
// articles/iot-hub/troubleshoot-error-codes.md).
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
	"ThrottlingBacklogTimeout":     429003,
	"ServerError":                  500001,
	"ServiceUnavailable":           503001,
}

// hubWriter carries, to hubError, the shape of error body the call's api-version gets.
type hubWriter struct {
	http.ResponseWriter
	legacy bool
}

func (w *hubWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hubError writes an IoT Hub error: the iothub-errorcode header with the error's name, and
// a body in the shape of the call's api-version (see [hubLegacyErrors]):
//
//	current: {"Message":"{\"errorCode\":404001,\"trackingId\":…,\"message\":…,\"info\":{},\"timestampUtc\":…}","ExceptionMessage":""}
//	legacy:  {"Message":"ErrorCode:DeviceNotFound;<text>","ExceptionMessage":"Tracking ID:…-G:0-TimeStamp:06/16/2020 22:34:56"}
//
// The header is in every recorded error (Devices_Lifecycle.json,
// DevicesClient_UpdateDevice_EtagDoesNotMatch.json); the current body is the one
// azure-iot-sdk-csharp #3442 shows.
func hubError(w http.ResponseWriter, status int, name string, format string, args ...any) {
	code, ok := hubErrorCodes[name]
	if !ok {
		code = status*1000 + 1
	}
	msg := fmt.Sprintf(format, args...)
	w.Header().Set("iothub-errorcode", name)
	if hw, ok := w.(*hubWriter); ok && hw.legacy {
		now := time.Now().UTC()
		writeJSON(w, status, map[string]string{
			"Message":          "ErrorCode:" + name + ";" + msg,
			"ExceptionMessage": "Tracking ID:" + newTrackingID() + "-G:0-TimeStamp:" + now.Format("01/02/2006 15:04:05"),
		})
		return
	}
	inner, _ := json.Marshal(map[string]any{
		"errorCode":    code,
		"trackingId":   newTrackingID(),
		"message":      msg,
		"info":         map[string]any{},
		"timestampUtc": nowUTC(),
	})
	writeJSON(w, status, map[string]string{"Message": string(inner), "ExceptionMessage": ""})
}

// nowUTC formats the current time as the services do.
func nowUTC() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func newTrackingID() string { return randomHex(16) }

package emulator

import (
	"fmt"
	"net/http"
	"regexp"
)

// apiVersionRe is the form of every api-version the services publish: a date, optionally
// followed by "-preview" (the hub's 2020-03-13 and 2021-04-12, DPS's 2019-03-31, 2021-10-01
// and 2025-07-01-preview, in the specs of Azure/azure-rest-api-specs and the SDKs' clients).
var apiVersionRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-preview)?$`)

// checkAPIVersion reads the api-version query parameter that both services require on every
// call. Every published version is accepted, the ones older than the specs the emulator
// serves included (the .NET hub client of Azure/azure-sdk-for-net sends 2020-03-13, the C#
// v1 DPS client 2019-03-31): the calls the emulator serves have the same paths and bodies in
// all of them. Where a version answers differently, the handlers ask [hubLegacyErrors].
// A missing or malformed version is refused; the exact refusal of the real services is
// UNCONFIRMED (400 is the safe reading: the call is the caller's mistake).
func checkAPIVersion(r *http.Request) (string, error) {
	v := r.URL.Query().Get("api-version")
	if v == "" {
		return "", fmt.Errorf("the api-version query parameter is required")
	}
	if !apiVersionRe.MatchString(v) {
		return v, fmt.Errorf("api-version %q is not a published version (YYYY-MM-DD, optionally -preview)", v)
	}
	return v, nil
}

// hubLegacyErrorsBefore is the first hub api-version whose error bodies carry the JSON error
// object in Message. Older versions answer
// {"Message":"ErrorCode:DeviceNotFound;<text>","ExceptionMessage":"Tracking ID:…"}, recorded
// for 2020-03-13 in Azure/azure-sdk-for-net, sdk/iot/Azure.IoT.Hub.Service/tests/
// SessionRecords/DevicesClientTests/Devices_Lifecycle.json (1cceaacd) and
// DevicesClient_UpdateDevice_EtagDoesNotMatch.json (541b29a5, July 2021). The newer shape is
// what azure-iot-sdk-csharp #3442 shows for 2021-04-12, and azure-iot-sdk-node #971 (May
// 2021) reports it for the versions that SDK sent then (2020-09-30); the exact boundary is
// UNCONFIRMED.
const hubLegacyErrorsBefore = "2020-09-30"

// hubLegacyErrors reports whether a hub call of api-version v is answered with the legacy
// error body. Versions compare as their dates.
func hubLegacyErrors(v string) bool {
	return v != "" && v[:min(len(v), 10)] < hubLegacyErrorsBefore
}

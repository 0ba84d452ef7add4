package emulator

import (
	"net/http"
	"strings"
	"time"
)

// How a registration ends, as the device sees it. Every attempt whose credential attests
// against an enrollment entry is accepted the same way, 202 {"operationId", "status":
// "assigning"}, and the outcome is in the operation status the device polls for:
//
//   - "assigned", with registrationState (assignedHub, deviceId, …) when the entry is enabled;
//   - "disabled" when the entry (the individual enrollment, or the group the device attested
//     through) is disabled. Source: the result table of Microsoft's custom allocation tutorial
//     (articles/iot-dps/tutorial-custom-allocation-policies.md, "Troubleshooting custom
//     allocation policies": "An Individual Enrollment was created to disable the device |
//     Result status: Disabled | SDK returns PROV_DEVICE_RESULT_DISABLED"); the C SDK maps the
//     status "disabled" to PROV_DEVICE_RESULT_DISABLED (provisioning_client/src/
//     prov_device_ll_client.c); the Java SDK's fix for it (azure-iot-sdk-java PR #1641, "Fix
//     bug in failed and disabled statuses during device provisioning") shows the sequence:
//     the register call answered "assigning", the status poll then "disabled", with a
//     registrationState that carried no errorCode (reading it threw). So the disabled
//     registrationState here holds the registration id and status only (UNCONFIRMED beyond
//     that), and nothing else changes: no hub identity is touched and the service-side
//     registration record keeps what it held (Microsoft's revoke article: disabling an entry
//     "does not remove an existing device registration from IoT Hub").
//
// A credential that does not attest against the entry (a wrong key, a certificate that is not
// the enrollment's) is refused with HTTP 401 before any operation exists.

// newOperationID returns an operation id of the form DPS uses ("4.<hex>.<guid>").
func newOperationID() string { return "4." + randomHex(8) + "." + uuidLike() }

// completeAssigned records op as assigned with res and answers 202 assigning.
func (d *dps) completeAssigned(w http.ResponseWriter, op *operation, regID string, res *deviceRegistrationResult) {
	d.complete(w, op, regID, "assigned", res)
}

// completeDisabled records op as ended with status "disabled" and answers 202 assigning.
func (d *dps) completeDisabled(w http.ResponseWriter, op *operation, regID string) {
	d.complete(w, op, regID, "disabled", &deviceRegistrationResult{
		RegistrationID: regID, Status: "disabled", LastUpdatedDateTimeUtc: nowUTC()})
}

func (d *dps) complete(w http.ResponseWriter, op *operation, regID, status string, res *deviceRegistrationResult) {
	op.regID = strings.ToLower(regID)
	op.created = time.Now()
	op.result = registrationOperationStatus{OperationID: newOperationID(), Status: status, RegistrationState: res}
	d.ops.put(op.result.OperationID, op)
	writeJSON(w, http.StatusAccepted, registrationOperationStatus{OperationID: op.result.OperationID, Status: "assigning"})
}

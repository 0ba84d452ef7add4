package deprovision_test

import (
	"fmt"

	d "dpsdeprov/deprovision"
)

// A plan, as a person reads it before anything changes: a symmetric-key group member that is
// reported lost.
func ExamplePlan_String() {
	r := &d.Resolved{Kind: d.KindGroupMember, RegistrationID: "sensor-042", Attestation: d.AttestationSymmetricKey,
		Group:        &d.Group{ID: "factory-7", Attestation: d.AttestationSymmetricKey, Enabled: true},
		Registration: &d.Registration{RegistrationID: "sensor-042", DeviceID: "sensor-042", AssignedHub: "hub1.azure-devices.net"},
		Hub:          "hub1.azure-devices.net", DeviceID: "sensor-042",
		Device: &d.Device{Hub: "hub1.azure-devices.net", DeviceID: "sensor-042", Enabled: true}}
	p, err := d.PlanFor(r, d.Request{EventID: "e1", Source: "asset-system", Intent: d.IntentLost, RegistrationID: "sensor-042", Reason: "left on a train"}, nil)
	if err != nil {
		panic(err)
	}
	fmt.Print(p)
	// Output:
	// plan for lost (path group-member/symmetricKey/revoke)
	//   1. dps.create-blocking-enrollment dps/enrollments/sensor-042
	//      because member of a symmetric-key group: a disabled symmetric-key individual enrollment with the same registration id blocks it (DPS looks up individual enrollments first)
	//   2. hub.disable-device hub1.azure-devices.net/devices/sensor-042
	//      because lost: disable the hub identity (the hub checks no revocation list; disabled blocks every device-facing endpoint, and the identity stays as a record)
	//   note: never delete the blocking enrollment of sensor-042: the device would re-enroll through its group
}

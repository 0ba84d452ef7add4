package emulator

import "strings"

// reprovision decides where a registration goes and what it keeps, by the reprovisioning
// policy of the enrollment that admits the device (ReprovisionPolicy in the DPS spec;
// Microsoft's "IoT Hub Device reprovisioning concepts" and "How to reprovision devices"):
//
//   - the first registration of a registration id is an initial assignment to the hub the
//     enrollment picks;
//   - a later registration that the enrollment would send to another hub: with
//     updateHubAssignment false "the device will stay assigned to its current IoT hub";
//     otherwise "the device registration with the initial IoT hub will be removed", and with
//     migrateDeviceData the device's data ("twin, device capabilities, and device ID") moves
//     to the new hub ("Reprovision device and migrate current state"), while without it the
//     new identity starts from the enrollment's initial twin ("reset to initial state");
//   - a later registration into the same hub keeps the identity (assign refreshes its
//     credential).
//
// It removes the old identity when the hub changes, and returns what migrates (nil when
// nothing does). The caller holds d.mu.
func (d *dps) reprovision(en *enrollment, regID string, prev *registration) (target *hub, substatus string, migrated *device) {
	target = d.hubFor(en, regID)
	if prev == nil || prev.state.AssignedHub == "" {
		return target, "initialAssignment", nil
	}
	if strings.EqualFold(prev.state.AssignedHub, target.host) {
		return target, prev.state.Substatus, nil
	}
	old := d.e.hubByHost(prev.state.AssignedHub)
	rp := en.body.ReprovisionPolicy
	if rp != nil && !rp.UpdateHubAssignment {
		if old != nil {
			return old, prev.state.Substatus, nil
		}
		return target, prev.state.Substatus, nil
	}
	migrate := rp == nil || rp.MigrateDeviceData
	substatus = "deviceDataReset"
	if migrate {
		substatus = "deviceDataMigrated"
	}
	if old == nil {
		return target, substatus, nil
	}
	old.mu.Lock()
	defer old.mu.Unlock()
	od := old.devices[prev.state.DeviceID]
	delete(old.devices, prev.state.DeviceID)
	if migrate && od != nil {
		m := *od
		return target, substatus, &m
	}
	return target, substatus, nil
}

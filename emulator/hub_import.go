package emulator

import "fmt"

// deviceFromImport applies the identity part of one bulk item whose import mode writes the
// device (create, update, updateIfMatchETag) and returns the stored device. These modes
// REPLACE the identity with what the item carries, as the registry describes them:
//
//   - "existing information is overwritten with the provided input data" (the ImportMode
//     enumeration of the service SDK, for update and updateIfMatchETag);
//   - authentication "is optional and defaults to SAS if not provided. In that case,
//     primary/secondary access keys are auto-generated" (ExportImportDevice.authentication in
//     the registry spec, reference/specs/iothub-service.json, and the REST page "Bulk Create Or
//     Update Devices"), so an update without authentication turns an X.509 identity into a
//     SAS identity, and an update of a SAS identity without keys gets new keys;
//   - capabilities "is optional and defaults to no capability", status "is optional and
//     defaults to enabled" (the same REST page); deviceScope and parentScopes are what the
//     item says, nothing when it says nothing.
//
// The twin (tags, desired properties) changes only when the item carries twin data: the
// import article lets twin data ride along "optionally", updateTwin exists for the twin
// alone, and the service SDK's bulk update of Device objects (ExportImportDevice built from a
// Device) sends no twin data at all. UNCONFIRMED whether an update item without twin data
// could empty the twin; nothing documents that it does.
//
// Unlike PUT /devices/{id} (hub.put), nothing of the stored identity is kept but its
// generation id and twin: a client that wants to keep keys, thumbprints, capabilities or
// scopes must send them.
func deviceFromImport(it *exportImportDevice, old *device) (*device, error) {
	d := &device{id: it.ID}
	if old != nil {
		// Identity-independent state: the twin and the generation of this identity.
		d.generationID, d.twinVersion = old.generationID, old.twinVersion
		d.tags, d.desired, d.reported = old.tags, old.desired, old.reported
		d.statusUpdated = old.statusUpdated
	}
	d.status = it.Status
	switch d.status {
	case "":
		d.status = "enabled"
	case "enabled", "disabled":
	default:
		return nil, fmt.Errorf("status %q is not enabled or disabled", it.Status)
	}
	reason := ""
	if it.StatusReason != nil {
		reason = *it.StatusReason
	}
	if len(reason) > 128 {
		return nil, fmt.Errorf("statusReason is longer than 128 characters")
	}
	if old == nil || old.status != d.status || old.statusReason != reason {
		d.statusUpdated = nowUTC()
	}
	d.statusReason = reason
	// nil as the stored device: no key of the old identity survives an import.
	if err := setAuth(d, it.Authentication, nil); err != nil {
		return nil, err
	}
	if it.Capabilities != nil {
		d.iotEdge = it.Capabilities.IotEdge
	}
	d.deviceScope = it.DeviceScope
	d.parentScopes = it.ParentScopes
	if old == nil {
		d.generationID = newGenerationID()
		d.twinVersion = 1
	}
	d.etag = newDeviceEtag()
	return d, nil
}

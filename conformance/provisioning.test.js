// Devices provisioning with the official device SDK (HTTP transport), then refused. DPS refuses
// in two ways (emulator.js refusalOf): a 401 when the device's credential attests against no
// enrollment entry, and an accepted registration whose operation ends with status "disabled"
// when it attests against a disabled entry. The SDK has no case for "disabled": it fails the
// registration with SyntaxError('status is disabled') and the operation status in err.result.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const emu = require('./emulator.js');

test('a symmetric-key device provisions through a group, then a disabled individual enrollment blocks it', async () => {
  const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
  const svc = emu.provisioningService();
  const reg = emu.registry(0);
  const groupId = emu.unique('conf-skgrp');
  const registrationId = emu.unique('conf-sk-dev');

  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: groupId,
    attestation: { type: 'symmetricKey' },
    allocationPolicy: 'static',
    iotHubs: [emu.info().hubs[0].host],
  });
  const { responseBody: att } = await svc.getEnrollmentGroupAttestationMechanism(groupId);
  const deviceKey = emu.deriveKey(att.symmetricKey.primaryKey, registrationId);

  const device = emu.deviceClient(new SymmetricKeySecurityClient(registrationId, deviceKey));
  const result = await device.register();
  assert.equal(result.assignedHub, emu.info().hubs[0].host);
  assert.equal(result.deviceId, registrationId);

  const { responseBody: hubDevice } = await reg.get(registrationId);
  assert.equal(hubDevice.authentication.type, 'sas');
  assert.equal(hubDevice.authentication.symmetricKey.primaryKey, deviceKey);

  const { responseBody: state } = await svc.getDeviceRegistrationState(registrationId);
  assert.equal(state.status, 'assigned');
  assert.equal(state.assignedHub, emu.info().hubs[0].host);

  const q = svc.createEnrollmentGroupDeviceRegistrationStateQuery({ query: 'SELECT *' }, groupId);
  const { responseBody: states } = await q.next(q.continuationToken);
  assert.deepEqual(states.map((s) => s.registrationId), [registrationId]);

  // Block it: a disabled individual enrollment with the same registration id. Its keys are
  // generated, not the device's, so the device does not attest against it: 401.
  await svc.createOrUpdateIndividualEnrollment({ registrationId, attestation: { type: 'symmetricKey' }, provisioningStatus: 'disabled' });
  const again = emu.deviceClient(new SymmetricKeySecurityClient(registrationId, deviceKey));
  await assert.rejects(again.register(), (err) => {
    assert.deepEqual(emu.refusalOf(err), { kind: 'http 401', status: 401 }, `refused with 401, got ${err}`);
    return true;
  });
});

test('a device whose own enrollment or group is disabled: the registration ends with status disabled', async () => {
  const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
  const svc = emu.provisioningService();

  // An individual enrollment holding the device's key, disabled.
  const registrationId = emu.unique('conf-dis-dev');
  const key = crypto.randomBytes(32).toString('base64');
  await svc.createOrUpdateIndividualEnrollment({ registrationId, provisioningStatus: 'disabled',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: key } } });
  const device = emu.deviceClient(new SymmetricKeySecurityClient(registrationId, key));
  await assert.rejects(device.register(), (err) => {
    assert.ok(err instanceof SyntaxError, `the SDK reports an unknown status as a SyntaxError, got ${err}`);
    assert.equal(err.message, 'status is disabled');
    assert.equal(err.result.status, 'disabled');
    assert.equal(err.result.registrationState.status, 'disabled');
    assert.equal(err.result.registrationState.registrationId, registrationId);
    assert.equal(err.result.registrationState.assignedHub, undefined);
    assert.deepEqual(emu.refusalOf(err), { kind: 'disabled', status: 0 });
    return true;
  });

  // A member of a disabled symmetric-key group.
  const groupId = emu.unique('conf-dis-grp');
  await svc.createOrUpdateEnrollmentGroup({ enrollmentGroupId: groupId, attestation: { type: 'symmetricKey' }, provisioningStatus: 'disabled' });
  const { responseBody: att } = await svc.getEnrollmentGroupAttestationMechanism(groupId);
  const memberId = emu.unique('conf-dis-member');
  const member = emu.deviceClient(new SymmetricKeySecurityClient(memberId, emu.deriveKey(att.symmetricKey.secondaryKey, memberId)));
  await assert.rejects(member.register(), (err) => {
    assert.deepEqual(emu.refusalOf(err), { kind: 'disabled', status: 0 }, `refused as disabled, got ${err}`);
    return true;
  });
  // No hub identity came of either attempt.
  await assert.rejects(emu.registry(0).get(registrationId), (err) => emu.statusOf(err) === 404);
  await assert.rejects(emu.registry(0).get(memberId), (err) => emu.statusOf(err) === 404);
});

test('an X.509 device provisions through a group, then a disabled individual enrollment blocks it', async () => {
  const { X509Security } = require('azure-iot-security-x509');
  const svc = emu.provisioningService();
  const x = emu.x509Material();
  const groupId = emu.unique('conf-x509grp');
  const hub = emu.info().hubs[1];

  await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: groupId,
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: x.rootCert } } } },
    allocationPolicy: 'static',
    iotHubs: [hub.host],
  });

  const cert = { cert: x.deviceCertChain, key: x.deviceKey };
  const device = emu.deviceClient(new X509Security(x.deviceCN, cert));
  const result = await device.register();
  assert.equal(result.assignedHub, hub.host);
  assert.equal(result.deviceId, x.deviceCN);

  const { responseBody: hubDevice } = await emu.registry(1).get(x.deviceCN);
  assert.equal(hubDevice.authentication.type, 'certificateAuthority');

  // Block it with a disabled X.509 individual enrollment holding the leaf certificate: the
  // device attests against it, and the registration ends "disabled".
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: x.deviceCN,
    provisioningStatus: 'disabled',
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: x.deviceCert } } } },
  });
  const { responseBody: blocking } = await svc.getIndividualEnrollment(x.deviceCN);
  assert.equal(blocking.attestation.x509.clientCertificates.primary.info.subjectName, 'CN=' + x.deviceCN);

  const again = emu.deviceClient(new X509Security(x.deviceCN, cert));
  await assert.rejects(again.register(), (err) => {
    assert.deepEqual(emu.refusalOf(err), { kind: 'disabled', status: 0 }, `refused as disabled, got ${err}`);
    return true;
  });
  // The group itself is still enabled: created without a provisioningStatus, it reads as
  // null, which DPS takes for enabled (as recorded for enrollments sent without one).
  const { responseBody: group } = await svc.getEnrollmentGroup(groupId);
  assert.notEqual(group.provisioningStatus, 'disabled');
});

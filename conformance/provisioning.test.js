// Devices provisioning through enrollment groups with the official device SDK (HTTP
// transport), then blocked by a disabled individual enrollment.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
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

  // Block it: a disabled individual enrollment with the same registration id.
  await svc.createOrUpdateIndividualEnrollment({ registrationId, attestation: { type: 'symmetricKey' }, provisioningStatus: 'disabled' });
  const again = emu.deviceClient(new SymmetricKeySecurityClient(registrationId, deviceKey));
  await assert.rejects(again.register(), (err) => {
    assert.equal(emu.statusOf(err), 401, `refused with 401, got ${err}`);
    return true;
  });
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

  // Block it with a disabled X.509 individual enrollment holding the leaf certificate.
  await svc.createOrUpdateIndividualEnrollment({
    registrationId: x.deviceCN,
    provisioningStatus: 'disabled',
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: x.deviceCert } } } },
  });
  const { responseBody: blocking } = await svc.getIndividualEnrollment(x.deviceCN);
  assert.equal(blocking.attestation.x509.clientCertificates.primary.info.subjectName, 'CN=' + x.deviceCN);

  const again = emu.deviceClient(new X509Security(x.deviceCN, cert));
  await assert.rejects(again.register(), (err) => {
    assert.equal(emu.statusOf(err), 401, `refused with 401, got ${err}`);
    return true;
  });
  // The group itself is still enabled.
  const { responseBody: group } = await svc.getEnrollmentGroup(groupId);
  assert.equal(group.provisioningStatus, 'enabled');
});

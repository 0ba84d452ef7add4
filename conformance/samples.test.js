// What Microsoft's official Node samples send, sent the way they send it (the samples of
// Azure/azure-iot-sdk-node: provisioning/service/samples at e940876e, and the service
// (azure-iothub) samples in service/samples before their removal in aac592d9). Each test
// names the sample it follows; ids are unique so the tests share the emulator.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const emu = require('./emulator.js');

// cb turns a callback-style SDK call into a promise (the samples use callbacks, and
// runBulkEnrollmentOperation settles only with one).
function cb(fn) {
  return new Promise((resolve, reject) => fn((err, result, response) => (err ? reject(err) : resolve({ result, response }))));
}

// drain pages a Query with next(callback), as query.js and twin_query.js do.
async function drain(query, nextFn = 'next') {
  const all = [];
  let pages = 0;
  do {
    const { result } = await cb((done) => query[nextFn](done));
    all.push(...result);
    pages++;
    assert.ok(pages < 1000, 'paging ends');
  } while (query.hasMoreResults);
  return { all, pages };
}

test('sample query.js: the three DPS queries with {"query": "*"}', async () => {
  const svc = emu.provisioningService();
  const groupId = emu.unique('sample-q-grp');
  const ids = [];
  for (let i = 0; i < 3; i++) {
    const id = emu.unique('sample-q');
    ids.push(id);
    await svc.createOrUpdateIndividualEnrollment({ registrationId: id, attestation: { type: 'symmetricKey' } });
  }
  const { responseBody: group } = await svc.createOrUpdateEnrollmentGroup({ enrollmentGroupId: groupId, attestation: { type: 'symmetricKey' } });
  assert.ok(group.attestation.symmetricKey.primaryKey, 'the group PUT echoes the generated keys');

  // A member registers, so that the group's registration query has something to page.
  const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
  const member = emu.unique('sample-q-dev');
  const device = emu.deviceClient(new SymmetricKeySecurityClient(member, emu.deriveKey(group.attestation.symmetricKey.primaryKey, member)));
  await device.register();

  const enrollments = await drain(svc.createIndividualEnrollmentQuery({ query: '*' }, 10));
  for (const id of ids) assert.ok(enrollments.all.some((e) => e.registrationId === id), `query "*" returned ${id}`);
  const groups = await drain(svc.createEnrollmentGroupQuery({ query: '*' }, 10));
  assert.ok(groups.all.some((g) => g.enrollmentGroupId === groupId));
  const states = await drain(svc.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, groupId, 10));
  assert.deepEqual(states.all.map((s) => s.registrationId), [member]);
  assert.equal(states.all[0].status, 'assigned');
  for (const id of ids) await svc.deleteIndividualEnrollment(id);
});

test('sample run_bulk_operation.js: a duplicate refuses the call, an invalid item fails alone', async () => {
  const svc = emu.provisioningService();
  const first = { registrationId: emu.unique('sample-first'), provisioningStatus: 'disabled', attestation: { type: 'tpm', tpm: { endorsementKey: 'a' } } };
  const second = { registrationId: emu.unique('sample-second'), provisioningStatus: 'disabled', attestation: { type: 'tpm', tpm: { endorsementKey: 'a' } } };
  const third = { registrationId: emu.unique('sample-third'), provisioningStatus: 'disabled', attestation: { type: 'tpm' } };
  // "The value of the result operation should be undefined": the call is refused.
  await assert.rejects(cb((done) => svc.runBulkEnrollmentOperation({ mode: 'create', enrollments: [first, second, second] }, done)),
    (err) => emu.statusOf(err) === 400 || /argument/i.test(err.name));
  // "The err parameter should be null ... the result should indicate the third enrollment was bad."
  const { result } = await cb((done) => svc.runBulkEnrollmentOperation({ mode: 'create', enrollments: [first, second, third] }, done));
  assert.equal(result.isSuccessful, false);
  assert.deepEqual(result.errors.map((e) => e.registrationId), [third.registrationId]);
  const { responseBody: one } = await svc.getIndividualEnrollment(first.registrationId);
  assert.equal(one.attestation.tpm.endorsementKey, 'a', 'a TPM endorsement key is not a secret: GET returns it');
  assert.equal(one.provisioningStatus, 'disabled');
  const { result: deleted } = await cb((done) => svc.runBulkEnrollmentOperation({ mode: 'delete', enrollments: [first, second] }, done));
  assert.equal(deleted.isSuccessful, true);
});

test('samples create_individual_*_enrollment.js: TPM, and symmetric key with custom allocation', async () => {
  const svc = emu.provisioningService();
  const tpmId = emu.unique('sample-tpm');
  const { result: tpm } = await cb((done) => svc.createOrUpdateIndividualEnrollment({
    registrationId: tpmId, attestation: { type: 'tpm', tpm: { endorsementKey: crypto.randomBytes(64).toString('base64') } },
  }, done));
  assert.equal(tpm.registrationId, tpmId);
  assert.equal(tpm.attestation.type, 'tpm');

  // The sample sends "deviceID" (sic), which the service ignores, and a custom allocation.
  const symId = emu.unique('sample-sym');
  const { responseBody: sym } = await svc.createOrUpdateIndividualEnrollment({
    registrationId: symId, deviceID: symId, attestation: { type: 'symmetricKey' }, provisioningStatus: 'enabled',
    allocationPolicy: 'custom', customAllocationDefinition: { webhookUrl: 'https://example.invalid/api/allocate', apiVersion: '2019-03-31' },
  });
  assert.equal(sym.allocationPolicy, 'custom');
  assert.equal(sym.customAllocationDefinition.apiVersion, '2019-03-31');
  assert.ok(sym.attestation.symmetricKey.primaryKey);
  await svc.deleteIndividualEnrollment(tpmId);
  await svc.deleteIndividualEnrollment(symId);
});

test('sample create_enrollment_group.js: an X.509 group written back as it was answered', async () => {
  const svc = emu.provisioningService();
  const x = emu.x509Material();
  const groupId = emu.unique('sample-x509grp');
  const { responseBody: created } = await svc.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: groupId,
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: x.spareRootCert } } } },
    provisioningStatus: 'disabled',
  });
  const certs = created.attestation.x509.signingCertificates;
  assert.ok(!certs.primary.certificate, 'the certificate is not echoed');
  assert.deepEqual(certs.secondary.info, certs.primary.info, 'a secondary never written echoes the primary');
  // The sample enables the group by sending back the answer itself (info only, etag set).
  created.provisioningStatus = 'enabled';
  const { responseBody: updated } = await svc.createOrUpdateEnrollmentGroup(created);
  assert.equal(updated.provisioningStatus, 'enabled');
  assert.equal(updated.attestation.x509.signingCertificates.primary.info.sha1Thumbprint, certs.primary.info.sha1Thumbprint);
  await svc.deleteEnrollmentGroup(groupId);
});

test('samples registry_sample.js and create_device_with_cert.js: list, create, get, delete', async () => {
  const reg = emu.registry(0);
  const { result: list } = await cb((done) => reg.list(done));
  assert.ok(Array.isArray(list));
  const id = emu.unique('sample-device');
  const { result: created } = await cb((done) => reg.create({ deviceId: id }, done));
  assert.equal(created.deviceId, id);
  const { result: got } = await cb((done) => reg.get(id, done));
  assert.equal(got.authentication.symmetricKey.primaryKey, created.authentication.symmetricKey.primaryKey);
  await cb((done) => reg.delete(id, done));

  const certId = emu.unique('sample-cert-device');
  const thumb = () => crypto.randomBytes(20).toString('hex').toUpperCase();
  await cb((done) => reg.create({ deviceId: certId, status: 'enabled', authentication: { x509Thumbprint: { primaryThumbprint: thumb(), secondaryThumbprint: thumb() } } }, done));
  const { result: certDevice } = await cb((done) => reg.get(certId, done));
  assert.equal(certDevice.authentication.type, 'selfSigned');
  await cb((done) => reg.delete(certId, done));
});

test('sample registry_addUpdateRemoveDevicesSample.js: bulk add with keys, update, remove', async () => {
  const reg = emu.registry(1);
  const key = () => Buffer.from(crypto.randomUUID()).toString('base64');
  const ids = [emu.unique('sample-bulk'), emu.unique('sample-bulk'), emu.unique('sample-bulk')];
  const add = ids.map((deviceId) => ({ deviceId, status: 'disabled', authentication: { symmetricKey: { primaryKey: key(), secondaryKey: key() } } }));
  const { result: added } = await cb((done) => reg.addDevices(add, done));
  assert.equal(added.isSuccessful, true);
  assert.deepEqual(added.errors, []);
  const { result: updated } = await cb((done) => reg.updateDevices(ids.map((deviceId) => ({ deviceId, status: 'enabled' })), true, done));
  assert.equal(updated.isSuccessful, true);
  const { result: d0 } = await cb((done) => reg.get(ids[0], done));
  assert.equal(d0.status, 'enabled');
  const { result: removed } = await cb((done) => reg.removeDevices(ids.map((deviceId) => ({ deviceId })), true, done));
  assert.equal(removed.isSuccessful, true);
});

test('samples twin.js and twin_query.js: read a twin, patch it, patch it with its etag, query', async () => {
  const reg = emu.registry(0);
  const id = emu.unique('sample-twin');
  await cb((done) => reg.create({ deviceId: id }, done));
  const { result: twin } = await cb((done) => reg.getTwin(id, done));
  assert.equal(twin.deviceId, id);
  const before = twin.etag;
  // twin.update sends PATCH /twins/{id} with If-Match: the twin's etag, and updates the
  // Twin object in place.
  const { result: patched } = await cb((done) => twin.update({ tags: { city: 'Redmond' }, properties: { desired: { telemetryInterval: 1000 } } }, done));
  assert.equal(patched.tags.city, 'Redmond');
  assert.equal(patched.properties.desired.telemetryInterval, 1000);
  assert.notEqual(patched.etag, before);
  const stale = patched.etag;
  const { result: again } = await cb((done) => reg.updateTwin(patched.deviceId, { properties: { desired: { telemetryInterval: 2000 } } }, patched.etag, done));
  assert.equal(again.properties.desired.telemetryInterval, 2000);
  assert.equal(again.tags.city, 'Redmond', 'a patch leaves what it does not name');
  // The etag of before the last patch is stale now.
  await assert.rejects(cb((done) => reg.updateTwin(id, { tags: { city: 'Oslo' } }, stale, done)),
    (err) => emu.statusOf(err) === 412 || /precondition/i.test(err.name));

  const query = reg.createQuery('SELECT * FROM devices', 100);
  const { all } = await drain(query, 'nextAsTwin');
  const mine = all.find((t) => t.deviceId === id);
  assert.ok(mine, 'twin_query.js sees the device');
  assert.equal(mine.tags.city, 'Redmond');
  await cb((done) => reg.delete(id, done));
});

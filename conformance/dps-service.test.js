// The DPS service API driven by azure-iot-provisioning-service.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const emu = require('./emulator.js');

// runBulk calls runBulkEnrollmentOperation with a callback: in this SDK version its promise
// form never settles (the callback is only invoked when one is passed).
function runBulk(svc, op) {
  return new Promise((resolve, reject) => {
    svc.runBulkEnrollmentOperation(op, (err, result) => (err ? reject(err) : resolve({ responseBody: result })));
  });
}

test('individual enrollments: create, read, update with etag, query with paging, delete', async () => {
  const svc = emu.provisioningService();
  const prefix = emu.unique('conf-ind');
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const id = `${prefix}-${i}`;
    ids.push(id);
    const { responseBody } = await svc.createOrUpdateIndividualEnrollment({
      registrationId: id,
      attestation: { type: 'symmetricKey' },
      provisioningStatus: 'enabled',
    });
    assert.equal(responseBody.registrationId, id);
    assert.ok(responseBody.etag, 'created enrollment has an etag');
    // The PUT answer carries the keys DPS generated (recorded: azure-sdk-for-python's
    // test_enrollment_symmetrickey_lifecycle); GET and queries never do.
    assert.ok(responseBody.attestation.symmetricKey.primaryKey, 'generated keys are echoed by the PUT');
  }

  // Creating again without an etag is a conflict.
  await assert.rejects(
    svc.createOrUpdateIndividualEnrollment({ registrationId: ids[0], attestation: { type: 'symmetricKey' } }),
    (err) => emu.statusOf(err) === 409 || /conflict/i.test(err.name + err.message),
  );

  // Read, then update with the etag; ids are case-insensitive.
  const { responseBody: got } = await svc.getIndividualEnrollment(ids[0].toUpperCase());
  assert.equal(got.registrationId, ids[0]);
  assert.ok(!got.attestation.symmetricKey, 'GET leaves the keys out');
  assert.equal(got.registrationState.status, 'unassigned', 'an enrollment never registered reports an unassigned state');
  got.provisioningStatus = 'disabled';
  const { responseBody: updated } = await svc.createOrUpdateIndividualEnrollment(got);
  assert.equal(updated.provisioningStatus, 'disabled');
  assert.notEqual(updated.etag, got.etag);

  // The old etag is now stale.
  await assert.rejects(
    svc.createOrUpdateIndividualEnrollment({ ...got, provisioningStatus: 'enabled' }),
    (err) => emu.statusOf(err) === 412 || /precondition/i.test(err.name + err.message),
  );

  // The keys are readable through the attestation mechanism only.
  const { responseBody: att } = await svc.getIndividualEnrollmentAttestationMechanism(ids[1]);
  assert.ok(att.symmetricKey.primaryKey);

  // Query with a page size of 2 walks every page by continuation token.
  const query = svc.createIndividualEnrollmentQuery({ query: 'SELECT *' }, 2);
  const seen = [];
  let pages = 0;
  while (query.hasMoreResults) {
    // With promises, next() must be given the token: without one it restarts the query.
    const { responseBody } = await query.next(query.continuationToken);
    assert.ok(responseBody.length <= 2, 'page size honoured');
    pages++;
    assert.ok(pages < 1000, 'paging ends');
    seen.push(...responseBody.map((e) => e.registrationId));
  }
  for (const id of ids) assert.ok(seen.includes(id), `query returned ${id}`);
  assert.ok(pages >= 3);
  assert.equal(new Set(seen).size, seen.length, 'no enrollment returned twice');

  // Delete with a stale etag fails; with the current one it succeeds; then it is gone.
  await assert.rejects(svc.deleteIndividualEnrollment(ids[0], got.etag), (err) => emu.statusOf(err) === 412 || /precondition/i.test(err.name));
  await svc.deleteIndividualEnrollment(ids[0], updated.etag);
  await assert.rejects(svc.getIndividualEnrollment(ids[0]), (err) => emu.statusOf(err) === 404 || /notfound/i.test(err.name));
  for (const id of ids.slice(1)) await svc.deleteIndividualEnrollment(id);
});

test('bulk enrollment operations', async () => {
  const svc = emu.provisioningService();
  const prefix = emu.unique('conf-bulk');
  const enrollments = [];
  for (let i = 0; i < 10; i++) {
    enrollments.push({ registrationId: `${prefix}-${i}`, attestation: { type: 'symmetricKey' } });
  }
  const { responseBody: created } = await runBulk(svc, { mode: 'create', enrollments });
  assert.equal(created.isSuccessful, true);
  const { responseBody: again } = await runBulk(svc, { mode: 'create', enrollments: enrollments.slice(0, 2) });
  assert.equal(again.isSuccessful, false);
  assert.equal(again.errors.length, 2);
  assert.equal(again.errors[0].registrationId, enrollments[0].registrationId);

  // More than 10 items is refused.
  const eleven = [...enrollments, { registrationId: `${prefix}-x`, attestation: { type: 'symmetricKey' } }];
  await assert.rejects(runBulk(svc, { mode: 'create', enrollments: eleven }), (err) => emu.statusOf(err) === 400 || /argument|badrequest/i.test(err.name));

  const { responseBody: deleted } = await runBulk(svc, { mode: 'delete', enrollments });
  assert.equal(deleted.isSuccessful, true);
  await assert.rejects(svc.getIndividualEnrollment(enrollments[3].registrationId), (err) => emu.statusOf(err) === 404 || /notfound/i.test(err.name));
});

test('enrollment groups: create, read, update with etag, query with paging, delete', async () => {
  const svc = emu.provisioningService();
  const prefix = emu.unique('conf-grp');
  const x509 = emu.x509Material();
  const ids = [];
  for (let i = 0; i < 3; i++) {
    const id = `${prefix}-${i}`;
    ids.push(id);
    const group = i === 0
      ? { enrollmentGroupId: id, attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: x509.spareRootCert } } } } }
      : { enrollmentGroupId: id, attestation: { type: 'symmetricKey' } };
    const { responseBody } = await svc.createOrUpdateEnrollmentGroup(group);
    assert.equal(responseBody.enrollmentGroupId, id);
  }
  const { responseBody: g0 } = await svc.getEnrollmentGroup(ids[0]);
  const info = g0.attestation.x509.signingCertificates.primary.info;
  assert.ok(!g0.attestation.x509.signingCertificates.primary.certificate, 'certificate is not echoed');
  assert.equal(info.subjectName, 'CN=' + x509.spareRootCN);
  assert.match(info.sha1Thumbprint, /^[0-9A-F]{40}$/);

  // Update without re-sending the certificate keeps it (GET-modify-PUT with the etag).
  g0.provisioningStatus = 'disabled';
  const { responseBody: g0u } = await svc.createOrUpdateEnrollmentGroup(g0);
  assert.equal(g0u.provisioningStatus, 'disabled');
  assert.equal(g0u.attestation.x509.signingCertificates.primary.info.sha1Thumbprint, info.sha1Thumbprint);
  await assert.rejects(svc.createOrUpdateEnrollmentGroup(g0), (err) => emu.statusOf(err) === 412 || /precondition/i.test(err.name));

  const query = svc.createEnrollmentGroupQuery({ query: 'SELECT *' }, 1);
  const seen = [];
  for (let pages = 0; query.hasMoreResults; pages++) {
    assert.ok(pages < 1000, 'paging ends');
    const { responseBody } = await query.next(query.continuationToken);
    assert.ok(responseBody.length <= 1);
    seen.push(...responseBody.map((g) => g.enrollmentGroupId));
  }
  for (const id of ids) assert.ok(seen.includes(id), `query returned ${id}`);

  for (const id of ids) await svc.deleteEnrollmentGroup(id);
  await assert.rejects(svc.getEnrollmentGroup(ids[1]), (err) => emu.statusOf(err) === 404 || /notfound/i.test(err.name));
});

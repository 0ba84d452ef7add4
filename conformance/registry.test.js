// The IoT Hub registry API driven by azure-iothub.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const emu = require('./emulator.js');

test('device CRUD', async () => {
  const reg = emu.registry(0);
  const id = emu.unique('conf-dev');
  const { responseBody: created } = await reg.create({ deviceId: id });
  assert.equal(created.deviceId, id);
  assert.equal(created.authentication.type, 'sas');
  assert.ok(created.authentication.symmetricKey.primaryKey, 'keys generated');

  await assert.rejects(reg.create({ deviceId: id }), (err) => emu.statusOf(err) === 409 || /alreadyexist/i.test(err.name));

  const { responseBody: got } = await reg.get(id);
  assert.equal(got.etag, created.etag);
  // Device ids are case-sensitive.
  await assert.rejects(reg.get(id.toUpperCase()), (err) => emu.statusOf(err) === 404 || /notfound/i.test(err.name));

  const { responseBody: updated } = await reg.update({ deviceId: id, status: 'disabled', statusReason: 'conformance' });
  assert.equal(updated.status, 'disabled');
  assert.equal(updated.statusReason, 'conformance');
  assert.notEqual(updated.etag, created.etag);

  const { responseBody: twin } = await reg.getTwin(id);
  assert.equal(twin.deviceId, id);

  await reg.delete(id);
  await assert.rejects(reg.get(id), (err) => emu.statusOf(err) === 404 || /notfound/i.test(err.name));
  await assert.rejects(reg.delete(id), (err) => emu.statusOf(err) === 404 || /notfound/i.test(err.name));
});

test('bulk add, update and remove', async () => {
  const reg = emu.registry(1);
  const prefix = emu.unique('conf-bulk');
  const devices = [];
  for (let i = 0; i < 100; i++) devices.push({ deviceId: `${prefix}-${i}` });

  const { responseBody: added } = await reg.addDevices(devices);
  assert.equal(added.isSuccessful, true);
  assert.deepEqual(added.errors, []);

  // Adding two of them again fails per item, with the documented error code.
  await assert.rejects(reg.addDevices(devices.slice(0, 2)), (err) => {
    const body = JSON.parse(err.responseBody);
    assert.equal(body.isSuccessful, false);
    assert.equal(body.errors.length, 2);
    assert.equal(body.errors[0].errorCode, 'DeviceAlreadyExists');
    return true;
  });

  const { responseBody: upd } = await reg.updateDevices(devices.slice(0, 10).map((d) => ({ ...d, status: 'disabled' })), true);
  assert.equal(upd.isSuccessful, true);
  const { responseBody: d0 } = await reg.get(devices[0].deviceId);
  assert.equal(d0.status, 'disabled');

  // Query with paging sees every device exactly once.
  const query = reg.createQuery(`SELECT * FROM devices WHERE status = 'disabled'`, 4);
  const seen = [];
  for (let pages = 0; query.hasMoreResults; pages++) {
    assert.ok(pages < 1000, 'paging ends');
    const { result: responseBody } = await query.nextAsTwin();
    assert.ok(responseBody.length <= 4);
    seen.push(...responseBody.map((t) => t.deviceId).filter((id) => id.startsWith(prefix)));
  }
  assert.equal(seen.length, 10);
  assert.equal(new Set(seen).size, 10);

  const { responseBody: removed } = await reg.removeDevices(devices, true);
  assert.equal(removed.isSuccessful, true);
  await assert.rejects(reg.get(devices[50].deviceId), (err) => emu.statusOf(err) === 404 || /notfound/i.test(err.name));
});

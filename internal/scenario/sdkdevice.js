// One device registering with Microsoft's official device SDK (azure-iot-provisioning-device
// over HTTP), through the emulator helpers of the conformance suite. Run by sdk_test.go with
// EMULATOR_INFO set and the device in SDK_DEVICE (JSON: registrationId and either key, or
// cert and certKey). Prints one JSON line: {"ok":true,"assignedHub":...}, or
// {"ok":false,"refused":<how>,"error":...} where <how> is "disabled" (the operation ended with
// status disabled), "http 401" (or 403, 404), or "" when the SDK failed for another reason.
'use strict';

const emu = require('../../conformance/emulator.js');

async function main() {
  const dev = JSON.parse(process.env.SDK_DEVICE);
  let security;
  if (dev.key) {
    const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
    security = new SymmetricKeySecurityClient(dev.registrationId, dev.key);
  } else {
    const { X509Security } = require('azure-iot-security-x509');
    security = new X509Security(dev.registrationId, { cert: dev.cert, key: dev.certKey });
  }
  try {
    const result = await emu.deviceClient(security).register();
    console.log(JSON.stringify({ ok: true, assignedHub: result.assignedHub, deviceId: result.deviceId }));
  } catch (err) {
    const refusal = emu.refusalOf(err);
    console.log(JSON.stringify({ ok: false, refused: refusal ? refusal.kind : '', error: String(err && err.message || err) }));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});

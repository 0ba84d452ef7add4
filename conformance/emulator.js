// Points Microsoft's official Azure IoT Node SDKs at the emulator. The SDKs always speak
// HTTPS to the real host names on port 443; an https.Agent subclass sends their TCP
// connections to the emulator's loopback port instead and trusts the emulator's CA, keeping
// the real host name for SNI and the Host header. Nothing in the SDKs is patched.
//
// The Go test conformance_test.go starts the emulator and passes its Info (the JSON that
// cmd/iotemulator prints) in EMULATOR_INFO, and generated X.509 material in EMULATOR_X509.
'use strict';

const fs = require('node:fs');
const https = require('node:https');
const tls = require('node:tls');
const crypto = require('node:crypto');

function info() {
  const raw = process.env.EMULATOR_INFO;
  if (!raw) {
    throw new Error('EMULATOR_INFO is not set: run this suite through `go test ./conformance/`');
  }
  return JSON.parse(raw);
}

function x509Material() {
  const raw = process.env.EMULATOR_X509;
  if (!raw) {
    throw new Error('EMULATOR_X509 is not set: run this suite through `go test ./conformance/`');
  }
  return JSON.parse(raw);
}

class EmulatorAgent extends https.Agent {
  constructor(emu) {
    super({ keepAlive: false });
    const [host, port] = splitAddr(emu.addr);
    this.emuHost = host;
    this.emuPort = port;
    this.ca = fs.readFileSync(emu.caFile);
  }

  createConnection(options, callback) {
    return tls.connect({
      ...options,
      host: this.emuHost,
      port: this.emuPort,
      ca: this.ca,
      servername: options.servername || options.host,
    }, callback);
  }
}

function splitAddr(addr) {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

function agent() {
  return new EmulatorAgent(info());
}

// registry returns an azure-iothub Registry for hub i.
function registry(i = 0) {
  const { Registry } = require('azure-iothub');
  const r = Registry.fromConnectionString(info().hubs[i].connectionString);
  // The Registry sets its own keep-alive agent in its constructor, so ours goes in after.
  r._restApiClient.setOptions({ http: { agent: agent() } });
  return r;
}

// provisioningService returns an azure-iot-provisioning-service client for the DPS.
function provisioningService() {
  const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
  const c = ProvisioningServiceClient.fromConnectionString(info().dps.connectionString);
  c._restApiClient.setOptions({ http: { agent: agent() } });
  return c;
}

// deviceClient returns a ProvisioningDeviceClient on the HTTP transport for a security client.
function deviceClient(securityClient) {
  const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
  const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
  const { Http: HttpBase } = require('azure-iot-http-base');
  const base = new HttpBase();
  base.setOptions({ http: { agent: agent() } });
  const emu = info();
  return ProvisioningDeviceClient.create(emu.dps.deviceHost, emu.dps.idScope, new ProvisioningHttp(base), securityClient);
}

// deriveKey is the documented derivation of a group member's key.
function deriveKey(groupKey, registrationId) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

// unique returns an id unlikely to collide with other tests sharing the emulator.
function unique(prefix) {
  return prefix + '-' + crypto.randomBytes(4).toString('hex');
}

// statusOf returns the HTTP status carried by an SDK error.
function statusOf(err) {
  if (!err) return undefined;
  if (err.response && err.response.statusCode) return err.response.statusCode;
  if (err.statusCode) return err.statusCode;
  return undefined;
}

// refusalOf says how DPS refused a registration the device SDK reported as failed, or returns
// undefined when err is not a refusal. DPS refuses in two ways: an HTTP error answer (401 when
// the credential attests against no enrollment entry), or an accepted registration whose
// operation ends with status "disabled" (the credential attests against a disabled entry; the
// result table of Microsoft's custom allocation tutorial). The Node SDK has no case for
// "disabled": its polling state machine fails with SyntaxError('status is disabled') and puts
// the operation status in err.result, with err.response the poll's 200 answer.
function refusalOf(err) {
  if (!err) return undefined;
  const result = err.result;
  if (result && typeof result.status === 'string' && result.status.toLowerCase() !== 'assigned' &&
      !(err.response && err.response.statusCode >= 300)) {
    return { kind: result.status.toLowerCase(), status: 0 };
  }
  const status = statusOf(err);
  if (status === 401 || status === 403 || status === 404) {
    return { kind: 'http ' + status, status };
  }
  return undefined;
}

module.exports = { info, x509Material, registry, provisioningService, deviceClient, deriveKey, unique, statusOf, refusalOf };

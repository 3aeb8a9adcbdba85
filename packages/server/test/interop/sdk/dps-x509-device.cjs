'use strict';
// A device application provisioning with an X.509 certificate the way the Azure IoT docs show it: the official
// azure-iot-provisioning-device + -http or -mqtt + azure-iot-security-x509 packages (X509Security(registrationId,
// { cert, key })), then (optionally) a connection to the assigned hub with the same certificate
// (azure-iot-device + azure-iot-device-mqtt, `x509=true` + setOptions({ cert, key })) and a twin read.
// Run with NODE_EXTRA_CA_CERTS=<test CA> (the provisioning transports have no CA option).
// argv[2]: path of a JSON file: array of steps { name, transport: 'http'|'mqtt', host, idScope, registrationId,
// cert (PEM: leaf first, then the intermediates to send), key (PEM), connect? }.
// Prints one JSON line per step: { name, ok, ms, result? | error?, twin? }.
const { readFileSync } = require('node:fs');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { X509Security } = require('azure-iot-security-x509');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const steps = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const report = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const REGISTER_TIMEOUT_MS = 45000;
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms).unref())]);

async function run(step) {
  const security = new X509Security(step.registrationId, { cert: step.cert, key: step.key });
  const transport = step.transport === 'mqtt' ? new ProvisioningMqtt() : new ProvisioningHttp();
  const client = ProvisioningDeviceClient.create(step.host, step.idScope, transport, security);
  const result = await withTimeout(client.register(), REGISTER_TIMEOUT_MS, 'register');
  const out = { name: step.name, ok: true, result };
  if (step.connect) {
    // With x509=true the SDK dials HostName itself (GatewayHostName is ignored): the hub listens on 8883.
    const device = Client.fromConnectionString(`HostName=${result.assignedHub};DeviceId=${result.deviceId};x509=true`, Mqtt);
    device.setOptions({ cert: step.cert, key: step.key });
    try {
      await withTimeout(device.open(), 15000, 'open');
      const twin = await withTimeout(device.getTwin(), 15000, 'getTwin');
      out.twin = { desired: { ...twin.properties.desired } };
    } finally {
      await withTimeout(device.close(), 5000, 'close').catch(() => undefined);
    }
  }
  return out;
}

(async () => {
  for (const step of steps) {
    const started = Date.now();
    try {
      report({ ...(await run(step)), ms: Date.now() - started });
    } catch (e) {
      report({
        name: step.name,
        ok: false,
        ms: Date.now() - started,
        error: { name: e && e.name, message: e && e.message, ctor: e && e.constructor && e.constructor.name, result: e && e.result },
      });
    }
  }
})().then(
  () => process.exit(0),
  (e) => {
    report({ name: 'fatal', ok: false, error: { message: String(e) } });
    process.exit(1);
  },
);

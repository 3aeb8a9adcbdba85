'use strict';
// A device application written the way the Azure IoT docs show it: provision over HTTPS with the official
// azure-iot-provisioning-device(-http) + azure-iot-security-symmetric-key packages, then connect to the assigned hub
// with azure-iot-device + azure-iot-device-mqtt and read the twin. Run with NODE_EXTRA_CA_CERTS=<test CA>.
// argv[2]: JSON array of steps { name, host, idScope, registrationId, key, connect?, payload? }.
// Prints one JSON line per step: { name, ok, result? | error? }.
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const steps = JSON.parse(process.argv[2]);
const report = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms).unref())]);

async function run(step) {
  const security = new SymmetricKeySecurityClient(step.registrationId, step.key);
  const client = ProvisioningDeviceClient.create(step.host, step.idScope, new ProvisioningHttp(), security);
  if (step.payload) client.setProvisioningPayload(step.payload);
  const result = await withTimeout(client.register(), 20000, 'register');
  const out = { name: step.name, ok: true, result };
  if (step.connect) {
    const cs = `HostName=${result.assignedHub};DeviceId=${result.deviceId};SharedAccessKey=${step.key}`;
    const device = Client.fromConnectionString(cs, Mqtt);
    try {
      await withTimeout(device.open(), 15000, 'open');
      const twin = await withTimeout(device.getTwin(), 15000, 'getTwin');
      const desired = { ...twin.properties.desired };
      out.twin = { desired };
    } finally {
      await withTimeout(device.close(), 5000, 'close').catch(() => undefined);
    }
  }
  return out;
}

(async () => {
  for (const step of steps) {
    try {
      report(await run(step));
    } catch (e) {
      report({ name: step.name, ok: false, error: { name: e && e.name, message: e && e.message, ctor: e && e.constructor && e.constructor.name, result: e && e.result } });
    }
  }
})().then(
  () => process.exit(0),
  (e) => {
    report({ name: 'fatal', ok: false, error: { message: String(e) } });
    process.exit(1);
  },
);

'use strict';
// A device application written the way the Azure IoT docs show it, provisioning over MQTT: the official
// azure-iot-provisioning-device + azure-iot-provisioning-device-mqtt + azure-iot-security-symmetric-key packages,
// then (optionally) a connection to the assigned hub with azure-iot-device + azure-iot-device-mqtt and a twin read.
// Run with NODE_EXTRA_CA_CERTS=<test CA> (the provisioning transports have no CA option).
// argv[2]: JSON array of steps { name, host, idScope, registrationId, key, connect?, payload? }; `host` may be
// `host:port` (the MQTT transport dials mqtts://{host}).
// Prints one JSON line per step: { name, ok, ms, result? | error?, twin? }.
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { readTwin, runDeviceSteps, withTimeout } = require('./steps.cjs');

const steps = JSON.parse(process.argv[2]);
// Longer than the SDK's own 30 s request timeout, so a server that never answers shows up as the SDK's TimeoutError.
const REGISTER_TIMEOUT_MS = 45000;

async function run(step) {
  const security = new SymmetricKeySecurityClient(step.registrationId, step.key);
  const client = ProvisioningDeviceClient.create(step.host, step.idScope, new ProvisioningMqtt(), security);
  if (step.payload) client.setProvisioningPayload(step.payload);
  const result = await withTimeout(client.register(), REGISTER_TIMEOUT_MS, 'register');
  const out = { name: step.name, ok: true, result };
  if (step.connect) {
    const cs = `HostName=${result.assignedHub};DeviceId=${result.deviceId};SharedAccessKey=${step.key}`;
    out.twin = await readTwin(Client.fromConnectionString(cs, Mqtt));
  }
  return out;
}

runDeviceSteps(steps, run);

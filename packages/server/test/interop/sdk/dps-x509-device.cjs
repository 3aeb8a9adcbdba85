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
const { readTwin, runDeviceSteps, withTimeout } = require('./steps.cjs');

const steps = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const REGISTER_TIMEOUT_MS = 45000;

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
    out.twin = await readTwin(device);
  }
  return out;
}

runDeviceSteps(steps, run);

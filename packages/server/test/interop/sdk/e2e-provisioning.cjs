'use strict';
// End-to-end provisioning as users do it, against a running `homing start`:
// the operator creates an enrollment group with azure-iot-provisioning-service, devices register with
// azure-iot-provisioning-device(-http) + azure-iot-security-symmetric-key using keys derived from the group key,
// then connect to their assigned hub with azure-iot-device(-mqtt); the back-end checks the hub with azure-iothub.
// Run with NODE_EXTRA_CA_CERTS=<homing ca.pem>; argv[2] = connection.json contents.
// Prints one JSON line per step: {"step": "...", "ok": true|false, ...}.
const crypto = require('node:crypto');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: ProvisioningHttp } = require('azure-iot-provisioning-device-http');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Registry } = require('azure-iothub');
const { report, withTimeout, derive, step } = require('./steps.cjs');

const conn = JSON.parse(process.argv[2]);

async function main() {
  const service = ProvisioningServiceClient.fromConnectionString(conn.dps.serviceConnectionString);
  const groupId = `e2e-${crypto.randomBytes(3).toString('hex')}`;
  let groupKey;
  const results = [];

  await step('create enrollment group', async () => {
    const res = await withTimeout(service.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: groupId,
      attestation: { type: 'symmetricKey', symmetricKey: {} },
      provisioningStatus: 'enabled',
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
      initialTwin: { tags: { fleet: 'e2e' }, properties: { desired: { mode: 'eco' } } },
      capabilities: { iotEdge: false },
    }), 20000, 'create group');
    groupKey = res.responseBody.attestation.symmetricKey.primaryKey;
    return { hasKey: typeof groupKey === 'string' && groupKey.length > 0, etag: Boolean(res.responseBody.etag) };
  });

  await step('register devices', async () => {
    for (let i = 0; i < 6; i++) {
      const id = `${groupId}-dev-${i}`;
      const key = derive(groupKey, id);
      const client = ProvisioningDeviceClient.create(conn.dps.deviceHost, conn.dps.idScope, new ProvisioningHttp(), new SymmetricKeySecurityClient(id, key));
      const r = await withTimeout(client.register(), 30000, `register ${id}`);
      results.push({ id, key, assignedHub: r.assignedHub, deviceId: r.deviceId, substatus: r.substatus, groupId: r.symmetricKey && r.symmetricKey.enrollmentGroupId });
    }
    return { hubs: [...new Set(results.map((r) => r.assignedHub))].sort(), substatuses: [...new Set(results.map((r) => r.substatus))], groups: [...new Set(results.map((r) => r.groupId))] };
  });

  await step('connect to the assigned hub and read the initial twin', async () => {
    const r = results[0];
    const device = Client.fromConnectionString(`HostName=${r.assignedHub};DeviceId=${r.deviceId};SharedAccessKey=${r.key}`, Mqtt);
    await withTimeout(device.open(), 20000, 'open');
    const twin = await withTimeout(device.getTwin(), 20000, 'getTwin');
    await device.close();
    return { mode: twin.properties.desired.mode };
  });

  await step('the hub holds the device with its tags', async () => {
    const r = results[1];
    const hub = conn.hubs.find((h) => h.hostName === r.assignedHub);
    const registry = Registry.fromConnectionString(hub.connectionString);
    const twin = (await registry.getTwin(r.deviceId)).responseBody;
    return { fleet: twin.tags.fleet, mode: twin.properties.desired.mode };
  });

  await step('registration records', async () => {
    const state = (await service.getDeviceRegistrationState(results[2].id)).responseBody;
    const page = await withTimeout(new Promise((resolve, reject) => service.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, groupId, 100).next((err, items) => (err ? reject(err) : resolve(items)))), 20000, 'query');
    return { status: state.status, assignedHub: state.assignedHub === results[2].assignedHub, count: page.length };
  });

  await step('re-registration keeps the device on its hub', async () => {
    const r = results[3];
    const client = ProvisioningDeviceClient.create(conn.dps.deviceHost, conn.dps.idScope, new ProvisioningHttp(), new SymmetricKeySecurityClient(r.id, r.key));
    const again = await withTimeout(client.register(), 30000, 're-register');
    return { sameHub: again.assignedHub === r.assignedHub, substatus: again.substatus };
  });

  await step('register over MQTT', async () => {
    const id = `${groupId}-mqtt-0`;
    const key = derive(groupKey, id);
    const client = ProvisioningDeviceClient.create(conn.dps.deviceHost, conn.dps.idScope, new ProvisioningMqtt(), new SymmetricKeySecurityClient(id, key));
    const r = await withTimeout(client.register(), 30000, 'register over MQTT');
    const device = Client.fromConnectionString(`HostName=${r.assignedHub};DeviceId=${r.deviceId};SharedAccessKey=${key}`, Mqtt);
    await withTimeout(device.open(), 20000, 'open');
    const twin = await withTimeout(device.getTwin(), 20000, 'getTwin');
    await device.close();
    return { deviceId: r.deviceId, linked: conn.hubs.some((h) => h.hostName === r.assignedHub), mode: twin.properties.desired.mode };
  });

  await step('a wrong key is refused', async () => {
    const client = ProvisioningDeviceClient.create(conn.dps.deviceHost, conn.dps.idScope, new ProvisioningHttp(), new SymmetricKeySecurityClient(`${groupId}-intruder`, groupKey));
    try {
      await withTimeout(client.register(), 30000, 'register with the group key');
      return { refused: false };
    } catch (e) {
      return { refused: true, error: e.constructor.name };
    }
  });
}

main()
  .catch((e) => report('fatal', false, { error: String(e) }))
  .finally(() => setTimeout(() => process.exit(0), 100).unref());

'use strict';
// Reprovisioning and deprovisioning as users meet them (dps-behavior.md §4, §5; scenarios 24, 25, 27, 28, 30, 31,
// 33), against a running `homing start` with two hubs: the operator uses azure-iot-provisioning-service, devices use
// azure-iot-provisioning-device(-http/-mqtt) + azure-iot-security-symmetric-key and azure-iot-device(-mqtt), the
// back-end uses azure-iothub. Reprovisioning is triggered by registering again.
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
const [hubA, hubB] = conn.hubs;
const registryOf = (hostName) => Registry.fromConnectionString(conn.hubs.find((h) => h.hostName === hostName).connectionString);

function register(id, key, transport = 'http') {
  const t = transport === 'mqtt' ? new ProvisioningMqtt() : new ProvisioningHttp();
  const client = ProvisioningDeviceClient.create(conn.dps.deviceHost, conn.dps.idScope, t, new SymmetricKeySecurityClient(id, key));
  return withTimeout(client.register(), 30000, `register ${id}`);
}

async function withDevice(hub, id, key, fn) {
  const device = Client.fromConnectionString(`HostName=${hub};DeviceId=${id};SharedAccessKey=${key}`, Mqtt);
  await withTimeout(device.open(), 20000, `open ${id}`);
  try {
    return await fn(device);
  } finally {
    await device.close();
  }
}

async function exists(hub, id) {
  try {
    await registryOf(hub).get(id);
    return true;
  } catch (e) {
    if (e && (e.responseBody || '').includes('DeviceNotFound')) return false;
    if (e && e.response && e.response.statusCode === 404) return false;
    throw e;
  }
}

async function main() {
  const service = ProvisioningServiceClient.fromConnectionString(conn.dps.serviceConnectionString);
  const tag = crypto.randomBytes(3).toString('hex');
  const groups = {
    migrate: { id: `mig-${tag}`, policy: { updateHubAssignment: true, migrateDeviceData: true } },
    reset: { id: `rst-${tag}`, policy: { updateHubAssignment: true, migrateDeviceData: false } },
    never: { id: `nev-${tag}`, policy: { updateHubAssignment: false, migrateDeviceData: false } },
  };
  const devices = {};

  await step('create groups on hub A', async () => {
    for (const [kind, g] of Object.entries(groups)) {
      const res = await service.createOrUpdateEnrollmentGroup({
        enrollmentGroupId: g.id,
        attestation: { type: 'symmetricKey', symmetricKey: {} },
        provisioningStatus: 'enabled',
        reprovisionPolicy: g.policy,
        allocationPolicy: 'hashed',
        iotHubs: [hubA.hostName],
        initialTwin: { tags: { site: 'A' }, properties: { desired: { mode: 'eco' } } },
      });
      g.key = res.responseBody.attestation.symmetricKey.primaryKey;
      const id = `${kind}-dev-${tag}`;
      devices[kind] = { id, key: derive(g.key, id) };
    }
    return { count: Object.keys(groups).length };
  });

  await step('devices register on hub A and report state', async () => {
    const out = {};
    for (const [kind, d] of Object.entries(devices)) {
      const r = await register(d.id, d.key);
      out[kind] = { hub: r.assignedHub === hubA.hostName, substatus: r.substatus };
      await withDevice(r.assignedHub, d.id, d.key, async (device) => {
        const twin = await withTimeout(device.getTwin(), 20000, 'getTwin');
        await new Promise((resolve, reject) => twin.properties.reported.update({ r: 1, kind }, (err) => (err ? reject(err) : resolve())));
      });
      const registry = registryOf(hubA.hostName);
      const t = (await registry.getTwin(d.id)).responseBody;
      await registry.updateTwin(d.id, { tags: { t: 1 } }, t.etag);
    }
    return out;
  });

  await step('operator moves every group to hub B', async () => {
    for (const g of Object.values(groups)) {
      const current = (await service.getEnrollmentGroup(g.id)).responseBody;
      current.iotHubs = [hubB.hostName];
      await service.createOrUpdateEnrollmentGroup(current);
    }
    return {};
  });

  await step('migrate: re-registration moves the device with its twin (scenario 24)', async () => {
    const d = devices.migrate;
    const r = await register(d.id, d.key, 'mqtt');
    const twin = (await registryOf(hubB.hostName).getTwin(d.id)).responseBody;
    const onA = await exists(hubA.hostName, d.id);
    const reconnects = await withDevice(r.assignedHub, d.id, d.key, async (device) => (await withTimeout(device.getTwin(), 20000, 'getTwin')).properties.reported.r);
    return {
      hubB: r.assignedHub === hubB.hostName,
      substatus: r.substatus,
      tagT: twin.tags.t,
      site: twin.tags.site,
      reportedR: twin.properties.reported.r,
      reportedVersion: twin.properties.reported.$version,
      mode: twin.properties.desired.mode,
      onA,
      reconnects,
    };
  });

  await step('reset: the new hub gets the initial twin, reported empty (scenario 25)', async () => {
    const d = devices.reset;
    const r = await register(d.id, d.key);
    const twin = (await registryOf(hubB.hostName).getTwin(d.id)).responseBody;
    return {
      hubB: r.assignedHub === hubB.hostName,
      substatus: r.substatus,
      tags: twin.tags,
      reportedKeys: Object.keys(twin.properties.reported).filter((k) => !k.startsWith('$')),
      reportedVersion: twin.properties.reported.$version,
      onA: await exists(hubA.hostName, d.id),
    };
  });

  await step('never: the device stays with its twin (scenario 27)', async () => {
    const d = devices.never;
    const r = await register(d.id, d.key);
    const twin = (await registryOf(hubA.hostName).getTwin(d.id)).responseBody;
    return { hubA: r.assignedHub === hubA.hostName, substatus: r.substatus, tagT: twin.tags.t, reportedR: twin.properties.reported.r, onB: await exists(hubB.hostName, d.id) };
  });

  await step('deleted record, device still on the hub: reprovisionedToInitialAssignment (scenario 28)', async () => {
    // The migrated device: its group names hub B, which still holds it after the record is deleted.
    const d = devices.migrate;
    await service.deleteDeviceRegistrationState(d.id);
    const r = await register(d.id, d.key);
    const twin = (await registryOf(hubB.hostName).getTwin(d.id)).responseBody;
    return { substatus: r.substatus, hubB: r.assignedHub === hubB.hostName, reportedR: twin.properties.reported.r };
  });

  await step('a disabled individual enrollment blocklists one device of a group (scenarios 30, 31)', async () => {
    const g = groups.migrate;
    const blocked = `blocked-${tag}`;
    const sibling = `sibling-${tag}`;
    await service.createOrUpdateIndividualEnrollment({
      registrationId: blocked,
      attestation: { type: 'symmetricKey', symmetricKey: {} },
      provisioningStatus: 'disabled',
    });
    let blockedOutcome;
    try {
      const r = await register(blocked, derive(g.key, blocked));
      blockedOutcome = `assigned:${r.status || r.assignedHub}`;
    } catch (e) {
      blockedOutcome = String((e && (e.result && e.result.status)) || (e && e.message) || e);
    }
    const s = await register(sibling, derive(g.key, sibling));
    return { blockedOutcome, blockedOnHub: (await exists(hubA.hostName, blocked)) || (await exists(hubB.hostName, blocked)), siblingHubB: s.assignedHub === hubB.hostName };
  });

  await step('deleting a group keeps its registration records (scenario 33)', async () => {
    const g = groups.reset;
    const current = (await service.getEnrollmentGroup(g.id)).responseBody;
    await service.deleteEnrollmentGroup(current);
    const rec = (await service.getDeviceRegistrationState(devices.reset.id)).responseBody;
    return { status: rec.status, assignedHub: rec.assignedHub === hubB.hostName };
  });
}

main().then(
  () => process.exit(0),
  (e) => {
    report('script', false, { error: String(e && e.stack) });
    process.exit(1);
  },
);

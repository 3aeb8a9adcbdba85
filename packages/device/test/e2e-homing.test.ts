import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { systemClock } from '../../server/src/core/clock.ts';
import { silentLogger } from '../../server/src/observability/logger.ts';
import { createHubRealm, startMqttListener, type MqttListener } from '../../server/src/transport/mqtt/listener.ts';
import { createRuntimeFixture, type RuntimeFixture } from '../../server/test/provisioning/runtime/fixture.ts';
import { HomingDevice, MemoryAssignmentStore, type HomingDeviceEvents } from '../src/index.ts';
import { EventRecorder, within } from './helpers/fake-runtime.ts';
import { serverTls } from './helpers/pki.ts';

/**
 * End to end against Homing's own DPS runtime (RegistrationService behind the DPS device HTTPS API) and two Homing
 * hubs (HubService behind the MQTT/TLS listener), composed in this process from the server's parts, real time.
 * (`startHoming` does not run the DPS role yet; when it does, this should start it instead.)
 */

let tls: { cert: string; key: string; ca: string };
let f: RuntimeFixture;
let dpsPort: number;
const listeners = new Map<string, MqttListener>();

before(async () => {
  tls = await serverTls();
  f = await createRuntimeFixture({ clock: systemClock, tls: { cert: tls.cert, key: tls.key }, hubNames: ['hub-a.test', 'hub-b.test'] });
  await f.app.listen({ host: '127.0.0.1', port: 0 });
  const addr = f.app.server.address();
  assert.ok(addr && typeof addr === 'object');
  dpsPort = addr.port;
  for (const [name, hub] of f.hubs) {
    listeners.set(name, await startMqttListener({ host: '127.0.0.1', port: 0, tls: { cert: tls.cert, key: tls.key, requestCert: true }, realms: [createHubRealm(hub)], logger: silentLogger() }));
  }
});

after(async () => {
  for (const l of listeners.values()) await l.close();
  await f?.close();
});

test('a group device registers through Homing DPS, uses its Homing hub, re-provisions on the method, and re-registers when deleted from the hub', async () => {
  await f.setLinkedHubs([f.linkedHub('hub-a.test')]);
  const group = await f.addGroup('e2e-group', { initialTwin: { properties: { desired: { mode: 'eco' } } } });
  const groupKey = group.attestation.symmetricKey?.primaryKey;
  assert.ok(groupKey);
  const device = new HomingDevice({
    registrationId: 'e2e-dev-1',
    credential: { type: 'groupKey', groupKey },
    provisioning: { host: '127.0.0.1', port: dpsPort, idScope: f.idScope, tls: { ca: tls.ca }, payload: { fw: '1.0' } },
    hub: { resolve: (name) => ({ host: '127.0.0.1', port: listeners.get(name)?.address().port ?? 1 }), tls: { ca: tls.ca } },
    store: new MemoryAssignmentStore(),
    retry: { transient: { initialDelayMs: 100, maxDelayMs: 400 } },
  });
  const ev = new EventRecorder<HomingDeviceEvents>(device, ['provisioned', 'reprovisioned', 'connected', 'desired']);
  try {
    await within(device.start(), 15_000, 'start');
    await ev.next('connected');
    const prov = await ev.next('provisioned');
    assert.equal(prov.assignment.assignedHub, 'hub-a.test');
    assert.equal(prov.assignment.deviceId, 'e2e-dev-1');
    assert.equal(prov.registration.symmetricKey?.enrollmentGroupId, 'e2e-group');

    const hubA = f.hubs.get('hub-a.test');
    assert.ok(hubA);
    const twin = await device.getTwin();
    assert.equal(twin.desired.mode, 'eco');
    const version = await device.updateReported({ fw: '1.0', temp: 21 });
    assert.equal(typeof version, 'number');
    assert.equal((await hubA.getTwinState('e2e-dev-1')).twin.reported.props.temp, 21);
    await device.sendJson({ temp: 21 }, { properties: { kind: 'reading' } });

    device.onMethod('ping', (req) => ({ status: 200, payload: { pong: req.payload ?? null } }));
    assert.deepEqual(await hubA.invokeMethod('e2e-dev-1', { methodName: 'ping', payload: 7, responseTimeoutInSeconds: 5 }), { status: 200, payload: { pong: 7 } });

    // Re-provisioning on demand (the built-in method): the same hub, so the connection stays.
    const answer = await hubA.invokeMethod('e2e-dev-1', { methodName: 'homing.reprovision', payload: {}, responseTimeoutInSeconds: 5 });
    assert.equal(answer.status, 202);
    const re = await ev.next('reprovisioned', 15_000);
    assert.equal(re.reason, 'method');
    assert.equal(re.assignment.assignedHub, 'hub-a.test');
    assert.equal(re.hubChanged, false);
    assert.equal(ev.unread('connected'), 0);

    // The device is deleted from its hub: the hub drops it and then refuses it; the device looks its registration
    // up, re-registers, and DPS puts it back.
    await hubA.deleteDevice('e2e-dev-1', undefined);
    const back = await ev.next('connected', 15_000);
    assert.equal(back.assignment.assignedHub, 'hub-a.test');
    const again = await ev.next('reprovisioned', 15_000);
    assert.equal(again.reason, 'hub-rejected');
    assert.ok(await hubA.findDevice('e2e-dev-1'));
    assert.deepEqual(await hubA.invokeMethod('e2e-dev-1', { methodName: 'ping', payload: 'again', responseTimeoutInSeconds: 5 }), { status: 200, payload: { pong: 'again' } });
  } finally {
    await device.stop();
  }
});

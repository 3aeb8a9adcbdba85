import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import deviceSdk from 'azure-iot-device';
import type { Twin } from 'azure-iot-device';
import { Mqtt } from 'azure-iot-device-mqtt';
import { issueDeviceCert } from '../../helpers/pki.ts';
import { thumbprints } from '../../../src/hub/hub-service.ts';
import type { HubDeviceSession } from '../../../src/transport/mqtt/hub/session.ts';
import { startTestHub, within, HUB_HOST, type TestHub } from './helpers.ts';

const { Client, Message } = deviceSdk;
type DeviceClient = InstanceType<typeof Client>;

/** The reported-properties updater of the SDK's Twin: callback-only (a call without callback crashes). */
interface ReportedUpdater {
  update(patch: Record<string, unknown>, done: (err?: Error) => void): void;
}

function updateReported(twin: Twin, patch: Record<string, unknown>): Promise<void> {
  const reported = twin.properties.reported as ReportedUpdater;
  return new Promise((resolve, reject) => reported.update(patch, (err) => (err ? reject(err) : resolve())));
}

/** Resolves with the first desired-properties event whose patch has `key`. */
function desiredWith(twin: Twin, key: string): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const fn = (patch: Record<string, unknown>) => {
      if (key in patch) {
        twin.removeListener('properties.desired', fn);
        resolve(patch);
      }
    };
    twin.on('properties.desired', fn);
  });
}

/**
 * The official azure-iot-device + azure-iot-device-mqtt packages, used as a user would, against the hub realm on a
 * real TLS listener. The CA is passed with setOptions({ca}) in one call.
 */
describe('hub MQTT with the official Azure device SDK', () => {
  let t: TestHub;
  const clients: DeviceClient[] = [];

  before(async () => {
    t = await startTestHub();
  });
  after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await t.close();
  });

  async function sdkClient(deviceId: string, opts: { key?: string; hostName?: 'gateway' | 'port'; x509?: { cert: string; key: string } } = {}): Promise<DeviceClient> {
    const gw = `127.0.0.1:${t.port}`;
    const host = opts.hostName === 'port' ? `HostName=${gw}` : `HostName=${HUB_HOST};GatewayHostName=${gw}`;
    const cred = opts.x509 ? 'x509=true' : `SharedAccessKey=${opts.key ?? ''}`;
    const client = Client.fromConnectionString(`${host};DeviceId=${deviceId};${cred}`, Mqtt);
    clients.push(client);
    await client.setOptions({ ca: t.pki.ca.certPem, ...(opts.x509 ?? {}) });
    return client;
  }

  it('opens, gets the twin, updates reported, receives desired, answers a method and sends telemetry', async () => {
    const key = await t.addSasDevice('sdk1');
    await t.hub.updateTwin('sdk1', { properties: { desired: { interval: 10 } } }, '*');
    const client = await sdkClient('sdk1', { key });
    await within(client.open(), 10_000, 'open');

    client.onDeviceMethod('reboot', (req, res) => {
      res.send(200, { rebooted: true, echo: req.payload as unknown }, () => undefined);
    });

    const twin = await within(client.getTwin(), 10_000, 'getTwin');
    assert.equal(twin.properties.desired.interval, 10);
    assert.equal(twin.properties.desired.$version, 2);
    assert.equal(typeof twin.properties.reported.$version, 'number');

    await within(updateReported(twin, { firmware: '1.2.3', nested: { a: 1 } }), 10_000, 'reported update');
    const state = await t.hub.getTwinState('sdk1');
    assert.deepEqual(state.twin.reported.props, { firmware: '1.2.3', nested: { a: 1 } });

    // The SDK subscribes to desired patches when the first listener is added; wait until the server got it.
    const subscribed = serverSeesSubscription('sdk1', '$iothub/twin/PATCH/properties/desired/#');
    const desired = desiredWith(twin, 'targetTemp');
    await within(subscribed, 10_000, 'desired subscription');
    await t.hub.updateTwin('sdk1', { properties: { desired: { targetTemp: 21 } } }, '*');
    const patch = await within(desired, 10_000, 'desired patch');
    assert.equal(patch.targetTemp, 21);
    assert.equal(patch.$version, 3);

    const result = await within(t.hub.invokeMethod('sdk1', { methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10 }), 10_000, 'method');
    assert.deepEqual(result, { status: 200, payload: { rebooted: true, echo: { delay: 5 } } });

    const before = t.hub.telemetry.countFor('sdk1');
    const msg = new Message(JSON.stringify({ temperature: 20.5 }));
    msg.messageId = 'm-1';
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    msg.properties.add('alert', 'high temp');
    await within(client.sendEvent(msg), 10_000, 'sendEvent');
    assert.equal(t.hub.telemetry.countFor('sdk1'), before + 1);
    const ev = t.hub.telemetry.recent({ deviceId: 'sdk1' }).at(-1);
    assert.equal(ev?.body, '{"temperature":20.5}');
    assert.equal(ev?.systemProperties['message-id'], 'm-1');
    assert.equal(ev?.systemProperties['content-type'], 'application/json');
    assert.equal(ev?.properties.alert, 'high temp');

    // After a server-side close (credentials changed: the secondary key rotates, the primary stays valid) the SDK
    // reconnects with clean=false and re-subscribes methods only; the persistent session keeps the twin topics.
    const d = await t.hub.getDevice('sdk1');
    const oldConn = t.hub.sessions.get('sdk1');
    await t.hub.updateDevice({ deviceId: 'sdk1', authentication: { type: 'sas', symmetricKey: { primaryKey: key, secondaryKey: Buffer.alloc(32, 7).toString('base64') } } }, 'sdk1', d.etag);
    assert.notEqual(t.hub.sessions.get('sdk1'), oldConn);
    // invokeMethod waits (connectTimeout) until the device is back and accepts methods.
    const again = await within(t.hub.invokeMethod('sdk1', { methodName: 'reboot', payload: 2, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 30 }), 30_000, 'method after reconnect');
    assert.equal(again.status, 200);
    assert.notEqual(t.hub.sessions.get('sdk1'), oldConn);

    const desired2 = desiredWith(twin, 'afterReconnect');
    await t.hub.updateTwin('sdk1', { properties: { desired: { afterReconnect: true } } }, '*');
    assert.equal((await within(desired2, 10_000, 'desired after reconnect')).afterReconnect, true);
    await within(updateReported(twin, { afterReconnect: 1 }), 10_000, 'reported after reconnect');
    assert.equal((await t.hub.getTwinState('sdk1')).twin.reported.props.afterReconnect, 1);

    await client.close();
    assert.equal(t.hub.sessions.get('sdk1'), undefined);
  });

  it('connects with HostName=127.0.0.1:<port> (the port lands in the username and the sr)', async () => {
    const key = await t.addSasDevice('sdk2');
    const client = await sdkClient('sdk2', { key, hostName: 'port' });
    await within(client.open(), 10_000, 'open');
    const twin = await within(client.getTwin(), 10_000, 'getTwin');
    assert.equal(twin.properties.reported.$version, 1);
    await client.close();
  });

  it('refuses a deleted device (UnauthorizedError on open) and drops its live connection', async () => {
    const key = await t.addSasDevice('sdk3');
    const live = await sdkClient('sdk3', { key });
    await within(live.open(), 10_000, 'open');
    assert.ok(t.hub.sessions.get('sdk3'));
    await t.hub.deleteDevice('sdk3', undefined);
    assert.equal(t.hub.sessions.get('sdk3'), undefined);
    await live.close();

    const fresh = await sdkClient('sdk3', { key });
    await assert.rejects(within(fresh.open(), 10_000, 'open of a deleted device'), (e: Error) => e.name === 'UnauthorizedError');
  });

  it('connects an X.509 (selfSigned thumbprint) device with x509=true and setOptions({cert,key,ca})', async () => {
    const cert = await issueDeviceCert(t.pki.ca, 'sdk-x509');
    await t.hub.createDevice({ deviceId: 'sdk-x509', authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: thumbprints(Buffer.from(cert.cert.rawData)).sha256 } } }, 'sdk-x509');
    // With x509=true the SDK ignores GatewayHostName, so the listener address is the HostName.
    const client = await sdkClient('sdk-x509', { x509: { cert: cert.certPem, key: cert.keyPem }, hostName: 'port' });
    await within(client.open(), 10_000, 'open');
    const twin = await within(client.getTwin(), 10_000, 'getTwin');
    await within(updateReported(twin, { x509: true }), 10_000, 'reported');
    await within(client.sendEvent(new Message('x509 hello')), 10_000, 'sendEvent');
    assert.equal(t.hub.telemetry.countFor('sdk-x509'), 1);
    await client.close();
  });

  /** Resolves when the device's live server-side session handles a SUBSCRIBE for `filter` (a spy, server side only). */
  function serverSeesSubscription(deviceId: string, filter: string): Promise<void> {
    const session = t.hub.sessions.get(deviceId) as HubDeviceSession | undefined;
    assert.ok(session, `${deviceId} is connected`);
    const original = session.subscribe.bind(session);
    return new Promise((resolve) => {
      session.subscribe = (subs) => {
        const granted = original(subs);
        if (subs.some((s) => s.topic === filter)) resolve();
        return granted;
      };
    });
  }
});

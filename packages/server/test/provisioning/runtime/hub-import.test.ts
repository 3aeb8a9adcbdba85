import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../../src/core/clock.ts';
import type { HubRight, SharedAccessPolicy } from '../../../src/core/policies.ts';
import { buildSas } from '../../../src/core/sas.ts';
import { HubService } from '../../../src/hub/hub-service.ts';
import { createLogger, silentLogger } from '../../../src/observability/logger.ts';
import type { HubClient, HubCredentials, ImportDeviceRequest } from '../../../src/provisioning/hub-client.ts';
import { InProcessHubClientFactory } from '../../../src/provisioning/hub-client-inprocess.ts';
import { RestHubClientFactory, type RestImportResult } from '../../../src/provisioning/hub-client-rest.ts';
import type { LinkedHub } from '../../../src/provisioning/model.ts';
import { openStore, type OpenedStore } from '../../../src/store/open.ts';
import { createHttpsApp } from '../../../src/transport/http/app.ts';
import { registerHubApi } from '../../../src/transport/http/hub-api.ts';
import type { HubApiContext } from '../../../src/transport/http/hub/context.ts';
import { registerDeviceRoutes } from '../../../src/transport/http/hub/devices.ts';
import { registerTwinRoutes } from '../../../src/transport/http/hub/twins.ts';
import { createHubRealm, startMqttListener, type MqttListener } from '../../../src/transport/mqtt/listener.ts';
import { httpsJson, type JsonAnswer, type JsonRequestBody } from '../../helpers/https-json.ts';
import { realIds } from '../../helpers/ids.ts';
import { createTestPki, type TestPki } from '../../helpers/pki.ts';
import { deviceSas, deviceUsername, RawClient } from '../../transport/mqtt/helpers.ts';
import { newKey, ownerPolicy } from './fixture.ts';

/**
 * HubClient.importDeviceState and setDeviceStatus on both adapters, against one hub with real listeners: MQTT/TLS for
 * live device sessions, and the hub service API over HTTPS for the REST adapter. Plus Homing's import route itself,
 * and the REST adapter's fallback on a hub without that route.
 */
const HOST = 'hub-import.test';

interface TestHubServer {
  pki: TestPki;
  store: OpenedStore;
  hub: HubService;
  owner: SharedAccessPolicy<HubRight>;
  reader: SharedAccessPolicy<HubRight>;
  app: FastifyInstance;
  httpsPort: number;
  mqtt: MqttListener;
  mqttPort: number;
  close(): Promise<void>;
}

async function startHubServer(): Promise<TestHubServer> {
  const pki = await createTestPki([HOST]);
  const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  const owner = ownerPolicy();
  const reader: SharedAccessPolicy<HubRight> = { keyName: 'registryRead', primaryKey: newKey(), secondaryKey: newKey(), rights: ['RegistryRead'] };
  const hub = new HubService({ hubId: HOST, hostNames: [HOST], policies: [owner, reader], store: store.hub, clock: systemClock, ids: realIds });
  const logger = silentLogger();
  const app = createHttpsApp({ logger, errorFlavor: 'hub', api: 'hub', tls: { cert: pki.server.certPem, key: pki.server.keyPem } });
  registerHubApi(app, hub, { logger, clock: systemClock });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const mqtt = await startMqttListener({ host: '127.0.0.1', port: 0, tls: { cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true }, realms: [createHubRealm(hub)], logger });
  return {
    pki,
    store,
    hub,
    owner,
    reader,
    app,
    httpsPort: (app.server.address() as { port: number }).port,
    mqtt,
    mqttPort: mqtt.address().port,
    async close() {
      await mqtt.close();
      await app.close();
      hub.close();
      await store.close();
    },
  };
}

function linked(connectionString: string, name = HOST): LinkedHub {
  return { name, connectionString, location: 'l', allocationWeight: 1, applyAllocationPolicy: true };
}

const cs = (p: SharedAccessPolicy<HubRight>, host = HOST): string => `HostName=${host};SharedAccessKeyName=${p.keyName};SharedAccessKey=${p.primaryKey}`;
const sas = (): HubCredentials & { type: 'sas' } => ({ type: 'sas', primaryKey: newKey(), secondaryKey: newKey() });

function importRequest(deviceId: string, credentials: HubCredentials = sas(), twin: Partial<ImportDeviceRequest['twin']> = {}): ImportDeviceRequest {
  return {
    deviceId,
    credentials,
    capabilities: { iotEdge: false },
    twin: { tags: { site: 'A' }, desired: { mode: 'eco', nested: { a: 1 } }, reported: { fw: '1.0' }, desiredVersion: 4, reportedVersion: 2, ...twin },
  };
}

/** Connects a SAS device over MQTT; resolves the CONNACK return code and the client. */
async function connectDevice(s: TestHubServer, deviceId: string, key: string): Promise<{ code: number; client: RawClient }> {
  const client = await RawClient.connect(s.mqttPort, s.pki.ca.certPem);
  const ack = await client.connect({ clientId: deviceId, username: deviceUsername(deviceId, HOST), password: deviceSas(deviceId, key, { host: HOST }) });
  return { code: ack.returnCode ?? -1, client };
}

async function connected(s: TestHubServer, deviceId: string, key: string): Promise<RawClient> {
  const { code, client } = await connectDevice(s, deviceId, key);
  assert.equal(code, 0, `device ${deviceId} could not connect`);
  return client;
}

async function refused(s: TestHubServer, deviceId: string, key: string): Promise<void> {
  const { code, client } = await connectDevice(s, deviceId, key);
  client.end();
  assert.notEqual(code, 0, `device ${deviceId} should be refused`);
}

function adapterSuite(name: string, clientFor: (s: TestHubServer, connectionString: string) => HubClient): void {
  describe(`HubClient import and status: ${name}`, () => {
    let s: TestHubServer;
    let client: (connectionString?: string) => HubClient;
    before(async () => {
      s = await startHubServer();
      client = (c = cs(s.owner)) => clientFor(s, c);
    });
    after(async () => {
      await s?.close();
    });

    test('creates the device with exactly the given identity and twin, versions kept, $metadata regenerated', async () => {
      const creds = sas();
      const r = await client().importDeviceState({ ...importRequest('imp-1', creds), capabilities: { iotEdge: true } });
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.value.created, true);
      assert.equal(r.value.device.status, 'enabled');
      assert.equal(r.value.device.capabilities.iotEdge, true);
      const st = await client().getDeviceState('imp-1');
      assert.ok(st.ok && st.value);
      assert.deepEqual(st.value.twin.tags, { site: 'A' });
      assert.deepEqual(st.value.twin.desired, { mode: 'eco', nested: { a: 1 } });
      assert.deepEqual(st.value.twin.reported, { fw: '1.0' });
      assert.equal(st.value.twin.desiredVersion, 4);
      assert.equal(st.value.twin.reportedVersion, 2);
      const { twin, device } = await s.hub.getTwinState('imp-1');
      assert.equal(device.authentication.symmetricKey.primaryKey, creds.primaryKey);
      assert.equal(twin.desired.metadata.$lastUpdatedVersion, 4);
      assert.equal((twin.desired.metadata.nested as unknown as { a: { $lastUpdatedVersion: number } }).a.$lastUpdatedVersion, 4);
      assert.equal(typeof (twin.reported.metadata.fw as { $lastUpdated: string }).$lastUpdated, 'string');
      // The device sees the imported state, and its next reported patch continues from the kept version.
      const c = await connected(s, 'imp-1', creds.primaryKey);
      c.end();
      assert.equal(await s.hub.patchReported('imp-1', { fw: '1.1' }), 3);
    });

    test('is idempotent: the same request twice leaves the same state (nothing rewritten)', async () => {
      const req = importRequest('imp-2');
      const first = await client().importDeviceState(req);
      assert.ok(first.ok && first.value.created);
      const before = await s.hub.getTwinState('imp-2');
      const again = await client().importDeviceState(req);
      assert.ok(again.ok, JSON.stringify(again));
      assert.equal(again.value.created, false);
      assert.equal(again.value.device.etag, first.value.device.etag);
      const afterState = await s.hub.getTwinState('imp-2');
      assert.deepEqual(afterState.twin, before.twin);
      assert.equal(afterState.device.etag, before.device.etag);
    });

    test('replaces an existing device: new credentials and twin, old keys refused, live session closed', async () => {
      const old = sas();
      assert.ok((await client().provisionDevice({ deviceId: 'imp-3', credentials: old, capabilities: { iotEdge: false }, initialTwin: { tags: { stale: true }, desired: { old: 1 } } })).ok);
      assert.equal(await s.hub.patchReported('imp-3', { a: 1 }), 2);
      assert.equal(await s.hub.patchReported('imp-3', { b: 2 }), 3);
      await s.hub.setDeviceStatus('imp-3', 'disabled');
      await s.hub.setDeviceStatus('imp-3', 'enabled');
      const live = await connected(s, 'imp-3', old.primaryKey);
      const fresh = sas();
      const r = await client().importDeviceState(importRequest('imp-3', fresh, { tags: { site: 'B' }, desired: { mode: 'max' }, reported: { fw: '2.0' }, desiredVersion: 7, reportedVersion: 2 }));
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.value.created, false);
      assert.equal(r.value.device.status, 'enabled', 'status enabled');
      await live.waitClosed();
      const st = await client().getDeviceState('imp-3');
      assert.ok(st.ok && st.value);
      assert.deepEqual(st.value.twin.tags, { site: 'B' }, 'tags replaced, not merged');
      assert.deepEqual(st.value.twin.desired, { mode: 'max' });
      assert.deepEqual(st.value.twin.reported, { fw: '2.0' });
      assert.equal(st.value.twin.desiredVersion, 7);
      assert.equal(st.value.twin.reportedVersion, 2, 'the version as given, even below the one the hub had');
      await refused(s, 'imp-3', old.primaryKey);
      (await connected(s, 'imp-3', fresh.secondaryKey)).end();
    });

    test('setDeviceStatus: disabling closes the live session and refuses connections; enabling lets it back; unknown → false', async () => {
      const creds = sas();
      assert.ok((await client().importDeviceState(importRequest('st-1', creds))).ok);
      const live = await connected(s, 'st-1', creds.primaryKey);
      assert.deepEqual(await client().setDeviceStatus('st-1', 'disabled'), { ok: true, value: true });
      await live.waitClosed();
      assert.equal((await s.hub.getDevice('st-1')).status, 'disabled');
      await refused(s, 'st-1', creds.primaryKey);
      assert.deepEqual(await client().setDeviceStatus('st-1', 'disabled'), { ok: true, value: true }, 'already disabled');
      assert.deepEqual(await client().setDeviceStatus('st-1', 'enabled'), { ok: true, value: true });
      (await connected(s, 'st-1', creds.primaryKey)).end();
      const st = await client().getDeviceState('st-1');
      assert.ok(st.ok && st.value);
      assert.deepEqual(st.value.twin.reported, { fw: '1.0' }, 'the twin is untouched');
      assert.deepEqual(await client().setDeviceStatus('nobody', 'disabled'), { ok: true, value: false });
    });

    test('a stale linked-hub key or a read-only policy is unauthorized and writes nothing', async () => {
      const stale = client(`HostName=${HOST};SharedAccessKeyName=iothubowner;SharedAccessKey=${newKey()}`);
      const ro = client(cs(s.reader));
      for (const c of [stale, ro]) {
        const i = await c.importDeviceState(importRequest('auth-1'));
        assert.equal(i.ok, false);
        if (!i.ok) assert.equal(i.failure.kind, 'unauthorized');
      }
      const st = await stale.setDeviceStatus('imp-1', 'disabled');
      assert.equal(st.ok, false);
      if (!st.ok) {
        assert.equal(st.failure.kind, 'unauthorized');
        assert.doesNotMatch(st.failure.message, /SharedAccessKey=/);
      }
      assert.equal(await s.hub.findDevice('auth-1'), undefined);
      assert.equal((await s.hub.getDevice('imp-1')).status, 'enabled');
    });

    test('bad input is `rejected`: a device id or a twin the hub refuses', async () => {
      const bad = await client().importDeviceState(importRequest('bad id'));
      assert.equal(bad.ok, false);
      if (!bad.ok) assert.equal(bad.failure.kind, 'rejected');
      const badTwin = await client().importDeviceState(importRequest('bad-twin', sas(), { reported: { 'a.b': 1 } }));
      assert.equal(badTwin.ok, false);
      if (!badTwin.ok) {
        assert.equal(badTwin.failure.kind, 'rejected');
        assert.equal(badTwin.failure.hubErrorCode, 'InvalidTwinPropertyName');
      }
      assert.equal(await s.hub.findDevice('bad-twin'), undefined);
      const badVersion = await client().importDeviceState(importRequest('bad-version', sas(), { desiredVersion: 0 }));
      assert.equal(badVersion.ok, false);
      if (!badVersion.ok) assert.equal(badVersion.failure.kind, 'rejected');
    });
  });
}

adapterSuite('in-process', (s, connectionString) => new InProcessHubClientFactory([s.hub], systemClock).forHub(linked(connectionString)));

const restFactories: RestHubClientFactory[] = [];
after(() => {
  for (const f of restFactories) f.close();
});
adapterSuite('REST over HTTPS', (s, connectionString) => {
  const f = new RestHubClientFactory({ clock: systemClock, port: s.httpsPort, ca: s.pki.ca.certPem, resolveAddress: () => '127.0.0.1', timeoutMs: 10_000 });
  restFactories.push(f);
  return f.forHub(linked(connectionString));
});

/** Raw HTTPS call to a hub listener. */
function call(port: number, ca: string, method: string, path: string, o: JsonRequestBody = {}): Promise<JsonAnswer> {
  return httpsJson({ host: '127.0.0.1', port, servername: HOST, ca, method, path, headers: { host: HOST }, timeout: 10_000 }, o);
}

describe('hub route PUT /homing/devices/{id}/state', () => {
  let s: TestHubServer;
  const sasFor = (p: SharedAccessPolicy<HubRight>) => buildSas({ sr: HOST, keyBase64: p.primaryKey, keyName: p.keyName, expirySeconds: Math.floor(Date.now() / 1000) + 600 });
  const put = (id: string, body: unknown, auth?: string, raw?: string) =>
    call(s.httpsPort, s.pki.ca.certPem, 'PUT', `/homing/devices/${encodeURIComponent(id)}/state?api-version=2021-04-12`, {
      ...(auth === undefined ? {} : { auth }),
      ...(raw === undefined ? { body } : { raw }),
    });
  before(async () => {
    s = await startHubServer();
  });
  after(async () => {
    await s?.close();
  });

  test('201 on create, 200 after; the body holds the Device and Twin JSON', async () => {
    const body = { authentication: { type: 'sas', symmetricKey: { primaryKey: newKey(), secondaryKey: newKey() } }, tags: { t: 1 }, properties: { desired: { d: 1, $version: 3 }, reported: { r: 1, $version: 5, $metadata: { ignored: true } } } };
    const a = await put('route-1', body, sasFor(s.owner));
    assert.equal(a.status, 201, JSON.stringify(a.json));
    assert.equal(a.json.created, true);
    const twin = a.json.twin as { properties: { desired: { $version: number }; reported: { $version: number; r: number } } };
    assert.equal(twin.properties.desired.$version, 3);
    assert.equal(twin.properties.reported.$version, 5);
    assert.equal(twin.properties.reported.r, 1);
    assert.equal((a.json.device as { deviceId: string }).deviceId, 'route-1');
    const b = await put('route-1', body, sasFor(s.owner));
    assert.equal(b.status, 200);
    assert.equal(b.json.created, false);
    assert.equal(b.json.changed, false);
  });

  test('bad input: 400 with the classic hub error body', async () => {
    const owner = sasFor(s.owner);
    const cases: [unknown, string][] = [
      [[1, 2], 'InvalidJson'],
      [{ properties: { reported: { $version: 0 } } }, 'ArgumentInvalid'],
      [{ properties: { desired: { $version: 'x' } } }, 'ArgumentInvalid'],
      [{ properties: { reported: { 'bad key': 1 } } }, 'InvalidTwinPropertyName'],
      [{ tags: { $version: 1 } }, 'InvalidTwinPropertyName'],
      [{ tags: 'x' }, 'ArgumentInvalid'],
      [{ properties: 'x' }, 'ArgumentInvalid'],
      [{ deviceId: 'other' }, 'ArgumentInvalid'],
      [{ authentication: { type: 'sas', symmetricKey: { primaryKey: 'not base64!' } } }, 'ArgumentInvalid'],
      [{ properties: { reported: { big: 'x'.repeat(33 * 1024) } } }, 'TwinTooLarge'],
    ];
    for (const [body, code] of cases) {
      const r = await put('route-bad', body, owner);
      assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 80)}: ${JSON.stringify(r.json)}`);
      assert.match(String(r.json.Message), new RegExp(`^ErrorCode:${code};`));
      assert.equal(r.headers['iothub-errorcode'], code);
    }
    const notJson = await put('route-bad', undefined, owner, '{"tags":');
    assert.equal(notJson.status, 400);
    const badId = await put('bad id', {}, owner);
    assert.equal(badId.status, 400);
    assert.equal(badId.headers['iothub-errorcode'], 'InvalidDeviceId');
    assert.equal(await s.hub.findDevice('route-bad'), undefined);
  });

  test('401 without RegistryWrite or without a token', async () => {
    const ro = await put('route-ro', {}, sasFor(s.reader));
    assert.equal(ro.status, 401);
    assert.equal(ro.headers['iothub-errorcode'], 'IotHubUnauthorizedAccess');
    const none = await put('route-ro', {});
    assert.equal(none.status, 401);
    assert.equal(await s.hub.findDevice('route-ro'), undefined);
  });
});

describe('REST importDeviceState on a hub without the Homing import route', () => {
  let s: TestHubServer;
  let plain: FastifyInstance;
  let factory: RestHubClientFactory;
  const lines: string[] = [];
  before(async () => {
    s = await startHubServer();
    // The standard registry and twin routes only, as IoT Hub has them: the import route answers 404.
    plain = createHttpsApp({ logger: silentLogger(), errorFlavor: 'hub', api: 'hub', tls: { cert: s.pki.server.certPem, key: s.pki.server.keyPem } });
    const ctx: HubApiContext = { hub: s.hub, logger: silentLogger(), metrics: undefined, clock: systemClock, hostConstraint: undefined };
    registerDeviceRoutes(plain, ctx);
    registerTwinRoutes(plain, ctx);
    await plain.listen({ host: '127.0.0.1', port: 0 });
    const out = new PassThrough();
    out.on('data', (c: Buffer) => lines.push(...c.toString().split('\n').filter((l) => l.length > 0)));
    factory = new RestHubClientFactory({
      clock: systemClock,
      port: (plain.server.address() as { port: number }).port,
      ca: s.pki.ca.certPem,
      resolveAddress: () => '127.0.0.1',
      logger: createLogger({ level: 'warn', destination: out }),
    });
  });
  after(async () => {
    factory?.close();
    await plain?.close();
    await s?.close();
  });

  test('writes the identity, tags and desired; says (result and log) that reported and versions were not carried', async () => {
    const creds = sas();
    const c = factory.forHub(linked(cs(s.owner)));
    const r = await c.importDeviceState(importRequest('fb-1', creds));
    assert.ok(r.ok, JSON.stringify(r));
    const v = r.value as RestImportResult;
    assert.equal(v.created, true);
    assert.deepEqual(v.notCarried, ['reported', 'desiredVersion', 'reportedVersion']);
    const { device, twin } = await s.hub.getTwinState('fb-1');
    assert.equal(device.authentication.symmetricKey.primaryKey, creds.primaryKey);
    assert.deepEqual(twin.tags, { site: 'A' });
    assert.deepEqual(twin.desired.props, { mode: 'eco', nested: { a: 1 } });
    assert.deepEqual(twin.reported.props, {});
    const warn = lines.map((l) => JSON.parse(l) as { msg: string; notCarried?: string[]; deviceId?: string }).find((l) => l.deviceId === 'fb-1');
    assert.ok(warn, lines.join('\n'));
    assert.match(warn.msg, /partial device state import/);
    assert.deepEqual(warn.notCarried, ['reported', 'desiredVersion', 'reportedVersion']);
    assert.ok(!lines.join('\n').includes(creds.primaryKey), 'no keys in the log');

    // Replace: new keys, tags replaced, status back to enabled.
    await s.hub.setDeviceStatus('fb-1', 'disabled');
    const fresh = sas();
    const again = await c.importDeviceState(importRequest('fb-1', fresh, { tags: { site: 'C' }, reported: {}, reportedVersion: 1, desiredVersion: 2 }));
    assert.ok(again.ok, JSON.stringify(again));
    assert.equal(again.value.created, false);
    const nc = (again.value as RestImportResult).notCarried ?? [];
    assert.ok(!nc.includes('reported') && !nc.includes('reportedVersion'), 'an empty reported section at version 1 is what the hub holds');
    const st = await s.hub.getTwinState('fb-1');
    assert.equal(st.device.status, 'enabled');
    assert.equal(st.device.authentication.symmetricKey.primaryKey, fresh.primaryKey);
    assert.deepEqual(st.twin.tags, { site: 'C' });
  });
});

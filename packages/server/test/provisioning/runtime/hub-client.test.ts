import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import type { Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { systemClock } from '../../../src/core/clock.ts';
import { buildSas, parseConnectionString } from '../../../src/core/sas.ts';
import { HubService } from '../../../src/hub/hub-service.ts';
import type { HubClient, HubCredentials } from '../../../src/provisioning/hub-client.ts';
import { InProcessHubClientFactory } from '../../../src/provisioning/hub-client-inprocess.ts';
import { RestHubClientFactory } from '../../../src/provisioning/hub-client-rest.ts';
import type { LinkedHub } from '../../../src/provisioning/model.ts';
import { openStore, type OpenedStore } from '../../../src/store/open.ts';
import { realIds } from '../../helpers/ids.ts';
import { createTestPki } from '../../helpers/pki.ts';
import { newKey, ownerPolicy } from './fixture.ts';
import { spawnHub, type HubProcess } from './support/spawn-hub.ts';

interface Harness {
  client(connectionString?: string): HubClient;
  connectionString: string;
  readOnlyConnectionString: string;
  hostName: string;
  /** The device's SAS keys as the hub stores them. */
  keysOf(deviceId: string): Promise<{ primaryKey: string; secondaryKey: string; status: string }>;
  disable(deviceId: string): Promise<void>;
  close(): Promise<void>;
}

function linked(hostName: string, connectionString: string): LinkedHub {
  return { name: hostName, connectionString, location: 'l', allocationWeight: 1, applyAllocationPolicy: true };
}

const sas = (): HubCredentials & { type: 'sas' } => ({ type: 'sas', primaryKey: newKey(), secondaryKey: newKey() });

/** One behavioural suite for every HubClient adapter. */
function hubClientContract(name: string, setup: () => Promise<Harness>): void {
  describe(`HubClient contract: ${name}`, () => {
    let h: Harness;
    before(async () => {
      h = await setup();
    });
    after(async () => {
      await h?.close();
    });

    test('getDevice of an unknown device is ok/undefined', async () => {
      const r = await h.client().getDevice('nobody');
      assert.deepEqual(r, { ok: true, value: undefined });
    });

    test('provisionDevice creates the identity with keys, capabilities and the initial twin', async () => {
      const creds = sas();
      const r = await h.client().provisionDevice({ deviceId: 'c-1', credentials: creds, capabilities: { iotEdge: true }, initialTwin: { tags: { site: 'A' }, desired: { mode: 'eco' } } });
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.value.created, true);
      assert.equal(r.value.device.deviceId, 'c-1');
      assert.equal(r.value.device.authenticationType, 'sas');
      assert.equal(r.value.device.capabilities.iotEdge, true);
      assert.equal(r.value.device.status, 'enabled');
      const keys = await h.keysOf('c-1');
      assert.equal(keys.primaryKey, creds.primaryKey);
      assert.equal(keys.secondaryKey, creds.secondaryKey);
      const st = await h.client().getDeviceState('c-1');
      assert.ok(st.ok && st.value);
      assert.deepEqual(st.value.twin.tags, { site: 'A' });
      assert.deepEqual(st.value.twin.desired, { mode: 'eco' });
      assert.deepEqual(st.value.twin.reported, {});
      assert.equal(st.value.twin.reportedVersion, 1);
    });

    test('provisionDevice on an existing device: no write when unchanged; new keys replace, status and twin stay', async () => {
      const creds = sas();
      const c = h.client();
      const first = await c.provisionDevice({ deviceId: 'c-2', credentials: creds, capabilities: { iotEdge: false }, initialTwin: { tags: { t: 1 } } });
      assert.ok(first.ok);
      const same = await c.provisionDevice({ deviceId: 'c-2', credentials: creds, capabilities: { iotEdge: false }, initialTwin: { tags: { t: 9 } } });
      assert.ok(same.ok);
      assert.equal(same.value.created, false);
      assert.equal(same.value.device.etag, first.value.device.etag, 'unchanged: not rewritten');
      await h.disable('c-2');
      const rolled = sas();
      const upd = await c.provisionDevice({ deviceId: 'c-2', credentials: rolled, capabilities: { iotEdge: true }, initialTwin: { tags: { t: 9 } } });
      assert.ok(upd.ok);
      assert.equal(upd.value.created, false);
      assert.notEqual(upd.value.device.etag, first.value.device.etag);
      assert.equal(upd.value.device.capabilities.iotEdge, true);
      const keys = await h.keysOf('c-2');
      assert.equal(keys.primaryKey, rolled.primaryKey);
      assert.equal(keys.status, 'disabled', 'status kept');
      const st = await c.getDeviceState('c-2');
      assert.ok(st.ok && st.value);
      assert.deepEqual(st.value.twin.tags, { t: 1 }, 'twin untouched');
    });

    test('likelyNew on an existing device: the create is refused, the identity replaced, the twin kept', async () => {
      const c = h.client();
      assert.ok((await c.provisionDevice({ deviceId: 'c-7', credentials: sas(), capabilities: { iotEdge: false }, initialTwin: { tags: { v: 1 } } })).ok);
      const rolled = sas();
      const r = await c.provisionDevice({ deviceId: 'c-7', credentials: rolled, capabilities: { iotEdge: false }, initialTwin: { tags: { v: 2 } }, likelyNew: true });
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.value.created, false);
      assert.equal((await h.keysOf('c-7')).primaryKey, rolled.primaryKey);
      const st = await c.getDeviceState('c-7');
      assert.ok(st.ok && st.value);
      assert.deepEqual(st.value.twin.tags, { v: 1 });
      const fresh = await c.provisionDevice({ deviceId: 'c-8', credentials: sas(), capabilities: { iotEdge: false }, likelyNew: true });
      assert.ok(fresh.ok && fresh.value.created);
    });

    test('patchTwin merges with If-Match and reports a stale etag as a conflict', async () => {
      const c = h.client();
      assert.ok((await c.provisionDevice({ deviceId: 'c-3', credentials: sas(), capabilities: { iotEdge: false } })).ok);
      const p = await c.patchTwin('c-3', { tags: { a: 1 }, desired: { x: 1 } });
      assert.ok(p.ok);
      assert.deepEqual(p.value.tags, { a: 1 });
      const stale = await c.patchTwin('c-3', { tags: { b: 2 } }, 'AAAAAAAAAAE=');
      assert.equal(stale.ok, false);
      if (!stale.ok) assert.equal(stale.failure.kind, 'conflict');
      const ok = await c.patchTwin('c-3', { tags: { b: 2 } }, p.value.etag);
      assert.ok(ok.ok);
      assert.deepEqual(ok.value.tags, { a: 1, b: 2 });
      assert.deepEqual(ok.value.desired, { x: 1 });
    });

    test('deleteDevice: true, then false', async () => {
      const c = h.client();
      assert.ok((await c.provisionDevice({ deviceId: 'c-4', credentials: sas(), capabilities: { iotEdge: false } })).ok);
      assert.deepEqual(await c.deleteDevice('c-4'), { ok: true, value: true });
      assert.deepEqual(await c.deleteDevice('c-4'), { ok: true, value: false });
      assert.deepEqual(await c.getDevice('c-4'), { ok: true, value: undefined });
    });

    test('a stale linked-hub key is unauthorized, named as such, and writes nothing', async () => {
      const cs = parseConnectionString(h.connectionString);
      const stale = h.client(`HostName=${cs.HostName};SharedAccessKeyName=${cs.SharedAccessKeyName};SharedAccessKey=${newKey()}`);
      const r = await stale.provisionDevice({ deviceId: 'c-5', credentials: sas(), capabilities: { iotEdge: false } });
      assert.equal(r.ok, false);
      if (!r.ok) {
        assert.equal(r.failure.kind, 'unauthorized');
        assert.equal(r.failure.hubErrorCode, 'IotHubUnauthorizedAccess');
        assert.match(r.failure.message, /refused the linked hub credential/);
        assert.doesNotMatch(r.failure.message, new RegExp(parseConnectionString(h.connectionString).SharedAccessKey!.slice(0, 12).replace(/[+/]/g, '.')));
      }
      assert.deepEqual(await h.client().getDevice('c-5'), { ok: true, value: undefined });
    });

    test('a policy without RegistryWrite reads but cannot write', async () => {
      const ro = h.client(h.readOnlyConnectionString);
      assert.deepEqual(await ro.getDevice('c-6'), { ok: true, value: undefined });
      const r = await ro.provisionDevice({ deviceId: 'c-6', credentials: sas(), capabilities: { iotEdge: false } });
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.failure.kind, 'unauthorized');
    });

    test('a device id the hub refuses is `rejected`', async () => {
      const r = await h.client().provisionDevice({ deviceId: 'bad id', credentials: sas(), capabilities: { iotEdge: false } });
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.failure.kind, 'rejected');
    });
  });
}

hubClientContract('in-process', async () => {
  const hostName = 'hub-inproc.test';
  const store: OpenedStore = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  const owner = ownerPolicy();
  const reader = { keyName: 'registryRead', primaryKey: newKey(), secondaryKey: newKey(), rights: ['RegistryRead' as const] };
  const hub = new HubService({ hubId: hostName, hostNames: [hostName], policies: [owner, reader], store: store.hub, clock: systemClock, ids: realIds });
  const factory = new InProcessHubClientFactory([hub], systemClock);
  const connectionString = `HostName=${hostName};SharedAccessKeyName=iothubowner;SharedAccessKey=${owner.primaryKey}`;
  return {
    hostName,
    connectionString,
    readOnlyConnectionString: `HostName=${hostName};SharedAccessKeyName=registryRead;SharedAccessKey=${reader.primaryKey}`,
    client: (cs = connectionString) => factory.forHub(linked(hostName, cs)),
    async keysOf(id) {
      const d = await hub.getDevice(id);
      return { primaryKey: d.authentication.symmetricKey.primaryKey ?? '', secondaryKey: d.authentication.symmetricKey.secondaryKey ?? '', status: d.status };
    },
    async disable(id) {
      const d = await hub.getDevice(id);
      await hub.updateDevice({ ...d, status: 'disabled' } as unknown as Parameters<HubService['updateDevice']>[0], id, '*');
    },
    async close() {
      hub.close();
      await store.close();
    },
  };
});

/** Raw calls to the hub API (for assertions the port does not expose, like keys). */
function raw(p: HubProcess, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const cs = parseConnectionString(p.connectionString);
  const auth = buildSas({ sr: p.hostName, keyBase64: cs.SharedAccessKey!, keyName: cs.SharedAccessKeyName!, expirySeconds: Math.floor(Date.now() / 1000) + 600 });
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: p.port,
        servername: p.hostName,
        ca: p.caPem,
        method,
        path: `${path}?api-version=2021-04-12`,
        headers: { authorization: auth, host: p.hostName, ...(payload ? { 'content-type': 'application/json', 'if-match': '"*"' } : {}) },
        timeout: 10_000,
      },
      (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: t ? (JSON.parse(t) as Record<string, unknown>) : {} }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

hubClientContract('REST, against a Homing hub in another process', async () => {
  const p = await spawnHub('hub-rest.test');
  const f = new RestHubClientFactory({ clock: systemClock, port: p.port, ca: p.caPem, resolveAddress: () => '127.0.0.1', timeoutMs: 10_000 });
  return {
    hostName: p.hostName,
    connectionString: p.connectionString,
    readOnlyConnectionString: p.readOnlyConnectionString,
    client: (cs = p.connectionString) => f.forHub(linked(p.hostName, cs)),
    async keysOf(id) {
      const r = await raw(p, 'GET', `/devices/${id}`);
      const auth = r.json.authentication as { symmetricKey: { primaryKey: string; secondaryKey: string } };
      return { ...auth.symmetricKey, status: String(r.json.status) };
    },
    async disable(id) {
      const r = await raw(p, 'GET', `/devices/${id}`);
      const put = await raw(p, 'PUT', `/devices/${id}`, { ...r.json, status: 'disabled' });
      assert.equal(put.status, 200);
    },
    async close() {
      f.close();
      await p.stop();
    },
  };
});

describe('REST HubClient: transport failures', () => {
  let silent: TlsServer | undefined;
  after(() => {
    silent?.close();
  });

  test('a hub that never answers is a timeout; a closed port is unavailable', async () => {
    const pki = await createTestPki(['hub-silent.test']);
    const sockets = new Set<Socket>();
    silent = createTlsServer({ cert: pki.server.certPem, key: pki.server.keyPem }, (s) => {
      sockets.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => silent!.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as { port: number }).port;
    const factory = new RestHubClientFactory({ clock: systemClock, port, ca: pki.ca.certPem, resolveAddress: () => '127.0.0.1', timeoutMs: 300 });
    const cs = `HostName=hub-silent.test;SharedAccessKeyName=iothubowner;SharedAccessKey=${newKey()}`;
    const started = Date.now();
    const r = await factory.forHub(linked('hub-silent.test', cs)).getDevice('x');
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.equal(r.failure.kind, 'timeout');
      assert.match(r.failure.message, /hub-silent\.test did not answer/);
    }
    assert.ok(Date.now() - started < 5000);
    factory.close();
    for (const s of sockets) s.destroy();

    const closed = new RestHubClientFactory({ clock: systemClock, port: 1, resolveAddress: () => '127.0.0.1', timeoutMs: 2000 });
    const c = await closed.forHub(linked('hub-closed.test', cs)).provisionDevice({ deviceId: 'x', credentials: sas(), capabilities: { iotEdge: false } });
    assert.equal(c.ok, false);
    if (!c.ok) assert.equal(c.failure.kind, 'unavailable');
    closed.close();
  });

  test('the factory rebuilds a client when the connection string changes and reuses it otherwise', () => {
    const f = new RestHubClientFactory({ clock: systemClock });
    const a = f.forHub(linked('h.test', 'HostName=h.test;SharedAccessKeyName=p;SharedAccessKey=a2V5'));
    assert.equal(f.forHub(linked('H.TEST', 'HostName=h.test;SharedAccessKeyName=p;SharedAccessKey=a2V5')), a);
    assert.notEqual(f.forHub(linked('h.test', 'HostName=h.test;SharedAccessKeyName=p;SharedAccessKey=b2V5')), a);
    f.close();
  });
});

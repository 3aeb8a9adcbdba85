import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { isBase64 } from '../../../src/core/sas.ts';
import type { JsonObject } from '../../../src/core/json.ts';
import { createHubFixture, hubErrorCode, json, jsonObject, JSON_CT, type HubFixture } from './hub-fixture.ts';

let f: HubFixture;

before(async () => {
  f = await createHubFixture();
});

after(async () => {
  await f.close();
});

async function createDevice(id: string, body: JsonObject = {}): Promise<JsonObject> {
  const r = await f.request({ method: 'PUT', url: `/devices/${encodeURIComponent(id)}?api-version=2021-04-12`, payload: { deviceId: id, ...body } });
  assert.equal(r.statusCode, 200, r.body);
  return jsonObject(r);
}

function assertJson(r: LightMyRequestResponse, status: number): void {
  assert.equal(r.statusCode, status, r.body);
  assert.equal(r.headers['content-type'], JSON_CT);
}

function obj(v: unknown): JsonObject {
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `expected an object: ${JSON.stringify(v)}`);
  return v as JsonObject;
}

describe('hub API: devices', () => {
  it('creates a device with generated SAS keys when the SDK sends empty ones', async () => {
    const r = await f.request({
      method: 'PUT',
      url: '/devices/dev-create?api-version=2021-04-12',
      payload: { deviceId: 'dev-create', status: 'enabled', authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } } },
    });
    assertJson(r, 200);
    const d = jsonObject(r);
    assert.equal(d.deviceId, 'dev-create');
    assert.equal(d.status, 'enabled');
    assert.equal(d.connectionState, 'Disconnected');
    assert.equal(typeof d.etag, 'string');
    assert.equal(r.headers.etag, `"${String(d.etag)}"`);
    assert.match(String(d.generationId), /^\d{18}$/);
    const auth = obj(d.authentication);
    assert.equal(auth.type, 'sas');
    const keys = obj(auth.symmetricKey);
    assert.ok(isBase64(String(keys.primaryKey), 32, 32) && isBase64(String(keys.secondaryKey), 32, 32));
    assert.notEqual(keys.primaryKey, keys.secondaryKey);
    assert.deepEqual(d.capabilities, { iotEdge: false });
  });

  it('keeps given keys and creates devices without any body fields but the id', async () => {
    const primaryKey = Buffer.alloc(32, 1).toString('base64');
    const d = await createDevice('dev-keys', { authentication: { symmetricKey: { primaryKey, secondaryKey: '' } }, capabilities: { iotEdge: true } });
    const keys = obj(obj(d.authentication).symmetricKey);
    assert.equal(keys.primaryKey, primaryKey);
    assert.ok(isBase64(String(keys.secondaryKey), 32, 32));
    assert.deepEqual(d.capabilities, { iotEdge: true });
    const bare = await f.request({ method: 'PUT', url: '/devices/dev-bare', payload: {} });
    assertJson(bare, 200);
    assert.equal(jsonObject(bare).deviceId, 'dev-bare');
  });

  it('answers 409 DeviceAlreadyExists for a second create, and keeps the device', async () => {
    const d = await createDevice('dev-twice');
    const r = await f.request({ method: 'PUT', url: '/devices/dev-twice', payload: { deviceId: 'dev-twice', status: 'disabled' } });
    assertJson(r, 409);
    assert.equal(hubErrorCode(r), 'DeviceAlreadyExists');
    const g = await f.request({ method: 'GET', url: '/devices/dev-twice' });
    assert.equal(jsonObject(g).etag, d.etag);
    assert.equal(jsonObject(g).status, 'enabled');
  });

  it('updates with If-Match "*", a quoted, bare or weak etag, and refuses a stale one with 412', async () => {
    const d = await createDevice('dev-upd');
    const keys = obj(obj(d.authentication).symmetricKey);
    const put = (ifMatch: string, body: JsonObject) => f.request({ method: 'PUT', url: '/devices/dev-upd', headers: { 'if-match': ifMatch }, payload: { deviceId: 'dev-upd', ...body } });

    const r1 = await put(`"${String(d.etag)}"`, { status: 'disabled', statusReason: 'maintenance', authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } } });
    assertJson(r1, 200);
    const d1 = jsonObject(r1);
    assert.equal(d1.status, 'disabled');
    assert.equal(d1.statusReason, 'maintenance');
    assert.notEqual(d1.etag, d.etag);
    assert.deepEqual(obj(d1.authentication).symmetricKey, keys, 'empty keys on update keep the current ones');
    assert.equal(d1.generationId, d.generationId);

    const r2 = await put(String(d1.etag), { status: 'enabled' });
    assertJson(r2, 200);
    const r3 = await put(`W/"${String(jsonObject(r2).etag)}"`, { status: 'enabled' });
    assertJson(r3, 200);
    const r4 = await put('"*"', { status: 'enabled' });
    assertJson(r4, 200);
    const r5 = await put('*', { status: 'disabled' });
    assertJson(r5, 200);

    const stale = await put(`"${String(d.etag)}"`, { status: 'enabled' });
    assertJson(stale, 412);
    assert.equal(hubErrorCode(stale), 'PreconditionFailed');
    const g = jsonObject(await f.request({ method: 'GET', url: '/devices/dev-upd' }));
    assert.equal(g.status, 'disabled');
    assert.equal(g.etag, jsonObject(r5).etag);
  });

  it('gets a device with any api-version, any path case and a trailing slash', async () => {
    await createDevice('Dev-Case');
    for (const url of ['/devices/Dev-Case', '/DEVICES/Dev-Case/', '/Devices/Dev-Case?api-version=2099-01-01', '/devices/Dev-Case?api-version=']) {
      const r = await f.request({ method: 'GET', url });
      assertJson(r, 200);
      assert.equal(jsonObject(r).deviceId, 'Dev-Case');
    }
    const other = await f.request({ method: 'GET', url: '/devices/dev-case' });
    assert.equal(other.statusCode, 404, 'device ids are case-sensitive');
  });

  it('decodes percent-encoded ids per segment', async () => {
    const r = await f.request({ method: 'PUT', url: '/devices/dev%241', payload: { deviceId: 'dev$1' } });
    assertJson(r, 200);
    assert.equal(jsonObject(r).deviceId, 'dev$1');
    const g = await f.request({ method: 'GET', url: '/devices/dev%241' });
    assertJson(g, 200);
    const t = await f.request({ method: 'GET', url: `/twins/${encodeURIComponent("a!b(c)'*")}` });
    assertJson(t, 404);
    const odd = "a!b(c)'*+=@,:";
    assertJson(await f.request({ method: 'PUT', url: `/devices/${encodeURIComponent(odd)}`, payload: { deviceId: odd } }), 200);
    assert.equal(jsonObject(await f.request({ method: 'GET', url: `/twins/${encodeURIComponent(odd)}` })).deviceId, odd);
  });

  it('lists devices in id order, honouring top', async () => {
    for (const id of ['list-c', 'list-a', 'list-b']) await createDevice(id);
    const r = await f.request({ method: 'GET', url: '/devices/?api-version=2021-04-12' });
    assertJson(r, 200);
    const all = json(r);
    assert.ok(Array.isArray(all));
    const ids = all.map((d) => String(obj(d).deviceId));
    assert.deepEqual(ids.filter((id) => id.startsWith('list-')), ['list-a', 'list-b', 'list-c']);
    assert.deepEqual([...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), ids);
    const top = json(await f.request({ method: 'GET', url: '/devices?top=2' }));
    assert.ok(Array.isArray(top) && top.length === 2);
    const capped = await f.request({ method: 'GET', url: '/devices?top=5000' });
    assertJson(capped, 200);
  });

  it('deletes with If-Match "*" or the etag (204), then answers 404 DeviceNotFound', async () => {
    await createDevice('dev-del1');
    const d2 = await createDevice('dev-del2');
    const r1 = await f.request({ method: 'DELETE', url: '/devices/dev-del1', headers: { 'if-match': '"*"' } });
    assert.equal(r1.statusCode, 204);
    assert.equal(r1.body, '');
    const stale = await f.request({ method: 'DELETE', url: '/devices/dev-del2', headers: { 'if-match': '"bm9wZQ=="' } });
    assertJson(stale, 412);
    assertJson(await f.request({ method: 'GET', url: '/devices/dev-del2' }), 200);
    const r2 = await f.request({ method: 'DELETE', url: '/devices/dev-del2', headers: { 'if-match': `"${String(d2.etag)}"` } });
    assert.equal(r2.statusCode, 204);
    for (const id of ['dev-del1', 'dev-del2']) {
      const g = await f.request({ method: 'GET', url: `/devices/${id}` });
      assertJson(g, 404);
      assert.equal(hubErrorCode(g), 'DeviceNotFound');
      assert.match(String(jsonObject(g).ExceptionMessage), /^Tracking ID:/);
    }
    const again = await f.request({ method: 'DELETE', url: '/devices/dev-del1', headers: { 'if-match': '*' } });
    assertJson(again, 404);
    assert.equal(hubErrorCode(again), 'DeviceNotFound');
  });

  it('closes the live connection of a deleted device', async () => {
    await createDevice('dev-live-del');
    const closed: string[] = [];
    f.hub.connected({
      deviceId: 'dev-live-del', connectedAt: Date.now(), acceptsMethods: false,
      deliverDesiredPatch: () => undefined, sendMethodRequest: () => undefined, close: (reason) => closed.push(reason),
    });
    const g = await f.request({ method: 'GET', url: '/devices/dev-live-del' });
    assert.equal(jsonObject(g).connectionState, 'Connected');
    assert.equal((await f.request({ method: 'DELETE', url: '/devices/dev-live-del', headers: { 'if-match': '*' } })).statusCode, 204);
    assert.deepEqual(closed, ['device deleted']);
  });

  it('reports registry statistics', async () => {
    const before = jsonObject(await f.request({ method: 'GET', url: '/statistics/devices' }));
    await createDevice('stat-on');
    await createDevice('stat-off', { status: 'disabled' });
    const r = await f.request({ method: 'GET', url: '/statistics/devices?api-version=2021-04-12', auth: 'registryRead' });
    assertJson(r, 200);
    const s = jsonObject(r);
    assert.equal(s.totalDeviceCount, Number(before.totalDeviceCount) + 2);
    assert.equal(s.enabledDeviceCount, Number(before.enabledDeviceCount) + 1);
    assert.equal(s.disabledDeviceCount, Number(before.disabledDeviceCount) + 1);
    const svc = await f.request({ method: 'GET', url: '/statistics/service', auth: 'service' });
    assertJson(svc, 200);
    assert.equal(typeof jsonObject(svc).connectedDeviceCount, 'number');
  });
});

describe('hub API: bulk registry operations', () => {
  it('creates, updates and deletes in bulk with per-device errors', async () => {
    await createDevice('bulk-exists');
    const add = await f.request({
      method: 'POST',
      url: '/devices?api-version=2021-04-12',
      payload: [
        { id: 'bulk-1', importMode: 'create', authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } } },
        { id: 'bulk-2', importMode: 'Create', status: 'disabled' },
        { id: 'bulk-exists', importMode: 'create' },
        { id: 'bulk bad', importMode: 'create' },
      ],
    });
    assertJson(add, 200);
    const res = jsonObject(add);
    assert.equal(res.isSuccessful, false);
    assert.deepEqual(res.warnings, []);
    const errors = (res.errors as JsonObject[]).map((e) => [e.deviceId, e.errorCode]);
    assert.deepEqual(errors, [['bulk-exists', 'DeviceAlreadyExists'], ['bulk bad', 'InvalidDeviceId']]);
    assert.equal(jsonObject(await f.request({ method: 'GET', url: '/devices/bulk-2' })).status, 'disabled');

    const b1 = jsonObject(await f.request({ method: 'GET', url: '/devices/bulk-1' }));
    const upd = await f.request({
      method: 'POST',
      url: '/devices',
      payload: [
        { id: 'bulk-1', importMode: 'UpdateIfMatchETag', etag: b1.etag, status: 'disabled' },
        { id: 'bulk-2', importMode: 'UpdateIfMatchETag', etag: 'c3RhbGU=', status: 'enabled' },
        { id: 'bulk-missing', importMode: 'Update' },
      ],
    });
    assertJson(upd, 200);
    assert.deepEqual((jsonObject(upd).errors as JsonObject[]).map((e) => [e.deviceId, e.errorCode]), [
      ['bulk-2', 'PreconditionFailed'],
      ['bulk-missing', 'DeviceNotFound'],
    ]);
    assert.equal(jsonObject(await f.request({ method: 'GET', url: '/devices/bulk-1' })).status, 'disabled');
    assert.equal(jsonObject(await f.request({ method: 'GET', url: '/devices/bulk-2' })).status, 'disabled');

    const del = await f.request({
      method: 'POST',
      url: '/devices',
      payload: [
        { id: 'bulk-1', importMode: 'Delete' },
        { id: 'bulk-2', importMode: 'deleteIfMatchETag', eTag: 'c3RhbGU=' },
      ],
    });
    assertJson(del, 200);
    assert.deepEqual((jsonObject(del).errors as JsonObject[]).map((e) => [e.deviceId, e.errorCode]), [['bulk-2', 'PreconditionFailed']]);
    assertJson(await f.request({ method: 'GET', url: '/devices/bulk-1' }), 404);
    assertJson(await f.request({ method: 'GET', url: '/devices/bulk-2' }), 200);

    const ok = await f.request({ method: 'POST', url: '/devices', payload: [{ id: 'bulk-2', importMode: 'delete' }] });
    assert.deepEqual(jsonObject(ok), { isSuccessful: true, errors: [], warnings: [] });
  });

  it('refuses malformed bulk requests as a whole and changes nothing', async () => {
    const bad: unknown[] = [
      {},
      [],
      Array.from({ length: 101 }, (_, i) => ({ id: `bulk-many-${i}`, importMode: 'create' })),
      [{ id: 'bulk-x', importMode: 'upsert' }],
      [{ importMode: 'create' }],
      [{ id: 'bulk-x', importMode: 'create' }, { id: 'bulk-x', importMode: 'create' }],
      ['bulk-x'],
    ];
    for (const payload of bad) {
      const r = await f.request({ method: 'POST', url: '/devices', payload: JSON.stringify(payload), headers: { 'content-type': 'application/json' } });
      assertJson(r, 400);
      assert.equal(hubErrorCode(r), 'ArgumentInvalid');
    }
    assertJson(await f.request({ method: 'GET', url: '/devices/bulk-x' }), 404);
    assertJson(await f.request({ method: 'GET', url: '/devices/bulk-many-0' }), 404);
  });
});

describe('hub API: twins', () => {
  it('returns the twin JSON with deviceId, etags, versions and metadata', async () => {
    const d = await createDevice('twin-get');
    const r = await f.request({ method: 'GET', url: '/twins/twin-get?api-version=2021-04-12' });
    assertJson(r, 200);
    const t = jsonObject(r);
    assert.equal(t.deviceId, 'twin-get');
    assert.equal(t.deviceEtag, d.etag);
    assert.equal(t.etag, 'AAAAAAAAAAE=');
    assert.equal(r.headers.etag, '"AAAAAAAAAAE="');
    assert.equal(t.version, 1);
    assert.equal(t.status, 'enabled');
    assert.equal(t.connectionState, 'Disconnected');
    assert.equal(t.authenticationType, 'sas');
    assert.equal(t.modelId, '');
    assert.equal(t.cloudToDeviceMessageCount, 0);
    assert.deepEqual(t.x509Thumbprint, { primaryThumbprint: null, secondaryThumbprint: null });
    assert.deepEqual(t.capabilities, { iotEdge: false });
    assert.deepEqual(t.tags, {});
    const props = obj(t.properties);
    for (const section of ['desired', 'reported']) {
      const s = obj(props[section]);
      assert.equal(s.$version, 1);
      assert.equal(typeof obj(s.$metadata).$lastUpdated, 'string');
    }
    for (const k of ['statusUpdateTime', 'lastActivityTime']) assert.equal(typeof t[k], 'string');
  });

  it('patches tags and desired properties with the etag, then refuses the stale etag with 412', async () => {
    await createDevice('twin-patch');
    const t0 = jsonObject(await f.request({ method: 'GET', url: '/twins/twin-patch' }));
    const r1 = await f.request({
      method: 'PATCH',
      url: '/twins/twin-patch?api-version=2021-04-12',
      headers: { 'if-match': `"${String(t0.etag)}"` },
      payload: { tags: { site: { city: 'Oslo' } }, properties: { desired: { interval: 10, mode: { a: 1 } } } },
    });
    assertJson(r1, 200);
    const t1 = jsonObject(r1);
    assert.equal(t1.deviceId, 'twin-patch');
    assert.notEqual(t1.etag, t0.etag);
    assert.equal(t1.version, Number(t0.version) + 1);
    assert.deepEqual(t1.tags, { site: { city: 'Oslo' } });
    const desired = obj(obj(t1.properties).desired);
    assert.equal(desired.interval, 10);
    assert.equal(desired.$version, 2);
    assert.equal(obj(obj(desired.$metadata).interval).$lastUpdatedVersion, 2);

    const stale = await f.request({ method: 'PATCH', url: '/twins/twin-patch', headers: { 'if-match': `"${String(t0.etag)}"` }, payload: { tags: { site: null } } });
    assertJson(stale, 412);
    assert.equal(hubErrorCode(stale), 'PreconditionFailed');

    const r2 = await f.request({ method: 'PATCH', url: '/twins/twin-patch', headers: { 'if-match': '"*"' }, payload: { tags: { site: { city: null, zip: '0150' } }, properties: { desired: { mode: null } } } });
    assertJson(r2, 200);
    const t2 = jsonObject(r2);
    assert.deepEqual(t2.tags, { site: { zip: '0150' } });
    assert.equal(obj(obj(t2.properties).desired).mode, undefined);
    assert.equal(obj(obj(t2.properties).desired).interval, 10);
    const g = jsonObject(await f.request({ method: 'GET', url: '/twins/twin-patch' }));
    assert.deepEqual(g, t2);
  });

  it('delivers a desired patch to the connected device', async () => {
    await createDevice('twin-live');
    const delivered: JsonObject[] = [];
    f.hub.connected({
      deviceId: 'twin-live', connectedAt: Date.now(), acceptsMethods: false,
      deliverDesiredPatch: (p) => delivered.push(p), sendMethodRequest: () => undefined, close: () => undefined,
    });
    const r = await f.request({ method: 'PATCH', url: '/twins/twin-live', headers: { 'if-match': '*' }, payload: { properties: { desired: { x: 1 } } } });
    assertJson(r, 200);
    assert.deepEqual(delivered, [{ x: 1, $version: 2 }]);
  });

  it('replaces tags and desired properties with PUT, ignoring reported and system keys', async () => {
    await createDevice('twin-put');
    await f.request({ method: 'PATCH', url: '/twins/twin-put', headers: { 'if-match': '*' }, payload: { tags: { a: 1, nest: { x: 1, y: 2 } }, properties: { desired: { keep: 1, drop: 2 } } } });
    const cur = jsonObject(await f.request({ method: 'GET', url: '/twins/twin-put' }));
    const r = await f.request({
      method: 'PUT',
      url: '/twins/twin-put',
      headers: { 'if-match': `"${String(cur.etag)}"` },
      payload: { deviceId: 'twin-put', tags: { nest: { x: 1 }, b: true }, properties: { desired: { keep: 1, $version: 99, $metadata: {} }, reported: { hacked: true } } },
    });
    assertJson(r, 200);
    const t = jsonObject(r);
    assert.deepEqual(t.tags, { nest: { x: 1 }, b: true });
    const props = obj(t.properties);
    const { $metadata: _m, $version: dv, ...desired } = obj(props.desired);
    assert.deepEqual(desired, { keep: 1 });
    assert.equal(dv, 3);
    const { $metadata: _rm, $version: _rv, ...reported } = obj(props.reported);
    assert.deepEqual(reported, {});
    const stale = await f.request({ method: 'PUT', url: '/twins/twin-put', headers: { 'if-match': `"${String(cur.etag)}"` }, payload: { tags: {} } });
    assertJson(stale, 412);
  });
});

describe('hub API: query', () => {
  const ids = ['q-01', 'q-02', 'q-03', 'q-04', 'q-05', 'q-06', 'q-07'];

  before(async () => {
    for (const [i, id] of ids.entries()) {
      await createDevice(id, i === 6 ? { status: 'disabled' } : {});
      await f.request({
        method: 'PATCH',
        url: `/twins/${id}`,
        headers: { 'if-match': '*' },
        payload: { tags: { group: i % 2 === 0 ? 'even' : 'odd', n: i }, properties: { desired: { level: i * 10 } } },
      });
    }
    await f.hub.patchReported('q-03', { fw: { version: '2.0' } });
  });

  async function query(q: string, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
    return f.request({ method: 'POST', url: '/devices/query?api-version=2021-04-12', payload: { query: q }, headers });
  }

  it('filters on deviceId, tags, desired and reported properties', async () => {
    const cases: [string, string[]][] = [
      ["SELECT * FROM devices WHERE deviceId = 'q-02'", ['q-02']],
      ["SELECT * FROM devices WHERE tags.group = 'even' AND STARTSWITH(deviceId, 'q-')", ['q-01', 'q-03', 'q-05', 'q-07']],
      ['select * from devices where properties.desired.level >= 30 and properties.desired.level < 50', ['q-04', 'q-05']],
      ["SELECT * FROM devices WHERE properties.reported.fw.version = '2.0'", ['q-03']],
      ["SELECT * FROM devices WHERE status = 'disabled' AND tags.n IN [6]", ['q-07']],
      ["SELECT * FROM devices WHERE deviceId IN ('q-01', 'q-06') OR (tags.n = 2 AND NOT tags.group = 'odd')", ['q-01', 'q-03', 'q-06']],
    ];
    for (const [q, expected] of cases) {
      const r = await query(q);
      assertJson(r, 200);
      assert.equal(r.headers['x-ms-item-type'], 'twin');
      assert.equal(r.headers['x-ms-continuation'], undefined, q);
      const rows = json(r);
      assert.ok(Array.isArray(rows));
      assert.deepEqual(rows.map((row) => obj(row).deviceId), expected, q);
      for (const row of rows) assert.ok(obj(obj(row).properties).desired);
    }
  });

  it('pages with x-ms-max-item-count and x-ms-continuation, omitting the header on the last page', async () => {
    const q = "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'q-')";
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const r = await query(q, { 'x-ms-max-item-count': '3', ...(token === undefined ? {} : { 'x-ms-continuation': token }) });
      assertJson(r, 200);
      const rows = json(r);
      assert.ok(Array.isArray(rows) && rows.length <= 3);
      seen.push(...rows.map((row) => String(obj(row).deviceId)));
      const next = r.headers['x-ms-continuation'];
      token = typeof next === 'string' ? next : undefined;
      pages++;
    } while (token !== undefined && pages < 10);
    assert.deepEqual(seen, ids);
    assert.equal(pages, 3);
  });

  it('counts with SELECT COUNT() and projects fields', async () => {
    const c = await query("SELECT COUNT() AS numberOfDevices FROM devices WHERE tags.group = 'odd'");
    assertJson(c, 200);
    assert.deepEqual(json(c), [{ numberOfDevices: 3 }]);
    const p = await query("SELECT deviceId, tags.n AS n FROM devices WHERE deviceId = 'q-05'");
    assertJson(p, 200);
    assert.equal(p.headers['x-ms-item-type'], 'raw');
    assert.deepEqual(json(p), [{ deviceId: 'q-05', n: 4 }]);
  });

  it('refuses a bad query with 400 ArgumentInvalid naming the position', async () => {
    const r = await query("SELECT * FROM devices WHERE deviceId == 'x'");
    assertJson(r, 400);
    assert.equal(hubErrorCode(r), 'ArgumentInvalid');
    assert.match(String(jsonObject(r).Message), /position 39/);
    for (const payload of [{}, { query: 5 }, { q: 'SELECT * FROM devices' }]) {
      const b = await f.request({ method: 'POST', url: '/devices/query', payload });
      assertJson(b, 400);
    }
  });
});

describe('hub API: authorization', () => {
  it('checks the right of each route', async () => {
    await createDevice('auth-dev');
    const cases: [string, string, string, 'service' | 'registryRead' | 'registryReadWrite' | 'device', number][] = [
      ['GET', '/devices/auth-dev', '', 'registryRead', 200],
      ['GET', '/devices/auth-dev', '', 'service', 401],
      ['GET', '/devices/auth-dev', '', 'device', 401],
      ['PUT', '/devices/auth-new', '{"deviceId":"auth-new"}', 'registryRead', 401],
      ['PUT', '/devices/auth-new', '{"deviceId":"auth-new"}', 'service', 401],
      ['DELETE', '/devices/auth-dev', '', 'registryRead', 401],
      ['PATCH', '/twins/auth-dev', '{"tags":{"a":1}}', 'registryRead', 401],
      ['POST', '/devices', '[{"id":"auth-new","importMode":"create"}]', 'registryRead', 401],
      ['GET', '/twins/auth-dev', '', 'registryRead', 200],
      ['POST', '/devices/query', '{"query":"SELECT * FROM devices"}', 'registryRead', 200],
      ['POST', '/devices/query', '{"query":"SELECT * FROM devices"}', 'service', 401],
      ['GET', '/statistics/devices', '', 'service', 401],
      ['POST', '/twins/auth-dev/methods', '{"methodName":"m"}', 'registryReadWrite', 401],
      ['GET', '/homing/telemetry/recent', '', 'registryReadWrite', 401],
      ['GET', '/homing/telemetry/recent', '', 'service', 200],
      ['PUT', '/devices/auth-new', '{"deviceId":"auth-new"}', 'registryReadWrite', 200],
    ];
    for (const [method, url, payload, auth, status] of cases) {
      const r = await f.request({ method: method as 'GET', url, auth, ...(payload ? { payload, headers: { 'content-type': 'application/json' } } : {}) });
      assert.equal(r.statusCode, status, `${method} ${url} as ${auth}: ${r.body}`);
      assert.equal(r.headers['content-type'], JSON_CT);
      if (status === 401) assert.deepEqual(jsonObject(r).Message, 'ErrorCode:IotHubUnauthorizedAccess;Unauthorized');
    }
    assertJson(await f.request({ method: 'GET', url: '/devices/auth-dev' }), 200);
    assert.equal(jsonObject(await f.request({ method: 'GET', url: '/twins/auth-dev' })).version, 1);
  });
});

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isBase64 } from '../../../src/core/sas.ts';
import { createTestPki } from '../../helpers/pki.ts';
import { uniqueLoopback } from '../../helpers/ids.ts';
import { createHubFixture, type HubFixture, type PolicyName } from './hub-fixture.ts';
import { failed, ok, SdkChild } from './sdk/sdk-child.ts';

/**
 * Interop with the official azure-iothub SDK, unchanged: a real HTTPS listener on <unique 127.x.y.z>:443 (the SDK
 * dials nothing else), the test CA trusted through NODE_EXTRA_CA_CERTS in a child process that makes the calls.
 */
let f: HubFixture;
let sdk: SdkChild;
let cs: string;

function connectionString(policy: PolicyName, key?: string): string {
  return `HostName=${f.hostName};SharedAccessKeyName=${policy};SharedAccessKey=${key ?? f.policies[policy].primaryKey}`;
}

interface DeviceLike {
  deviceId: string;
  etag: string;
  status: string;
  authentication: { type: string; symmetricKey: { primaryKey: string; secondaryKey: string } };
}

interface TwinLike {
  deviceId: string;
  etag: string;
  tags: Record<string, unknown>;
  properties: { desired: Record<string, unknown>; reported: Record<string, unknown> };
}

before(async () => {
  const addr = uniqueLoopback();
  const pki = await createTestPki([addr]);
  f = await createHubFixture({ hostName: addr, tls: { cert: pki.server.certPem, key: pki.server.keyPem } });
  await f.app.listen({ host: addr, port: 443 });
  sdk = await SdkChild.start(pki.ca.certPem);
  cs = connectionString('iothubowner');
});

after(async () => {
  await sdk?.close();
  await f?.close();
});

describe('azure-iothub SDK interop: registry', () => {
  it('creates a device with generated keys, gets, updates and lists it', async () => {
    const created = ok(await sdk.call('create', cs, { deviceId: 'sdk-dev-1' })) as DeviceLike;
    assert.equal(created.deviceId, 'sdk-dev-1');
    assert.equal(created.status, 'enabled');
    assert.equal(created.authentication.type, 'sas');
    assert.ok(isBase64(created.authentication.symmetricKey.primaryKey, 32, 32));
    assert.ok(isBase64(created.authentication.symmetricKey.secondaryKey, 32, 32));

    const got = ok(await sdk.call('get', cs, 'sdk-dev-1')) as DeviceLike;
    assert.equal(got.etag, created.etag);
    assert.deepEqual(got.authentication, created.authentication);

    const updated = ok(await sdk.call('update', cs, { ...got, status: 'disabled', statusReason: 'test' })) as DeviceLike;
    assert.equal(updated.status, 'disabled');
    assert.notEqual(updated.etag, created.etag);
    assert.deepEqual(updated.authentication.symmetricKey, created.authentication.symmetricKey);

    const dup = failed(await sdk.call('create', cs, { deviceId: 'sdk-dev-1' }));
    assert.equal(dup.ctor, 'DeviceAlreadyExistsError');

    const list = ok(await sdk.call('list', cs)) as DeviceLike[];
    assert.ok(list.some((d) => d.deviceId === 'sdk-dev-1' && d.status === 'disabled'));
  });

  it('gets and updates twins, with the etag and with a stale one (InvalidEtagError)', async () => {
    ok(await sdk.call('create', cs, { deviceId: 'sdk-twin' }));
    const t0 = ok(await sdk.call('getTwin', cs, 'sdk-twin')) as TwinLike;
    assert.equal(t0.deviceId, 'sdk-twin');
    assert.equal(t0.properties.desired.$version, 1);

    const t1 = ok(await sdk.call('updateTwin', cs, 'sdk-twin', { tags: { site: 'oslo' }, properties: { desired: { interval: 5 } } }, t0.etag)) as TwinLike;
    assert.deepEqual(t1.tags, { site: 'oslo' });
    assert.equal(t1.properties.desired.interval, 5);
    assert.equal(t1.properties.desired.$version, 2);
    assert.notEqual(t1.etag, t0.etag);

    const stale = failed(await sdk.call('updateTwin', cs, 'sdk-twin', { tags: { site: 'bergen' } }, t0.etag));
    assert.equal(stale.ctor, 'InvalidEtagError');
    assert.equal(stale.statusCode, 412);

    const t2 = ok(await sdk.call('twinUpdate', cs, 'sdk-twin', { properties: { desired: { interval: 7 } } })) as TwinLike;
    assert.equal(t2.properties.desired.interval, 7);
    assert.deepEqual(t2.tags, { site: 'oslo' });

    const missing = failed(await sdk.call('getTwin', cs, 'sdk-ghost'));
    assert.equal(missing.ctor, 'DeviceNotFoundError');
  });

  it('deletes a device; a later get fails with DeviceNotFoundError', async () => {
    ok(await sdk.call('create', cs, { deviceId: 'sdk-del' }));
    const del = ok(await sdk.call('delete', cs, 'sdk-del')) as { statusCode: number };
    assert.equal(del.statusCode, 204);
    const e = failed(await sdk.call('get', cs, 'sdk-del'));
    assert.equal(e.ctor, 'DeviceNotFoundError');
    assert.equal(e.name, 'DeviceNotFoundError');
    assert.equal(e.statusCode, 404);
  });

  it('reports registry statistics', async () => {
    const s = ok(await sdk.call('stats', cs)) as { totalDeviceCount: number; enabledDeviceCount: number; disabledDeviceCount: number };
    assert.equal(s.totalDeviceCount, s.enabledDeviceCount + s.disabledDeviceCount);
    assert.ok(s.totalDeviceCount >= 2);
  });

  it('adds, updates and removes devices in bulk', async () => {
    const added = ok(await sdk.call('addDevices', cs, [{ deviceId: 'sdk-bulk-1' }, { deviceId: 'sdk-bulk-2', status: 'disabled' }])) as { isSuccessful: boolean; errors: unknown[] };
    assert.deepEqual(added, { isSuccessful: true, errors: [], warnings: [] });
    const b2 = ok(await sdk.call('get', cs, 'sdk-bulk-2')) as DeviceLike;
    assert.equal(b2.status, 'disabled');

    const again = ok(await sdk.call('addDevices', cs, [{ deviceId: 'sdk-bulk-1' }])) as { isSuccessful: boolean; errors: { deviceId: string; errorCode: string }[] };
    assert.equal(again.isSuccessful, false);
    assert.deepEqual(again.errors.map((e) => [e.deviceId, e.errorCode]), [['sdk-bulk-1', 'DeviceAlreadyExists']]);

    const upd = ok(await sdk.call('updateDevices', cs, [{ deviceId: 'sdk-bulk-2', status: 'enabled' }], true)) as { isSuccessful: boolean };
    assert.equal(upd.isSuccessful, true);
    assert.equal((ok(await sdk.call('get', cs, 'sdk-bulk-2')) as DeviceLike).status, 'enabled');

    // Without force, the SDK sends UpdateIfMatchETag / DeleteIfMatchETag with each device's etag.
    const cur = ok(await sdk.call('get', cs, 'sdk-bulk-2')) as DeviceLike;
    const pinned = ok(await sdk.call('updateDevices', cs, [{ deviceId: 'sdk-bulk-2', etag: cur.etag, status: 'enabled', statusReason: 'pinned' }], false)) as { isSuccessful: boolean };
    assert.equal(pinned.isSuccessful, true);
    const staleDel = ok(await sdk.call('removeDevices', cs, [{ deviceId: 'sdk-bulk-2', etag: cur.etag }], false)) as { isSuccessful: boolean; errors: { deviceId: string; errorCode: string }[] };
    assert.equal(staleDel.isSuccessful, false);
    assert.deepEqual(staleDel.errors.map((e) => [e.deviceId, e.errorCode]), [['sdk-bulk-2', 'PreconditionFailed']]);

    const removed = ok(await sdk.call('removeDevices', cs, [{ deviceId: 'sdk-bulk-1' }, { deviceId: 'sdk-bulk-2' }], true)) as { isSuccessful: boolean };
    assert.equal(removed.isSuccessful, true);
    for (const id of ['sdk-bulk-1', 'sdk-bulk-2']) assert.equal(failed(await sdk.call('get', cs, id)).ctor, 'DeviceNotFoundError');
  });
});

describe('azure-iothub SDK interop: query', () => {
  const ids = ['sdk-q-1', 'sdk-q-2', 'sdk-q-3', 'sdk-q-4', 'sdk-q-5'];

  before(async () => {
    for (const [i, id] of ids.entries()) {
      ok(await sdk.call('create', cs, { deviceId: id }));
      ok(await sdk.call('updateTwin', cs, id, { tags: { floor: i < 3 ? 'low' : 'high' }, properties: { desired: { level: i } } }, '*'));
    }
  });

  it('filters on deviceId, tags and desired properties', async () => {
    const byId = ok(await sdk.call('queryPage', cs, "SELECT * FROM devices WHERE deviceId = 'sdk-q-2'", 100)) as { items: TwinLike[]; hasMoreResults: boolean };
    assert.deepEqual(byId.items.map((t) => t.deviceId), ['sdk-q-2']);
    assert.equal(byId.hasMoreResults, false);
    const byTag = ok(await sdk.call('queryPage', cs, "SELECT * FROM devices WHERE tags.floor = 'high'", 100)) as { items: TwinLike[] };
    assert.deepEqual(byTag.items.map((t) => t.deviceId), ['sdk-q-4', 'sdk-q-5']);
    const byProp = ok(await sdk.call('queryPage', cs, 'SELECT * FROM devices WHERE properties.desired.level >= 1 AND properties.desired.level <= 2', 100)) as { items: TwinLike[] };
    assert.deepEqual(byProp.items.map((t) => t.deviceId), ['sdk-q-2', 'sdk-q-3']);
    const count = ok(await sdk.call('count', cs, "SELECT COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, 'sdk-q-')"));
    assert.deepEqual(count, [{ n: 5 }]);
  });

  it('pages with an explicit continuation token, and with callback-style next', async () => {
    const q = "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'sdk-q-')";
    const seen: string[] = [];
    let token: string | undefined;
    for (let page = 0; page < 10; page++) {
      const r = ok(await sdk.call('queryPage', cs, q, 2, ...(token === undefined ? [] : [token]))) as { items: TwinLike[]; continuationToken: string | null; hasMoreResults: boolean };
      seen.push(...r.items.map((t) => t.deviceId));
      if (!r.hasMoreResults) break;
      assert.equal(typeof r.continuationToken, 'string');
      token = r.continuationToken ?? undefined;
    }
    assert.deepEqual(seen, ids);

    const pages = ok(await sdk.call('queryAll', cs, q, 2)) as { deviceId: string }[][];
    assert.deepEqual(pages.map((p) => p.map((t) => t.deviceId)), [['sdk-q-1', 'sdk-q-2'], ['sdk-q-3', 'sdk-q-4'], ['sdk-q-5']]);
  });
});

describe('azure-iothub SDK interop: direct methods', () => {
  it('invokes a method on a connected device', async () => {
    ok(await sdk.call('create', cs, { deviceId: 'sdk-m-on' }));
    f.hub.connected({
      deviceId: 'sdk-m-on',
      connectedAt: Date.now(),
      acceptsMethods: true,
      deliverDesiredPatch: () => undefined,
      sendMethodRequest: (name, rid, payload) =>
        setImmediate(() => f.hub.methodResponse('sdk-m-on', rid, 200, Buffer.from(JSON.stringify({ name, got: JSON.parse(payload.toString('utf8')) as unknown })))),
      close: () => undefined,
    });
    const r = ok(await sdk.call('invoke', connectionString('service'), 'sdk-m-on', { methodName: 'reboot', payload: { a: 1 }, responseTimeoutInSeconds: 15 }));
    assert.deepEqual(r, { status: 200, payload: { name: 'reboot', got: { a: 1 } } });
  });

  it('fails fast with 404 for an offline device and DeviceNotFoundError for an unknown one (no retries)', async () => {
    ok(await sdk.call('create', cs, { deviceId: 'sdk-m-off' }));
    const offline = await sdk.call('invoke', connectionString('service'), 'sdk-m-off', { methodName: 'reboot', responseTimeoutInSeconds: 30 });
    const e = failed(offline);
    assert.equal(e.statusCode, 404);
    assert.match(e.responseBody ?? '', /ErrorCode:DeviceNotOnline;/);
    assert.ok(offline.ms < 3000, `answered in ${offline.ms} ms`);
    const unknown = failed(await sdk.call('invoke', connectionString('service'), 'sdk-m-ghost', { methodName: 'reboot' }));
    assert.equal(unknown.ctor, 'DeviceNotFoundError');
  });
});

describe('azure-iothub SDK interop: authorization', () => {
  it('maps a wrong key to UnauthorizedError', async () => {
    const wrong = connectionString('iothubowner', Buffer.alloc(32, 7).toString('base64'));
    const e = failed(await sdk.call('get', wrong, 'sdk-dev-1'));
    assert.equal(e.ctor, 'UnauthorizedError');
    assert.equal(e.statusCode, 401);
  });

  it('lets a registryRead policy read but not write', async () => {
    const ro = connectionString('registryRead');
    assert.equal((ok(await sdk.call('get', ro, 'sdk-dev-1')) as DeviceLike).deviceId, 'sdk-dev-1');
    const e = failed(await sdk.call('create', ro, { deviceId: 'sdk-ro' }));
    assert.equal(e.ctor, 'UnauthorizedError');
    assert.equal(failed(await sdk.call('delete', ro, 'sdk-dev-1')).ctor, 'UnauthorizedError');
    assert.equal(failed(await sdk.call('get', cs, 'sdk-ro')).ctor, 'DeviceNotFoundError');
    assert.equal(failed(await sdk.call('invoke', ro, 'sdk-dev-1', { methodName: 'x' })).statusCode, 401);
  });

  it('no SDK callback threw (T11)', () => {
    assert.deepEqual(sdk.fatal, []);
  });
});

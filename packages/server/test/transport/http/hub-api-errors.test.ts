import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { buildSas } from '../../../src/core/sas.ts';
import type { JsonObject } from '../../../src/core/json.ts';
import { createHubFixture, hubErrorCode, jsonObject, JSON_CT, type HubFixture } from './hub-fixture.ts';

/**
 * Bad input, one case each. Every rejected request must leave the stored device and twin exactly as they were,
 * which each test checks by reading both back.
 */
let f: HubFixture;
let device: JsonObject;
let twin: JsonObject;

before(async () => {
  f = await createHubFixture();
  const r = await f.request({ method: 'PUT', url: '/devices/victim', payload: { deviceId: 'victim' } });
  assert.equal(r.statusCode, 200);
  const p = await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { tags: { t: 1 }, properties: { desired: { d: 1 } } } });
  assert.equal(p.statusCode, 200);
  device = jsonObject(await f.request({ method: 'GET', url: '/devices/victim' }));
  twin = jsonObject(await f.request({ method: 'GET', url: '/twins/victim' }));
});

after(async () => {
  await f.close();
});

async function assertUnchanged(): Promise<void> {
  assert.deepEqual(jsonObject(await f.request({ method: 'GET', url: '/devices/victim' })), device);
  assert.deepEqual(jsonObject(await f.request({ method: 'GET', url: '/twins/victim' })), twin);
  const s = jsonObject(await f.request({ method: 'GET', url: '/statistics/devices' }));
  assert.equal(s.totalDeviceCount, 1, 'no device was created');
}

function assertHubError(r: LightMyRequestResponse, status: number, code: string): void {
  assert.equal(r.statusCode, status, r.body);
  assert.equal(r.headers['content-type'], JSON_CT);
  assert.equal(hubErrorCode(r), code, r.body);
  assert.match(String(jsonObject(r).ExceptionMessage), /^Tracking ID:[0-9a-f]+-G:0-TimeStamp:\d\d\/\d\d\/\d{4} \d\d:\d\d:\d\d$/);
}

const raw = (payload: string) => ({ payload, headers: { 'content-type': 'application/json; charset=utf-8' } });

describe('hub API: bad input', () => {
  it('malformed JSON → 400 classic body', async () => {
    assertHubError(await f.request({ method: 'PUT', url: '/devices/victim', ...raw('{"deviceId":') }), 400, 'InvalidJson');
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', ...raw('{tags:1}') }), 400, 'InvalidJson');
    assertHubError(await f.request({ method: 'POST', url: '/devices/query', ...raw("{'query':1}") }), 400, 'InvalidJson');
    assertHubError(await f.request({ method: 'POST', url: '/twins/victim/methods', ...raw('[') }), 400, 'InvalidJson');
    await assertUnchanged();
  });

  it('a body of the wrong JSON type or an empty body → 400', async () => {
    assertHubError(await f.request({ method: 'PUT', url: '/devices/new-dev', ...raw('[1]') }), 400, 'InvalidJson');
    assertHubError(await f.request({ method: 'PUT', url: '/devices/new-dev' }), 400, 'InvalidJson');
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', ...raw('"x"') }), 400, 'InvalidJson');
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', ...raw('{"tags":[1]}') }), 400, 'ArgumentInvalid');
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', ...raw('{"properties":{"reported":{"x":1}}}') }), 400, 'ArgumentInvalid');
    await assertUnchanged();
  });

  it('body deviceId different from the path id → 400', async () => {
    assertHubError(await f.request({ method: 'PUT', url: '/devices/new-dev', payload: { deviceId: 'other' } }), 400, 'ArgumentInvalid');
    assertHubError(await f.request({ method: 'PUT', url: '/devices/victim', headers: { 'if-match': '*' }, payload: { deviceId: 'Victim', status: 'disabled' } }), 400, 'ArgumentInvalid');
    assertHubError(await f.request({ method: 'GET', url: '/devices/other' }), 404, 'DeviceNotFound');
    await assertUnchanged();
  });

  it('unknown device → 404 DeviceNotFound on every device route', async () => {
    const cases: [string, string, object | undefined][] = [
      ['GET', '/devices/ghost', undefined],
      ['DELETE', '/devices/ghost', undefined],
      ['PUT', '/devices/ghost', { deviceId: 'ghost' }],
      ['GET', '/twins/ghost', undefined],
      ['PATCH', '/twins/ghost', { tags: { a: 1 } }],
      ['PUT', '/twins/ghost', { tags: { a: 1 } }],
      ['POST', '/twins/ghost/methods', { methodName: 'm' }],
      ['GET', '/homing/telemetry/counts/ghost', undefined],
    ];
    for (const [method, url, payload] of cases) {
      const r = await f.request({ method: method as 'GET', url, headers: { 'if-match': '*' }, ...(payload ? { payload } : {}) });
      assertHubError(r, 404, 'DeviceNotFound');
      assert.equal(jsonObject(r).Message, 'ErrorCode:DeviceNotFound;Device ghost not found.');
    }
    await assertUnchanged();
  });

  it('stale etag → 412 on device update, delete, twin patch and twin replace', async () => {
    const stale = '"c3RhbGUtZXRhZw=="';
    const headers = { 'if-match': stale };
    assertHubError(await f.request({ method: 'PUT', url: '/devices/victim', headers, payload: { deviceId: 'victim', status: 'disabled' } }), 412, 'PreconditionFailed');
    assertHubError(await f.request({ method: 'DELETE', url: '/devices/victim', headers }), 412, 'PreconditionFailed');
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', headers, payload: { tags: { t: 2 } } }), 412, 'PreconditionFailed');
    assertHubError(await f.request({ method: 'PUT', url: '/twins/victim', headers, payload: { tags: {} } }), 412, 'PreconditionFailed');
    // The device etag is not the twin etag.
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': `"${String(device.etag)}"` }, payload: { tags: { t: 2 } } }), 412, 'PreconditionFailed');
    await assertUnchanged();
  });

  it('ids: a%2Fb decodes to the invalid id a/b → 400; dev%241 is dev$1 → valid', async () => {
    assertHubError(await f.request({ method: 'PUT', url: '/devices/a%2Fb', payload: { deviceId: 'a/b' } }), 400, 'InvalidDeviceId');
    assertHubError(await f.request({ method: 'GET', url: '/devices/a%2Fb' }), 400, 'InvalidDeviceId');
    assertHubError(await f.request({ method: 'GET', url: '/twins/a%2Fb' }), 400, 'InvalidDeviceId');
    assertHubError(await f.request({ method: 'GET', url: '/devices/has%20space' }), 400, 'InvalidDeviceId');
    assertHubError(await f.request({ method: 'GET', url: `/devices/${'x'.repeat(129)}` }), 400, 'InvalidDeviceId');
    assertHubError(await f.request({ method: 'GET', url: '/devices/%C3%BC' }), 400, 'InvalidDeviceId');
    assertHubError(await f.request({ method: 'GET', url: '/devices/bad%zzescape' }), 400, 'ArgumentInvalid');
    await assertUnchanged();
    const ok = await f.request({ method: 'PUT', url: '/devices/dev%241', payload: { deviceId: 'dev$1' } });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.equal(jsonObject(await f.request({ method: 'GET', url: '/devices/dev%241' })).deviceId, 'dev$1');
    assert.equal((await f.request({ method: 'DELETE', url: '/devices/dev%241', headers: { 'if-match': '*' } })).statusCode, 204);
  });

  it('oversized body → 413', async () => {
    const big = 'x'.repeat(70 * 1024);
    assertHubError(await f.request({ method: 'PUT', url: '/devices/new-dev', payload: { deviceId: 'new-dev', statusReason: big } }), 413, 'MessageTooLarge');
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { tags: { big: 'y'.repeat(300 * 1024) } } }), 413, 'MessageTooLarge');
    assertHubError(await f.request({ method: 'POST', url: '/devices/query', payload: { query: `SELECT * FROM devices WHERE a = '${big}'` } }), 413, 'MessageTooLarge');
    await assertUnchanged();
  });

  it('a twin section over 32 KiB → 400 TwinTooLarge', async () => {
    const r = await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { properties: { desired: { big: 'z'.repeat(33 * 1024) } } } });
    assertHubError(r, 400, 'TwinTooLarge');
    const half = 'h'.repeat(17 * 1024);
    assert.equal((await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { tags: { h1: half } } })).statusCode, 200);
    // The merged section is what counts: the second half pushes tags over the limit.
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { tags: { h2: half } } }), 400, 'TwinTooLarge');
    assert.equal((await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { tags: { h1: null } } })).statusCode, 200);
    twin = jsonObject(await f.request({ method: 'GET', url: '/twins/victim' }));
    await assertUnchanged();
  });

  it('bad twin property names → 400', async () => {
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { tags: { 'a.b': 1 } } }), 400, 'InvalidTwinPropertyName');
    assertHubError(await f.request({ method: 'PATCH', url: '/twins/victim', headers: { 'if-match': '*' }, payload: { properties: { desired: { 'has space': 1 } } } }), 400, 'InvalidTwinPropertyName');
    await assertUnchanged();
  });

  it('bad base64 keys, bad status, bad auth type → 400', async () => {
    const bodies: JsonObject[] = [
      { deviceId: 'new-dev', authentication: { type: 'sas', symmetricKey: { primaryKey: 'not base64!', secondaryKey: '' } } },
      { deviceId: 'new-dev', authentication: { type: 'sas', symmetricKey: { primaryKey: Buffer.alloc(8).toString('base64') } } },
      { deviceId: 'new-dev', authentication: { type: 'sas', symmetricKey: { primaryKey: 'QUJD', secondaryKey: 'QUJD' } } },
      { deviceId: 'new-dev', status: 'paused' },
      { deviceId: 'new-dev', authentication: { type: 'password' } },
      { deviceId: 'new-dev', authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: 'xyz' } } },
      { deviceId: 'new-dev', capabilities: { iotEdge: 'yes' } },
    ];
    for (const payload of bodies) assertHubError(await f.request({ method: 'PUT', url: '/devices/new-dev', payload }), 400, 'ArgumentInvalid');
    assertHubError(
      await f.request({ method: 'PUT', url: '/devices/victim', headers: { 'if-match': '*' }, payload: { deviceId: 'victim', authentication: { symmetricKey: { primaryKey: '%%%%' } } } }),
      400,
      'ArgumentInvalid',
    );
    await assertUnchanged();
  });

  it('bad query paging headers and query text → 400', async () => {
    const q = { query: 'SELECT * FROM devices' };
    for (const token of ['garbage!', 'eyJ4IjoxfQ', 'bm90IGpzb24']) {
      assertHubError(await f.request({ method: 'POST', url: '/devices/query', headers: { 'x-ms-continuation': token }, payload: q }), 400, 'ArgumentInvalid');
    }
    for (const n of ['0', '-1', 'ten', '1.5']) {
      assertHubError(await f.request({ method: 'POST', url: '/devices/query', headers: { 'x-ms-max-item-count': n }, payload: q }), 400, 'ArgumentInvalid');
    }
    assertHubError(await f.request({ method: 'POST', url: '/devices/query', payload: { query: 'DELETE FROM devices' } }), 400, 'ArgumentInvalid');
    assertHubError(await f.request({ method: 'GET', url: '/devices?top=0' }), 400, 'ArgumentInvalid');
    assertHubError(await f.request({ method: 'GET', url: '/devices?top=abc' }), 400, 'ArgumentInvalid');
    await assertUnchanged();
  });

  it('bad method invocations → 400', async () => {
    const bodies: JsonObject[] = [
      {},
      { methodName: '' },
      { methodName: 'has space' },
      { methodName: 'm', responseTimeoutInSeconds: 1 },
      { methodName: 'm', responseTimeoutInSeconds: 'soon' },
      { methodName: 'm', connectTimeoutInSeconds: -1 },
    ];
    for (const payload of bodies) assertHubError(await f.request({ method: 'POST', url: '/twins/victim/methods', auth: 'service', payload }), 400, 'ArgumentInvalid');
  });

  it('bad telemetry parameters → 400', async () => {
    for (const url of ['/homing/telemetry/recent?limit=0', '/homing/telemetry/recent?limit=x', '/homing/telemetry/recent?since=-1', '/homing/telemetry/stream?since=abc']) {
      assertHubError(await f.request({ method: 'GET', url, auth: 'service' }), 400, 'ArgumentInvalid');
    }
  });
});

describe('hub API: bad credentials', () => {
  const now = () => Math.floor(Date.now() / 1000);

  it('refuses every malformed, expired, foreign or wrongly signed token with the same 401', async () => {
    const tokens: (string | null)[] = [
      null,
      '',
      'Bearer eyJhbGciOi.x.y',
      'SharedAccessSignature garbage',
      f.sas('iothubowner', { expirySeconds: now() - 3600 }),
      f.sas('iothubowner', { sr: 'other-hub.example.net' }),
      f.sas('iothubowner', { sr: `x${f.hostName}` }),
      f.sas('iothubowner', { key: f.policies.service.primaryKey }),
      f.sas('iothubowner', { keyName: 'nobody' }),
      buildSas({ sr: f.hostName, keyBase64: f.policies.iothubowner.primaryKey, expirySeconds: now() + 3600 }),
      f.sas('iothubowner').replace(/sig=[^&]+/, 'sig=AAAA'),
    ];
    const bodies = new Set<string>();
    for (const auth of tokens) {
      for (const [method, url, payload] of [['GET', '/devices/victim', undefined], ['PUT', '/devices/new-dev', { deviceId: 'new-dev' }], ['POST', '/devices/query', '{']] as const) {
        const r = await f.request({ method, url, auth, ...(payload === undefined ? {} : { payload }) });
        assertHubError(r, 401, 'IotHubUnauthorizedAccess');
        bodies.add(String(jsonObject(r).Message));
      }
    }
    assert.deepEqual([...bodies], ['ErrorCode:IotHubUnauthorizedAccess;Unauthorized'], 'no hint which part failed');
    await assertUnchanged();
  });

  it('accepts the secondary key, and a token within the allowed clock skew', async () => {
    const secondary = f.sas('registryRead', { key: f.policies.registryRead.secondaryKey });
    assert.equal((await f.request({ method: 'GET', url: '/devices/victim', auth: secondary })).statusCode, 200);
    const justExpired = f.sas('registryRead', { expirySeconds: now() - 60 });
    assert.equal((await f.request({ method: 'GET', url: '/devices/victim', auth: justExpired })).statusCode, 200);
  });
});

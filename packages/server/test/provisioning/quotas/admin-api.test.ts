import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assertDpsError, assertThrottled, body, createQuotaHarness, HOST, type QuotaHarness } from './harness.ts';

/** `GET/PUT /homing/instance/quotas` (docs/api/quotas.md): ServiceConfig right, validation, If-Match, effect. */
describe('quota admin API', () => {
  let h: QuotaHarness;
  beforeEach(async () => {
    h = await createQuotaHarness({ defaults: { registrationsPerMinute: 100 } });
  });
  afterEach(async () => {
    await h.close();
  });

  it('GET: the stored settings (none), the effective limits (the service defaults) and the instance etag', async () => {
    const r = await h.call('GET', '/homing/instance/quotas');
    assert.equal(r.statusCode, 200, r.body);
    const b = body(r);
    assert.deepEqual(b.settings, {});
    assert.deepEqual(b.effective, { registrationsPerMinute: 100, operationsPerMinute: null, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
    assert.equal(b.etag, (await h.instance()).etag);
    assert.equal(r.headers.etag, b.etag);
  });

  it('PUT replaces the settings; they are stored with the instance and act on the next registration', async () => {
    const r = await h.call('PUT', '/homing/instance/quotas', { body: { preset: 'azure', registrationsPerMinute: 1, maxRegistrations: 10 } });
    assert.equal(r.statusCode, 200, r.body);
    const b = body(r);
    assert.deepEqual(b.settings, { preset: 'azure', registrationsPerMinute: 1, maxRegistrations: 10 });
    assert.deepEqual(b.effective, { registrationsPerMinute: 1, operationsPerMinute: 1000, pollsPer10Seconds: 5, maxRegistrations: 10 });
    const stored = await h.instance();
    assert.deepEqual(stored.quotas, { preset: 'azure', registrationsPerMinute: 1, maxRegistrations: 10 });
    assert.equal(b.etag, stored.etag);
    // /homing/instance shows them too.
    assert.deepEqual(body(await h.call('GET', '/homing/instance')).quotas, { preset: 'azure', registrationsPerMinute: 1, maxRegistrations: 10 });

    assertDpsError(await h.register('any-1', null), 401, 401000);
    assertThrottled(await h.register('any-2', null));

    // PUT replaces: fields not given go back to the defaults; {} removes the settings.
    const again = body(await h.call('PUT', '/homing/instance/quotas', { body: { operationsPerMinute: 7 } }));
    assert.deepEqual(again.settings, { operationsPerMinute: 7 });
    assert.deepEqual(again.effective, { registrationsPerMinute: 100, operationsPerMinute: 7, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
    const cleared = body(await h.call('PUT', '/homing/instance/quotas', { body: {} }));
    assert.deepEqual(cleared.settings, {});
    assert.equal((await h.instance()).quotas, undefined);
    assert.equal(body(await h.call('GET', '/homing/instance')).quotas, undefined);
  });

  it('null fields count as absent; 0 switches a quota off', async () => {
    const b = body(await h.call('PUT', '/homing/instance/quotas', { body: { registrationsPerMinute: 0, pollsPer10Seconds: null } }));
    assert.deepEqual(b.settings, { registrationsPerMinute: 0 });
    assert.deepEqual(b.effective, { registrationsPerMinute: null, operationsPerMinute: null, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
  });

  it('refuses invalid settings with 400 400004 and changes nothing', async () => {
    const before = await h.instance();
    for (const bad of [
      { registrationsPerMinute: -1 },
      { registrationsPerMinute: 1.5 },
      { registrationsPerMinute: '10' },
      { pollsPer10Seconds: 2_000_000_000 },
      { preset: 'gold' },
      { registrationsPerMinit: 5 },
    ]) {
      assertDpsError(await h.call('PUT', '/homing/instance/quotas', { body: bad }), 400, 400004);
    }
    assertDpsError(await h.call('PUT', '/homing/instance/quotas', { body: [1] }), 400, 400006);
    assert.deepEqual(await h.instance(), before);
  });

  it('If-Match: a stale etag is 412 412002; the current one or * works', async () => {
    const etag = (await h.instance()).etag;
    assertDpsError(await h.call('PUT', '/homing/instance/quotas', { body: { registrationsPerMinute: 5 }, headers: { 'if-match': '"stale"' } }), 412, 412002);
    const ok = await h.call('PUT', '/homing/instance/quotas', { body: { registrationsPerMinute: 5 }, headers: { 'if-match': etag } });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.notEqual(body(ok).etag, etag);
    assert.equal((await h.call('PUT', '/homing/instance/quotas', { body: { registrationsPerMinute: 6 }, headers: { 'if-match': '*' } })).statusCode, 200);
  });

  it('needs the ServiceConfig right: other policies and bad tokens get 401 401000', async () => {
    assertDpsError(await h.call('GET', '/homing/instance/quotas', { policy: 'enrollmentwrite' }), 401, 401000);
    assertDpsError(await h.call('PUT', '/homing/instance/quotas', { policy: 'registrationstatuswrite', body: { registrationsPerMinute: 1 } }), 401, 401000);
    const anon = await h.app.inject({ method: 'GET', url: '/homing/instance/quotas', headers: { host: HOST } });
    assertDpsError(anon, 401, 401000);
    assert.equal((await h.call('GET', '/homing/instance/quotas', { policy: 'serviceconfig' })).statusCode, 200);
    assert.equal((await h.instance()).quotas, undefined);
  });
});

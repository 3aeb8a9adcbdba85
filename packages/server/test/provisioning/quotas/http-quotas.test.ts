import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assertDpsError, assertThrottled, body, createQuotaHarness, gate, heldHubClients, type QuotaHarness } from './harness.ts';

/**
 * Rate quotas over HTTPS (fastify inject; the app is wired as server.ts wires it): every refusal is 429 with the DPS
 * body (errorCode 429001) and an integer Retry-After ≥ 1 computed from when capacity frees up. Manual clock only.
 */
describe('rate quotas over HTTPS', () => {
  let h: QuotaHarness;
  beforeEach(async () => {
    h = await createQuotaHarness();
  });
  afterEach(async () => {
    await h.close();
  });

  it('off by default: many registrations in the same instant are never throttled (only the poll limit is on)', async () => {
    assert.deepEqual(h.quotas.effective(await h.instance()), { registrationsPerMinute: undefined, operationsPerMinute: undefined, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
    for (let i = 0; i < 50; i++) assertDpsError(await h.register(`anon-${i}`, null), 401, 401000);
    const g = await h.group();
    assert.equal((await h.register('dev-1', h.f.derivedKey(g, 'dev-1'))).statusCode, 202);
  });

  it('scenario 34: N registrations per minute; the N+1st gets 429 429001 with an integer Retry-After; capacity returns after it', async () => {
    await h.setQuotas({ registrationsPerMinute: 3 });
    const g = await h.group();
    for (let i = 1; i <= 3; i++) assert.equal((await h.register(`d-${i}`, h.f.derivedKey(g, `d-${i}`))).statusCode, 202);
    const r = await h.register('d-4', h.f.derivedKey(g, 'd-4'));
    const retryAfter = assertThrottled(r);
    // 3 per minute: one unit frees up every 20 s, and the burst of 3 used them all.
    assert.equal(retryAfter, 20);
    assert.match(String(body(r).message), /limit 3 per minute/);
    h.clock.advance(19_000);
    assertThrottled(await h.register('d-4', h.f.derivedKey(g, 'd-4')));
    h.clock.advance(1_000);
    assert.equal((await h.register('d-4', h.f.derivedKey(g, 'd-4'))).statusCode, 202);
    assertThrottled(await h.register('d-5', h.f.derivedKey(g, 'd-5')));
  });

  it('a registration status lookup counts against the registrations bucket', async () => {
    await h.setQuotas({ registrationsPerMinute: 2 });
    const g = await h.group();
    const k = h.f.derivedKey(g, 'lk-1');
    assert.equal((await h.register('lk-1', k)).statusCode, 202);
    await h.service.drain();
    assert.equal((await h.lookup('lk-1', k)).statusCode, 200);
    assertThrottled(await h.lookup('lk-1', k));
    assertThrottled(await h.register('lk-1', k));
  });

  it('the registrations bucket is spent before authentication, as in DPS (callers without a credential use it up too)', async () => {
    await h.setQuotas({ registrationsPerMinute: 2 });
    assertDpsError(await h.register('x-1', null), 401, 401000);
    assertDpsError(await h.register('x-2', null), 401, 401000);
    const g = await h.group();
    assertThrottled(await h.register('x-3', h.f.derivedKey(g, 'x-3')));
  });

  it('scenario 35: the poll limit is on by default; a 6th poll within 10 s is 429 with Retry-After, and the next poll after it works', async () => {
    const g = await h.group();
    const k = h.f.derivedKey(g, 'p-1');
    const op = String(body(await h.register('p-1', k)).operationId);
    for (let i = 0; i < 5; i++) assert.ok([200, 202].includes((await h.poll('p-1', op, k)).statusCode));
    const r = await h.poll('p-1', op, k);
    // 5 per 10 s: one poll frees up every 2 s.
    assert.equal(assertThrottled(r), 2);
    assert.match(String(body(r).message), /limit 5 per 10 s/);
    h.clock.advance(2_000);
    assert.ok([200, 202].includes((await h.poll('p-1', op, k)).statusCode));
    // Another device has its own bucket.
    const k2 = h.f.derivedKey(g, 'p-2');
    const op2 = String(body(await h.register('p-2', k2)).operationId);
    assert.ok([200, 202].includes((await h.poll('p-2', op2, k2)).statusCode));
  });

  it('pollsPer10Seconds: 0 switches the poll limit off', async () => {
    await h.setQuotas({ pollsPer10Seconds: 0 });
    const g = await h.group();
    const k = h.f.derivedKey(g, 'np-1');
    const op = String(body(await h.register('np-1', k)).operationId);
    for (let i = 0; i < 20; i++) assert.ok([200, 202].includes((await h.poll('np-1', op, k)).statusCode));
  });

  it('operations per minute: register, poll and lookup all count; the service API counts too', async () => {
    await h.setQuotas({ operationsPerMinute: 4, pollsPer10Seconds: 0 });
    const g = await h.group();
    const k = h.f.derivedKey(g, 'o-1');
    const op = String(body(await h.register('o-1', k)).operationId);
    await h.service.drain();
    assert.equal((await h.poll('o-1', op, k)).statusCode, 200);
    assert.equal((await h.lookup('o-1', k)).statusCode, 200);
    assert.equal((await h.call('GET', '/registrations/o-1?api-version=2021-10-01')).statusCode, 200);
    const r = await h.poll('o-1', op, k);
    assert.equal(assertThrottled(r), 15);
    assert.match(String(body(r).message), /operations/);
    assertThrottled(await h.call('GET', '/registrations/o-1?api-version=2021-10-01'));
    // The admin API is not counted: the quotas can always be changed.
    assert.equal((await h.call('GET', '/homing/instance/quotas')).statusCode, 200);
    assert.equal((await h.call('PUT', '/homing/instance/quotas', { body: { operationsPerMinute: 0 } })).statusCode, 200);
    assert.equal((await h.call('GET', '/registrations/o-1?api-version=2021-10-01')).statusCode, 200);
  });

  it('service API calls are charged only once authenticated', async () => {
    await h.setQuotas({ operationsPerMinute: 1 });
    for (let i = 0; i < 3; i++) {
      const r = await h.app.inject({ method: 'GET', url: '/enrollments/e1?api-version=2021-10-01', headers: { host: 'dps.quota.test', authorization: 'SharedAccessSignature sr=x&sig=y&se=1&skn=z' } });
      assertDpsError(r, 401, 401000);
    }
    assertDpsError(await h.call('GET', '/enrollments/e1?api-version=2021-10-01'), 404, 404201);
    assertThrottled(await h.call('GET', '/enrollments/e1?api-version=2021-10-01'));
  });

  it('the azure preset: 1,000 registrations per minute, 1,000 operations per minute, 5 polls per 10 s per device', async () => {
    await h.setQuotas({ preset: 'azure' });
    assert.deepEqual(h.quotas.effective(await h.instance()), { registrationsPerMinute: 1000, operationsPerMinute: 1000, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
    for (let i = 0; i < 1000; i++) assert.equal((await h.register(`az-${i}`, null)).statusCode, 401);
    const r = await h.register('az-x', null);
    // 1,000 per minute: a unit frees up every 60 ms, so the advice is the minimum, 1 s.
    assert.equal(assertThrottled(r), 1);
    h.clock.advance(60);
    assert.equal((await h.register('az-y', null)).statusCode, 401);
    assertThrottled(await h.register('az-z', null));
  });

  it('a preset with an override: the instance field wins over its preset', async () => {
    await h.setQuotas({ preset: 'azure', registrationsPerMinute: 2, pollsPer10Seconds: 0 });
    assert.deepEqual(h.quotas.effective(await h.instance()), { registrationsPerMinute: 2, operationsPerMinute: 1000, pollsPer10Seconds: undefined, maxRegistrations: 1_000_000 });
    await h.register('pr-1', null);
    await h.register('pr-2', null);
    assertThrottled(await h.register('pr-3', null));
  });
});

describe('Retry-After of still-assigning polls follows the poll limit', () => {
  it('a device that waits the Retry-After it is given is never throttled', async () => {
    // Hub writes wait for the gate, so the operation stays `assigning` for as long as the test polls.
    const { promise, open } = gate();
    const h = await createQuotaHarness({ hubClients: heldHubClients(promise) });
    try {
      const g = await h.group();
      const k = h.f.derivedKey(g, 'slow-1');
      const r0 = await h.register('slow-1', k);
      assert.equal(r0.statusCode, 202);
      const op = String(body(r0).operationId);
      let wait = Number(r0.headers['retry-after']);
      const waits: number[] = [];
      for (let i = 0; i < 30; i++) {
        h.clock.advance(wait * 1000);
        const r = await h.poll('slow-1', op, k);
        assert.equal(r.statusCode, 202, `poll ${i + 1}: ${r.body}`);
        wait = Number(r.headers['retry-after']);
        assert.ok(Number.isInteger(wait) && wait >= 1);
        waits.push(wait);
      }
      // Polls at 1 s use up the burst; then the advice stretches to the sustained rate (5 per 10 s = every 2 s).
      assert.equal(waits[0], 1);
      assert.equal(waits.at(-1), 2);
      // A device that ignores it is throttled.
      assertThrottled(await h.poll('slow-1', op, k));
      open();
      await h.service.drain();
    } finally {
      open();
      await h.close();
    }
  });
});

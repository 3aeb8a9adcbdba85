import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HomingError } from '../../../src/core/errors.ts';
import { eventLoopLag, OverloadGuard } from '../../../src/provisioning/quotas/overload.ts';
import { ManualClock } from '../../helpers/ids.ts';
import { assertThrottled, body, createQuotaHarness, gate, heldHubClients } from './harness.ts';

/**
 * Overload protection: deterministic. The in-flight count is driven by admissions the test holds (or hub writes held
 * behind a gate), the lag comes from an injected source, the completion rate from a manual clock.
 */
function refusal(fn: () => unknown): HomingError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof HomingError);
    assert.equal(e.errorName, 'ThrottlingException');
    assert.equal(e.code, 429001);
    return e;
  }
  assert.fail('expected a refusal');
}

describe('OverloadGuard', () => {
  it('refuses past maxInFlightRegistrations; Retry-After = in flight / completion rate', () => {
    const clock = new ManualClock();
    const g = new OverloadGuard({ clock, lag: () => 0, maxInFlightRegistrations: 3 });
    const a = g.admit();
    const b = g.admit();
    g.admit();
    assert.equal(g.inFlight, 3);
    // Nothing has completed within the window: the advice is the window (10 s).
    assert.equal(refusal(() => g.admit()).retryAfterSeconds, 10);
    clock.advance(1000);
    a();
    b();
    b(); // a second release of the same admission is ignored
    assert.equal(g.inFlight, 1);
    assert.equal(g.completionRate(), 0.2);
    g.admit();
    g.admit();
    // 3 in flight at 0.2 completions per second: 15 s.
    const e = refusal(() => g.admit());
    assert.equal(e.retryAfterSeconds, 15);
    assert.match(e.message, /3 registrations in progress/);
    assert.equal(g.rejected, 2);
    // The completions leave the window: back to the window length.
    clock.advance(10_000);
    assert.equal(g.completionRate(), 0);
    assert.equal(refusal(() => g.admit()).retryAfterSeconds, 10);
  });

  it('caps Retry-After at maxRetryAfterSeconds and never answers below 1', () => {
    const clock = new ManualClock();
    const g = new OverloadGuard({ clock, lag: () => 0, maxInFlightRegistrations: 500, maxRetryAfterSeconds: 60 });
    const first = g.admit();
    first();
    for (let i = 0; i < 500; i++) g.admit();
    // 500 in flight, 1 completion in 10 s: 5000 s, capped.
    assert.equal(refusal(() => g.admit()).retryAfterSeconds, 60);
    const fast = new OverloadGuard({ clock, lag: () => 0, maxInFlightRegistrations: 1 });
    for (let i = 0; i < 100; i++) fast.admit()();
    fast.admit();
    assert.equal(refusal(() => fast.admit()).retryAfterSeconds, 1);
  });

  it('refuses while the event-loop lag is past maxEventLoopLagMs, whatever is in flight; Retry-After at least the lag', () => {
    const clock = new ManualClock();
    let lag = 0;
    const g = new OverloadGuard({ clock, lag: () => lag, maxEventLoopLagMs: 250 });
    for (let i = 0; i < 50; i++) g.admit()();
    lag = 250;
    g.admit()();
    lag = 2600;
    const e = refusal(() => g.admit());
    assert.equal(e.retryAfterSeconds, 3);
    assert.match(e.message, /event-loop lag 2600 ms/);
    lag = 10;
    g.admit();
    // Nothing in flight and nothing completed yet: the lag alone decides.
    const idle = new OverloadGuard({ clock, lag: () => 300, maxEventLoopLagMs: 250 });
    assert.equal(refusal(() => idle.admit()).retryAfterSeconds, 1);
  });

  it('validates its bounds', () => {
    assert.throws(() => new OverloadGuard({ clock: new ManualClock(), maxInFlightRegistrations: 0 }), /maxInFlightRegistrations/);
    assert.throws(() => new OverloadGuard({ clock: new ManualClock(), maxEventLoopLagMs: -1 }), /maxEventLoopLagMs/);
  });

  it('the real lag source reads this process\u2019s event loop (a number ≥ 0)', () => {
    const lag = eventLoopLag();
    const v = lag();
    assert.ok(Number.isFinite(v) && v >= 0);
  });
});

describe('overload protection over HTTPS', () => {
  it('too many registrations in flight: the next register is 429 at once with Retry-After; polls still answer; capacity returns when they end', async () => {
    const held = gate();
    const h = await createQuotaHarness({ overload: { maxInFlightRegistrations: 2 }, hubClients: heldHubClients(held.promise) });
    try {
      const g = await h.group();
      const k1 = h.f.derivedKey(g, 'ov-1');
      const r1 = await h.register('ov-1', k1);
      assert.equal(r1.statusCode, 202);
      assert.equal((await h.register('ov-2', h.f.derivedKey(g, 'ov-2'))).statusCode, 202);
      assert.equal(h.guard.inFlight, 2);
      const r = await h.register('ov-3', h.f.derivedKey(g, 'ov-3'));
      assert.equal(assertThrottled(r), 10);
      assert.match(String(body(r).message), /overloaded/);
      // A refused registration was never started: nothing stored for it.
      assert.equal(await h.f.store.provisioning.getRegistration(h.f.instanceName, 'ov-3'), undefined);
      // Polls of running registrations are not refused.
      assert.equal((await h.poll('ov-1', String(body(r1).operationId), k1)).statusCode, 202);
      held.open();
      await h.service.drain();
      // The release runs when the completion settles (microtasks after drain): let them run.
      await new Promise<void>((resolve) => setImmediate(resolve));
      assert.equal(h.guard.inFlight, 0);
      assert.equal((await h.register('ov-3', h.f.derivedKey(g, 'ov-3'))).statusCode, 202);
      await h.service.drain();
    } finally {
      held.open();
      await h.close();
    }
  });

  it('event-loop lag past the bound: new registrations get 429; registrations that end release their slot', async () => {
    let lag = 0;
    const h = await createQuotaHarness({ lag: () => lag, overload: { maxEventLoopLagMs: 100 } });
    try {
      const g = await h.group();
      assert.equal((await h.register('lg-1', h.f.derivedKey(g, 'lg-1'))).statusCode, 202);
      lag = 1500;
      assert.ok(assertThrottled(await h.register('lg-2', h.f.derivedKey(g, 'lg-2'))) >= 2);
      // Status lookups and polls are not refused by overload protection.
      await h.service.drain();
      assert.equal((await h.lookup('lg-1', h.f.derivedKey(g, 'lg-1'))).statusCode, 200);
      lag = 0;
      assert.equal((await h.register('lg-2', h.f.derivedKey(g, 'lg-2'))).statusCode, 202);
      await h.service.drain();
    } finally {
      await h.close();
    }
  });

  it('a register that fails (401) releases its slot at once', async () => {
    const h = await createQuotaHarness({ overload: { maxInFlightRegistrations: 1 } });
    try {
      for (let i = 0; i < 5; i++) assert.equal((await h.register(`bad-${i}`, null)).statusCode, 401);
      assert.equal(h.guard.inFlight, 0);
    } finally {
      await h.close();
    }
  });
});

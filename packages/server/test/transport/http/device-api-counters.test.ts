import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceApiCounters, MAX_COUNTED_SCOPES } from '../../../src/transport/http/portal-admin-api.ts';

describe('DeviceApiCounters', () => {
  it('counts calls and 429s per id scope (case-insensitive) and minute', () => {
    const c = new DeviceApiCounters();
    const t = Date.UTC(2026, 10, 22, 12, 0, 10);
    c.count('0ne00ABCDEF', t, 200);
    c.count('0ne00abcdef', t + 1000, 429);
    c.count('0ne00ABCDEF', t + 60_000, 429);
    const m = [...c.of('0NE00ABCDEF').values()];
    assert.deepEqual(m, [
      { calls: 2, throttled: 1 },
      { calls: 1, throttled: 1 },
    ]);
  });

  it('keeps at most MAX_COUNTED_SCOPES id scopes, dropping the oldest', () => {
    const c = new DeviceApiCounters();
    const t = Date.now();
    for (let i = 0; i < MAX_COUNTED_SCOPES + 50; i++) c.count(`scope-${i}`, t, 401);
    assert.equal(c.scopes, MAX_COUNTED_SCOPES);
    assert.equal(c.of('scope-0').size, 0);
    assert.equal(c.of(`scope-${MAX_COUNTED_SCOPES + 49}`).size, 1);
  });
});

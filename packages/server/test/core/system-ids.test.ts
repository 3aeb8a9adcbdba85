import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { systemIds } from '../../src/core/clock.ts';

describe('systemIds', () => {
  it('hands out random bytes of the asked length, never the same bytes twice, across block refills', () => {
    const ids = systemIds();
    const seen = new Set<string>();
    // 2,000 × 9 bytes span several 4 KiB blocks.
    for (let i = 0; i < 2000; i++) {
      const b = ids.bytes(9);
      assert.equal(b.length, 9);
      const hex = b.toString('hex');
      assert.equal(seen.has(hex), false, 'a repeated id');
      seen.add(hex);
    }
  });

  it('returns copies: changing one id does not change the next', () => {
    const ids = systemIds();
    const a = ids.bytes(32);
    const before = Buffer.from(a);
    a.fill(0);
    const b = ids.bytes(32);
    assert.notDeepEqual(b, Buffer.alloc(32));
    assert.notDeepEqual(b, before);
  });

  it('reads large requests directly and gives UUID v4 strings', () => {
    const ids = systemIds();
    const big = ids.bytes(8192);
    assert.equal(big.length, 8192);
    assert.ok(big.some((x) => x !== 0));
    assert.match(ids.uuid(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

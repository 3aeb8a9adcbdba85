import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openStore } from '../../../src/store/open.ts';
import { KyselyQuotaBuckets } from '../../../src/store/kysely/quota-store.ts';
import { MemoryQuotaBuckets } from '../../../src/store/quota-memory.ts';
import { openQuotaBuckets } from '../../../src/store/quota-open.ts';
import type { QuotaBucketStore, RateLimit } from '../../../src/store/quota-ports.ts';
import { openFreshPostgres, pgTestUrl as pgUrl } from '../../helpers/store-harness.ts';

/**
 * Contract of the QuotaBucketStore port, run on every adapter: memory, the Kysely table on SQLite, and the Kysely
 * table on PostgreSQL (when HOMING_TEST_DATABASE_URL is set). Times are passed in: no clock, no sleeps.
 */
interface Harness {
  buckets: QuotaBucketStore;
  /** A second handle on the same buckets (another pool, as another process would have), when the adapter has one. */
  other?: QuotaBucketStore;
  close(): Promise<void>;
}

const T0 = Date.parse('2026-01-01T00:00:00Z');
const PER_MINUTE = (limit: number): RateLimit => ({ limit, windowMs: 60_000 });

function contract(name: string, open: () => Promise<Harness>, skip?: string): void {
  describe(`QuotaBucketStore contract: ${name}`, { skip: skip ?? false }, () => {
    async function withHarness(fn: (h: Harness) => Promise<void>): Promise<void> {
      const h = await open();
      try {
        await fn(h);
      } finally {
        await h.close();
      }
    }

    it('a fresh bucket allows a burst of `limit`, then refuses with the wait until one unit frees up', async () => {
      await withHarness(async ({ buckets }) => {
        for (let i = 0; i < 3; i++) {
          const [o] = await buckets.take('inst', [{ bucket: 'registrations', rate: PER_MINUTE(3) }], T0);
          assert.equal(o?.allowed, true, `unit ${i + 1}`);
        }
        const [refused] = await buckets.take('inst', [{ bucket: 'registrations', rate: PER_MINUTE(3) }], T0);
        assert.deepEqual(refused, { bucket: 'registrations', allowed: false, waitMs: 20_000 });
        // A refusal takes nothing: still 20 s (minus the time passed) to wait.
        const [still] = await buckets.take('inst', [{ bucket: 'registrations', rate: PER_MINUTE(3) }], T0 + 5_000);
        assert.deepEqual(still, { bucket: 'registrations', allowed: false, waitMs: 15_000 });
        const [back] = await buckets.take('inst', [{ bucket: 'registrations', rate: PER_MINUTE(3) }], T0 + 20_000);
        assert.equal(back?.allowed, true);
        // The next unit frees up 20 s later.
        assert.equal(back?.waitMs, 20_000);
      });
    });

    it('allowed outcomes tell how long until the next unit (0 while the burst lasts)', async () => {
      await withHarness(async ({ buckets }) => {
        const rate: RateLimit = { limit: 5, windowMs: 10_000 };
        const waits: number[] = [];
        for (let i = 0; i < 5; i++) waits.push((await buckets.take('inst', [{ bucket: 'poll', rate }], T0))[0]!.waitMs);
        assert.deepEqual(waits, [0, 0, 0, 0, 2_000]);
      });
    });

    it('limits that do not divide the window still admit exactly `limit` at once (7 per minute)', async () => {
      await withHarness(async ({ buckets }) => {
        let ok = 0;
        for (let i = 0; i < 10; i++) if ((await buckets.take('inst', [{ bucket: 'r', rate: PER_MINUTE(7) }], T0))[0]!.allowed) ok++;
        assert.equal(ok, 7);
      });
    });

    it('instances and bucket names are independent; several buckets in one call; outcomes in call order', async () => {
      await withHarness(async ({ buckets }) => {
        await buckets.take('a', [{ bucket: 'registrations', rate: PER_MINUTE(1) }], T0);
        const out = await buckets.take('a', [{ bucket: 'registrations', rate: PER_MINUTE(1) }, { bucket: 'operations', rate: PER_MINUTE(1) }], T0);
        assert.deepEqual(out.map((o) => [o.bucket, o.allowed]), [['registrations', false], ['operations', true]]);
        const b = await buckets.take('b', [{ bucket: 'registrations', rate: PER_MINUTE(1) }], T0);
        assert.equal(b[0]?.allowed, true);
        assert.deepEqual(await buckets.take('a', [], T0), []);
      });
    });

    it('a changed rate applies from the next check; time already owed under the old rate stays owed', async () => {
      await withHarness(async ({ buckets }) => {
        assert.equal((await buckets.take('i', [{ bucket: 'r', rate: PER_MINUTE(1) }], T0))[0]?.allowed, true);
        assert.equal((await buckets.take('i', [{ bucket: 'r', rate: PER_MINUTE(1) }], T0))[0]?.waitMs, 60_000);
        // Now 60 per minute: the bucket is a full window ahead, so one new unit (1 s) is owed, not a minute.
        assert.deepEqual((await buckets.take('i', [{ bucket: 'r', rate: PER_MINUTE(60) }], T0))[0], { bucket: 'r', allowed: false, waitMs: 1_000 });
        assert.equal((await buckets.take('i', [{ bucket: 'r', rate: PER_MINUTE(60) }], T0 + 1_000))[0]?.allowed, true);
      });
    });

    it('concurrent checks (and checks through a second handle) never admit more than the limit', async () => {
      await withHarness(async ({ buckets, other }) => {
        const handles = other ? [buckets, other] : [buckets];
        const calls = Array.from({ length: 40 }, (_, i) => handles[i % handles.length]!.take('c', [{ bucket: 'operations', rate: PER_MINUTE(25) }, { bucket: 'registrations', rate: PER_MINUTE(10) }], T0));
        const outs = await Promise.all(calls);
        assert.equal(outs.filter((o) => o[0]!.allowed).length, 25);
        assert.equal(outs.filter((o) => o[1]!.allowed).length, 10);
      });
    });
  });
}

contract('memory', async () => {
  const buckets = new MemoryQuotaBuckets();
  return { buckets, close: async () => undefined };
});

contract('kysely on sqlite', async () => {
  const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  return { buckets: new KyselyQuotaBuckets(store.db, 'sqlite'), close: () => store.close() };
});

contract(
  'kysely on postgres',
  async () => {
    const a = await openFreshPostgres(pgUrl ?? '', { poolSize: 8 });
    const second = await openStore({ dialect: 'postgres', postgresUrl: pgUrl ?? '', postgresSchema: a.schema, poolSize: 8 });
    return {
      buckets: openQuotaBuckets(a.store),
      other: openQuotaBuckets(second),
      close: async () => {
        await second.close();
        await a.store.close();
        await a.drop();
      },
    };
  },
  pgUrl === undefined ? 'set HOMING_TEST_DATABASE_URL to run on PostgreSQL' : undefined,
);

describe('MemoryQuotaBuckets', () => {
  const toDispose: (() => Promise<void>)[] = [];
  after(async () => {
    for (const d of toDispose) await d();
  });

  it('keeps at most maxKeys buckets: full buckets are dropped first, never a false refusal', async () => {
    const m = new MemoryQuotaBuckets({ maxKeys: 3 });
    const rate = PER_MINUTE(1);
    for (const k of ['a', 'b', 'c']) assert.equal(m.takeSync('i', [{ bucket: k, rate }], T0)[0]?.allowed, true);
    assert.equal(m.size, 3);
    // A minute later a, b, c are full again: adding d drops them.
    assert.equal(m.takeSync('i', [{ bucket: 'd', rate }], T0 + 60_000)[0]?.allowed, true);
    assert.equal(m.size, 1);
    // Still in use (not full): a fourth bucket clears them all (a fresh burst for everyone).
    for (const k of ['e', 'f']) m.takeSync('i', [{ bucket: k, rate }], T0 + 60_000);
    assert.equal(m.takeSync('i', [{ bucket: 'g', rate }], T0 + 60_000)[0]?.allowed, true);
    assert.equal(m.size, 1);
  });

  it('openQuotaBuckets: memory on the embedded store', async () => {
    const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
    toDispose.push(() => store.close());
    assert.ok(openQuotaBuckets(store) instanceof MemoryQuotaBuckets);
  });
});

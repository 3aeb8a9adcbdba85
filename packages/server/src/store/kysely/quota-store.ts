import { CompiledQuery, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import { emissionMs, gcraWait, GCRA_EPSILON_MS, type BucketCheck, type BucketOutcome, type QuotaBucketStore } from '../quota-ports.ts';

interface QuotaRow {
  bucket: string;
  tat_ms: number | string;
  allowed: boolean | number;
}

const MAX_CHECKS = 8;

/** What the adapter needs of a Kysely instance. */
export type QueryRunner = Pick<Kysely<unknown>, 'executeQuery'>;

/**
 * QuotaBucketStore on the `dps_quota_buckets` table (migration 0004_quotas): shared by every process on the
 * database. One check of any number of buckets is one statement, one round trip:
 *
 * ```sql
 * INSERT INTO dps_quota_buckets AS b (...) VALUES (<bucket 1>), (<bucket 2>)
 * ON CONFLICT (instance, bucket) DO UPDATE SET allowed = <fits>, tat_ms = CASE WHEN <fits> THEN <new tat> ELSE b.tat_ms END, ...
 * RETURNING bucket, tat_ms, allowed
 * ```
 *
 * where `<fits>` is the GCRA test of quota-ports.ts `gcra()` on the stored row, evaluated under the row lock the
 * upsert takes, so concurrent checks from any number of processes serialize per bucket and never over-admit.
 * Rows are sent sorted by bucket name (concurrent multi-bucket checks lock rows in the same order: no deadlock).
 * Time is the caller's clock (`nowMs`), so nodes should keep their clocks in sync (NTP); a node whose clock is
 * off by s ms shifts that node's view of a bucket by s ms (about s / (windowMs / limit) units).
 */
export class KyselyQuotaBuckets implements QuotaBucketStore {
  private readonly db: QueryRunner;
  private readonly dialect: Dialect;
  private readonly texts = new Map<number, string>();

  /** `db`: the store's Kysely instance (any table type; only raw statements run on it). */
  constructor(db: QueryRunner, dialect: Dialect) {
    this.db = db;
    this.dialect = dialect;
  }

  async take(instance: string, checks: readonly BucketCheck[], nowMs: number): Promise<BucketOutcome[]> {
    if (checks.length === 0) return [];
    if (checks.length > MAX_CHECKS) throw new Error(`quota: at most ${MAX_CHECKS} buckets per check`);
    const sorted = [...checks].sort((a, b) => (a.bucket < b.bucket ? -1 : a.bucket > b.bucket ? 1 : 0));
    const params: unknown[] = [];
    for (const c of sorted) {
      if (!(c.rate.limit >= 1) || !(c.rate.windowMs > 0)) throw new Error(`quota: invalid rate for bucket ${c.bucket}`);
      const t = emissionMs(c.rate);
      params.push(instance, c.bucket, nowMs + t, t, c.rate.windowMs, nowMs);
    }
    const r = await this.db.executeQuery<QuotaRow>(CompiledQuery.raw(this.text(sorted.length), params));
    const byBucket = new Map(r.rows.map((row) => [row.bucket, row]));
    return checks.map((c) => {
      const row = byBucket.get(c.bucket);
      if (row === undefined) throw new Error(`quota: no row returned for bucket ${c.bucket}`);
      const allowed = row.allowed === true || row.allowed === 1;
      return { bucket: c.bucket, allowed, waitMs: gcraWait(Number(row.tat_ms), allowed, c.rate, nowMs) };
    });
  }

  /** The statement for `n` buckets (built once per n; the same text keeps hitting the statement caches). */
  private text(n: number): string {
    const hit = this.texts.get(n);
    if (hit !== undefined) return hit;
    const pg = this.dialect === 'postgres';
    let p = 0;
    const ph = (): string => (pg ? `$${++p}` : '?');
    const rows: string[] = [];
    for (let i = 0; i < n; i++) rows.push(`(${ph()}, ${ph()}, ${ph()}, ${ph()}, ${ph()}, ${ph()}, ${pg ? 'true' : '1'})`);
    const base = `${pg ? 'greatest' : 'max'}(b.tat_ms, excluded.seen_ms)`;
    const fits = `(${base} + excluded.emission_ms - excluded.seen_ms <= excluded.window_ms + ${GCRA_EPSILON_MS})`;
    const text =
      `insert into dps_quota_buckets as b (instance, bucket, tat_ms, emission_ms, window_ms, seen_ms, allowed) values ${rows.join(', ')} ` +
      `on conflict (instance, bucket) do update set ` +
      `allowed = ${fits}, ` +
      `tat_ms = case when ${fits} then ${base} + excluded.emission_ms else b.tat_ms end, ` +
      `emission_ms = excluded.emission_ms, window_ms = excluded.window_ms, seen_ms = excluded.seen_ms ` +
      `returning bucket, tat_ms, allowed`;
    this.texts.set(n, text);
    return text;
  }
}

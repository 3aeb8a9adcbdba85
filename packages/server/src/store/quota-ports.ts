/**
 * Store port of the rate quotas (docs/api/quotas.md): rate buckets keyed by (instance, bucket).
 *
 * Every bucket is a GCRA (generic cell rate algorithm) limiter, which is a token bucket kept as one number, the
 * "theoretical arrival time" (TAT): `limit` units per `windowMs`, bursts up to `limit`, capacity freeing up at a
 * steady `windowMs / limit` per unit. One check is one atomic read-modify-write of that number, so an adapter on a
 * shared database answers every check in one statement (one round trip) and needs no clean-up: a bucket whose TAT
 * lies in the past is a full bucket.
 *
 * Adapters: `MemoryQuotaBuckets` (one process; the embedded store's default) and `KyselyQuotaBuckets` (a table
 * `dps_quota_buckets` on PostgreSQL, shared by every process on the database; SQLite works too).
 */
export interface RateLimit {
  /** Units per window (≥ 1). */
  limit: number;
  /** The window, ms. */
  windowMs: number;
}

export interface BucketCheck {
  /** Bucket name within the instance, e.g. `registrations`. */
  bucket: string;
  rate: RateLimit;
}

export interface BucketOutcome {
  bucket: string;
  /** Whether a unit was taken. */
  allowed: boolean;
  /**
   * Refused: ms until this request would be allowed (> 0). Allowed: ms until the next unit is available (0 when
   * one is available at once).
   */
  waitMs: number;
}

export interface QuotaBucketStore {
  /**
   * Takes one unit from each bucket of `checks` (distinct bucket names) at time `nowMs`, atomically per bucket. A
   * refused bucket is left unchanged; the others are charged even when one refuses. Outcomes are in `checks` order.
   */
  take(instance: string, checks: readonly BucketCheck[], nowMs: number): Promise<BucketOutcome[]>;
}

/** Comparisons allow for float rounding of `windowMs / limit` (a 7th unit of 7 per minute must fit). */
export const GCRA_EPSILON_MS = 1e-6;

/** Emission interval: the time one unit takes to free up. */
export function emissionMs(rate: RateLimit): number {
  return rate.windowMs / rate.limit;
}

/**
 * One GCRA step on a stored TAT (`undefined`: a fresh bucket). Returns the TAT to store (unchanged when refused)
 * and the outcome. The SQL adapters run exactly this arithmetic in their UPDATE.
 */
export function gcra(tat: number | undefined, rate: RateLimit, nowMs: number): { tat: number; allowed: boolean; waitMs: number } {
  const t = emissionMs(rate);
  const base = Math.max(tat ?? nowMs, nowMs);
  if (base + t - nowMs <= rate.windowMs + GCRA_EPSILON_MS) {
    const next = base + t;
    return { tat: next, allowed: true, waitMs: Math.max(0, next + t - rate.windowMs - nowMs) };
  }
  return { tat: tat ?? nowMs, allowed: false, waitMs: Math.max(1, base + t - rate.windowMs - nowMs) };
}

/** The wait reported with an outcome read back from a stored TAT (see `gcra`). */
export function gcraWait(tat: number, allowed: boolean, rate: RateLimit, nowMs: number): number {
  const t = emissionMs(rate);
  if (allowed) return Math.max(0, tat + t - rate.windowMs - nowMs);
  return Math.max(1, Math.max(tat, nowMs) + t - rate.windowMs - nowMs);
}

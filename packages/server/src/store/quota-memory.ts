import { gcra, type BucketCheck, type BucketOutcome, type QuotaBucketStore } from './quota-ports.ts';

/**
 * QuotaBucketStore in this process's memory: the embedded (SQLite, single-process) default, and the per-device poll
 * buckets of every deployment (docs/api/quotas.md explains why those stay per node).
 *
 * At most `maxKeys` buckets are kept: when full, buckets whose capacity has come back (TAT in the past, the same as
 * no bucket) are dropped; if that frees nothing, every bucket is dropped (all callers get a fresh burst, never a
 * false refusal).
 */
export class MemoryQuotaBuckets implements QuotaBucketStore {
  private readonly tats = new Map<string, number>();
  private readonly maxKeys: number;

  constructor(opts: { maxKeys?: number } = {}) {
    this.maxKeys = opts.maxKeys ?? 100_000;
  }

  get size(): number {
    return this.tats.size;
  }

  take(instance: string, checks: readonly BucketCheck[], nowMs: number): Promise<BucketOutcome[]> {
    return Promise.resolve(this.takeSync(instance, checks, nowMs));
  }

  /** `take` without the promise, for callers in this process. */
  takeSync(instance: string, checks: readonly BucketCheck[], nowMs: number): BucketOutcome[] {
    return checks.map((c) => {
      const key = `${instance}\u0000${c.bucket}`;
      const stored = this.tats.get(key);
      const r = gcra(stored, c.rate, nowMs);
      if (r.allowed) {
        if (stored === undefined && this.tats.size >= this.maxKeys) this.prune(nowMs);
        this.tats.set(key, r.tat);
      }
      return { bucket: c.bucket, allowed: r.allowed, waitMs: r.waitMs };
    });
  }

  private prune(nowMs: number): void {
    for (const [k, tat] of this.tats) if (tat <= nowMs) this.tats.delete(k);
    if (this.tats.size >= this.maxKeys) this.tats.clear();
  }
}

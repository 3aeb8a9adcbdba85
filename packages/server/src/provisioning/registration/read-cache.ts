import type { Clock } from '../../core/clock.ts';

/**
 * A small time-bounded cache for the hot reads of the device runtime (the instance of an id scope, the list of
 * symmetric-key groups): every registration needs them and they change rarely. Concurrent misses share one load.
 * Entries live `ttlMs` (0 disables the cache), so an operator's change reaches every node within that time; callers
 * re-read with `refresh` when a cached value leads to a refusal (a group created a moment ago).
 */
export class ReadCache<T> {
  private readonly entries = new Map<string, { value: T; expiresAt: number }>();
  private readonly loading = new Map<string, Promise<T>>();
  private readonly ttlMs: number;
  private readonly clock: Clock;
  private readonly maxEntries: number;
  private readonly keep: (value: T) => boolean;

  /** `keep` decides which values are cached (e.g. not "unknown", so a new entity is seen at once). */
  constructor(ttlMs: number, clock: Clock, opts: { maxEntries?: number; keep?: (value: T) => boolean } = {}) {
    this.ttlMs = ttlMs;
    this.clock = clock;
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.keep = opts.keep ?? (() => true);
  }

  get(key: string, load: () => Promise<T>): Promise<T> {
    if (this.ttlMs <= 0) return load();
    const hit = this.entries.get(key);
    if (hit && hit.expiresAt > this.clock.now()) return Promise.resolve(hit.value);
    return this.load(key, load);
  }

  /** Reads through (sharing a load in progress) and caches the fresh value. */
  refresh(key: string, load: () => Promise<T>): Promise<T> {
    if (this.ttlMs <= 0) return load();
    return this.load(key, load);
  }

  private load(key: string, load: () => Promise<T>): Promise<T> {
    const pending = this.loading.get(key);
    if (pending) return pending;
    const p = load().then(
      (value) => {
        this.loading.delete(key);
        if (this.entries.size >= this.maxEntries) this.entries.clear();
        if (this.keep(value)) this.entries.set(key, { value, expiresAt: this.clock.now() + this.ttlMs });
        else this.entries.delete(key);
        return value;
      },
      (err: unknown) => {
        this.loading.delete(key);
        throw err;
      },
    );
    this.loading.set(key, p);
    return p;
  }

  clear(): void {
    this.entries.clear();
  }
}

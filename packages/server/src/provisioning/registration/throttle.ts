import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';

/**
 * DPS rate limits (dps-behavior.md §7.2): registrations per instance per minute, and operation-status polls per
 * device per 10 s. Token buckets in this process (one node's share when several run). 429 with Retry-After.
 */
export interface RegistrationLimits {
  /** Register PUTs (and status lookups) per instance per minute. Unset: no limit. Azure: 1,000. */
  registrationsPerMinute?: number;
  /** Operation-status polls per device per 10 s. Unset: no limit. Azure: 5. */
  pollsPer10Seconds?: number;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

const MAX_DEVICE_BUCKETS = 100_000;

class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private readonly capacity: number;
  private readonly perMs: number;

  constructor(capacity: number, windowMs: number) {
    this.capacity = capacity;
    this.perMs = capacity / windowMs;
  }

  /** Takes a token, or returns the seconds to wait for one. */
  take(key: string, nowMs: number): number | undefined {
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= MAX_DEVICE_BUCKETS) this.prune(nowMs);
      b = { tokens: this.capacity, atMs: nowMs };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.capacity, b.tokens + Math.max(0, nowMs - b.atMs) * this.perMs);
      b.atMs = nowMs;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return undefined;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.perMs / 1000));
  }

  /** Drops buckets that are full again (they behave like absent ones). */
  private prune(nowMs: number): void {
    for (const [k, b] of this.buckets) {
      if (b.tokens + (nowMs - b.atMs) * this.perMs >= this.capacity) this.buckets.delete(k);
    }
    if (this.buckets.size >= MAX_DEVICE_BUCKETS) this.buckets.clear();
  }
}

export class RegistrationThrottle {
  private readonly registrations: TokenBuckets | undefined;
  private readonly polls: TokenBuckets | undefined;
  private readonly clock: Clock;

  constructor(limits: RegistrationLimits, clock: Clock) {
    this.clock = clock;
    const r = limits.registrationsPerMinute;
    const p = limits.pollsPer10Seconds;
    this.registrations = r !== undefined && r > 0 ? new TokenBuckets(r, 60_000) : undefined;
    this.polls = p !== undefined && p > 0 ? new TokenBuckets(p, 10_000) : undefined;
  }

  registration(instance: string): void {
    const wait = this.registrations?.take(instance, this.clock.now());
    if (wait !== undefined) throw throttled(wait, 'registrations');
  }

  poll(instance: string, registrationKey: string): void {
    const wait = this.polls?.take(`${instance}\u0000${registrationKey}`, this.clock.now());
    if (wait !== undefined) throw throttled(wait, 'operation status polls');
  }
}

function throttled(retryAfterSeconds: number, what: string): HomingError {
  return new HomingError('ThrottlingException', `Too many ${what}; retry after ${retryAfterSeconds} s.`, { retryAfterSeconds });
}

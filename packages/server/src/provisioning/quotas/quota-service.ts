import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import { MemoryQuotaBuckets } from '../../store/quota-memory.ts';
import type { BucketCheck, BucketOutcome, QuotaBucketStore } from '../../store/quota-ports.ts';
import type { InstanceQuotaSettings, ProvisioningInstance } from '../model.ts';
import { effectiveQuotas, type EffectiveQuotas } from './settings.ts';

/**
 * The rate quotas and the registration-record limit of every instance (docs/api/quotas.md):
 *
 * | bucket | counts | scope |
 * |---|---|---|
 * | registrations / min | register PUTs and registration status lookups (HTTPS and MQTT) | instance, shared by all nodes |
 * | operations / min | every device API call (register, operation status, status lookup) and every DPS service API call (`/enrollments…`, `/enrollmentGroups…`, `/registrations…`) | instance, shared by all nodes |
 * | polls / 10 s | operation-status requests of one device | device, per node |
 *
 * Shared buckets live behind the QuotaBucketStore port (memory on the embedded store, a table on PostgreSQL); a
 * check costs nothing when its quotas are off, and one store call otherwise (the registrations and operations
 * buckets of a register are taken together). A refusal is `ThrottlingException` (429 429001) with Retry-After: the
 * whole seconds until the bucket has capacity again, at least 1.
 *
 * Poll buckets stay in each node's memory: the poll limit only guards against devices that ignore Retry-After, a
 * poll is a read, and a shared counter would add a database write to every poll. A device whose polls are spread
 * over n nodes can poll up to n times the limit. Answers to polls carry a Retry-After long enough that a device
 * which honours it is never throttled (`admitPoll`'s return value).
 */
export interface QuotaServiceDeps {
  clock: Clock;
  /** Buckets shared by the nodes (registrations, operations). Default: this process's memory. */
  buckets?: QuotaBucketStore;
  /** Per-device poll buckets. Default: this process's memory. */
  pollBuckets?: MemoryQuotaBuckets;
  /** Settings of instances that have none of their own (the service defaults; the `default` preset when absent). */
  defaults?: InstanceQuotaSettings;
  /**
   * How long a count of registration records is reused, ms (default 10 s). Between counts, new records admitted by
   * this node are added to it; within 1 % of the limit every new record is counted exactly.
   */
  recordCountTtlMs?: number;
}

export const REGISTRATIONS_BUCKET = 'registrations';
export const OPERATIONS_BUCKET = 'operations';
const MINUTE_MS = 60_000;
const POLL_WINDOW_MS = 10_000;
/** A "the instance is full" answer is reused this long before counting again (records may have been deleted). */
const FULL_RECHECK_MS = 1000;

interface RecordCount {
  count: number;
  atMs: number;
  full: boolean;
}

function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

function throttled(what: string, limit: number, per: string, waitMs: number): HomingError {
  const s = seconds(waitMs);
  return new HomingError('ThrottlingException', `Too many ${what} (limit ${limit} per ${per}); retry after ${s} s.`, { retryAfterSeconds: s });
}

export class QuotaService {
  private readonly clock: Clock;
  private readonly buckets: QuotaBucketStore;
  private readonly polls: MemoryQuotaBuckets;
  private readonly defaults: InstanceQuotaSettings | undefined;
  private readonly recordTtlMs: number;
  private readonly records = new Map<string, RecordCount>();
  private readonly resolved = new WeakMap<ProvisioningInstance, EffectiveQuotas>();

  constructor(deps: QuotaServiceDeps) {
    this.clock = deps.clock;
    this.buckets = deps.buckets ?? new MemoryQuotaBuckets();
    this.polls = deps.pollBuckets ?? new MemoryQuotaBuckets();
    this.defaults = deps.defaults;
    this.recordTtlMs = deps.recordCountTtlMs ?? 10_000;
  }

  /** The limits in force for an instance (its own settings over the service defaults). */
  effective(instance: ProvisioningInstance): EffectiveQuotas {
    let e = this.resolved.get(instance);
    if (e === undefined) {
      e = effectiveQuotas(instance.quotas, this.defaults);
      this.resolved.set(instance, e);
    }
    return e;
  }

  /** A register PUT or a registration status lookup: the registrations and the operations buckets. */
  async admitRegistration(instance: ProvisioningInstance): Promise<void> {
    const q = this.effective(instance);
    const checks: BucketCheck[] = [];
    if (q.registrationsPerMinute !== undefined) checks.push({ bucket: REGISTRATIONS_BUCKET, rate: { limit: q.registrationsPerMinute, windowMs: MINUTE_MS } });
    if (q.operationsPerMinute !== undefined) checks.push({ bucket: OPERATIONS_BUCKET, rate: { limit: q.operationsPerMinute, windowMs: MINUTE_MS } });
    if (checks.length === 0) return;
    this.raise(q, await this.buckets.take(instance.name, checks, this.clock.now()));
  }

  /** A DPS service API call: the operations bucket. */
  async admitOperation(instance: ProvisioningInstance): Promise<void> {
    const q = this.effective(instance);
    if (q.operationsPerMinute === undefined) return;
    this.raise(q, await this.buckets.take(instance.name, [{ bucket: OPERATIONS_BUCKET, rate: { limit: q.operationsPerMinute, windowMs: MINUTE_MS } }], this.clock.now()));
  }

  /**
   * An operation-status request of one device (`deviceKey`: its lower-cased registration id): the device's poll
   * bucket, then the operations bucket. Returns the Retry-After (seconds) the answer should carry at least so that
   * the device's next poll finds capacity (0: no constraint).
   */
  async admitPoll(instance: ProvisioningInstance, deviceKey: string): Promise<number> {
    const q = this.effective(instance);
    let advise = 0;
    if (q.pollsPer10Seconds !== undefined) {
      const [o] = this.polls.takeSync(instance.name, [{ bucket: `poll\u0000${deviceKey}`, rate: { limit: q.pollsPer10Seconds, windowMs: POLL_WINDOW_MS } }], this.clock.now());
      if (o !== undefined && !o.allowed) throw throttled('operation status requests for this device', q.pollsPer10Seconds, '10 s', o.waitMs);
      if (o !== undefined && o.waitMs > 0) advise = Math.ceil(o.waitMs / 1000);
    }
    if (q.operationsPerMinute !== undefined) {
      this.raise(q, await this.buckets.take(instance.name, [{ bucket: OPERATIONS_BUCKET, rate: { limit: q.operationsPerMinute, windowMs: MINUTE_MS } }], this.clock.now()));
    }
    return advise;
  }

  /**
   * A registration that would create a registration record (a device the instance has no record of). Past
   * `maxRegistrations` records: QuotaExceeded (403 403002). Devices with a record re-register freely, so callers
   * check only new ones. `count` counts the instance's records (a store call, made at most every
   * `recordCountTtlMs`, or for every new record when within 1 % of the limit). Nodes admitting new records at the
   * same moment near the limit can overshoot it by the number of such concurrent registrations.
   */
  async admitNewRecord(instance: ProvisioningInstance, count: () => Promise<number>): Promise<void> {
    const max = this.effective(instance).maxRegistrations;
    if (max === undefined) return;
    const now = this.clock.now();
    const margin = Math.ceil(max / 100);
    const known = this.records.get(instance.name);
    if (known !== undefined) {
      const age = now - known.atMs;
      if (known.full && age < Math.min(FULL_RECHECK_MS, this.recordTtlMs)) throw recordsFull(max);
      if (!known.full && age < this.recordTtlMs && known.count < max - margin) {
        known.count++;
        return;
      }
    }
    const n = await count();
    const fresh: RecordCount = { count: n, atMs: now, full: n >= max };
    this.records.set(instance.name, fresh);
    if (fresh.full) throw recordsFull(max);
    fresh.count++;
  }

  private raise(q: EffectiveQuotas, outcomes: readonly BucketOutcome[]): void {
    let worst: BucketOutcome | undefined;
    for (const o of outcomes) if (!o.allowed && (worst === undefined || o.waitMs > worst.waitMs)) worst = o;
    if (worst === undefined) return;
    if (worst.bucket === REGISTRATIONS_BUCKET) throw throttled('registrations for this provisioning service', q.registrationsPerMinute ?? 0, 'minute', worst.waitMs);
    throw throttled('operations for this provisioning service', q.operationsPerMinute ?? 0, 'minute', worst.waitMs);
  }
}

function recordsFull(max: number): HomingError {
  return new HomingError('QuotaExceeded', `The provisioning service holds the maximum of ${max} registration records; delete records of retired devices to register new ones.`);
}

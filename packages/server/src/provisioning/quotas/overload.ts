import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';
import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import type { PendingReply, RegistrationService } from '../registration.ts';

/**
 * Overload protection of the device runtime (docs/api/quotas.md, "Overload protection"). Always on, whatever the
 * quotas say: when this process is saturated, a new registration is refused at once with 429 429001 and a
 * Retry-After computed from the backlog, instead of queueing until the device's 30 s request timeout fires.
 *
 * Saturated means either
 * - more registrations in flight than `maxInFlightRegistrations` (from admission until the assignment this process
 *   runs for it has ended), or
 * - event-loop lag past `maxEventLoopLagMs` (the median delay of the event loop over the last sample period, from
 *   `perf_hooks.monitorEventLoopDelay`; the median ignores a single long pause such as a module load).
 *
 * Retry-After = in flight / recent completion rate (completions in the last `rateWindowMs`), at least the current
 * lag, clamped to [1, `maxRetryAfterSeconds`]; with registrations in flight but no completion in the window, the
 * window itself.
 * Operation-status polls and status lookups are not limited here: they are cheap reads, and refusing a poll of a
 * registration already running only wastes the work done for it.
 */
export interface OverloadSettings {
  /** Registrations in flight in this process before new ones are refused (default 1000). */
  maxInFlightRegistrations?: number;
  /** Event-loop lag (median over the last sample period, ms) before new registrations are refused (default 250). */
  maxEventLoopLagMs?: number;
}

export const DEFAULT_OVERLOAD: Readonly<Required<OverloadSettings>> = Object.freeze({ maxInFlightRegistrations: 1000, maxEventLoopLagMs: 250 });

/** The current event-loop lag, ms. */
export type LagSource = () => number;

export interface OverloadGuardDeps extends OverloadSettings {
  clock: Clock;
  /** Default: `eventLoopLag()`, this process's event loop. Tests inject a fixed source. */
  lag?: LagSource;
  /** Window of the completion rate, ms (default 10 s). */
  rateWindowMs?: number;
  /** Largest Retry-After, seconds (default 60). */
  maxRetryAfterSeconds?: number;
}

export class OverloadGuard {
  private readonly clock: Clock;
  private readonly lag: LagSource;
  private readonly maxInFlight: number;
  private readonly maxLagMs: number;
  private readonly windowMs: number;
  private readonly maxRetryAfter: number;
  private current = 0;
  /** Completion times (ms) within the rate window, oldest first. */
  private readonly done: number[] = [];
  private doneHead = 0;
  private rejectedTotal = 0;

  constructor(deps: OverloadGuardDeps) {
    this.clock = deps.clock;
    this.lag = deps.lag ?? eventLoopLag();
    this.maxInFlight = positive(deps.maxInFlightRegistrations, DEFAULT_OVERLOAD.maxInFlightRegistrations, 'maxInFlightRegistrations');
    this.maxLagMs = positive(deps.maxEventLoopLagMs, DEFAULT_OVERLOAD.maxEventLoopLagMs, 'maxEventLoopLagMs');
    this.windowMs = deps.rateWindowMs ?? 10_000;
    this.maxRetryAfter = deps.maxRetryAfterSeconds ?? 60;
  }

  /** Registrations admitted and not yet ended. */
  get inFlight(): number {
    return this.current;
  }

  /** Registrations refused since start. */
  get rejected(): number {
    return this.rejectedTotal;
  }

  /** Registrations ended per second over the rate window. */
  completionRate(): number {
    this.trim(this.clock.now());
    return (this.done.length - this.doneHead) / (this.windowMs / 1000);
  }

  /**
   * Admits one registration, or throws ThrottlingException (429) when saturated. Call the returned function once,
   * when the registration has ended (extra calls are ignored).
   */
  admit(): () => void {
    const lagMs = this.lag();
    if (this.current >= this.maxInFlight || lagMs > this.maxLagMs) {
      this.rejectedTotal++;
      const s = this.retryAfterSeconds(lagMs);
      const why = this.current >= this.maxInFlight ? `${this.current} registrations in progress` : `event-loop lag ${Math.round(lagMs)} ms`;
      throw new HomingError('ThrottlingException', `The provisioning service is overloaded (${why}); retry after ${s} s.`, { retryAfterSeconds: s });
    }
    this.current++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.current--;
      this.done.push(this.clock.now());
    };
  }

  /** What a refusal now would answer: the backlog over the completion rate, at least the lag. */
  retryAfterSeconds(lagMs = this.lag()): number {
    const rate = this.completionRate();
    const backlogS = this.current === 0 ? 0 : rate > 0 ? this.current / rate : this.windowMs / 1000;
    return Math.min(this.maxRetryAfter, Math.max(1, Math.ceil(Math.max(backlogS, lagMs / 1000))));
  }

  private trim(now: number): void {
    const from = now - this.windowMs;
    while (this.doneHead < this.done.length && (this.done[this.doneHead] ?? 0) <= from) this.doneHead++;
    if (this.doneHead > 1024 && this.doneHead * 2 > this.done.length) {
      this.done.splice(0, this.doneHead);
      this.doneHead = 0;
    }
  }
}

function positive(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`overload: ${name} must be a positive number`);
  return v;
}

/** The DPS device use cases the transports call (HTTPS: all three; MQTT: register and operationStatus). */
export type DeviceRuntime = Pick<RegistrationService, 'register' | 'operationStatus' | 'statusLookup'>;

/**
 * The device runtime behind the overload guard: what the composition root gives the HTTPS and MQTT transports.
 * `register` is admitted by the guard and counted until its assignment in this process has ended; the other use
 * cases pass through.
 */
export class GuardedDeviceRuntime implements DeviceRuntime {
  private readonly inner: DeviceRuntime;
  private readonly guard: OverloadGuard;

  constructor(inner: DeviceRuntime, guard: OverloadGuard) {
    this.inner = inner;
    this.guard = guard;
  }

  async register(...args: Parameters<DeviceRuntime['register']>): Promise<PendingReply> {
    const release = this.guard.admit();
    let pending: PendingReply;
    try {
      pending = await this.inner.register(...args);
    } catch (e) {
      release();
      throw e;
    }
    if (pending.completion === undefined) release();
    else pending.completion.then(release, release);
    return pending;
  }

  operationStatus(...args: Parameters<DeviceRuntime['operationStatus']>): ReturnType<DeviceRuntime['operationStatus']> {
    return this.inner.operationStatus(...args);
  }

  statusLookup(...args: Parameters<DeviceRuntime['statusLookup']>): ReturnType<DeviceRuntime['statusLookup']> {
    return this.inner.statusLookup(...args);
  }
}

const NS_PER_MS = 1e6;
/** Histogram resolution (ms): the lag is the median delay beyond it. */
const LAG_RESOLUTION_MS = 10;
/** A sample period: the median is read and the histogram reset at most this often. */
const LAG_SAMPLE_MS = 1000;

let shared: { histogram: IntervalHistogram; lastMs: number; value: number } | undefined;

/**
 * This process's event-loop lag (one histogram per process, created on first use and kept: the event loop is the
 * process's). The value is the median timer delay beyond the resolution over the last completed sample period of
 * at least 1 s; it is sampled lazily when asked, so an idle process does no work for it.
 */
export function eventLoopLag(): LagSource {
  if (shared === undefined) {
    const histogram = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
    histogram.enable();
    shared = { histogram, lastMs: performance.now(), value: 0 };
  }
  const s = shared;
  return () => {
    const now = performance.now();
    if (now - s.lastMs >= LAG_SAMPLE_MS) {
      s.value = s.histogram.count > 0 ? Math.max(0, s.histogram.percentile(50) / NS_PER_MS - LAG_RESOLUTION_MS) : 0;
      s.histogram.reset();
      s.lastMs = now;
    }
    return s.value;
  };
}

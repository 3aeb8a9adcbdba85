import { HomingError } from '../../core/errors.ts';
import type { FailureThreshold, FleetCounts, FleetRate } from './model.ts';

/** The target time between two waves: short enough for a smooth rate, long enough for few timer ticks. */
export const TARGET_WAVE_INTERVAL_MS = 6000;
export const MAX_RATE_PER_MINUTE = 1_000_000;

/**
 * How long after its wave starts a device's registration may still arrive (method delivery, the device's reaction,
 * its new TLS connection): the schedule leaves this much room so that the registrations themselves, not only the
 * wave starts, stay within the rate in any 60 s window. Measured: a wave of 100 devices registers within ≈ 1 s.
 */
export const WAVE_SPREAD_MS = 2000;

/**
 * Waves for a rate (devices per minute): `waveSize` devices every `waveIntervalMs`. The wave size is what the target
 * interval (6 s) holds at that rate, at least 1; then k = ⌊perMinute / waveSize⌋ waves a minute, and the interval is
 * (60 000 + WAVE_SPREAD_MS) / k. Any window [t, t + 60 s) therefore holds the registrations of at most k waves (their
 * registrations arrive within WAVE_SPREAD_MS of the wave's start), k × waveSize ≤ perMinute devices: the schedule
 * never has more devices register in a minute than the rate, whatever window is looked at, at a cost of ≈ 3 % of
 * the time. 1000/min → 100 every 6.2 s; 1234/min → 123 every 6.2 s; 7/min → 1 every 8.86 s; 1/min → 1 every 62 s.
 */
export function waveSchedule(perMinute: number, source: FleetRate['source'], targetIntervalMs = TARGET_WAVE_INTERVAL_MS): FleetRate {
  if (!Number.isInteger(perMinute) || perMinute < 1 || perMinute > MAX_RATE_PER_MINUTE) {
    throw new HomingError('ArgumentInvalid', `The rate must be a whole number of devices per minute from 1 to ${MAX_RATE_PER_MINUTE}.`);
  }
  const waveSize = Math.max(1, Math.floor((perMinute * targetIntervalMs) / 60_000));
  const wavesPerMinute = Math.floor(perMinute / waveSize);
  return { perMinute, source, waveSize, waveIntervalMs: (60_000 + WAVE_SPREAD_MS) / wavesPerMinute };
}

/** Start time (ms after the job start) of wave k (0-based). */
export function waveStartMs(rate: FleetRate, k: number): number {
  return k * rate.waveIntervalMs;
}

/** The most devices the schedule starts in any window of `windowMs` (a check for tests and the bench). */
export function maxInWindow(rate: FleetRate, total: number, windowMs = 60_000): number {
  const waves = Math.ceil(total / rate.waveSize);
  let best = 0;
  let j = 0;
  // Two pointers over wave starts: the window [start_i, start_i + windowMs).
  for (let i = 0; i < waves; i++) {
    if (j < i) j = i;
    while (j + 1 < waves && waveStartMs(rate, j + 1) < waveStartMs(rate, i) + windowMs - 1e-6) j++;
    const devices = Math.min(total, (j + 1) * rate.waveSize) - i * rate.waveSize;
    if (devices > best) best = devices;
  }
  return best;
}

/** Devices per minute a job uses: the given rate, else the instance's registration quota; neither → 400. */
export function chooseRate(requested: number | undefined, registrationsPerMinute: number | undefined, targetIntervalMs = TARGET_WAVE_INTERVAL_MS): FleetRate {
  if (requested !== undefined) {
    if (registrationsPerMinute !== undefined && requested > registrationsPerMinute) {
      throw new HomingError(
        'ArgumentInvalid',
        `The rate ${requested}/min is above the instance's registration quota of ${registrationsPerMinute}/min: devices would be throttled (429). Give a rate up to ${registrationsPerMinute}.`,
      );
    }
    return waveSchedule(requested, 'request', targetIntervalMs);
  }
  if (registrationsPerMinute !== undefined) return waveSchedule(registrationsPerMinute, 'quota', targetIntervalMs);
  throw new HomingError('ArgumentInvalid', 'The instance has no registration quota: give a rate (devices per minute).');
}

/** Processed devices before a percentage threshold is evaluated (one early failure must not pause a big job). */
export const THRESHOLD_MIN_SAMPLE = 10;

/**
 * Whether failures passed the threshold, counting what was processed since the job was (re)started: more than
 * `count` failures, or more than `percent` % of the processed devices once THRESHOLD_MIN_SAMPLE (or every
 * remaining device) were processed.
 */
export function thresholdExceeded(t: FailureThreshold, counts: FleetCounts, baseline: { processed: number; failed: number }): boolean {
  const processed = counts.moved + counts.unchanged + counts.failed - baseline.processed;
  const failed = counts.failed - baseline.failed;
  if (failed <= 0) return false;
  if (t.count !== undefined && failed > t.count) return true;
  if (t.percent !== undefined) {
    const remaining = counts.total - baseline.processed;
    if (processed < Math.min(THRESHOLD_MIN_SAMPLE, remaining)) return false;
    return (failed * 100) / processed > t.percent;
  }
  return false;
}

/** `10%` → {percent: 10}; `25` → {count: 25}. */
export function parseFailureThreshold(v: unknown): FailureThreshold {
  if (typeof v === 'number') return checkThreshold({ count: v });
  if (typeof v === 'string') {
    const s = v.trim();
    if (s.endsWith('%')) return checkThreshold({ percent: Number(s.slice(0, -1)) });
    if (/^\d+$/.test(s)) return checkThreshold({ count: Number(s) });
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const out: FailureThreshold = {};
    if (o.percent !== undefined) out.percent = typeof o.percent === 'number' ? o.percent : NaN;
    if (o.count !== undefined) out.count = typeof o.count === 'number' ? o.count : NaN;
    if (out.percent !== undefined || out.count !== undefined) return checkThreshold(out);
  }
  throw new HomingError('ArgumentInvalid', 'failureThreshold is a percentage ("10%"), a count (25), or {"percent": 10, "count": 25}.');
}

function checkThreshold(t: FailureThreshold): FailureThreshold {
  if (t.percent !== undefined && !(Number.isFinite(t.percent) && t.percent >= 0 && t.percent <= 100)) {
    throw new HomingError('ArgumentInvalid', 'failureThreshold percent must be from 0 to 100.');
  }
  if (t.count !== undefined && !(Number.isInteger(t.count) && t.count >= 0)) throw new HomingError('ArgumentInvalid', 'failureThreshold count must be an integer from 0.');
  return t;
}

/** A glob over registration ids (`*` any run, `?` one character), case-insensitive like the ids. */
export function globMatcher(pattern: string): (id: string) => boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'is');
  return (id) => re.test(id);
}

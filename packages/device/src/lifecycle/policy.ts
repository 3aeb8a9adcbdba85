import {
  AbortedError,
  DpsError,
  ConnectionRefusedError,
  HubRequestError,
  RegistrationFailedError,
} from '../errors.ts';

/**
 * Exponential back-off with upward jitter: attempt n (1-based) waits
 * `base = max(floor, min(maxDelayMs, initialDelayMs · multiplier^(n-1)))`, then `base · (1 + jitter · random())`.
 * The wait is therefore never shorter than `initialDelayMs` (nor than a server's Retry-After, passed as `floor`),
 * and at most `base · (1 + jitter)`.
 */
export interface BackoffPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  multiplier: number;
  /** Spread, as a fraction of the base delay (0.5: up to 50 % longer). */
  jitter: number;
}

/** The lifecycle's retry rules (dps-behavior.md §9). */
export interface RetryPolicy {
  /** 5xx, network errors, timeouts, a dropped hub connection: first retry ≥ 5 s after the failure. */
  transient: BackoffPolicy;
  /** 429: never sooner than Retry-After; repeated 429s (the registration quota) back off further. */
  throttled: BackoffPolicy;
  /** DPS refused the device (401, 403, 404, `failed`, `disabled`): retry slowly, the operator must act. */
  rejected: BackoffPolicy;
  /**
   * How long the device keeps trying an unreachable hub (measured from the first failure) before asking DPS again
   * (status lookup, then re-registration). Default 15 min (dps-behavior.md §9.2).
   */
  deadHubTimeoutMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  transient: Object.freeze({ initialDelayMs: 5_000, maxDelayMs: 60_000, multiplier: 2, jitter: 0.5 }),
  throttled: Object.freeze({ initialDelayMs: 1_000, maxDelayMs: 300_000, multiplier: 2, jitter: 0.5 }),
  rejected: Object.freeze({ initialDelayMs: 60_000, maxDelayMs: 3_600_000, multiplier: 2, jitter: 0.5 }),
  deadHubTimeoutMs: 15 * 60_000,
});

export interface RetryPolicyOverrides {
  transient?: Partial<BackoffPolicy>;
  throttled?: Partial<BackoffPolicy>;
  rejected?: Partial<BackoffPolicy>;
  deadHubTimeoutMs?: number;
}

export function resolveRetryPolicy(o: RetryPolicyOverrides | undefined): RetryPolicy {
  const p: RetryPolicy = {
    transient: { ...DEFAULT_RETRY_POLICY.transient, ...o?.transient },
    throttled: { ...DEFAULT_RETRY_POLICY.throttled, ...o?.throttled },
    rejected: { ...DEFAULT_RETRY_POLICY.rejected, ...o?.rejected },
    deadHubTimeoutMs: o?.deadHubTimeoutMs ?? DEFAULT_RETRY_POLICY.deadHubTimeoutMs,
  };
  for (const [name, b] of [['transient', p.transient], ['throttled', p.throttled], ['rejected', p.rejected]] as const) {
    if (!(b.initialDelayMs >= 0 && b.maxDelayMs >= b.initialDelayMs && b.multiplier >= 1 && b.jitter >= 0)) {
      throw new RangeError(`retry.${name}: need 0 ≤ initialDelayMs ≤ maxDelayMs, multiplier ≥ 1, jitter ≥ 0`);
    }
  }
  if (!(p.deadHubTimeoutMs >= 0)) throw new RangeError('retry.deadHubTimeoutMs must be ≥ 0');
  return p;
}

/** The wait before retry number `attempt` (1-based). `random` returns [0, 1). */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number, floorMs = 0): number {
  const n = Math.max(1, Math.floor(attempt));
  const exp = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.multiplier ** (n - 1));
  const base = Math.ceil(Math.max(floorMs, exp));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.floor(base + base * policy.jitter * r);
}

/** How the lifecycle reacts to a failure. */
export type FailureKind =
  /** 429: wait at least Retry-After. */
  | 'throttled'
  /** 5xx, network, timeout: back off, try the same thing again. */
  | 'transient'
  /** Refused: for a hub, ask DPS (lookup, re-register); for DPS, retry slowly. */
  | 'rejected'
  /** Cancelled by stop(). */
  | 'aborted';

export interface Failure {
  kind: FailureKind;
  /** The server's Retry-After (ms), for throttled failures that carried one. */
  retryAfterMs?: number;
}

export function classifyFailure(e: unknown): Failure {
  if (e instanceof AbortedError) return { kind: 'aborted' };
  if (e instanceof DpsError || e instanceof HubRequestError) {
    if (e.status === 429) return e instanceof DpsError && e.retryAfterMs !== undefined ? { kind: 'throttled', retryAfterMs: e.retryAfterMs } : { kind: 'throttled' };
    if (e.status >= 500 || e.status === 408) return { kind: 'transient' };
    return { kind: 'rejected' };
  }
  if (e instanceof RegistrationFailedError) return { kind: 'rejected' };
  if (e instanceof ConnectionRefusedError) {
    // 3 (server unavailable) is IoT Hub's answer to throttling and outages alike: treat as 5xx.
    return e.returnCode === 3 ? { kind: 'transient' } : { kind: 'rejected' };
  }
  // NetworkError, TimeoutError, ProtocolError, NotConnectedError and the unexpected.
  return { kind: 'transient' };
}

import { isoTime } from '../../../core/clock.ts';
import type { Logger } from '../../../observability/logger.ts';
import { toHomingError } from '../errors.ts';
import { retryAfterValue } from './topics.ts';

/**
 * Errors of DPS requests over MQTT become `$dps/registrations/res/{status}/?$rid=..[&retry-after=N]` with the DPS
 * error body `{"errorCode","trackingId","message","timestampUtc"[,"info"]}` (dps-behavior.md §8.1). What the device
 * SDK does with the status (protocol-device.md §B):
 * - 300..428: fatal (`translateError`: 400 ArgumentError, 401 UnauthorizedError, 404 DeviceNotFoundError, ...);
 * - ≥ 429 (throttling, 5xx): the SDK re-sends the same request after `retry-after` seconds, with no limit. So these
 *   answers always carry an integer `retry-after` ≥ 1: the error's own (the throttle's wait) or a default.
 * Unexpected errors are logged with their tracking id (never with the request or the credential) and answered 500
 * without details.
 */
export interface DpsErrorAnswer {
  status: number;
  /** The JSON error body. */
  body: string;
  /** Set when the SDK will retry (status ≥ 429). */
  retryAfterSeconds: number | undefined;
}

export function dpsErrorAnswer(e: unknown, log: Logger, nowMs: number, trackingId: string, serverErrorRetryAfterSeconds: number): DpsErrorAnswer {
  const err = toHomingError(e, log, trackingId);
  const body: Record<string, unknown> = { errorCode: err.code, trackingId, message: err.message, timestampUtc: isoTime(nowMs) };
  if (err.info) body.info = err.info;
  const status = err.status;
  const retryAfterSeconds = status < 429 ? undefined : retryAfterValue(err.retryAfterSeconds, status === 429 ? 1 : serverErrorRetryAfterSeconds);
  return { status, body: JSON.stringify(body), retryAfterSeconds };
}

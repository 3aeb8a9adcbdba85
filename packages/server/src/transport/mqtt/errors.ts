import { randomUUID } from 'node:crypto';
import { HomingError, isHomingError } from '../../core/errors.ts';
import { isoTime } from '../../core/clock.ts';
import type { Logger } from '../../observability/logger.ts';

/**
 * The one place where errors become MQTT answers:
 * - a refused CONNECT becomes a CONNACK return code (MQTT 3.1.1 table 3.1);
 * - a failed twin request becomes `$iothub/twin/res/{status}/?$rid=..` with the DPS/IoT Hub style JSON body
 *   `{"errorCode","trackingId","message","timestampUtc"}` (the device SDK fails the request when the body has an
 *   `errorCode`, and crashes on an empty GET answer, so there is always a body).
 * Unexpected errors are logged with their tracking id and answered without details.
 */
export const CONNACK = {
  accepted: 0,
  unacceptableProtocolVersion: 1,
  identifierRejected: 2,
  serverUnavailable: 3,
  badUsernameOrPassword: 4,
  notAuthorized: 5,
} as const;

export type ConnackCode = (typeof CONNACK)[keyof typeof CONNACK];

/** CONNACK return code for an error raised while authenticating a CONNECT. */
export function connackCodeFor(e: unknown): Exclude<ConnackCode, 0> {
  if (!isHomingError(e)) return CONNACK.serverUnavailable;
  switch (e.errorName) {
    case 'InvalidDeviceId':
    case 'InvalidRegistrationId':
      return CONNACK.identifierRejected;
    case 'ArgumentInvalid':
      return CONNACK.badUsernameOrPassword;
    default:
      break;
  }
  if (e.status === 401 || e.status === 403 || e.status === 404) return CONNACK.notAuthorized;
  // Throttling and unavailable dependencies: the SDK retries "server unavailable" with back-off.
  return CONNACK.serverUnavailable;
}

export function newTrackingId(): string {
  return randomUUID().replace(/-/g, '');
}

/** Converts anything thrown into a HomingError; unknown errors become ServerError and are logged (without secrets). */
export function toHomingError(e: unknown, log: Logger, trackingId: string): HomingError {
  if (isHomingError(e)) return e;
  log.error({ err: e, trackingId }, 'unexpected error in an MQTT request');
  return new HomingError('ServerError', `An unexpected error occurred. Tracking id ${trackingId}.`);
}

export interface MqttErrorResponse {
  status: number;
  body: string;
}

/** The status (for the response topic) and JSON body of a failed device request. */
export function errorResponse(e: unknown, log: Logger, nowMs: number, trackingId = newTrackingId()): MqttErrorResponse {
  const err = toHomingError(e, log, trackingId);
  const body: Record<string, unknown> = { errorCode: err.code, trackingId, message: err.message, timestampUtc: isoTime(nowMs) };
  if (err.info) body.info = err.info;
  return { status: err.status, body: JSON.stringify(body) };
}

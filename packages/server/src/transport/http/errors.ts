import type { FastifyReply } from 'fastify';
import { HomingError, isHomingError } from '../../core/errors.ts';
import { isoTime } from '../../core/clock.ts';
import type { Logger } from '../../observability/logger.ts';

/**
 * The one place where errors become HTTP answers. Two body shapes exist on the wire:
 * - hub APIs use the classic IoT Hub body `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:..."}`,
 *   which the azure-iothub SDK parses into typed errors (DeviceNotFoundError...);
 * - DPS APIs use `{"errorCode":<6 digits>,"trackingId","message","timestampUtc","info"?}` plus `x-ms-error-code`.
 * Unexpected errors are logged with their tracking id and answered 500 without details.
 */
export type ErrorFlavor = 'hub' | 'dps';

export const JSON_CT = 'application/json; charset=utf-8';

function trackingId(): string {
  return crypto.randomUUID().replace(/-/g, '');
}

function hubTimestamp(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getUTCMonth() + 1)}/${p(d.getUTCDate())}/${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
}

export function errorBody(err: HomingError, flavor: ErrorFlavor, tid: string, nowMs: number): Record<string, unknown> {
  if (flavor === 'hub') {
    return {
      Message: `ErrorCode:${err.errorName};${err.message}`,
      ExceptionMessage: `Tracking ID:${tid}-G:0-TimeStamp:${hubTimestamp(nowMs)}`,
    };
  }
  const body: Record<string, unknown> = { errorCode: err.code, trackingId: tid, message: err.message, timestampUtc: isoTime(nowMs) };
  if (err.info) body.info = err.info;
  return body;
}

/** Converts anything thrown into a HomingError; unknown errors become ServerError and are logged. */
export function toHomingError(e: unknown, log: Logger | undefined, tid: string): HomingError {
  if (isHomingError(e)) return e;
  const fe = e as { statusCode?: number; code?: string; validation?: unknown } | null;
  if (fe && typeof fe.statusCode === 'number') {
    // Errors fastify raises itself (body limits, bad JSON, unsupported media types).
    if (fe.statusCode === 413 || fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new HomingError('MessageTooLarge', 'The request body is too large.');
    if (fe.statusCode === 415 || fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new HomingError('UnsupportedMediaType', 'The Content-Type is not supported.');
    if (fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return new HomingError('InvalidJson', 'The body is empty.');
    if (fe.statusCode === 400) return new HomingError('InvalidJson', 'The body is not valid JSON.');
    if (fe.statusCode === 404) return new HomingError('NotFound', 'No such resource.');
  }
  log?.error({ err: e, trackingId: tid }, 'unexpected error');
  return new HomingError('ServerError', `An unexpected error occurred. Tracking id ${tid}.`);
}

/** A whole HTTP answer: what both the fastify routes and the direct routes (direct-routes.ts) send. */
export interface HttpAnswer {
  status: number;
  /** Lower-case header names. */
  headers: Record<string, string>;
  body: string;
}

/** The answer for anything thrown: status, the flavour's error headers (and Retry-After) and its error body. */
export function errorAnswer(e: unknown, flavor: ErrorFlavor, log?: Logger): HttpAnswer {
  const tid = trackingId();
  const err = toHomingError(e, log, tid);
  const headers: Record<string, string> = { 'content-type': JSON_CT };
  if (flavor === 'dps') headers['x-ms-error-code'] = String(err.code);
  else headers['iothub-errorcode'] = err.errorName;
  if (err.retryAfterSeconds !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(err.retryAfterSeconds)));
  return { status: err.status, headers, body: JSON.stringify(errorBody(err, flavor, tid, Date.now())) };
}

/** Sends an {@link HttpAnswer} through fastify. */
export function sendAnswer(reply: FastifyReply, a: HttpAnswer): FastifyReply {
  reply.code(a.status).headers(a.headers);
  return reply.send(a.body);
}

export function sendError(reply: FastifyReply, e: unknown, flavor: ErrorFlavor, log?: Logger): FastifyReply {
  return sendAnswer(reply, errorAnswer(e, flavor, log));
}

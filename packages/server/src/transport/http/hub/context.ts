import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { HomingError } from '../../../core/errors.ts';
import type { Clock } from '../../../core/clock.ts';
import type { JsonValue } from '../../../core/json.ts';
import type { HubRight } from '../../../core/policies.ts';
import type { HubService } from '../../../hub/hub-service.ts';
import type { Logger } from '../../../observability/logger.ts';
import type { Metrics } from '../../../observability/metrics.ts';
import { JSON_CT } from '../errors.ts';

/** What every hub route module gets. */
export interface HubApiContext {
  hub: HubService;
  logger: Logger;
  metrics: Metrics | undefined;
  clock: Clock;
  /** When several hubs share one listener: serve only requests whose Host header names this hub. */
  hostConstraint: RegExp | undefined;
}

/** Every hub route answers errors with the classic IoT Hub body (the azure-iothub SDK parses only that one). */
export const HUB_ROUTE_CONFIG = { errorFlavor: 'hub' } as const;

/** Body limits per route, bytes. Twin sections are capped at 32 KiB each by core/twin.ts; these stop abuse earlier. */
export const BODY_LIMITS = {
  none: 1024,
  device: 64 * 1024,
  bulk: 1024 * 1024,
  twin: 256 * 1024,
  query: 64 * 1024,
  // The method payload itself is capped at 128 KiB by hub-service; leave room for the envelope.
  method: 160 * 1024,
} as const;

/**
 * An onRequest hook that checks the service SAS for `right` before the body is read, so unauthenticated requests
 * are refused (401, classic IotHubUnauthorizedAccess body) without parsing anything.
 */
export function requireRight(hub: HubService, right: HubRight): onRequestAsyncHookHandler {
  return async (req: FastifyRequest) => {
    hub.authorizeService(req.headers.authorization, right);
  };
}

/** Route options shared by every hub route. */
export function routeOptions(ctx: HubApiContext, right: HubRight, bodyLimit: number) {
  return {
    config: HUB_ROUTE_CONFIG,
    onRequest: requireRight(ctx.hub, right),
    bodyLimit,
    ...(ctx.hostConstraint === undefined ? {} : { constraints: { host: ctx.hostConstraint } }),
  };
}

/** A case-insensitive Host header matcher for any of `names`, with or without a port. */
export function hostMatcher(names: readonly string[]): RegExp {
  const alt = names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  return new RegExp(`^(?:${alt})(?::\\d+)?$`, 'i');
}

/** Sends a JSON body with the content type the SDKs need to parse it (protocol-service.md T10). */
export function sendJson(reply: FastifyReply, status: number, value: unknown): FastifyReply {
  return reply.code(status).header('content-type', JSON_CT).send(JSON.stringify(value));
}

/** The parsed JSON body (app.ts parses every content type as JSON); `undefined` when the body was empty. */
export function jsonBody(req: FastifyRequest): JsonValue | undefined {
  return req.body as JsonValue | undefined;
}

/** A single-valued request header, trimmed; `undefined` when absent or blank. */
export function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  if (s === undefined) return undefined;
  const t = s.trim();
  return t.length === 0 ? undefined : t;
}

/** The If-Match header as sent (quoted or not, `*`); hub-service normalizes it. */
export function ifMatch(req: FastifyRequest): string | undefined {
  return header(req, 'if-match');
}

/** Parses an optional integer query parameter or header within [min, max]; values above max are clamped. */
export function intParam(raw: unknown, name: string, dflt: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return dflt;
  const s = Array.isArray(raw) ? raw[0] : raw;
  if (typeof s !== 'string' || !/^\s*\d{1,9}\s*$/.test(s)) throw new HomingError('ArgumentInvalid', `${name} must be an integer.`);
  const n = Number(s);
  if (n < min) throw new HomingError('ArgumentInvalid', `${name} must be at least ${min}.`);
  return Math.min(n, max);
}

/** A string query parameter (first value when repeated). */
export function strParam(raw: unknown): string | undefined {
  const s = Array.isArray(raw) ? raw[0] : raw;
  return typeof s === 'string' && s.length > 0 ? s : undefined;
}

/** The route's query parameters as a plain record (fastify's default querystring parser). */
export function queryParams(req: FastifyRequest): Record<string, unknown> {
  return (req.query ?? {}) as Record<string, unknown>;
}

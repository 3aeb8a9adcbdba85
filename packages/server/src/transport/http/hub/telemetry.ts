import type { FastifyInstance } from 'fastify';
import { HomingError } from '../../../core/errors.ts';
import type { TelemetryEvent } from '../../../hub/telemetry.ts';
import { BODY_LIMITS, header, intParam, queryParams, routeOptions, sendJson, strParam, type HubApiContext } from './context.ts';

export interface TelemetryRouteOptions {
  /** Interval of the SSE heartbeat comment, ms (default 15 s). */
  heartbeatMs: number;
  /** A stream whose unsent data grows past this many bytes (a client not reading) is closed. */
  maxBufferedBytes: number;
}

export const DEFAULT_TELEMETRY_ROUTE_OPTIONS: TelemetryRouteOptions = { heartbeatMs: 15_000, maxBufferedBytes: 1024 * 1024 };

const MAX_RECENT = 1000;
const DEFAULT_RECENT = 100;

interface DeviceParams {
  deviceId: string;
}

function parseSeq(raw: string, what: string): number {
  if (!/^\d{1,15}$/.test(raw)) throw new HomingError('ArgumentInvalid', `${what} must be a non-negative integer (an event sequence number).`);
  return Number(raw);
}

/**
 * Telemetry for operators, Homing-specific (under /homing/). Homing does not store telemetry: the hub keeps per-device
 * counts and a ring of recent messages, and feeds live listeners.
 * - GET /homing/telemetry/stream: Server-Sent Events. With `Last-Event-ID` or `?since=<seq>`, the recent events after
 *   that sequence number come first, then live ones; without either, only live ones. `id:` is the sequence number,
 *   `?deviceId=` filters, a comment line is sent as a heartbeat. The listener is removed when the client goes away,
 *   and open streams are ended when the server closes.
 * - GET /homing/telemetry/recent?limit=&deviceId=&since=: the recent events as a JSON array, oldest first.
 * - GET /homing/telemetry/counts/{deviceId}: `{deviceId, messages}`.
 */
export function registerTelemetryRoutes(app: FastifyInstance, ctx: HubApiContext, o: TelemetryRouteOptions): void {
  const { hub, logger } = ctx;
  const openStreams = new Set<() => void>();

  // End the streams before the server waits for connections to drain; otherwise close() waits for every client.
  app.addHook('preClose', (done) => {
    for (const end of [...openStreams]) end();
    done();
  });

  app.get('/homing/telemetry/stream', { ...routeOptions(ctx, 'ServiceConnect', BODY_LIMITS.none), exposeHeadRoute: false }, (req, reply) => {
    const q = queryParams(req);
    const deviceId = strParam(q.deviceId);
    const lastEventId = header(req, 'last-event-id');
    const sinceRaw = lastEventId ?? strParam(q.since);
    const since = sinceRaw === undefined ? undefined : parseSeq(sinceRaw, lastEventId !== undefined ? 'Last-Event-ID' : 'since');

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
    });
    let open = true;
    const write = (chunk: string): void => {
      if (!open) return;
      res.write(chunk);
      if (res.writableLength > o.maxBufferedBytes) {
        logger.warn({ api: 'hub', hubId: hub.hubId }, 'telemetry stream closed: the client does not keep up');
        end();
      }
    };
    const onEvent = (e: TelemetryEvent): void => {
      if (deviceId !== undefined && e.deviceId !== deviceId) return;
      write(`id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    // No await between reading the backlog and subscribing: no event can fall in between or come twice.
    const backlog = since === undefined ? [] : hub.telemetry.recent({ afterSeq: since, ...(deviceId === undefined ? {} : { deviceId }) });
    const unsubscribe = hub.telemetry.subscribe(onEvent);
    const heartbeat = setInterval(() => write(': heartbeat\n\n'), o.heartbeatMs);
    heartbeat.unref();
    function end(): void {
      if (!open) return;
      open = false;
      unsubscribe();
      clearInterval(heartbeat);
      openStreams.delete(end);
      res.end();
    }
    openStreams.add(end);
    res.on('close', end);
    write(': connected\n\n');
    for (const e of backlog) onEvent(e);
  });

  app.get('/homing/telemetry/recent', routeOptions(ctx, 'ServiceConnect', BODY_LIMITS.none), async (req, reply) => {
    const q = queryParams(req);
    const limit = intParam(q.limit, 'limit', DEFAULT_RECENT, 1, MAX_RECENT);
    const deviceId = strParam(q.deviceId);
    const sinceRaw = strParam(q.since);
    const events = hub.telemetry.recent({
      limit,
      ...(deviceId === undefined ? {} : { deviceId }),
      ...(sinceRaw === undefined ? {} : { afterSeq: parseSeq(sinceRaw, 'since') }),
    });
    return sendJson(reply, 200, events);
  });

  app.get<{ Params: DeviceParams }>('/homing/telemetry/counts/:deviceId', routeOptions(ctx, 'ServiceConnect', BODY_LIMITS.none), async (req, reply) => {
    const device = await hub.getDevice(req.params.deviceId);
    return sendJson(reply, 200, { deviceId: device.deviceId, messages: hub.telemetry.countFor(device.deviceId) });
  });
}

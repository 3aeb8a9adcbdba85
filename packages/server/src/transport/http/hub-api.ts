import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import type { HubService } from '../../hub/hub-service.ts';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import { hostMatcher, type HubApiContext } from './hub/context.ts';
import { registerDeviceRoutes } from './hub/devices.ts';
import { registerImportRoutes } from './hub/import.ts';
import { registerMethodRoutes } from './hub/methods.ts';
import { registerQueryRoutes } from './hub/query.ts';
import { registerStatisticsRoutes } from './hub/statistics.ts';
import { DEFAULT_TELEMETRY_ROUTE_OPTIONS, registerTelemetryRoutes } from './hub/telemetry.ts';
import { registerTwinRoutes } from './hub/twins.ts';

export interface HubApiOptions {
  logger: Logger;
  metrics?: Metrics;
  clock: Clock;
  /** Heartbeat interval of the telemetry SSE stream, ms (default 15 s). */
  telemetryHeartbeatMs?: number;
  /**
   * Several hubs on one listener: serve only requests whose Host header is one of the hub's host names (any case,
   * any port), so each hub registers its routes on the same app. Default: every request is this hub's.
   */
  routeByHost?: boolean;
}

/**
 * The IoT Hub service REST API, the subset azure-iothub uses (registry, twins, query, direct methods, statistics,
 * bulk registry operations), plus Homing's telemetry and device state import routes under /homing/. Every route checks a policy SAS for its
 * right (RegistryRead, RegistryWrite or ServiceConnect) and answers errors with the classic IoT Hub body.
 *
 * `app` comes from createHttpsApp (case-insensitive routes, trailing slashes, JSON parsing, the error handler).
 * The api-version query parameter is accepted and ignored.
 */
export function registerHubApi(app: FastifyInstance, hub: HubService, opts: HubApiOptions): void {
  const ctx: HubApiContext = {
    hub,
    logger: opts.logger,
    metrics: opts.metrics,
    clock: opts.clock,
    hostConstraint: opts.routeByHost ? hostMatcher(hub.hostNames) : undefined,
  };
  registerDeviceRoutes(app, ctx);
  registerImportRoutes(app, ctx);
  registerQueryRoutes(app, ctx);
  registerTwinRoutes(app, ctx);
  registerMethodRoutes(app, ctx);
  registerStatisticsRoutes(app, ctx);
  registerTelemetryRoutes(app, ctx, {
    ...DEFAULT_TELEMETRY_ROUTE_OPTIONS,
    ...(opts.telemetryHeartbeatMs === undefined ? {} : { heartbeatMs: opts.telemetryHeartbeatMs }),
  });
}

import type { FastifyInstance } from 'fastify';
import { BODY_LIMITS, routeOptions, sendJson, type HubApiContext } from './context.ts';

/** GET /statistics/devices (registry counts) and GET /statistics/service (live connections). */
export function registerStatisticsRoutes(app: FastifyInstance, ctx: HubApiContext): void {
  const { hub } = ctx;
  app.get('/statistics/devices', routeOptions(ctx, 'RegistryRead', BODY_LIMITS.none), async (_req, reply) => {
    const s = await hub.statistics();
    return sendJson(reply, 200, { totalDeviceCount: s.totalDeviceCount, enabledDeviceCount: s.enabledDeviceCount, disabledDeviceCount: s.disabledDeviceCount });
  });
  app.get('/statistics/service', routeOptions(ctx, 'ServiceConnect', BODY_LIMITS.none), async (_req, reply) => {
    return sendJson(reply, 200, { connectedDeviceCount: hub.sessions.size });
  });
}

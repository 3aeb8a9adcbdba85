import type { FastifyInstance } from 'fastify';
import { isHomingError } from '../../../core/errors.ts';
import { BODY_LIMITS, jsonBody, routeOptions, sendJson, type HubApiContext } from './context.ts';

interface IdParams {
  id: string;
}

/**
 * POST /twins/{id}/methods: invokes a direct method and answers 200 `{status, payload}` with what the device
 * returned. Failures are 404 DeviceNotFound (classic body), 404 DeviceNotOnline or 504 GatewayTimeout: never
 * 429/500/503, which azure-iothub's Client retries for four minutes (T15).
 */
export function registerMethodRoutes(app: FastifyInstance, ctx: HubApiContext): void {
  const { hub, metrics } = ctx;
  app.post<{ Params: IdParams }>('/twins/:id/methods', routeOptions(ctx, 'ServiceConnect', BODY_LIMITS.method), async (req, reply) => {
    try {
      const result = await hub.invokeMethod(req.params.id, jsonBody(req) ?? null);
      metrics?.methodInvocations.inc({ hub: hub.hubId, result: 'ok' });
      return sendJson(reply, 200, { status: result.status, payload: result.payload });
    } catch (e) {
      metrics?.methodInvocations.inc({ hub: hub.hubId, result: isHomingError(e) ? e.errorName : 'error' });
      throw e;
    }
  });
}

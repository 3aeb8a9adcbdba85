import type { FastifyInstance } from 'fastify';
import { BODY_LIMITS, jsonBody, routeOptions, sendJson, type HubApiContext } from './context.ts';
import { deviceJson, etagHeader, twinJson } from './wire.ts';

interface IdParams {
  id: string;
}

/**
 * Homing-specific: `PUT /homing/devices/{id}/state` installs a whole device state in one write (identity, tags,
 * desired and reported properties with their versions), what the provisioning service needs to migrate a device
 * between hubs (IoT Hub can only do that through a bulk import job). RegistryWrite. docs/api/hub.md.
 *
 * 201 when the device was created, 200 otherwise; the body is `{created, changed, device, twin}` (Device JSON and
 * Twin JSON as GET /devices and GET /twins return them). Errors use the classic hub body.
 */
export function registerImportRoutes(app: FastifyInstance, ctx: HubApiContext): void {
  const { hub } = ctx;
  app.put<{ Params: IdParams }>('/homing/devices/:id/state', routeOptions(ctx, 'RegistryWrite', BODY_LIMITS.twin), async (req, reply) => {
    const r = await hub.importDevice(jsonBody(req) ?? null, req.params.id);
    reply.header('etag', etagHeader(r.device.etag));
    return sendJson(reply, r.created ? 201 : 200, { created: r.created, changed: r.changed, device: deviceJson(r.device), twin: twinJson(r.device, r.twin) });
  });
}

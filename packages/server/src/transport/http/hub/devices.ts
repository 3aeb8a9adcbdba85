import type { FastifyInstance } from 'fastify';
import { HomingError, isHomingError } from '../../../core/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../../../core/json.ts';
import type { HubService } from '../../../hub/hub-service.ts';
import { BODY_LIMITS, ifMatch, intParam, jsonBody, queryParams, routeOptions, sendJson, type HubApiContext } from './context.ts';
import { deviceJson, etagHeader } from './wire.ts';

interface IdParams {
  id: string;
}

/** Largest `top` for GET /devices (IoT Hub: 1000). */
const MAX_LIST = 1000;
const MAX_BULK = 100;

/** Device identity registry: PUT/GET/DELETE /devices/{id}, GET /devices, POST /devices (bulk). */
export function registerDeviceRoutes(app: FastifyInstance, ctx: HubApiContext): void {
  const { hub } = ctx;

  app.put<{ Params: IdParams }>('/devices/:id', routeOptions(ctx, 'RegistryWrite', BODY_LIMITS.device), async (req, reply) => {
    const body = jsonBody(req) ?? null;
    const match = ifMatch(req);
    // No If-Match: create (409 when it exists). With If-Match ("*" or an etag): replace.
    const device = match === undefined ? await hub.createDevice(body, req.params.id) : await hub.updateDevice(body, req.params.id, match);
    reply.header('etag', etagHeader(device.etag));
    return sendJson(reply, 200, deviceJson(device));
  });

  app.get<{ Params: IdParams }>('/devices/:id', routeOptions(ctx, 'RegistryRead', BODY_LIMITS.none), async (req, reply) => {
    const device = await hub.getDevice(req.params.id);
    reply.header('etag', etagHeader(device.etag));
    return sendJson(reply, 200, deviceJson(device));
  });

  app.delete<{ Params: IdParams }>('/devices/:id', routeOptions(ctx, 'RegistryWrite', BODY_LIMITS.none), async (req, reply) => {
    await hub.deleteDevice(req.params.id, ifMatch(req));
    return reply.code(204).send();
  });

  app.get('/devices', routeOptions(ctx, 'RegistryRead', BODY_LIMITS.none), async (req, reply) => {
    const top = intParam(queryParams(req).top, 'top', MAX_LIST, 1, MAX_LIST);
    const page = await hub.listDevices(top);
    return sendJson(reply, 200, page.devices.map(deviceJson));
  });

  app.post('/devices', routeOptions(ctx, 'RegistryWrite', BODY_LIMITS.bulk), async (req, reply) => {
    const items = parseBulk(jsonBody(req));
    const errors: BulkError[] = [];
    for (const item of items) {
      try {
        await applyBulkItem(hub, item);
      } catch (e) {
        // Expected per-device failures are reported in the result; anything else (the store failing) is a 500.
        if (!isHomingError(e)) throw e;
        errors.push({ deviceId: item.id, errorCode: e.errorName, errorStatus: e.message, operation: item.mode });
      }
    }
    return sendJson(reply, 200, { isSuccessful: errors.length === 0, errors, warnings: [] });
  });
}

// ------------------------------------------------------------------------------------------------- bulk

type ImportMode = 'create' | 'update' | 'updateIfMatchETag' | 'delete' | 'deleteIfMatchETag';

const IMPORT_MODES: Readonly<Record<string, ImportMode>> = {
  create: 'create',
  update: 'update',
  updateifmatchetag: 'updateIfMatchETag',
  delete: 'delete',
  deleteifmatchetag: 'deleteIfMatchETag',
};

interface BulkItem {
  id: string;
  mode: ImportMode;
  etag: string | undefined;
  device: JsonObject;
}

interface BulkError {
  deviceId: string;
  errorCode: string;
  errorStatus: string;
  operation: ImportMode;
}

/**
 * Validates the bulk request shape: 1..100 objects with `id` (the SDK renames deviceId to id) and an importMode,
 * case-insensitive. Shape errors refuse the whole request (400); per-device problems come back in `errors`.
 */
function parseBulk(body: JsonValue | undefined): BulkItem[] {
  if (!Array.isArray(body)) throw new HomingError('ArgumentInvalid', 'The body must be a JSON array of devices.');
  if (body.length < 1 || body.length > MAX_BULK) throw new HomingError('ArgumentInvalid', `A bulk operation takes 1 to ${MAX_BULK} devices.`);
  const seen = new Set<string>();
  return body.map((raw, i) => {
    if (!isPlainObject(raw)) throw new HomingError('ArgumentInvalid', `Item ${i} is not a JSON object.`);
    const id = raw.id ?? raw.deviceId;
    if (typeof id !== 'string' || id.length === 0) throw new HomingError('ArgumentInvalid', `Item ${i} has no id.`);
    if (raw.deviceId !== undefined && raw.id !== undefined && raw.deviceId !== raw.id) {
      throw new HomingError('ArgumentInvalid', `Item ${i} has different id and deviceId.`);
    }
    if (seen.has(id)) throw new HomingError('ArgumentInvalid', `Device ${id} appears more than once.`);
    seen.add(id);
    const modeRaw = raw.importMode;
    const mode = typeof modeRaw === 'string' ? IMPORT_MODES[modeRaw.toLowerCase()] : undefined;
    if (mode === undefined) {
      throw new HomingError('ArgumentInvalid', `Item ${i} has an unknown importMode; use create, update, updateIfMatchETag, delete or deleteIfMatchETag.`);
    }
    const etagRaw = raw.eTag ?? raw.etag;
    const etag = typeof etagRaw === 'string' && etagRaw.length > 0 ? etagRaw : undefined;
    const { id: _id, importMode: _m, eTag: _e, ...rest } = raw;
    return { id, mode, etag, device: { ...rest, deviceId: id } };
  });
}

async function applyBulkItem(hub: HubService, item: BulkItem): Promise<void> {
  const needEtag = (): string => {
    if (item.etag === undefined) throw new HomingError('PreconditionFailed', `${item.mode} needs the device etag.`);
    return item.etag;
  };
  switch (item.mode) {
    case 'create':
      await hub.createDevice(item.device, item.id);
      return;
    case 'update':
      await hub.updateDevice(item.device, item.id, '*');
      return;
    case 'updateIfMatchETag':
      await hub.updateDevice(item.device, item.id, needEtag());
      return;
    case 'delete':
      await hub.deleteDevice(item.id, '*');
      return;
    case 'deleteIfMatchETag':
      await hub.deleteDevice(item.id, needEtag());
      return;
  }
}

import type { FastifyInstance } from 'fastify';
import { HomingError, isHomingError } from '../../../core/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../../../core/json.ts';
import { normalizeEtag, type HubService } from '../../../hub/hub-service.ts';
import type { DeviceIdentity, TwinState } from '../../../hub/model.ts';
import { BODY_LIMITS, ifMatch, jsonBody, routeOptions, sendJson, type HubApiContext } from './context.ts';
import { etagHeader, twinJson } from './wire.ts';

interface IdParams {
  id: string;
}

/** Device twins: GET, PATCH (merge patch on tags and desired) and PUT (replace tags and desired) /twins/{id}. */
export function registerTwinRoutes(app: FastifyInstance, ctx: HubApiContext): void {
  const { hub } = ctx;

  app.get<{ Params: IdParams }>('/twins/:id', routeOptions(ctx, 'RegistryRead', BODY_LIMITS.none), async (req, reply) => {
    const { device, twin } = await hub.getTwinState(req.params.id);
    reply.header('etag', etagHeader(twin.etag));
    return sendJson(reply, 200, twinJson(device, twin));
  });

  app.patch<{ Params: IdParams }>('/twins/:id', routeOptions(ctx, 'RegistryWrite', BODY_LIMITS.twin), async (req, reply) => {
    const { device, twin } = await hub.updateTwin(req.params.id, jsonBody(req) ?? null, ifMatch(req));
    ctx.metrics?.twinUpdates.inc({ hub: hub.hubId, side: 'service' });
    reply.header('etag', etagHeader(twin.etag));
    return sendJson(reply, 200, twinJson(device, twin));
  });

  app.put<{ Params: IdParams }>('/twins/:id', routeOptions(ctx, 'RegistryWrite', BODY_LIMITS.twin), async (req, reply) => {
    const { device, twin } = await replaceTwin(hub, req.params.id, jsonBody(req) ?? null, ifMatch(req));
    ctx.metrics?.twinUpdates.inc({ hub: hub.hubId, side: 'service' });
    reply.header('etag', etagHeader(twin.etag));
    return sendJson(reply, 200, twinJson(device, twin));
  });
}

const REPLACE_RETRIES = 4;

/**
 * Replace semantics (PUT /twins/{id}): tags and desired properties become exactly the ones given; reported
 * properties and everything else in the body are ignored, as on IoT Hub. Built on the merge-patch use case: the
 * difference to the current twin is turned into a merge patch (null for removed keys) and applied with the current
 * etag, so a concurrent change is detected and the diff recomputed (or 412 when the caller named an etag).
 */
async function replaceTwin(hub: HubService, deviceId: string, body: JsonValue, match: string | undefined): Promise<{ device: DeviceIdentity; twin: TwinState }> {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The twin must be a JSON object.');
  const tags = optionalObject(body.tags, 'tags');
  const properties = optionalObject(body.properties, 'properties');
  const desired = optionalObject(properties?.desired, 'properties.desired');
  const expected = match === undefined ? '*' : normalizeEtag(match);
  for (let attempt = 0; ; attempt++) {
    const { twin } = await hub.getTwinState(deviceId);
    if (expected !== '*' && expected !== twin.etag) throw new HomingError('PreconditionFailed', 'The etag does not match the twin.');
    const patch: JsonObject = {};
    if (tags !== undefined) patch.tags = diffAsMergePatch(twin.tags, tags);
    if (desired !== undefined) patch.properties = { desired: diffAsMergePatch(twin.desired.props, withoutSystemKeys(desired)) };
    try {
      return await hub.updateTwin(deviceId, patch, `"${twin.etag}"`);
    } catch (e) {
      // Lost a race with another writer: recompute the diff unless the caller pinned an etag.
      const lostRace = isHomingError(e) && e.errorName === 'PreconditionFailed' && expected === '*';
      if (!lostRace || attempt + 1 >= REPLACE_RETRIES) throw e;
    }
  }
}

function optionalObject(v: JsonValue | undefined, what: string): JsonObject | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) throw new HomingError('ArgumentInvalid', `${what} must be an object.`);
  return v;
}

function withoutSystemKeys(o: JsonObject): JsonObject {
  const { $metadata: _m, $version: _v, ...rest } = o;
  return rest;
}

/** A JSON merge patch that turns `from` into `to`: null for removed keys, recursion into objects on both sides. */
export function diffAsMergePatch(from: JsonObject, to: JsonObject): JsonObject {
  const patch: JsonObject = {};
  for (const k of Object.keys(from)) if (!Object.hasOwn(to, k)) patch[k] = null;
  for (const [k, v] of Object.entries(to)) {
    const cur = from[k];
    if (isPlainObject(v) && isPlainObject(cur)) {
      const sub = diffAsMergePatch(cur, v);
      if (Object.keys(sub).length > 0) patch[k] = sub;
    } else if (v === null) {
      if (cur !== undefined) patch[k] = null;
    } else if (JSON.stringify(cur) !== JSON.stringify(v)) {
      patch[k] = v;
    }
  }
  return patch;
}

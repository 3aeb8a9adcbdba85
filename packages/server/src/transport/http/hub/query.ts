import type { FastifyInstance } from 'fastify';
import { HomingError } from '../../../core/errors.ts';
import { isPlainObject, type JsonObject } from '../../../core/json.ts';
import { matchesQuery, parseTwinQuery, projectRow, type TwinQuery } from '../../../core/twin-query.ts';
import type { HubService } from '../../../hub/hub-service.ts';
import { BODY_LIMITS, header, intParam, jsonBody, routeOptions, sendJson, type HubApiContext } from './context.ts';
import { twinJson } from './wire.ts';

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;
/** Rows scanned per hub.queryTwins call while counting. */
const COUNT_BATCH = 1000;

/**
 * POST /devices/query: `{"query":"SELECT ... FROM devices [WHERE ...]"}`, page size in `x-ms-max-item-count`,
 * continuation in `x-ms-continuation`. The response carries `x-ms-continuation` only when more rows follow (T12).
 */
export function registerQueryRoutes(app: FastifyInstance, ctx: HubApiContext): void {
  const { hub } = ctx;
  app.post('/devices/query', routeOptions(ctx, 'RegistryRead', BODY_LIMITS.query), async (req, reply) => {
    const body = jsonBody(req);
    if (!isPlainObject(body) || typeof body.query !== 'string') {
      throw new HomingError('ArgumentInvalid', 'The body must be {"query":"SELECT ... FROM devices ..."}.');
    }
    const query = parseTwinQuery(body.query);
    const pageSize = intParam(header(req, 'x-ms-max-item-count'), 'x-ms-max-item-count', DEFAULT_PAGE, 1, MAX_PAGE);
    const continuation = header(req, 'x-ms-continuation');

    if (query.select.kind === 'count') {
      const n = await countMatches(hub, query);
      reply.header('x-ms-item-type', 'raw');
      return sendJson(reply, 200, [{ [query.select.alias]: n }]);
    }
    const filter = (doc: JsonObject) => matchesQuery(query, doc);
    const page = await hub.queryTwins((row) => filter(twinJson(row.device, row.twin)), pageSize, continuation);
    const items = page.rows.map((row) => projectRow(query, twinJson(row.device, row.twin)));
    reply.header('x-ms-item-type', query.select.kind === 'all' ? 'twin' : 'raw');
    if (page.continuation !== undefined) reply.header('x-ms-continuation', page.continuation);
    return sendJson(reply, 200, items);
  });
}

/** COUNT() scans the whole registry in pages; the result is one row. */
async function countMatches(hub: HubService, query: TwinQuery): Promise<number> {
  let n = 0;
  let continuation: string | undefined;
  do {
    const page = await hub.queryTwins((row) => {
      if (matchesQuery(query, twinJson(row.device, row.twin))) n++;
      return false;
    }, COUNT_BATCH, continuation);
    continuation = page.continuation;
  } while (continuation !== undefined);
  return n;
}

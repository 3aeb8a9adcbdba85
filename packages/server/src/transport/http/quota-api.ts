import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import type { JsonValue } from '../../core/json.ts';
import { authorizePolicySas } from '../../core/policies.ts';
import { parseSas } from '../../core/sas.ts';
import type { InstanceResolver, InstanceService } from '../../provisioning/instances.ts';
import type { ProvisioningInstance } from '../../provisioning/model.ts';
import type { QuotaService } from '../../provisioning/quotas/quota-service.ts';
import { effectiveQuotasToJson, quotaSettingsToJson } from '../../provisioning/quotas/settings.ts';
import { DPS_SERVICE_BODY_LIMIT, hostOf } from './dps-service-api.ts';
import { JSON_CT } from './errors.ts';

/**
 * Homing's admin API for the quotas of a provisioning instance (docs/api/quotas.md), on the DPS listener next to
 * `/homing/instance`:
 * - `GET /homing/instance/quotas`: `{settings, effective, etag}`;
 * - `PUT /homing/instance/quotas`: replaces `settings` (optional `If-Match` with the instance etag).
 * Authentication is the admin API's (Host header, else SAS `sr` host; a policy with **ServiceConfig**; every failure
 * the same 401 401000, before the body is read). dps-service-api.ts keeps its `authenticate` private, so the few
 * equivalent lines live here too (as in ca-api.ts).
 *
 * `registerQuotaApi` also charges the instance's operations bucket for every authenticated DPS service API call
 * (`/enrollments…`, `/enrollmentGroups…`, `/registrations…`) in a preHandler hook, unless
 * `countServiceApiCalls: false`. The `/homing/…` admin routes are not counted, so an operator can always change the
 * quotas; device API calls are counted by the registration service.
 */
export interface QuotaApiDeps {
  instances: InstanceResolver;
  admin: InstanceService;
  quotas: QuotaService;
  clock: Clock;
  bodyLimit?: number;
  /** Charge DPS service API calls to the operations bucket (default true). */
  countServiceApiCalls?: boolean;
}

const authenticated = new WeakMap<FastifyRequest, ProvisioningInstance>();

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function unauthorized(): HomingError {
  return new HomingError('Unauthorized', 'Unauthorized');
}

/** The instance a service or admin request is for: by the Host header, else by the host of the SAS `sr`. */
async function instanceOf(req: FastifyRequest, instances: InstanceResolver): Promise<ProvisioningInstance | undefined> {
  const hostHeader = hostOf(header(req, 'host'));
  let instance = hostHeader === undefined ? undefined : await instances.byHostName(hostHeader);
  if (instance === undefined) {
    const srHost = hostOf(parseSas(header(req, 'authorization'))?.sr);
    if (srHost !== undefined) instance = await instances.byHostName(srHost);
  }
  return instance;
}

function quotasBody(instance: ProvisioningInstance, quotas: QuotaService): Record<string, unknown> {
  return { settings: quotaSettingsToJson(instance.quotas), effective: effectiveQuotasToJson(quotas.effective(instance)), etag: instance.etag };
}

function sendJson(reply: FastifyReply, body: unknown, etag: string): FastifyReply {
  return reply.code(200).header('content-type', JSON_CT).header('etag', etag).send(JSON.stringify(body));
}

/** The DPS service API's paths (route patterns, lower-cased), whose calls count as operations. */
const SERVICE_API_PREFIXES = ['/enrollments', '/enrollmentgroups', '/registrations'];

export function isServiceApiRoute(url: string | undefined): boolean {
  if (url === undefined) return false;
  const u = url.toLowerCase();
  return SERVICE_API_PREFIXES.some((p) => u === p || u.startsWith(`${p}/`));
}

/**
 * Charges every DPS service API call to the instance's operations bucket (429 429001 with Retry-After past it).
 * Runs as a preHandler, after the route's own authentication: an unauthenticated call is refused before it costs
 * the instance anything. Register it on the app that serves the service API (before `ready`).
 */
export function registerServiceApiQuota(app: FastifyInstance, deps: Pick<QuotaApiDeps, 'instances' | 'quotas'>): void {
  app.addHook('preHandler', async (req: FastifyRequest) => {
    if (!isServiceApiRoute(req.routeOptions.url)) return;
    const instance = await instanceOf(req, deps.instances);
    if (instance !== undefined) await deps.quotas.admitOperation(instance);
  });
}

export function registerQuotaApi(app: FastifyInstance, deps: QuotaApiDeps): void {
  const bodyLimit = deps.bodyLimit ?? DPS_SERVICE_BODY_LIMIT;

  async function authenticate(req: FastifyRequest): Promise<ProvisioningInstance> {
    const instance = await instanceOf(req, deps.instances);
    if (instance === undefined) throw unauthorized();
    authorizePolicySas(parseSas(header(req, 'authorization')), instance.policies, instance.serviceHostNames, Math.floor(deps.clock.now() / 1000), 'ServiceConfig', 'Unauthorized');
    return instance;
  }

  type Handler = (req: FastifyRequest, reply: FastifyReply, instance: ProvisioningInstance) => Promise<unknown>;

  function route(method: 'GET' | 'PUT', url: string, handler: Handler): void {
    app.route({
      method,
      url,
      bodyLimit,
      config: { errorFlavor: 'dps' },
      onRequest: async (req: FastifyRequest) => {
        authenticated.set(req, await authenticate(req));
      },
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        const instance = authenticated.get(req);
        if (instance === undefined) throw unauthorized();
        return handler(req, reply, instance);
      },
    });
  }

  route('GET', '/homing/instance/quotas', async (_req, reply, instance) => {
    const current = await deps.admin.getInstance(instance.name);
    return sendJson(reply, quotasBody(current, deps.quotas), current.etag);
  });
  route('PUT', '/homing/instance/quotas', async (req, reply, instance) => {
    const updated = await deps.admin.setQuotas(instance.name, req.body as JsonValue | undefined, req.headers['if-match']);
    return sendJson(reply, quotasBody(updated, deps.quotas), updated.etag);
  });

  if (deps.countServiceApiCalls !== false) registerServiceApiQuota(app, deps);
}

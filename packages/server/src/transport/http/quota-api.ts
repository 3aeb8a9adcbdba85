import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import type { JsonValue } from '../../core/json.ts';
import type { InstanceResolver, InstanceService } from '../../provisioning/instances.ts';
import type { ProvisioningInstance } from '../../provisioning/model.ts';
import type { QuotaService } from '../../provisioning/quotas/quota-service.ts';
import { effectiveQuotasToJson, quotaSettingsToJson } from '../../provisioning/quotas/settings.ts';
import { DPS_SERVICE_BODY_LIMIT } from './dps-service-api.ts';
import { JSON_CT } from './errors.ts';
import { instanceOf, serviceRoute, type ServiceHandler } from './service-auth.ts';

/**
 * Homing's admin API for the quotas of a provisioning instance (docs/api/quotas.md), on the DPS listener next to
 * `/homing/instance`:
 * - `GET /homing/instance/quotas`: `{settings, effective, etag}`;
 * - `PUT /homing/instance/quotas`: replaces `settings` (optional `If-Match` with the instance etag).
 * Authentication is the admin API's (Host header, else SAS `sr` host; a policy with **ServiceConfig**; every failure
 * the same 401 401000, before the body is read), from service-auth.ts.
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

  function route(method: 'GET' | 'PUT', url: string, handler: ServiceHandler): void {
    serviceRoute(app, deps, { method, url, right: 'ServiceConfig', bodyLimit, handler });
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

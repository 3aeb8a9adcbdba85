import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import { authorizePolicySas, type DpsRight } from '../../core/policies.ts';
import { parseSas } from '../../core/sas.ts';
import type { InstanceResolver } from '../../provisioning/instances.ts';
import type { ProvisioningInstance } from '../../provisioning/model.ts';

/**
 * Authentication of the DPS service API and of Homing's admin routes on the same listener (dps-service-api.ts,
 * ca-api.ts, quota-api.ts, fleet-api.ts, dps-deprovision-api.ts, portal-admin-api.ts):
 *
 * - the instance is found by the host name the caller dialled: the Host header, else the host of the SAS `sr`;
 * - the caller needs a policy SAS of that instance with the route's right (`'any'`: any valid policy of the
 *   instance, for routes such as `/homing/whoami`);
 * - every failure (unknown host, malformed/expired token, wrong key, sr for another host, a policy without the
 *   right) is the same 401 401000, with no hint of which part failed;
 * - `serviceRoute` authenticates in onRequest, before the body is read, so an unauthenticated caller gets 401,
 *   never 400 or 413.
 */

/** The error names a failed authentication may carry (both map to 401 401000 on the DPS listener). */
export type UnauthorizedName = 'Unauthorized' | 'IotHubUnauthorizedAccess';

/** A route's required right: a DPS right, or `'any'` for any valid policy of the instance. */
export type ServiceRight = DpsRight | 'any';

export interface ServiceAuthDeps {
  /** Finds the instance by the host name the request was sent to. */
  instances: InstanceResolver;
  clock: Clock;
  /** Error name of every authentication failure (default `Unauthorized`). */
  errorName?: UnauthorizedName;
}

/** The first value of a request header. */
export function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function unauthorized(name: UnauthorizedName = 'Unauthorized'): HomingError {
  return new HomingError(name, 'Unauthorized');
}

/** The host part of a Host header or an sr: `[v6]:port` → `v6`, `host:port` → `host`. */
export function hostOf(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let s = value.trim();
  const slash = s.indexOf('/');
  if (slash >= 0) s = s.slice(0, slash);
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    return end > 1 ? s.slice(1, end) : undefined;
  }
  const colon = s.indexOf(':');
  if (colon >= 0 && s.indexOf(':', colon + 1) < 0) s = s.slice(0, colon);
  return s.length > 0 ? s : undefined;
}

/** The instance a service or admin request is for: by the Host header, else by the host of the SAS `sr`. */
export async function instanceOf(req: FastifyRequest, instances: InstanceResolver): Promise<ProvisioningInstance | undefined> {
  const hostHeader = hostOf(header(req, 'host'));
  let instance = hostHeader === undefined ? undefined : await instances.byHostName(hostHeader);
  if (instance === undefined) {
    const srHost = hostOf(parseSas(header(req, 'authorization'))?.sr);
    if (srHost !== undefined) instance = await instances.byHostName(srHost);
  }
  return instance;
}

/** Authenticates a request (see the module comment): the instance it is for, or an `unauthorized` error. */
export async function authenticate(req: FastifyRequest, deps: ServiceAuthDeps, right: ServiceRight): Promise<ProvisioningInstance> {
  const errorName = deps.errorName ?? 'Unauthorized';
  const instance = await instanceOf(req, deps.instances);
  if (instance === undefined) throw unauthorized(errorName);
  const token = parseSas(header(req, 'authorization'));
  let required: DpsRight | undefined = right === 'any' ? undefined : right;
  if (required === undefined) {
    // Any valid policy: require a right the named policy has, so only the signature, expiry and host are checked.
    required = instance.policies.find((p) => p.keyName === token?.skn)?.rights[0];
    if (required === undefined) throw unauthorized(errorName);
  }
  authorizePolicySas(token, instance.policies, instance.serviceHostNames, Math.floor(deps.clock.now() / 1000), required, errorName);
  return instance;
}

export type ServiceHandler = (req: FastifyRequest, reply: FastifyReply, instance: ProvisioningInstance) => Promise<unknown>;

export interface ServiceRouteOptions {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE' | 'PATCH';
  url: string;
  right: ServiceRight;
  /** Largest accepted body, bytes (default: the app's). */
  bodyLimit?: number;
  handler: ServiceHandler;
}

const authenticated = new WeakMap<FastifyRequest, ProvisioningInstance>();

/**
 * Registers a route of the DPS listener (DPS error bodies) that authenticates in onRequest, before the body is read,
 * and hands the handler the authenticated instance.
 */
export function serviceRoute(app: FastifyInstance, deps: ServiceAuthDeps, o: ServiceRouteOptions): void {
  app.route({
    method: o.method,
    url: o.url,
    ...(o.bodyLimit === undefined ? {} : { bodyLimit: o.bodyLimit }),
    config: { errorFlavor: 'dps' },
    onRequest: async (req: FastifyRequest) => {
      authenticated.set(req, await authenticate(req, deps, o.right));
    },
    handler: async (req: FastifyRequest, reply: FastifyReply) => {
      const instance = authenticated.get(req);
      if (instance === undefined) throw unauthorized(deps.errorName);
      return o.handler(req, reply, instance);
    },
  });
}

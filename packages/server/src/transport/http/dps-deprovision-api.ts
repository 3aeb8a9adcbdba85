import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import type { JsonValue } from '../../core/json.ts';
import { authorizePolicySas } from '../../core/policies.ts';
import { parseSas } from '../../core/sas.ts';
import { parseDeprovisionBody, type DeprovisionService } from '../../provisioning/deprovision.ts';
import type { InstanceResolver } from '../../provisioning/instances.ts';
import type { ProvisioningInstance } from '../../provisioning/model.ts';
import { hostOf } from './dps-service-api.ts';
import { JSON_CT } from './errors.ts';

/**
 * Homing's admin action `POST /homing/registrations/{registrationId}/deprovision` (docs/api/dps-service.md): deletes
 * or disables the device on its hub and deletes the registration record (provisioning/deprovision.ts). Body optional:
 * `{"hubAction": "delete" | "disable"}`; answers 200 with the summary.
 *
 * Authentication is the DPS service API's (Host header, else SAS `sr` host; every failure the same 401 401000, before
 * the body is read) with the right that deletes registration records, **RegistrationStatusWrite**. dps-service-api.ts
 * keeps its `authenticate` private, so the few equivalent lines live here (as in ca-api.ts).
 */
export interface DeprovisionApiDeps {
  instances: InstanceResolver;
  deprovision: DeprovisionService;
  clock: Clock;
}

/** The body is at most `{"hubAction":"disable"}`. */
const BODY_LIMIT = 4 * 1024;

const authenticated = new WeakMap<FastifyRequest, ProvisioningInstance>();

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function unauthorized(): HomingError {
  return new HomingError('Unauthorized', 'Unauthorized');
}

export function registerDeprovisionApi(app: FastifyInstance, deps: DeprovisionApiDeps): void {
  async function authenticate(req: FastifyRequest): Promise<ProvisioningInstance> {
    const token = parseSas(header(req, 'authorization'));
    const hostHeader = hostOf(header(req, 'host'));
    let instance = hostHeader === undefined ? undefined : await deps.instances.byHostName(hostHeader);
    if (instance === undefined && token !== undefined) {
      const srHost = hostOf(token.sr);
      if (srHost !== undefined) instance = await deps.instances.byHostName(srHost);
    }
    if (instance === undefined) throw unauthorized();
    authorizePolicySas(token, instance.policies, instance.serviceHostNames, Math.floor(deps.clock.now() / 1000), 'RegistrationStatusWrite', 'Unauthorized');
    return instance;
  }

  app.route({
    method: 'POST',
    url: '/homing/registrations/:id/deprovision',
    bodyLimit: BODY_LIMIT,
    config: { errorFlavor: 'dps' },
    onRequest: async (req: FastifyRequest) => {
      authenticated.set(req, await authenticate(req));
    },
    handler: async (req, reply) => {
      const instance = authenticated.get(req);
      if (instance === undefined) throw unauthorized();
      const action = parseDeprovisionBody(req.body as JsonValue | undefined);
      const summary = await deps.deprovision.deprovision(instance, (req.params as { id: string }).id, action);
      return reply.code(200).header('content-type', JSON_CT).send(JSON.stringify(summary));
    },
  });
}

import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import type { JsonValue } from '../../core/json.ts';
import { parseDeprovisionBody, type DeprovisionService } from '../../provisioning/deprovision.ts';
import type { InstanceResolver } from '../../provisioning/instances.ts';
import { JSON_CT } from './errors.ts';
import { serviceRoute } from './service-auth.ts';

/**
 * Homing's admin action `POST /homing/registrations/{registrationId}/deprovision` (docs/api/dps-service.md): deletes
 * or disables the device on its hub and deletes the registration record (provisioning/deprovision.ts). Body optional:
 * `{"hubAction": "delete" | "disable"}`; answers 200 with the summary.
 *
 * Authentication is the DPS service API's (Host header, else SAS `sr` host; every failure the same 401 401000, before
 * the body is read; service-auth.ts) with the right that deletes registration records, **RegistrationStatusWrite**.
 */
export interface DeprovisionApiDeps {
  instances: InstanceResolver;
  deprovision: DeprovisionService;
  clock: Clock;
}

/** The body is at most `{"hubAction":"disable"}`. */
const BODY_LIMIT = 4 * 1024;

export function registerDeprovisionApi(app: FastifyInstance, deps: DeprovisionApiDeps): void {
  serviceRoute(app, deps, {
    method: 'POST',
    url: '/homing/registrations/:id/deprovision',
    right: 'RegistrationStatusWrite',
    bodyLimit: BODY_LIMIT,
    handler: async (req, reply, instance) => {
      const action = parseDeprovisionBody(req.body as JsonValue | undefined);
      const summary = await deps.deprovision.deprovision(instance, (req.params as { id: string }).id, action);
      return reply.code(200).header('content-type', JSON_CT).send(JSON.stringify(summary));
    },
  });
}

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { withinBudget, type DeviceCredential, type RegistrationReply, type RegistrationService } from '../../provisioning/registration.ts';
import { peerCertificates, peerChain } from '../tls/peer-chain.ts';
import { JSON_CT } from './errors.ts';

/**
 * The DPS device runtime over HTTPS (protocol-device.md §A; dps-behavior.md §2.1):
 * - `PUT  /{idScope}/registrations/{registrationId}/register`
 * - `GET  /{idScope}/registrations/{registrationId}/operations/{operationId}`
 * - `POST /{idScope}/registrations/{registrationId}` (registration status lookup)
 * Any api-version is accepted. Every answer is JSON with `Content-Type: application/json; charset=utf-8` (the SDK
 * crashes without it); errors use the DPS body. Non-2xx answers are final for the SDK, so "still working" is always
 * a 202 with `status: assigning` and an integer Retry-After ≥ 1.
 */
export type DpsDeviceRuntime = Pick<RegistrationService, 'register' | 'operationStatus' | 'statusLookup'>;

export interface DpsDeviceApiDeps {
  registration: DpsDeviceRuntime;
  /**
   * How long a request waits for its assignment before answering 202 `assigning` (ms). An assignment that ends in
   * time is answered 200 with the final status, saving the device a poll. 0: always 202 while assigning. Default 100.
   */
  responseBudgetMs?: number;
  /** Largest accepted body (DPS: 96 KB). */
  bodyLimit?: number;
}

export const DPS_DEVICE_BODY_LIMIT = 96 * 1024;

interface RegistrationParams {
  idScope: string;
  registrationId: string;
}

interface OperationParams extends RegistrationParams {
  operationId: string;
}

/** A SAS in Authorization; without one, the TLS client chain (X.509 attestation, protocol-device.md A.3). */
function credentialOf(req: FastifyRequest): DeviceCredential {
  const h = req.headers.authorization;
  if (typeof h === 'string' && h.length > 0) return { kind: 'sas', authorization: h };
  // TLS 1.3: the certificates as parsed by the TLS layer come along, so the attestation need not parse them again.
  const parsed = peerCertificates(req.socket);
  if (parsed !== undefined) return parsed.length > 0 ? { kind: 'x509', chain: parsed.map((c) => c.raw), parsed } : { kind: 'sas', authorization: undefined };
  const chain = peerChain(req.socket);
  return chain.length > 0 ? { kind: 'x509', chain } : { kind: 'sas', authorization: undefined };
}

function send(reply: FastifyReply, r: RegistrationReply): FastifyReply {
  reply.code(r.httpStatus).header('content-type', JSON_CT);
  if (r.httpStatus === 202) reply.header('retry-after', String(Math.max(1, Math.ceil(r.retryAfterSeconds ?? 1))));
  return reply.send(JSON.stringify(r.body));
}

export function registerDpsDeviceApi(app: FastifyInstance, deps: DpsDeviceApiDeps): void {
  const budget = deps.responseBudgetMs ?? 100;
  const bodyLimit = deps.bodyLimit ?? DPS_DEVICE_BODY_LIMIT;
  const config = { errorFlavor: 'dps' as const };

  app.put<{ Params: RegistrationParams }>('/:idScope/registrations/:registrationId/register', { bodyLimit, config }, async (req, reply) => {
    const { idScope, registrationId } = req.params;
    // register waits up to the budget itself: an assignment that ends in time is then one store write.
    // The source address feeds geoLatency allocation and the custom webhook's context.
    const sourceAddress = req.socket.remoteAddress;
    const pending = await deps.registration.register(idScope, registrationId, req.body, credentialOf(req), { budgetMs: budget, ...(sourceAddress ? { sourceAddress } : {}) });
    return send(reply, pending.reply);
  });

  app.get<{ Params: OperationParams }>('/:idScope/registrations/:registrationId/operations/:operationId', { bodyLimit, config }, async (req, reply) => {
    const { idScope, registrationId, operationId } = req.params;
    const pending = await deps.registration.operationStatus(idScope, registrationId, operationId, credentialOf(req));
    return send(reply, await withinBudget(pending, budget));
  });

  app.post<{ Params: RegistrationParams }>('/:idScope/registrations/:registrationId', { bodyLimit, config }, async (req, reply) => {
    const { idScope, registrationId } = req.params;
    const result = await deps.registration.statusLookup(idScope, registrationId, req.body, credentialOf(req));
    return reply.code(200).header('content-type', JSON_CT).send(JSON.stringify(result));
  });
}

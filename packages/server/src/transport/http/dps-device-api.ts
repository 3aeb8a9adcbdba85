import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { IncomingMessage } from 'node:http';
import { withinBudget, type DeviceCredential, type RegistrationReply, type RegistrationService } from '../../provisioning/registration.ts';
import { peerCertificates, peerChain } from '../tls/peer-chain.ts';
import { directRoutesOf } from './app.ts';
import { JSON_CT, sendAnswer, type HttpAnswer } from './errors.ts';

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
  /** Told the status of every answer of these routes, errors included, with the id scope of its path (/homing/stats). */
  onAnswer?: (idScope: string, status: number) => void;
}

export const DPS_DEVICE_BODY_LIMIT = 96 * 1024;

/** A SAS in Authorization; without one, the TLS client chain (X.509 attestation, protocol-device.md A.3). */
function credentialOf(req: IncomingMessage): DeviceCredential {
  const h = req.headers.authorization;
  if (typeof h === 'string' && h.length > 0) return { kind: 'sas', authorization: h };
  // TLS 1.3: the certificates as parsed by the TLS layer come along, so the attestation need not parse them again.
  const parsed = peerCertificates(req.socket);
  if (parsed !== undefined) return parsed.length > 0 ? { kind: 'x509', chain: parsed.map((c) => c.raw), parsed } : { kind: 'sas', authorization: undefined };
  const chain = peerChain(req.socket);
  return chain.length > 0 ? { kind: 'x509', chain } : { kind: 'sas', authorization: undefined };
}

function replyAnswer(r: RegistrationReply): HttpAnswer {
  const headers: Record<string, string> = { 'content-type': JSON_CT };
  if (r.httpStatus === 202) headers['retry-after'] = String(Math.max(1, Math.ceil(r.retryAfterSeconds ?? 1)));
  return { status: r.httpStatus, headers, body: JSON.stringify(r.body) };
}

type Params = Readonly<Record<string, string | undefined>>;

/** One device runtime route: its method, path and what it answers (shared by the fastify and the direct route). */
interface DeviceRoute {
  method: 'GET' | 'PUT' | 'POST';
  url: string;
  answer(req: IncomingMessage, params: Params, body: unknown): Promise<HttpAnswer>;
}

const param = (p: Params, name: string): string => p[name] ?? '';

function deviceRoutes(deps: DpsDeviceApiDeps): DeviceRoute[] {
  const budget = deps.responseBudgetMs ?? 100;
  return [
    {
      method: 'PUT',
      url: '/:idScope/registrations/:registrationId/register',
      async answer(req, p, body) {
        // register waits up to the budget itself: an assignment that ends in time is then one store write.
        // The source address feeds geoLatency allocation and the custom webhook's context.
        const sourceAddress = req.socket.remoteAddress;
        const pending = await deps.registration.register(param(p, 'idScope'), param(p, 'registrationId'), body, credentialOf(req), { budgetMs: budget, ...(sourceAddress ? { sourceAddress } : {}) });
        return replyAnswer(pending.reply);
      },
    },
    {
      method: 'GET',
      url: '/:idScope/registrations/:registrationId/operations/:operationId',
      async answer(req, p) {
        const pending = await deps.registration.operationStatus(param(p, 'idScope'), param(p, 'registrationId'), param(p, 'operationId'), credentialOf(req));
        return replyAnswer(await withinBudget(pending, budget));
      },
    },
    {
      method: 'POST',
      url: '/:idScope/registrations/:registrationId',
      async answer(req, p, body) {
        const result = await deps.registration.statusLookup(param(p, 'idScope'), param(p, 'registrationId'), body, credentialOf(req));
        return { status: 200, headers: { 'content-type': JSON_CT }, body: JSON.stringify(result) };
      },
    },
  ];
}

/**
 * Registers the device runtime on `app`: as fastify routes, and, on an app made by createHttpsApp, as direct routes
 * of its listener (direct-routes.ts) that answer the same way without fastify's per-request cost. Both call the same
 * handlers and the same error mapping.
 */
export function registerDpsDeviceApi(app: FastifyInstance, deps: DpsDeviceApiDeps): void {
  const bodyLimit = deps.bodyLimit ?? DPS_DEVICE_BODY_LIMIT;
  const config = { errorFlavor: 'dps' as const };
  const onAnswer = deps.onAnswer;
  const direct = directRoutesOf(app);
  const urls = new Set<string>();
  for (const r of deviceRoutes(deps)) {
    urls.add(r.url);
    app.route({
      method: r.method,
      url: r.url,
      bodyLimit,
      config,
      handler: async (req: FastifyRequest, reply: FastifyReply) => sendAnswer(reply, await r.answer(req.raw, req.params as Params, req.body)),
    });
    direct?.add({
      method: r.method,
      url: r.url,
      bodyLimit,
      errorFlavor: 'dps',
      handler: (req, p, body) => r.answer(req, p, body),
      ...(onAnswer ? { observe: (p: Params, status: number) => onAnswer(param(p, 'idScope'), status) } : {}),
    });
  }
  if (onAnswer) {
    // Answers fastify sent on these routes (inject(), and requests the direct routes leave to fastify).
    app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
      const url = req.routeOptions.url;
      if (url === undefined || !urls.has(url)) return;
      const scope = (req.params as { idScope?: unknown } | undefined)?.idScope;
      if (typeof scope === 'string') onAnswer(scope, reply.statusCode);
    });
  }
}

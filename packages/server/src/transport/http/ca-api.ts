import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import type { JsonValue } from '../../core/json.ts';
import { caCertificateToJson, type CaCertificateService } from '../../provisioning/ca-certificates.ts';
import type { InstanceResolver } from '../../provisioning/instances.ts';
import { DPS_SERVICE_BODY_LIMIT } from './dps-service-api.ts';
import { JSON_CT } from './errors.ts';
import { serviceRoute, type ServiceHandler } from './service-auth.ts';

/**
 * Homing's admin API for the CA certificates of a provisioning instance (Azure manages them through ARM as the
 * `certificates` child resource of the DPS instance): docs/api/ca-certificates.md.
 *
 * Authentication is the DPS service API's: the instance is found by the Host header (else the SAS `sr` host), and a
 * policy SAS with the **ServiceConfig** right is required; every failure is the same 401 401000 (service-auth.ts).
 * Authentication runs in onRequest, before the body is read.
 */
export interface CaApiDeps {
  instances: InstanceResolver;
  certificates: CaCertificateService;
  clock: Clock;
  /** Largest accepted body for certificate routes (default 96 KB, the DPS service API's). */
  bodyLimit?: number;
  /** Largest accepted body for the CRL route (default 2 MiB; the CRL itself is limited to 1 MiB of DER). */
  crlBodyLimit?: number;
}

export const CA_CRL_BODY_LIMIT = 2 * 1024 * 1024;

interface NameParams {
  name: string;
}

function sendJson(reply: FastifyReply, body: unknown): FastifyReply {
  return reply.code(200).header('content-type', JSON_CT).send(JSON.stringify(body));
}

export function registerCaApi(app: FastifyInstance, deps: CaApiDeps): void {
  const bodyLimit = deps.bodyLimit ?? DPS_SERVICE_BODY_LIMIT;
  const crlBodyLimit = deps.crlBodyLimit ?? CA_CRL_BODY_LIMIT;
  const certs = deps.certificates;

  function route(method: 'GET' | 'PUT' | 'POST' | 'DELETE', url: string, handler: ServiceHandler, limit = bodyLimit): void {
    serviceRoute(app, deps, { method, url, right: 'ServiceConfig', bodyLimit: limit, handler });
  }

  const body = (req: FastifyRequest): JsonValue | undefined => req.body as JsonValue | undefined;
  const nameOf = (req: FastifyRequest): string => (req.params as NameParams).name;

  route('GET', '/homing/certificates', async (_req, reply, i) => sendJson(reply, { value: (await certs.list(i.name)).map((c) => caCertificateToJson(c)) }));
  route('GET', '/homing/certificates/:name', async (req, reply, i) => sendJson(reply, caCertificateToJson(await certs.get(i.name, nameOf(req)))));
  route('PUT', '/homing/certificates/:name', async (req, reply, i) =>
    sendJson(reply, caCertificateToJson(await certs.upload(i.name, nameOf(req), body(req), req.headers['if-match']))),
  );
  route('DELETE', '/homing/certificates/:name', async (req, reply, i) => {
    await certs.delete(i.name, nameOf(req), req.headers['if-match']);
    return reply.code(204).send();
  });
  route('POST', '/homing/certificates/:name/generateVerificationCode', async (req, reply, i) => {
    const r = await certs.generateVerificationCode(i.name, nameOf(req), req.headers['if-match']);
    return sendJson(reply, caCertificateToJson(r.certificate, { verificationCode: r.verificationCode }));
  });
  route('POST', '/homing/certificates/:name/verify', async (req, reply, i) =>
    sendJson(reply, caCertificateToJson(await certs.verify(i.name, nameOf(req), body(req), req.headers['if-match']))),
  );
  route(
    'PUT',
    '/homing/certificates/:name/crl',
    async (req, reply, i) => sendJson(reply, caCertificateToJson(await certs.putCrl(i.name, nameOf(req), body(req), req.headers['if-match']))),
    crlBodyLimit,
  );
}

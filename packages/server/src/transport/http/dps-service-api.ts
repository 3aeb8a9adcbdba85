import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import type { JsonValue } from '../../core/json.ts';
import type { DpsRight } from '../../core/policies.ts';
import {
  attestationToJson,
  enrollmentGroupToJson,
  individualEnrollmentToJson,
  pageParams,
  registrationToJson,
  type BulkResult,
  type EnrollmentService,
  type QueryPage,
  type RegistrationRecordService,
} from '../../provisioning/enrollments.ts';
import {
  instanceToJson,
  linkedHubToJson,
  policiesWithKeysToJson,
  type InstanceResolver,
  type InstanceService,
} from '../../provisioning/instances.ts';
import type { ProvisioningInstance } from '../../provisioning/model.ts';
import { JSON_CT } from './errors.ts';
import { serviceRoute } from './service-auth.ts';

export { hostOf } from './service-auth.ts';

/**
 * The DPS service API (what `azure-iot-provisioning-service` calls; protocol-service.md §3.1 and §5) and Homing's
 * admin API for the instance and its linked hubs (`/homing/...`; DPS manages those through ARM, which we do not
 * have). docs/api/dps-service.md documents both.
 *
 * - Authentication (service-auth.ts): the instance is found by the host name the caller dialled: the Host header,
 *   else the host of the SAS `sr`. Every failure to authenticate (unknown host, malformed/expired token, wrong key,
 *   sr for another host, a policy without the right) is the same 401 401000, with no hint of which part failed.
 * - Authentication runs before the body is read, so an unauthenticated caller gets 401, never 400 or 413.
 * - Routes are case-insensitive and ignore a trailing slash (createHttpsApp); any api-version is accepted.
 * - Bodies are limited to 96 KB (413 with the DPS error body).
 */
export const DPS_SERVICE_BODY_LIMIT = 96 * 1024;

export interface DpsServiceApiDeps {
  /** Finds the instance by the host name the request was sent to. */
  instances: InstanceResolver;
  enrollments: EnrollmentService;
  registrations: RegistrationRecordService;
  /** Instance and linked-hub administration (`/homing/...`). */
  admin: InstanceService;
  clock: Clock;
  /** Largest accepted body, bytes (default 96 KB). */
  bodyLimit?: number;
}

type Right = DpsRight;

interface Ctx {
  instance: ProvisioningInstance;
}

interface IdParams {
  id: string;
}

function sendJson(reply: FastifyReply, body: unknown, headers: Record<string, string> = {}): FastifyReply {
  reply.code(200).header('content-type', JSON_CT);
  for (const [k, v] of Object.entries(headers)) reply.header(k, v);
  return reply.send(JSON.stringify(body));
}

function sendPage<T>(reply: FastifyReply, page: QueryPage<T>, itemType: string, toJson: (t: T) => unknown): FastifyReply {
  const headers: Record<string, string> = { 'x-ms-item-type': itemType, 'x-ms-max-item-count': String(page.pageSize) };
  // T12: the header only when more results follow; an empty value would still mean "more".
  if (page.continuationToken !== undefined) headers['x-ms-continuation'] = page.continuationToken;
  return sendJson(reply, page.items.map(toJson), headers);
}

function bulkToJson(r: BulkResult, idField: 'registrationId' | 'enrollmentGroupId'): unknown {
  return { isSuccessful: r.isSuccessful, errors: r.errors.map((e) => ({ [idField]: e.id, errorCode: e.errorCode, errorStatus: e.errorStatus })) };
}

export function registerDpsServiceApi(app: FastifyInstance, deps: DpsServiceApiDeps): void {
  const bodyLimit = deps.bodyLimit ?? DPS_SERVICE_BODY_LIMIT;
  const { enrollments, registrations, admin } = deps;

  type Handler = (req: FastifyRequest, reply: FastifyReply, c: Ctx) => Promise<unknown>;

  function route(method: 'GET' | 'PUT' | 'POST' | 'DELETE' | 'PATCH', urls: readonly string[], right: Right, handler: Handler): void {
    for (const url of urls) serviceRoute(app, deps, { method, url, right, bodyLimit, handler: async (req, reply, instance) => handler(req, reply, { instance }) });
  }

  const body = (req: FastifyRequest): JsonValue | undefined => req.body as JsonValue | undefined;
  const idOf = (req: FastifyRequest): string => (req.params as IdParams).id;
  const paging = (req: FastifyRequest) => pageParams({ pageSize: req.headers['x-ms-max-item-count'], continuation: req.headers['x-ms-continuation'] });
  const noContent = (reply: FastifyReply): FastifyReply => reply.code(204).send();

  // ---- individual enrollments ------------------------------------------------------------------------------
  // The static routes (query, bulk) are registered first; find-my-way prefers static segments anyway.
  route('POST', ['/enrollments/query'], 'EnrollmentRead', async (req, reply, c) =>
    sendPage(reply, await enrollments.queryIndividualEnrollments(c.instance, body(req), paging(req)), 'enrollment', (e) => individualEnrollmentToJson(e)),
  );
  route('POST', ['/enrollments'], 'EnrollmentWrite', async (req, reply, c) =>
    sendJson(reply, bulkToJson(await enrollments.bulkIndividualEnrollments(c.instance, body(req)), 'registrationId')),
  );
  route('PUT', ['/enrollments/:id'], 'EnrollmentWrite', async (req, reply, c) =>
    sendJson(reply, individualEnrollmentToJson(await enrollments.putIndividualEnrollment(c.instance, idOf(req), body(req), req.headers['if-match']))),
  );
  route('GET', ['/enrollments/:id'], 'EnrollmentRead', async (req, reply, c) => {
    const r = await enrollments.getIndividualEnrollment(c.instance, idOf(req));
    return sendJson(reply, individualEnrollmentToJson(r.enrollment, r.registrationState));
  });
  route('DELETE', ['/enrollments/:id'], 'EnrollmentWrite', async (req, reply, c) => {
    await enrollments.deleteIndividualEnrollment(c.instance, idOf(req), req.headers['if-match']);
    return noContent(reply);
  });
  route('POST', ['/enrollments/:id/attestationmechanism'], 'EnrollmentRead', async (req, reply, c) =>
    sendJson(reply, attestationToJson(await enrollments.getIndividualAttestation(c.instance, idOf(req)))),
  );

  // ---- enrollment groups (routes are case-insensitive: /enrollmentgroups too) -----------------------------
  route('POST', ['/enrollmentGroups/query'], 'EnrollmentRead', async (req, reply, c) =>
    sendPage(reply, await enrollments.queryEnrollmentGroups(c.instance, body(req), paging(req)), 'enrollmentGroup', enrollmentGroupToJson),
  );
  route('POST', ['/enrollmentGroups'], 'EnrollmentWrite', async (req, reply, c) =>
    sendJson(reply, bulkToJson(await enrollments.bulkEnrollmentGroups(c.instance, body(req)), 'enrollmentGroupId')),
  );
  route('PUT', ['/enrollmentGroups/:id'], 'EnrollmentWrite', async (req, reply, c) =>
    sendJson(reply, enrollmentGroupToJson(await enrollments.putEnrollmentGroup(c.instance, idOf(req), body(req), req.headers['if-match']))),
  );
  route('GET', ['/enrollmentGroups/:id'], 'EnrollmentRead', async (req, reply, c) =>
    sendJson(reply, enrollmentGroupToJson(await enrollments.getEnrollmentGroup(c.instance, idOf(req)))),
  );
  route('DELETE', ['/enrollmentGroups/:id'], 'EnrollmentWrite', async (req, reply, c) => {
    await enrollments.deleteEnrollmentGroup(c.instance, idOf(req), req.headers['if-match']);
    return noContent(reply);
  });
  route('POST', ['/enrollmentGroups/:id/attestationmechanism'], 'EnrollmentRead', async (req, reply, c) =>
    sendJson(reply, attestationToJson(await enrollments.getGroupAttestation(c.instance, idOf(req)))),
  );

  // ---- registration records --------------------------------------------------------------------------------
  route('GET', ['/registrations/:id'], 'RegistrationStatusRead', async (req, reply, c) =>
    sendJson(reply, registrationToJson(await registrations.get(c.instance, idOf(req)))),
  );
  route('DELETE', ['/registrations/:id'], 'RegistrationStatusWrite', async (req, reply, c) => {
    await registrations.delete(c.instance, idOf(req), req.headers['if-match']);
    return noContent(reply);
  });
  route('POST', ['/registrations/:id/query'], 'RegistrationStatusRead', async (req, reply, c) =>
    sendPage(reply, await registrations.queryGroup(c.instance, idOf(req), body(req), paging(req)), 'deviceRegistration', registrationToJson),
  );

  // ---- Homing admin API: the instance and its linked hubs (ServiceConfig) ---------------------------------
  route('GET', ['/homing/instance'], 'ServiceConfig', async (_req, reply, c) => sendJson(reply, instanceToJson(await admin.getInstance(c.instance.name))));
  route('PUT', ['/homing/instance'], 'ServiceConfig', async (req, reply, c) =>
    sendJson(reply, instanceToJson(await admin.updateInstance(c.instance.name, body(req), req.headers['if-match']))),
  );
  route('POST', ['/homing/instance/listKeys'], 'ServiceConfig', async (_req, reply, c) =>
    sendJson(reply, policiesWithKeysToJson(await admin.getInstance(c.instance.name))),
  );
  route('GET', ['/homing/linkedHubs'], 'ServiceConfig', async (_req, reply, c) =>
    sendJson(reply, (await admin.listLinkedHubs(c.instance.name)).map(linkedHubToJson)),
  );
  route('GET', ['/homing/linkedHubs/:id'], 'ServiceConfig', async (req, reply, c) =>
    sendJson(reply, linkedHubToJson(await admin.getLinkedHub(c.instance.name, idOf(req)))),
  );
  route('PUT', ['/homing/linkedHubs/:id'], 'ServiceConfig', async (req, reply, c) =>
    sendJson(reply, linkedHubToJson(await admin.linkHub(c.instance.name, idOf(req), body(req)))),
  );
  route('PATCH', ['/homing/linkedHubs/:id'], 'ServiceConfig', async (req, reply, c) =>
    sendJson(reply, linkedHubToJson(await admin.updateLinkedHub(c.instance.name, idOf(req), body(req)))),
  );
  route('DELETE', ['/homing/linkedHubs/:id'], 'ServiceConfig', async (req, reply, c) => {
    await admin.unlinkHub(c.instance.name, idOf(req));
    return noContent(reply);
  });
}

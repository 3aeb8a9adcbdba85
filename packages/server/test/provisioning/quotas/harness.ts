import assert from 'node:assert/strict';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildSas } from '../../../src/core/sas.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { EnrollmentService, RegistrationRecordService } from '../../../src/provisioning/enrollments.ts';
import type { InProcessHubClientFactory } from '../../../src/provisioning/hub-client-inprocess.ts';
import type { HubClientFactory } from '../../../src/provisioning/hub-client.ts';
import { InstanceService, StoreInstanceResolver } from '../../../src/provisioning/instances.ts';
import type { EnrollmentGroup, InstanceQuotaSettings, ProvisioningInstance } from '../../../src/provisioning/model.ts';
import { GuardedDeviceRuntime, OverloadGuard, type LagSource, type OverloadSettings } from '../../../src/provisioning/quotas/overload.ts';
import { QuotaService } from '../../../src/provisioning/quotas/quota-service.ts';
import { RegistrationService } from '../../../src/provisioning/registration.ts';
import type { QuotaBucketStore } from '../../../src/store/quota-ports.ts';
import { createHttpsApp } from '../../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../../src/transport/http/dps-device-api.ts';
import { registerDpsServiceApi } from '../../../src/transport/http/dps-service-api.ts';
import { registerQuotaApi } from '../../../src/transport/http/quota-api.ts';
import { ManualClock, realIds } from '../../helpers/ids.ts';
import { createRuntimeFixture, type RuntimeFixture } from '../runtime/fixture.ts';
import { wrapHubClients } from '../../helpers/wrapped-hub-clients.ts';

/**
 * A provisioning instance (in-memory SQLite, in-process hubs) served the way server.ts serves it: the DPS service
 * API, the quota admin API and the device API behind the overload guard, on one fastify app driven by inject(). The
 * clock is manual and the event-loop lag is whatever the test says: nothing here depends on timing.
 */
export const HOST = 'dps.quota.test';
export const API = 'api-version=2021-06-01';
const JSON_CT = 'application/json; charset=utf-8';

export interface QuotaHarness {
  f: RuntimeFixture;
  clock: ManualClock;
  app: FastifyInstance;
  quotas: QuotaService;
  guard: OverloadGuard;
  service: RegistrationService;
  admin: InstanceService;
  instance(): Promise<ProvisioningInstance>;
  /** Sets the instance's stored quota settings (as the admin API does). */
  setQuotas(q: InstanceQuotaSettings): Promise<void>;
  group(id?: string): Promise<EnrollmentGroup>;
  register(id: string, key: string | null): Promise<LightMyRequestResponse>;
  poll(id: string, operationId: string, key: string): Promise<LightMyRequestResponse>;
  lookup(id: string, key: string): Promise<LightMyRequestResponse>;
  /** An admin / service API call signed with `policy` (default the owner). */
  call(method: InjectOptions['method'], url: string, o?: { body?: unknown; policy?: string; headers?: Record<string, string> }): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

export interface QuotaHarnessOptions {
  clock?: ManualClock;
  lag?: LagSource;
  overload?: OverloadSettings;
  /** Service defaults (what `limits` / the config would give). */
  defaults?: InstanceQuotaSettings;
  buckets?: QuotaBucketStore;
  /** Device API response budget (default 0: register answers 202 assigning, the device polls). */
  responseBudgetMs?: number;
  /** Wraps the in-process hub clients (e.g. to hold hub writes). */
  hubClients?: (inProcess: InProcessHubClientFactory) => HubClientFactory;
}

export async function createQuotaHarness(o: QuotaHarnessOptions = {}): Promise<QuotaHarness> {
  const clock = o.clock ?? new ManualClock();
  let hubClients: HubClientFactory | undefined;
  const f = await createRuntimeFixture({
    clock,
    hubClients: (ip) => {
      hubClients = o.hubClients ? o.hubClients(ip) : ip;
      return hubClients;
    },
  });
  if (hubClients === undefined) throw new Error('no hub clients');
  const store = f.store.provisioning;
  const resolver = new StoreInstanceResolver({ store, clock, ttlMs: 0 });
  const admin = new InstanceService({ store, ids: realIds, onChange: () => resolver.invalidate() });
  const created = await store.getInstance(f.instanceName);
  if (created === undefined) throw new Error('no instance');
  const withPolicies: ProvisioningInstance = { ...created, policies: admin.defaultPolicies(), serviceHostNames: [HOST], etag: realIds.uuid() };
  assert.equal(await store.replaceInstance(withPolicies, created.etag), 'ok');

  const quotas = new QuotaService({ clock, ...(o.buckets ? { buckets: o.buckets } : {}), ...(o.defaults ? { defaults: o.defaults } : {}) });
  const service = new RegistrationService({ store, hubs: hubClients, clock, ids: realIds, logger: silentLogger(), readCacheMs: 0, quotas });
  const guard = new OverloadGuard({ clock, lag: o.lag ?? (() => 0), ...o.overload });
  const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps' });
  registerDpsServiceApi(app, {
    instances: resolver,
    enrollments: new EnrollmentService({ store, clock, ids: realIds }),
    registrations: new RegistrationRecordService({ store }),
    admin,
    clock,
  });
  registerQuotaApi(app, { instances: resolver, admin, quotas, clock });
  registerDpsDeviceApi(app, { registration: new GuardedDeviceRuntime(service, guard), responseBudgetMs: o.responseBudgetMs ?? 0 });
  await app.ready();

  const instance = async (): Promise<ProvisioningInstance> => {
    const i = await store.getInstance(f.instanceName);
    if (i === undefined) throw new Error('no instance');
    return i;
  };
  const deviceHeaders = (id: string, key: string | null): Record<string, string> => ({
    'content-type': JSON_CT,
    ...(key === null ? {} : { authorization: f.deviceSas(id, key) }),
  });
  let groups = 0;
  return {
    f,
    clock,
    app,
    quotas,
    guard,
    service,
    admin,
    instance,
    async setQuotas(q) {
      await admin.setQuotas(f.instanceName, { ...q });
    },
    group: (id) => f.addGroup(id ?? `G${++groups}`),
    register: (id, key) =>
      app.inject({ method: 'PUT', url: `/${f.idScope}/registrations/${id}/register?${API}`, headers: deviceHeaders(id, key), payload: JSON.stringify({ registrationId: id }) }),
    poll: (id, operationId, key) =>
      app.inject({ method: 'GET', url: `/${f.idScope}/registrations/${id}/operations/${operationId}?${API}`, headers: deviceHeaders(id, key) }),
    lookup: (id, key) =>
      app.inject({ method: 'POST', url: `/${f.idScope}/registrations/${id}?${API}`, headers: deviceHeaders(id, key), payload: JSON.stringify({ registrationId: id }) }),
    async call(method, url, c = {}) {
      const inst = await instance();
      const keyName = c.policy ?? 'provisioningserviceowner';
      const p = inst.policies.find((x) => x.keyName === keyName);
      if (!p) throw new Error(`no policy ${keyName}`);
      const sas = buildSas({ sr: HOST, keyBase64: p.primaryKey, keyName, expirySeconds: Math.floor(clock.now() / 1000) + 3600 });
      const headers: Record<string, string> = { host: HOST, authorization: sas, ...c.headers };
      if (c.body !== undefined) headers['content-type'] = JSON_CT;
      return app.inject({ method, url, headers, ...(c.body === undefined ? {} : { payload: JSON.stringify(c.body) }) });
    },
    async close() {
      await app.close();
      await service.drain();
      await f.close();
    },
  };
}

/** Asserts a DPS error answer (status, six-digit code in body and header); returns the body. */
export function assertDpsError(r: LightMyRequestResponse, status: number, code: number): Record<string, unknown> {
  assert.equal(r.statusCode, status, r.body);
  assert.equal(r.headers['content-type'], JSON_CT);
  const b = r.json<Record<string, unknown>>();
  assert.equal(b.errorCode, code, r.body);
  assert.equal(r.headers['x-ms-error-code'], String(code));
  assert.equal(typeof b.trackingId, 'string');
  assert.equal(typeof b.message, 'string');
  assert.equal(typeof b.timestampUtc, 'string');
  return b;
}

/** Asserts a 429 429001 with an integer Retry-After ≥ 1 header; returns the Retry-After. */
export function assertThrottled(r: LightMyRequestResponse): number {
  assertDpsError(r, 429, 429001);
  const ra = r.headers['retry-after'];
  assert.equal(typeof ra, 'string', 'Retry-After header');
  assert.match(String(ra), /^[1-9][0-9]*$/);
  return Number(ra);
}

export function body(r: LightMyRequestResponse): Record<string, unknown> {
  assert.equal(r.headers['content-type'], JSON_CT);
  return r.json<Record<string, unknown>>();
}

/** Hub clients whose device writes wait for `gate`: registrations stay in flight (assigning) until it opens. */
export function heldHubClients(gate: Promise<void>): (inner: HubClientFactory) => HubClientFactory {
  return (inner) =>
    wrapHubClients(inner, {
      provisionDevice: async (c, req) => {
        await gate;
        return c.provisionDevice(req);
      },
    });
}

/** A gate: a promise and the function that opens it. */
export { gate } from '../../helpers/wrapped-hub-clients.ts';

import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { systemClock, type Clock } from '../../../src/core/clock.ts';
import type { JsonObject, JsonValue } from '../../../src/core/json.ts';
import type { HubRight, SharedAccessPolicy } from '../../../src/core/policies.ts';
import { buildSas } from '../../../src/core/sas.ts';
import { HubService } from '../../../src/hub/hub-service.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { Metrics } from '../../../src/observability/metrics.ts';
import { openStore } from '../../../src/store/open.ts';
import type { Store } from '../../../src/store/ports.ts';
import { createHttpsApp, type HttpsAppOptions } from '../../../src/transport/http/app.ts';
import { registerHubApi } from '../../../src/transport/http/hub-api.ts';
import { realIds } from '../../helpers/ids.ts';

/** A real HubService on a real in-memory SQLite store, with the hub API on a fastify app. */
export interface HubFixture {
  hostName: string;
  hub: HubService;
  store: Store;
  app: FastifyInstance;
  metrics: Metrics;
  policies: Record<PolicyName, SharedAccessPolicy<HubRight>>;
  /** A valid SAS for a policy, signed for this hub (overridable pieces for negative tests). */
  sas(policy: PolicyName, o?: { sr?: string; expirySeconds?: number; key?: string; keyName?: string }): string;
  /** inject() with an iothubowner token unless `auth` says otherwise (null: no Authorization header). */
  request(o: InjectOptions & { auth?: PolicyName | string | null }): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

export type PolicyName = 'iothubowner' | 'service' | 'registryRead' | 'registryReadWrite' | 'device';

const RIGHTS: Record<PolicyName, HubRight[]> = {
  iothubowner: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'],
  service: ['ServiceConnect'],
  registryRead: ['RegistryRead'],
  registryReadWrite: ['RegistryRead', 'RegistryWrite'],
  device: ['DeviceConnect'],
};

function key(): string {
  return realIds.bytes(32).toString('base64');
}

export async function createHubFixture(o: {
  hostName?: string;
  clock?: Clock;
  maxMethodTimeoutSeconds?: number;
  tls?: HttpsAppOptions['tls'];
  telemetryHeartbeatMs?: number;
} = {}): Promise<HubFixture> {
  const hostName = o.hostName ?? 'hub-test.example.net';
  const clock = o.clock ?? systemClock;
  const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  const policy = (keyName: PolicyName): SharedAccessPolicy<HubRight> => ({ keyName, primaryKey: key(), secondaryKey: key(), rights: RIGHTS[keyName] });
  const policies: Record<PolicyName, SharedAccessPolicy<HubRight>> = {
    iothubowner: policy('iothubowner'),
    service: policy('service'),
    registryRead: policy('registryRead'),
    registryReadWrite: policy('registryReadWrite'),
    device: policy('device'),
  };
  const hub = new HubService({
    hubId: hostName,
    hostNames: [hostName],
    policies: Object.values(policies),
    store: store.hub,
    clock,
    ids: realIds,
    ...(o.maxMethodTimeoutSeconds === undefined ? {} : { maxMethodTimeoutSeconds: o.maxMethodTimeoutSeconds }),
  });
  const logger = silentLogger();
  const metrics = new Metrics();
  const app = createHttpsApp({ logger, metrics, errorFlavor: 'hub', api: 'hub', ...(o.tls ? { tls: o.tls } : {}) });
  registerHubApi(app, hub, { logger, metrics, clock, ...(o.telemetryHeartbeatMs === undefined ? {} : { telemetryHeartbeatMs: o.telemetryHeartbeatMs }) });
  await app.ready();

  const sas: HubFixture['sas'] = (policy, s = {}) =>
    buildSas({
      sr: s.sr ?? hostName,
      keyBase64: s.key ?? policies[policy].primaryKey,
      expirySeconds: s.expirySeconds ?? Math.ceil(clock.now() / 1000) + 3600,
      keyName: s.keyName ?? policy,
    });

  return {
    hostName,
    hub,
    store,
    app,
    metrics,
    policies,
    sas,
    request: ({ auth, ...inj }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(inj.headers ?? {})) if (typeof v === 'string') headers[k] = v;
      if (auth !== null) {
        const a = auth ?? 'iothubowner';
        headers.authorization = a in RIGHTS ? sas(a as PolicyName) : a;
      }
      return app.inject({ ...inj, headers });
    },
    close: async () => {
      await app.close();
      hub.close();
      await store.close();
    },
  };
}

/** Parses a JSON response body. */
export function json(r: LightMyRequestResponse): JsonValue {
  return JSON.parse(r.body) as JsonValue;
}

export function jsonObject(r: LightMyRequestResponse): JsonObject {
  const v = json(r);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`expected a JSON object, got ${r.body}`);
  return v;
}

/** The error code of a classic hub error body (`ErrorCode:<Name>;...`). */
export function hubErrorCode(r: LightMyRequestResponse): string | undefined {
  const body = jsonObject(r);
  const m = /^ErrorCode:([A-Za-z]+);/.exec(String(body.Message));
  return m?.[1];
}

export const JSON_CT = 'application/json; charset=utf-8';

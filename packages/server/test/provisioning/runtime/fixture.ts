import { sql } from 'kysely';
import type { FastifyInstance } from 'fastify';
import type { Clock } from '../../../src/core/clock.ts';
import { isoTime } from '../../../src/core/clock.ts';
import type { HubRight, SharedAccessPolicy } from '../../../src/core/policies.ts';
import { buildSas, deriveDeviceKey } from '../../../src/core/sas.ts';
import { HubService } from '../../../src/hub/hub-service.ts';
import { silentLogger, type Logger } from '../../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../../src/provisioning/hub-client-inprocess.ts';
import type { HubClientFactory } from '../../../src/provisioning/hub-client.ts';
import type {
  AllocationPolicy,
  EnrollmentGroup,
  IndividualEnrollment,
  InitialTwin,
  LinkedHub,
  ProvisioningInstance,
} from '../../../src/provisioning/model.ts';
import { RegistrationService, type RegistrationLimits, type RegistrationServiceDeps } from '../../../src/provisioning/registration.ts';
import { openStore, type OpenedStore } from '../../../src/store/open.ts';
import type { StoreConfig } from '../../../src/store/ports.ts';
import { createHttpsApp, type HttpsAppOptions } from '../../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../../src/transport/http/dps-device-api.ts';
import { realIds, ManualClock } from '../../helpers/ids.ts';

/**
 * A provisioning instance on a real in-memory SQLite store, with in-process hubs (hub-a, hub-b by default) and the
 * DPS device API on a fastify app (inject() or a TLS listener).
 */
export interface RuntimeFixture {
  idScope: string;
  instanceName: string;
  store: OpenedStore;
  hubs: Map<string, HubService>;
  clock: ManualClock | Clock;
  service: RegistrationService;
  app: FastifyInstance;
  /** Writes the instance's linked hubs (replaces the list). */
  setLinkedHubs(hubs: LinkedHub[]): Promise<void>;
  linkedHub(name: string, o?: Partial<LinkedHub>): LinkedHub;
  addIndividual(registrationId: string, o?: EnrollmentOptions & { deviceId?: string }): Promise<IndividualEnrollment>;
  addGroup(groupId: string, o?: EnrollmentOptions): Promise<EnrollmentGroup>;
  /** A device SAS for DPS (sr `{idScope}/registrations/{id}`, skn registration). */
  deviceSas(registrationId: string, keyBase64: string, o?: { expirySeconds?: number; sr?: string; keyName?: string }): string;
  derivedKey(group: EnrollmentGroup, registrationId: string, which?: 'primary' | 'secondary'): string;
  /** Row counts of everything registrations write (operations, records, hub devices, hub twins). */
  counts(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

export interface EnrollmentOptions {
  status?: 'enabled' | 'disabled';
  allocationPolicy?: AllocationPolicy;
  iotHubs?: string[];
  initialTwin?: InitialTwin;
  iotEdge?: boolean;
  attestation?: IndividualEnrollment['attestation'];
  updateHubAssignment?: boolean;
  /** Default true (migrate); false: reset to the initial config. */
  migrateDeviceData?: boolean;
  customAllocationDefinition?: IndividualEnrollment['customAllocationDefinition'];
}

/** A response budget no loaded machine exhausts: a test asserting 200 (final within the budget) uses it. */
export const TEST_RESPONSE_BUDGET_MS = 30_000;

export function newKey(): string {
  return realIds.bytes(32).toString('base64');
}

export function ownerPolicy(): SharedAccessPolicy<HubRight> {
  return { keyName: 'iothubowner', primaryKey: newKey(), secondaryKey: newKey(), rights: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'] };
}

export interface FixtureOptions {
  hubNames?: string[];
  clock?: Clock;
  logger?: Logger;
  /**
   * The DPS device API's response budget. Default 30 s, not the service's 100 ms: tests that expect the final answer
   * (200) must not depend on the machine's speed. Tests of the 202 flow set 0.
   */
  responseBudgetMs?: number;
  tls?: HttpsAppOptions['tls'];
  limits?: RegistrationLimits;
  /** Hub client factory to use instead of the in-process one. */
  hubClients?: (inProcess: InProcessHubClientFactory) => HubClientFactory;
  staleOperationMs?: number;
  defaultPolicy?: Exclude<AllocationPolicy, 'custom'>;
  /** The service's read cache (default 0 here: tests change enrollments and expect the change at once). */
  readCacheMs?: number;
  /** Called on the app before it is ready (hooks, more routes). */
  configureApp?: (app: FastifyInstance) => void;
  /** Allocators replacing the built-in ones (e.g. custom → a webhook client). */
  allocators?: RegistrationServiceDeps['allocators'];
  /** Hub move options (lease, give-up time, a hook after each step). */
  moves?: RegistrationServiceDeps['moves'];
  /** The store (default: SQLite in memory). A PostgreSQL config must name a fresh schema. */
  store?: StoreConfig;
}

export async function createRuntimeFixture(o: FixtureOptions = {}): Promise<RuntimeFixture> {
  const clock = o.clock ?? new ManualClock(Date.now());
  const store = await openStore(o.store ?? { dialect: 'sqlite', sqlitePath: ':memory:' });
  const hubNames = o.hubNames ?? ['hub-a.test', 'hub-b.test'];
  const policies = new Map<string, SharedAccessPolicy<HubRight>>();
  const hubs = new Map<string, HubService>();
  for (const name of hubNames) {
    const p = ownerPolicy();
    policies.set(name, p);
    hubs.set(name, new HubService({ hubId: name, hostNames: [name], policies: [p], store: store.hub, clock, ids: realIds }));
  }
  const linkedHub = (name: string, lo: Partial<LinkedHub> = {}): LinkedHub => {
    const p = policies.get(name);
    return {
      name,
      connectionString: p ? `HostName=${name};SharedAccessKeyName=${p.keyName};SharedAccessKey=${p.primaryKey}` : `HostName=${name};SharedAccessKeyName=iothubowner;SharedAccessKey=${newKey()}`,
      location: 'local',
      allocationWeight: 1,
      applyAllocationPolicy: true,
      ...lo,
    };
  };
  const idScope = `0ne${realIds.bytes(4).toString('hex').toUpperCase()}`;
  const instanceName = `dps-${idScope.toLowerCase()}`;
  const instance: ProvisioningInstance = {
    name: instanceName,
    idScope,
    serviceHostNames: [`${instanceName}.test`],
    allocationPolicy: o.defaultPolicy ?? 'hashed',
    policies: [],
    linkedHubs: hubNames.map((n) => linkedHub(n)),
    etag: 'e1',
  };
  if ((await store.provisioning.createInstance(instance)) !== 'ok') throw new Error('instance not created');

  const inProcess = new InProcessHubClientFactory(hubs.values(), clock);
  const service = new RegistrationService({
    store: store.provisioning,
    hubs: o.hubClients ? o.hubClients(inProcess) : inProcess,
    clock,
    ids: realIds,
    logger: o.logger ?? silentLogger(),
    readCacheMs: o.readCacheMs ?? 0,
    ...(o.limits ? { limits: o.limits } : {}),
    ...(o.staleOperationMs === undefined ? {} : { staleOperationMs: o.staleOperationMs }),
    ...(o.allocators ? { allocators: o.allocators } : {}),
    ...(o.moves ? { moves: o.moves } : {}),
  });
  const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps-device', ...(o.tls ? { tls: o.tls } : {}) });
  registerDpsDeviceApi(app, { registration: service, responseBudgetMs: o.responseBudgetMs ?? TEST_RESPONSE_BUDGET_MS });
  o.configureApp?.(app);
  await app.ready();

  const now = () => isoTime(clock.now());
  const common = (e: EnrollmentOptions) => ({
    attestation: e.attestation ?? { type: 'symmetricKey' as const, symmetricKey: { primaryKey: newKey(), secondaryKey: newKey() } },
    capabilities: { iotEdge: e.iotEdge ?? false },
    ...(e.initialTwin ? { initialTwin: e.initialTwin } : {}),
    provisioningStatus: e.status ?? 'enabled',
    reprovisionPolicy: { updateHubAssignment: e.updateHubAssignment ?? true, migrateDeviceData: e.migrateDeviceData ?? true },
    ...(e.allocationPolicy ? { allocationPolicy: e.allocationPolicy } : {}),
    ...(e.iotHubs ? { iotHubs: e.iotHubs } : {}),
    ...(e.customAllocationDefinition ? { customAllocationDefinition: e.customAllocationDefinition } : {}),
    etag: realIds.uuid(),
    createdDateTimeUtc: now(),
    lastUpdatedDateTimeUtc: now(),
  });

  let current = instance;
  return {
    idScope,
    instanceName,
    store,
    hubs,
    clock,
    service,
    app,
    linkedHub,
    async setLinkedHubs(linked) {
      const next = { ...current, linkedHubs: linked, etag: realIds.uuid() };
      if ((await store.provisioning.replaceInstance(next, current.etag)) !== 'ok') throw new Error('instance not replaced');
      current = next;
    },
    async addIndividual(registrationId, e = {}) {
      const enr: IndividualEnrollment = { registrationId, ...common(e), ...(e.deviceId ? { deviceId: e.deviceId } : {}) };
      if ((await store.provisioning.createIndividualEnrollment(instanceName, enr)) !== 'ok') throw new Error('enrollment not created');
      return enr;
    },
    async addGroup(enrollmentGroupId, e = {}) {
      const g: EnrollmentGroup = { enrollmentGroupId, ...common(e) };
      if ((await store.provisioning.createEnrollmentGroup(instanceName, g)) !== 'ok') throw new Error('group not created');
      return g;
    },
    deviceSas(registrationId, keyBase64, s = {}) {
      return buildSas({
        sr: s.sr ?? `${idScope}/registrations/${registrationId}`,
        keyBase64,
        keyName: s.keyName ?? 'registration',
        expirySeconds: s.expirySeconds ?? Math.ceil(clock.now() / 1000) + 3600,
      });
    },
    derivedKey(group, registrationId, which = 'primary') {
      const sk = group.attestation.symmetricKey;
      if (!sk) throw new Error('not a symmetric-key group');
      return deriveDeviceKey(which === 'primary' ? sk.primaryKey : sk.secondaryKey, registrationId);
    },
    async counts() {
      const out: Record<string, number> = {};
      for (const t of ['dps_operations', 'dps_registrations', 'hub_devices', 'hub_twins']) {
        const r = await sql<{ n: number }>`select count(*) as n from ${sql.table(t)}`.execute(store.db);
        out[t] = Number(r.rows[0]?.n ?? 0);
      }
      return out;
    },
    async close() {
      await app.close();
      await service.stop();
      for (const h of hubs.values()) h.close();
      await store.close();
    },
  };
}

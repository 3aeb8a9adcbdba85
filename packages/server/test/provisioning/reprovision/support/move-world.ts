import { systemClock, isoTime } from '../../../../src/core/clock.ts';
import type { HubRight, SharedAccessPolicy } from '../../../../src/core/policies.ts';
import { buildSas, deriveDeviceKey } from '../../../../src/core/sas.ts';
import { HubService } from '../../../../src/hub/hub-service.ts';
import { silentLogger, type Logger } from '../../../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../../../src/provisioning/hub-client-inprocess.ts';
import type { EnrollmentGroup, HubMove, ProvisioningInstance } from '../../../../src/provisioning/model.ts';
import { RegistrationService } from '../../../../src/provisioning/registration.ts';
import { openStore, type OpenedStore } from '../../../../src/store/open.ts';
import type { StoreConfig } from '../../../../src/store/ports.ts';
import { realIds } from '../../../helpers/ids.ts';

/**
 * A provisioning instance with three in-process hubs on a real store, shared by the crash tests (which run it in
 * child processes that get SIGKILLed) and bench/migrate.ts. Devices of one symmetric-key group (migrate policy) are
 * provisioned hashed over hub A and hub B, each with a reported twin; then the group is changed to hub C, and
 * `moveAll` re-registers the devices so that each one migrates. `check` verifies the invariant: every device is on
 * exactly one hub, the one its record names, with its reported properties intact.
 */
export interface WorldSpec {
  store: StoreConfig;
  idScope: string;
  instanceName: string;
  hubs: { name: string; policy: SharedAccessPolicy<HubRight> }[];
  groupId: string;
  groupKey: string;
  count: number;
  idPrefix: string;
  /** Approximate size of each device's reported properties, bytes. */
  reportedBytes: number;
}

export interface World {
  spec: WorldSpec;
  store: OpenedStore;
  hubs: Map<string, HubService>;
  service: RegistrationService;
  close(): Promise<void>;
}

export function newWorldSpec(store: StoreConfig, o: { count: number; reportedBytes?: number; idPrefix?: string }): WorldSpec {
  const idScope = `0ne${realIds.bytes(4).toString('hex').toUpperCase()}`;
  const policy = (): SharedAccessPolicy<HubRight> => ({
    keyName: 'iothubowner',
    primaryKey: realIds.bytes(32).toString('base64'),
    secondaryKey: realIds.bytes(32).toString('base64'),
    rights: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'],
  });
  return {
    store,
    idScope,
    instanceName: `dps-${idScope.toLowerCase()}`,
    hubs: ['hub-a.move.test', 'hub-b.move.test', 'hub-c.move.test'].map((name) => ({ name, policy: policy() })),
    groupId: 'fleet',
    groupKey: realIds.bytes(32).toString('base64'),
    count: o.count,
    idPrefix: o.idPrefix ?? 'mv-',
    reportedBytes: o.reportedBytes ?? 256,
  };
}

export function deviceIds(spec: WorldSpec): string[] {
  return Array.from({ length: spec.count }, (_, i) => `${spec.idPrefix}${String(i).padStart(6, '0')}`);
}

/** The reported properties device `id` writes: deterministic, about `reportedBytes` long. */
export function reportedOf(spec: WorldSpec, id: string): Record<string, string | number> {
  const fill = 'x'.repeat(Math.max(0, spec.reportedBytes - 64));
  return { serial: id, firmware: '1.2.3', fill, n: id.length };
}

export async function openWorld(spec: WorldSpec, o: { nodeId: string; afterStep?: (m: HubMove) => void | Promise<void>; logger?: Logger; leaseMs?: number }): Promise<World> {
  const store = await openStore(spec.store);
  const hubs = new Map<string, HubService>();
  for (const h of spec.hubs) {
    hubs.set(h.name, new HubService({ hubId: h.name, hostNames: [h.name], policies: [h.policy], store: store.hub, clock: systemClock, ids: realIds }));
  }
  const service = new RegistrationService({
    store: store.provisioning,
    hubs: new InProcessHubClientFactory(hubs.values(), systemClock),
    clock: systemClock,
    ids: realIds,
    logger: o.logger ?? silentLogger(),
    readCacheMs: 1000,
    moves: { nodeId: o.nodeId, ...(o.afterStep ? { afterStep: o.afterStep } : {}), ...(o.leaseMs === undefined ? {} : { leaseMs: o.leaseMs }) },
  });
  return {
    spec,
    store,
    hubs,
    service,
    async close() {
      await service.stop();
      for (const h of hubs.values()) h.close();
      await store.close();
    },
  };
}

function credential(spec: WorldSpec, id: string) {
  const sas = buildSas({ sr: `${spec.idScope}/registrations/${id}`, keyBase64: deriveDeviceKey(spec.groupKey, id), keyName: 'registration', expirySeconds: Math.floor(Date.now() / 1000) + 3600 });
  return { kind: 'sas' as const, authorization: sas };
}

/** Runs `fn` over `items` with at most `concurrency` at once. */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
}

/** Creates the instance and the group (hubs A and B), provisions every device and writes its reported twin. */
export async function setupWorld(w: World, concurrency = 16): Promise<void> {
  const { spec } = w;
  const now = isoTime(Date.now());
  const instance: ProvisioningInstance = {
    name: spec.instanceName,
    idScope: spec.idScope,
    serviceHostNames: [`${spec.instanceName}.test`],
    allocationPolicy: 'hashed',
    policies: [],
    linkedHubs: spec.hubs.map((h) => ({
      name: h.name,
      connectionString: `HostName=${h.name};SharedAccessKeyName=${h.policy.keyName};SharedAccessKey=${h.policy.primaryKey}`,
      location: 'local',
      allocationWeight: 1,
      applyAllocationPolicy: true,
    })),
    etag: realIds.uuid(),
  };
  if ((await w.store.provisioning.createInstance(instance)) !== 'ok') throw new Error('instance not created');
  const group: EnrollmentGroup = {
    enrollmentGroupId: spec.groupId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: spec.groupKey, secondaryKey: realIds.bytes(32).toString('base64') } },
    capabilities: { iotEdge: false },
    provisioningStatus: 'enabled',
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    allocationPolicy: 'hashed',
    iotHubs: [spec.hubs[0]!.name, spec.hubs[1]!.name],
    etag: realIds.uuid(),
    createdDateTimeUtc: now,
    lastUpdatedDateTimeUtc: now,
  };
  if ((await w.store.provisioning.createEnrollmentGroup(spec.instanceName, group)) !== 'ok') throw new Error('group not created');
  await pool(deviceIds(spec), concurrency, async (id) => {
    const p = await w.service.register(spec.idScope, id, { registrationId: id }, credential(spec, id), { budgetMs: 60_000 });
    const r = p.reply.httpStatus === 200 ? p.reply : await p.completion;
    const hub = r?.body.registrationState?.assignedHub;
    if (r?.body.status !== 'assigned' || hub === undefined) throw new Error(`device ${id} was not assigned: ${JSON.stringify(r?.body)}`);
    await w.hubs.get(hub)!.patchReported(id, reportedOf(spec, id));
  });
}

/** Points the group at hub C only. */
export async function moveGroupToHubC(w: World): Promise<void> {
  const g = await w.store.provisioning.getEnrollmentGroup(w.spec.instanceName, w.spec.groupId);
  if (!g) throw new Error('group missing');
  const next = { ...g, iotHubs: [w.spec.hubs[2]!.name], etag: realIds.uuid(), lastUpdatedDateTimeUtc: isoTime(Date.now()) };
  if ((await w.store.provisioning.replaceEnrollmentGroup(w.spec.instanceName, next, g.etag)) !== 'ok') throw new Error('group not replaced');
  w.service.invalidateEnrollments();
}

/** The hubs the group names now. */
export async function groupHubs(w: World): Promise<string[]> {
  const g = await w.store.provisioning.getEnrollmentGroup(w.spec.instanceName, w.spec.groupId);
  return g?.iotHubs ?? [];
}

/** Points the group at the other side: hub C when it names hubs A and B, else back to A and B (soak rounds). */
export async function flipGroup(w: World): Promise<string[]> {
  const g = await w.store.provisioning.getEnrollmentGroup(w.spec.instanceName, w.spec.groupId);
  if (!g) throw new Error('group missing');
  const [a, b, c] = w.spec.hubs.map((h) => h.name);
  const iotHubs = g.iotHubs?.length === 1 && g.iotHubs[0] === c ? [a!, b!] : [c!];
  const next = { ...g, iotHubs, etag: realIds.uuid(), lastUpdatedDateTimeUtc: isoTime(Date.now()) };
  if ((await w.store.provisioning.replaceEnrollmentGroup(w.spec.instanceName, next, g.etag)) !== 'ok') throw new Error('group not replaced');
  w.service.invalidateEnrollments();
  return iotHubs;
}

/**
 * Re-registers every device whose record is not on one of the group's hubs yet; each such registration migrates the
 * device. Returns how many registrations ended assigned on one of those hubs and how many ended otherwise.
 */
export async function moveAll(w: World, concurrency = 16, ids: readonly string[] = deviceIds(w.spec)): Promise<{ moved: number; other: number; samples: string[] }> {
  const samples: string[] = [];
  const { spec } = w;
  const targets = new Set(await groupHubs(w));
  let moved = 0;
  let other = 0;
  await pool(ids, concurrency, async (id) => {
    const rec = await w.store.provisioning.getRegistration(spec.instanceName, id);
    if (rec?.status === 'assigned' && rec.assignedHub !== undefined && targets.has(rec.assignedHub)) return;
    const p = await w.service.register(spec.idScope, id, { registrationId: id }, credential(spec, id), { budgetMs: 60_000 });
    const r = p.reply.httpStatus === 200 ? p.reply : await p.completion;
    const hub = r?.body.registrationState?.assignedHub;
    if (r?.body.status === 'assigned' && hub !== undefined && targets.has(hub)) moved++;
    else {
      other++;
      if (samples.length < 5) samples.push(`${id}: ${JSON.stringify(r?.body ?? p.reply.body)}`);
    }
  });
  return { moved, other, samples };
}

export interface InvariantReport {
  devices: number;
  perHub: Record<string, number>;
  /** On no hub. */
  lost: string[];
  /** On more than one hub. */
  duplicated: string[];
  /** The record names another hub than the one holding the device, or is not `assigned`. */
  misrecorded: string[];
  /** Reported properties differ from what the device wrote. */
  corrupted: string[];
  pendingMoves: number;
}

/** Checks every device: on exactly one hub, the record agrees, the reported twin is intact. */
export async function check(w: World): Promise<InvariantReport> {
  const { spec } = w;
  const out: InvariantReport = { devices: spec.count, perHub: {}, lost: [], duplicated: [], misrecorded: [], corrupted: [], pendingMoves: await w.store.provisioning.countHubMoves(spec.instanceName) };
  for (const h of spec.hubs) out.perHub[h.name] = 0;
  for (const id of deviceIds(spec)) {
    const holders: string[] = [];
    for (const [name, hub] of w.hubs) if (await hub.findDevice(id)) holders.push(name);
    if (holders.length === 0) out.lost.push(id);
    if (holders.length > 1) out.duplicated.push(id);
    const holder = holders[0];
    if (holder === undefined) continue;
    out.perHub[holder] = (out.perHub[holder] ?? 0) + 1;
    const rec = await w.store.provisioning.getRegistration(spec.instanceName, id);
    if (rec?.status !== 'assigned' || rec.assignedHub !== holder) out.misrecorded.push(id);
    const twin = (await w.hubs.get(holder)!.getTwinState(id)).twin;
    if (JSON.stringify(twin.reported.props) !== JSON.stringify(reportedOf(spec, id))) out.corrupted.push(id);
  }
  return out;
}

/**
 * The registration world the register benches share: on an opened store, 2 in-process hubs, an instance hashed over
 * them and one symmetric-key enrollment group, with the real RegistrationService on top.
 */
import { randomBytes } from 'node:crypto';
import { isoTime, systemClock, systemIds, type IdSource } from '../../packages/server/src/core/clock.ts';
import type { LinkedHub } from '../../packages/server/src/provisioning/model.ts';
import type { HubRight, SharedAccessPolicy } from '../../packages/server/src/core/policies.ts';
import { HubService } from '../../packages/server/src/hub/hub-service.ts';
import { silentLogger } from '../../packages/server/src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../packages/server/src/provisioning/hub-client-inprocess.ts';
import { RegistrationService } from '../../packages/server/src/provisioning/registration.ts';
import type { OpenedStore } from '../../packages/server/src/store/open.ts';

export interface RegisterWorld {
  service: RegistrationService;
  hubs: HubService[];
  idScope: string;
  groupKey: string;
  instance: string;
  /** Drains the service and closes the hubs (not the store). */
  close(): Promise<void>;
}

const key = () => randomBytes(32).toString('base64');

/** The 2 in-process bench hubs on `store`, and their linked-hub entries (weight 1 each). */
export function createBenchHubs(store: OpenedStore, ids: IdSource): { hubs: HubService[]; linked: LinkedHub[] } {
  const hubs: HubService[] = [];
  const linked: LinkedHub[] = [];
  for (const name of ['hub-1.bench', 'hub-2.bench']) {
    const owner: SharedAccessPolicy<HubRight> = { keyName: 'iothubowner', primaryKey: key(), secondaryKey: key(), rights: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'] };
    hubs.push(new HubService({ hubId: name, hostNames: [name], policies: [owner], store: store.hub, clock: systemClock, ids }));
    linked.push({ name, connectionString: `HostName=${name};SharedAccessKeyName=iothubowner;SharedAccessKey=${owner.primaryKey}`, location: 'local', allocationWeight: 1, applyAllocationPolicy: true });
  }
  return { hubs, linked };
}

export async function createRegisterWorld(store: OpenedStore): Promise<RegisterWorld> {
  const ids = systemIds();
  const { hubs, linked } = createBenchHubs(store, ids);
  const idScope = `0ne${randomBytes(4).toString('hex').toUpperCase()}`;
  const instance = 'bench';
  const now = isoTime(Date.now());
  await store.provisioning.createInstance({ name: instance, idScope, serviceHostNames: ['bench.local'], allocationPolicy: 'hashed', policies: [], linkedHubs: linked, etag: 'e' });
  const groupKey = key();
  await store.provisioning.createEnrollmentGroup(instance, {
    enrollmentGroupId: 'bench-group',
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: key() } },
    capabilities: { iotEdge: false },
    initialTwin: { tags: { fleet: 'bench' }, properties: { desired: { interval: 60 } } },
    provisioningStatus: 'enabled',
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    etag: 'g',
    createdDateTimeUtc: now,
    lastUpdatedDateTimeUtc: now,
  });
  const service = new RegistrationService({ store: store.provisioning, hubs: new InProcessHubClientFactory(hubs, systemClock), clock: systemClock, ids, logger: silentLogger() });
  return {
    service,
    hubs,
    idScope,
    groupKey,
    instance,
    async close() {
      await service.drain();
      for (const h of hubs) h.close();
    },
  };
}

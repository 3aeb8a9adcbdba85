import { X509Certificate } from 'node:crypto';
import { isoTime, type Clock } from '../../../src/core/clock.ts';
import type { HubRight, SharedAccessPolicy } from '../../../src/core/policies.ts';
import { HubService } from '../../../src/hub/hub-service.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { CaCertificateService } from '../../../src/provisioning/ca-certificates.ts';
import { InProcessHubClientFactory } from '../../../src/provisioning/hub-client-inprocess.ts';
import type { EnrollmentGroup, IndividualEnrollment, ProvisioningInstance, X509Attestation } from '../../../src/provisioning/model.ts';
import { RegistrationService, type RegistrationReply } from '../../../src/provisioning/registration.ts';
import { openStore, type OpenedStore } from '../../../src/store/open.ts';
import { issueCertificate, type IssuedCert } from '../../../src/transport/tls/pki.ts';
import { ManualClock, realIds } from '../../helpers/ids.ts';

/**
 * X.509 registration on a real in-memory SQLite store with one in-process hub (`hub-x.test`); CA certificates go
 * through CaCertificateService (whose onChange drops the registration's trust cache, as server.ts wires it).
 */
export const HUB = 'hub-x.test';

export interface X509Fixture {
  idScope: string;
  instanceName: string;
  store: OpenedStore;
  hub: HubService;
  clock: ManualClock | Clock;
  service: RegistrationService;
  cas: CaCertificateService;
  addIndividual(registrationId: string, attestation: IndividualEnrollment['attestation'], status?: 'enabled' | 'disabled'): Promise<IndividualEnrollment>;
  addGroup(groupId: string, x509: X509Attestation, status?: 'enabled' | 'disabled'): Promise<EnrollmentGroup>;
  /** register with the chain (leaf first); the final reply (30 s budget) or the thrown error. */
  register(registrationId: string, chain: readonly IssuedCert[]): Promise<RegistrationReply>;
  close(): Promise<void>;
}

export function der(c: IssuedCert): Buffer {
  return new X509Certificate(c.certPem).raw;
}

export function x509Individual(primary: IssuedCert, secondary?: IssuedCert): IndividualEnrollment['attestation'] {
  return {
    type: 'x509',
    x509: { clientCertificates: { primary: { certificate: primary.certPem }, ...(secondary ? { secondary: { certificate: secondary.certPem } } : {}) } },
  };
}

/** root → i1 → i2 (CAs, generous path lengths) and leaves issued from any of them. */
export interface Chain {
  root: IssuedCert;
  i1: IssuedCert;
  i2: IssuedCert;
}

export async function makeChain(name: string): Promise<Chain> {
  const root = await issueCertificate({ commonName: `${name} Root`, isCA: true, pathLength: 12 });
  const i1 = await issueCertificate({ commonName: `${name} I1`, isCA: true, pathLength: 11, issuer: root });
  const i2 = await issueCertificate({ commonName: `${name} I2`, isCA: true, pathLength: 10, issuer: i1 });
  return { root, i1, i2 };
}

export function leaf(issuer: IssuedCert, cn: string, o: { notBefore?: Date; notAfter?: Date } = {}): Promise<IssuedCert> {
  return issueCertificate({ commonName: cn, issuer, usages: ['client'], ...o });
}

export async function createX509Fixture(o: { hubName?: string; clock?: ManualClock | Clock } = {}): Promise<X509Fixture> {
  const HUB_NAME = o.hubName ?? HUB;
  const clock = o.clock ?? new ManualClock(Date.now());
  const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  const policy: SharedAccessPolicy<HubRight> = {
    keyName: 'iothubowner',
    primaryKey: realIds.bytes(32).toString('base64'),
    secondaryKey: realIds.bytes(32).toString('base64'),
    rights: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'],
  };
  const hub = new HubService({ hubId: HUB_NAME, hostNames: [HUB_NAME], policies: [policy], store: store.hub, clock, ids: realIds });
  const idScope = `0ne${realIds.bytes(4).toString('hex').toUpperCase()}`;
  const instanceName = `dps-${idScope.toLowerCase()}`;
  const instance: ProvisioningInstance = {
    name: instanceName,
    idScope,
    serviceHostNames: [`${instanceName}.test`],
    allocationPolicy: 'hashed',
    policies: [],
    linkedHubs: [{ name: HUB_NAME, connectionString: `HostName=${HUB_NAME};SharedAccessKeyName=iothubowner;SharedAccessKey=${policy.primaryKey}`, location: 'local', allocationWeight: 1, applyAllocationPolicy: true }],
    etag: 'e1',
  };
  if ((await store.provisioning.createInstance(instance)) !== 'ok') throw new Error('instance not created');
  const service = new RegistrationService({
    store: store.provisioning,
    caCertificates: store.caCertificates,
    hubs: new InProcessHubClientFactory([hub], clock),
    clock,
    ids: realIds,
    logger: silentLogger(),
    readCacheMs: 60_000,
  });
  const cas = new CaCertificateService({ store: store.caCertificates, clock, ids: realIds, onChange: (i) => service.invalidateTrust(i) });
  const now = () => isoTime(clock.now());
  const common = (status: 'enabled' | 'disabled') => ({
    capabilities: { iotEdge: false },
    provisioningStatus: status,
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    etag: realIds.uuid(),
    createdDateTimeUtc: now(),
    lastUpdatedDateTimeUtc: now(),
  });
  return {
    idScope,
    instanceName,
    store,
    hub,
    clock,
    service,
    cas,
    async addIndividual(registrationId, attestation, status = 'enabled') {
      const e: IndividualEnrollment = { registrationId, attestation, ...common(status) };
      if ((await store.provisioning.createIndividualEnrollment(instanceName, e)) !== 'ok') throw new Error('enrollment not created');
      return e;
    },
    async addGroup(enrollmentGroupId, x509, status = 'enabled') {
      const g: EnrollmentGroup = { enrollmentGroupId, attestation: { type: 'x509', x509 }, ...common(status) };
      if ((await store.provisioning.createEnrollmentGroup(instanceName, g)) !== 'ok') throw new Error('group not created');
      // Group writes reach registrations within the cache time; tests drop the cache as an operator's wait would.
      service.invalidateTrust(instanceName);
      return g;
    },
    async register(registrationId, chain) {
      const p = await service.register(idScope, registrationId, { registrationId }, { kind: 'x509', chain: chain.map(der) }, { budgetMs: 30_000 });
      return p.reply;
    },
    async close() {
      await service.drain();
      hub.close();
      await store.close();
    },
  };
}

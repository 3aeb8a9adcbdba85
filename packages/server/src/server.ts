import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { systemClock, systemIds, type Clock, type IdSource } from './core/clock.ts';
import type { HomingConfig, HubConfig } from './config/config.ts';
import { HubService } from './hub/hub-service.ts';
import type { Logger } from './observability/logger.ts';
import { Metrics } from './observability/metrics.ts';
import { openStore, type OpenedStore } from './store/open.ts';
import { ensureDevPki, type DevPki } from './transport/tls/dev-ca.ts';
import { deviceListenerTls } from './transport/tls/device-listener-tls.ts';
import { createHttpsApp } from './transport/http/app.ts';
import { registerHubApi } from './transport/http/hub-api.ts';
import { startMqttListener, createHubRealm, type MqttListener } from './transport/mqtt/listener.ts';
import { buildSas } from './core/sas.ts';
import { InstanceService, StoreInstanceResolver } from './provisioning/instances.ts';
import { EnrollmentService, RegistrationRecordService } from './provisioning/enrollments.ts';
import { RegistrationService } from './provisioning/registration.ts';
import { createAllocators } from './provisioning/allocation/index.ts';
import { InProcessHubClientFactory } from './provisioning/hub-client-inprocess.ts';
import { RestHubClientFactory } from './provisioning/hub-client-rest.ts';
import { routingHubClientFactory, type HubClientFactory } from './provisioning/hub-client.ts';
import type { HubMove, ProvisioningInstance } from './provisioning/model.ts';
import { loadOrCreateNodeId } from './config/state.ts';
import { registerDpsServiceApi } from './transport/http/dps-service-api.ts';
import { registerDpsDeviceApi } from './transport/http/dps-device-api.ts';
import { createDpsRealm } from './transport/mqtt/dps/realm.ts';
import { CaCertificateService } from './provisioning/ca-certificates.ts';
import { CertificateClaims } from './provisioning/enrollments/certificate-claims.ts';
import { KyselyCertificateClaimStore } from './store/kysely/certificate-claim-store.ts';
import { registerCaApi } from './transport/http/ca-api.ts';
import { QuotaService } from './provisioning/quotas/quota-service.ts';
import { GuardedDeviceRuntime, OverloadGuard } from './provisioning/quotas/overload.ts';
import { openQuotaBuckets } from './store/quota-open.ts';
import { registerQuotaApi } from './transport/http/quota-api.ts';
import { DeprovisionService } from './provisioning/deprovision.ts';
import { registerDeprovisionApi } from './transport/http/dps-deprovision-api.ts';
import { FleetService } from './provisioning/fleet/fleet-service.ts';
import { InProcessFleetHubs } from './provisioning/fleet/hubs.ts';
import { KyselyFleetJobStore } from './store/kysely/fleet-job-store.ts';
import { registerFleetApi } from './transport/http/fleet-api.ts';
import { registerPortal } from './transport/http/portal.ts';
import { DeviceApiCounters, registerPortalAdminApi } from './transport/http/portal-admin-api.ts';
import { PortalQueries } from './store/kysely/portal-queries.ts';

/** What `homing start` writes to DIR/connection.json so scripts can drive it. */
export interface ConnectionInfo {
  caCertPath: string;
  hubs: { hostName: string; mqttPort: number; httpsPort: number; connectionString: string }[];
  dps: { idScope: string; deviceHost: string; serviceConnectionString: string };
  /** The web portal (docs/portal.md), served on the DPS service API listener. */
  portalUrl: string;
}

export interface RunningDps {
  instance: ProvisioningInstance;
  http: FastifyInstance;
  httpsPort: number;
  mqtt: MqttListener;
  mqttPort: number;
  admin: InstanceService;
  enrollments: EnrollmentService;
  registration: RegistrationService;
  certificates: CaCertificateService;
  hubClients: HubClientFactory;
  /** Phased fleet reprovisioning jobs (docs/api/fleet.md). */
  fleet: FleetService;
  /** Periodic clean-up (finished operations). */
  maintenance: NodeJS.Timeout;
}

/** Finished registration operations are kept this long for devices that poll late, then purged. */
export const OPERATION_RETENTION_MS = 60 * 60 * 1000;

export interface RunningHub {
  config: HubConfig;
  service: HubService;
  http: FastifyInstance;
  mqtt: MqttListener;
  httpsPort: number;
  mqttPort: number;
}

export interface RunningHoming {
  config: Readonly<HomingConfig>;
  store: OpenedStore;
  pki: DevPki;
  hubs: RunningHub[];
  dps: RunningDps;
  metrics: Metrics;
  connectionInfo: ConnectionInfo;
  /** Ports that could not be bound and were replaced, with the reason. */
  fallbacks: string[];
  stop(): Promise<void>;
}

export interface StartDeps {
  logger: Logger;
  clock?: Clock;
  ids?: IdSource;
  /** Hub moves: lease and give-up times, and a hook after each recorded step (crash tests kill the process there). */
  moves?: { leaseMs?: number; giveUpMs?: number; afterStep?: (move: HubMove) => void | Promise<void> };
}

const realIds: IdSource = systemIds();

function isPrivilegedRefusal(e: unknown): boolean {
  const code = (e as { code?: string } | null)?.code;
  return code === 'EACCES' || code === 'EPERM';
}

/**
 * The composition root: opens the store, makes sure dev TLS exists, builds every role from plain constructors and
 * starts its listeners. Nothing here is a global; tests start as many instances as they like.
 */
export async function startHoming(config: Readonly<HomingConfig>, deps: StartDeps): Promise<RunningHoming> {
  const log = deps.logger;
  const clock = deps.clock ?? systemClock;
  const ids = deps.ids ?? realIds;
  const metrics = new Metrics({ defaultMetrics: true });
  const sans = ['localhost', '127.0.0.1', config.dps.hostName, config.dps.bindAddress, ...config.hubs.flatMap((h) => [h.hostName, h.bindAddress]), ...config.extraSans];
  const pki = await ensureDevPki(config.dataDir, sans);
  const tls = { cert: pki.serverCertPem, key: pki.serverKeyPem };
  const store = await openStore(config.store, {
    onPoolError: (err) => log.warn({ err }, "database pool error"),
    onCheckpointProblem: (message) => log.warn({ problem: message }, "sqlite background checkpoint problem"),
  });
  const fallbacks: string[] = [];
  const hubs: RunningHub[] = [];
  let dps: RunningDps | undefined;
  const flushTimer = setInterval(() => {
    for (const h of hubs) h.service.flushActivity().catch((err: unknown) => log.warn({ err, hub: h.config.hostName }, 'flushing connection state failed'));
  }, 5_000);
  flushTimer.unref();

  const stop = async (): Promise<void> => {
    clearInterval(flushTimer);
    if (dps) {
      clearInterval(dps.maintenance);
      await dps.fleet.close().catch(() => undefined);
      await Promise.allSettled([dps.http.close(), dps.mqtt.close()]);
      // Let assignments and hub moves already running finish their hub writes and records before the store closes.
      await dps.registration.stop().catch(() => undefined);
      dps.hubClients.close();
    }
    for (const h of hubs) {
      h.service.close();
      await Promise.allSettled([h.mqtt.close(), h.http.close()]);
      await h.service.flushActivity().catch(() => undefined);
    }
    await store.close();
  };

  try {
    for (const hc of config.hubs) {
      const service = new HubService({
        hubId: hc.hostName,
        hostNames: [...new Set([hc.hostName, `${hc.hostName}:${hc.mqttPort}`, hc.bindAddress, `${hc.bindAddress}:${hc.mqttPort}`])],
        policies: hc.policies,
        store: store.hub,
        clock,
        ids,
      });
      const http = createHttpsApp({ tls, logger: log, metrics, errorFlavor: 'hub', api: `hub:${hc.hostName}`, bodyLimit: 512 * 1024 });
      registerHubApi(http, service, { logger: log, metrics, clock });
      http.get('/metrics', async (_req, reply) => reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics()));
      let httpsPort = hc.httpsPort;
      try {
        await http.listen({ host: hc.bindAddress, port: httpsPort });
      } catch (e) {
        if (!isPrivilegedRefusal(e)) throw e;
        httpsPort = config.fallbackHttpsPort;
        fallbacks.push(`${hc.hostName}: HTTPS port ${hc.httpsPort} refused (${(e as { code?: string }).code}); using ${httpsPort}`);
        await http.listen({ host: hc.bindAddress, port: httpsPort });
      }
      const addr = http.server.address();
      if (addr && typeof addr === 'object') httpsPort = addr.port;
      let mqtt: MqttListener;
      try {
        mqtt = await startMqttListener({ host: hc.bindAddress, port: hc.mqttPort, tls: { ...tls, requestCert: true }, realms: [createHubRealm(service)], logger: log, metrics });
      } catch (e) {
        if (!isPrivilegedRefusal(e)) throw e;
        fallbacks.push(`${hc.hostName}: MQTT port ${hc.mqttPort} refused; using ${config.fallbackMqttPort}`);
        mqtt = await startMqttListener({ host: hc.bindAddress, port: config.fallbackMqttPort, tls: { ...tls, requestCert: true }, realms: [createHubRealm(service)], logger: log, metrics });
      }
      hubs.push({ config: hc, service, http, mqtt, httpsPort, mqttPort: mqtt.address().port });
    }
    dps = await startProvisioning(config, { store, tls, log, metrics, clock, ids, hubs, caPem: pki.caCertPem, fallbacks, ...(deps.moves ? { moves: deps.moves } : {}) });
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
  const running = dps;

  const connectionInfo: ConnectionInfo = {
    caCertPath: pki.caCertPath,
    portalUrl: `https://${config.dps.hostName.includes(':') ? `[${config.dps.hostName}]` : config.dps.hostName}${running.httpsPort === 443 ? '' : `:${running.httpsPort}`}/portal/`,
    hubs: hubs.map((h) => {
      const owner = h.config.policies.find((p) => p.keyName === 'iothubowner') ?? h.config.policies[0];
      return {
        hostName: h.config.hostName,
        mqttPort: h.mqttPort,
        httpsPort: h.httpsPort,
        connectionString: owner ? `HostName=${h.config.hostName};SharedAccessKeyName=${owner.keyName};SharedAccessKey=${owner.primaryKey}` : '',
      };
    }),
    dps: (() => {
      const owner = running.instance.policies.find((p) => p.keyName === 'provisioningserviceowner') ?? running.instance.policies[0];
      return {
        idScope: running.instance.idScope,
        deviceHost: config.dps.hostName,
        serviceConnectionString: owner ? `HostName=${config.dps.hostName};SharedAccessKeyName=${owner.keyName};SharedAccessKey=${owner.primaryKey}` : '',
      };
    })(),
  };
  await writeFile(join(config.dataDir, 'connection.json'), `${JSON.stringify(connectionInfo, null, 2)}\n`, { mode: 0o600 });
  return { config, store, pki, hubs, dps: running, metrics, connectionInfo, fallbacks, stop };
}

/** A service SAS for a hub policy, for scripts and tests. */
export function hubServiceSas(hub: RunningHub, keyName = 'iothubowner', ttlSeconds = 3600): string {
  const p = hub.config.policies.find((x) => x.keyName === keyName);
  if (!p) throw new Error(`no policy ${keyName}`);
  return buildSas({ sr: hub.config.hostName, keyBase64: p.primaryKey, keyName, expirySeconds: Math.floor(Date.now() / 1000) + ttlSeconds });
}

interface ProvisioningDeps {
  store: OpenedStore;
  tls: { cert: string; key: string };
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  ids: IdSource;
  hubs: readonly RunningHub[];
  caPem: string;
  fallbacks: string[];
  moves?: StartDeps['moves'];
}

/**
 * The provisioning service (DPS role): the default instance with this process's hubs linked, the DPS service API
 * and the device runtime API on one HTTPS listener (their paths do not overlap).
 */
async function startProvisioning(config: Readonly<HomingConfig>, d: ProvisioningDeps): Promise<RunningDps> {
  const pstore = d.store.provisioning;
  const resolver = new StoreInstanceResolver({ store: pstore, clock: d.clock });
  // Instance and group writes on this node reach its registrations at once (other nodes within their read cache's TTL).
  let onEnrollmentChange: () => void = () => undefined;
  const admin = new InstanceService({
    store: pstore,
    ids: d.ids,
    onChange: () => {
      resolver.invalidate();
      onEnrollmentChange();
    },
  });
  const linked = d.hubs.map((h) => {
    const owner = h.config.policies.find((p) => p.rights.includes('RegistryWrite') && p.rights.includes('ServiceConnect'));
    if (!owner) throw new Error(`hub ${h.config.hostName} has no policy with RegistryWrite and ServiceConnect`);
    return { name: h.config.hostName, connectionString: `HostName=${h.config.hostName};SharedAccessKeyName=${owner.keyName};SharedAccessKey=${owner.primaryKey}`, location: 'local' };
  });
  const { instance: first } = await admin.ensureInstance({ name: config.dps.instanceName, serviceHostNames: [config.dps.hostName], linkedHubs: linked, ...(config.dps.quotas ? { quotas: config.dps.quotas } : {}) });
  // Hubs added to the configuration after the instance was created are linked now; a changed key is updated.
  for (const l of linked) {
    const have = first.linkedHubs.find((x) => x.name.toLowerCase() === l.name.toLowerCase());
    if (!have) await admin.linkHub(first.name, l.name, { connectionString: l.connectionString, location: l.location });
    else if (have.connectionString !== l.connectionString) await admin.updateLinkedHub(first.name, l.name, { connectionString: l.connectionString });
  }
  const instance = await admin.getInstance(first.name);
  const inProcess = new InProcessHubClientFactory(d.hubs.map((h) => h.service), d.clock);
  const hubClients = routingHubClientFactory([
    { claims: (h) => inProcess.has(h), factory: inProcess },
    { claims: () => true, factory: new RestHubClientFactory({ clock: d.clock, ca: d.caPem, logger: d.log }) },
  ]);
  const certificateClaims = new CertificateClaims({ claims: KyselyCertificateClaimStore.on(d.store.db), store: pstore, caCertificates: d.store.caCertificates, clock: d.clock });
  const enrollments = new EnrollmentService({ store: pstore, clock: d.clock, ids: d.ids, certificateClaims, onGroupChange: () => onEnrollmentChange() });
  const records = new RegistrationRecordService({ store: pstore });
  const quotas = new QuotaService({ clock: d.clock, buckets: openQuotaBuckets(d.store) });
  const nodeId = await loadOrCreateNodeId(config.dataDir, () => d.ids.uuid());
  const registration = new RegistrationService({ store: pstore, hubs: hubClients, clock: d.clock, ids: d.ids, logger: d.log, quotas, caCertificates: d.store.caCertificates, moves: { nodeId, ...d.moves }, allocators: createAllocators(config.dps, { logger: d.log, clock: d.clock }) });
  onEnrollmentChange = () => registration.invalidateEnrollments();
  // Overload protection (always on): the transports get the registration service behind it.
  const deviceRuntime = new GuardedDeviceRuntime(registration, new OverloadGuard({ clock: d.clock, ...config.dps.overload }));
  // Client certificates are requested (never required, never checked by TLS): X.509 devices attest with them.
  const http = createHttpsApp({ tls: deviceListenerTls(d.tls), logger: d.log, metrics: d.metrics, errorFlavor: 'dps', api: 'dps', bodyLimit: 128 * 1024 });
  registerDpsServiceApi(http, { instances: resolver, enrollments, registrations: records, admin, clock: d.clock });
  registerQuotaApi(http, { instances: resolver, admin, quotas, clock: d.clock });
  // 429s and calls per minute of both device transports, for /homing/stats.
  const deviceApiCounters = new DeviceApiCounters();
  registerDpsDeviceApi(http, {
    registration: deviceRuntime,
    responseBudgetMs: config.dps.responseBudgetMs,
    onAnswer: (idScope, status) => deviceApiCounters.count(idScope, d.clock.now(), status),
  });
  const certificates = new CaCertificateService({ store: d.store.caCertificates, clock: d.clock, ids: d.ids, onChange: (i) => registration.invalidateTrust(i) });
  registerCaApi(http, { instances: resolver, certificates, clock: d.clock });
  registerDeprovisionApi(http, { instances: resolver, deprovision: new DeprovisionService({ store: pstore, hubs: hubClients, logger: d.log }), clock: d.clock });
  const fleet = new FleetService({
    store: KyselyFleetJobStore.on(d.store.db),
    provisioning: pstore,
    hubs: new InProcessFleetHubs(d.hubs.map((h) => h.service)),
    quotas,
    clock: d.clock,
    ids: d.ids,
    logger: d.log,
  });
  registerFleetApi(http, { instances: resolver, fleet, clock: d.clock });
  registerPortalAdminApi(http, { instances: resolver, queries: new PortalQueries(d.store.db, d.store.dialect), quotas, clock: d.clock, logger: d.log, counters: deviceApiCounters });
  registerPortal(http, { logger: d.log });
  let httpsPort = config.dps.httpsPort;
  try {
    await http.listen({ host: config.dps.bindAddress, port: httpsPort });
  } catch (e) {
    if (!isPrivilegedRefusal(e)) throw e;
    httpsPort = config.fallbackHttpsPort;
    d.fallbacks.push(`provisioning service ${config.dps.hostName}: HTTPS port ${config.dps.httpsPort} refused (${(e as { code?: string }).code}); using ${httpsPort}`);
    await http.listen({ host: config.dps.bindAddress, port: httpsPort });
  }
  const addr = http.server.address();
  if (addr && typeof addr === 'object') httpsPort = addr.port;
  const dpsMqttOpts = {
    host: config.dps.bindAddress,
    tls: deviceListenerTls(d.tls),
    realms: [
      createDpsRealm(deviceRuntime, {
        logger: d.log,
        responseBudgetMs: config.dps.responseBudgetMs,
        onAnswer: (idScope, status) => deviceApiCounters.count(idScope, d.clock.now(), status),
      }),
    ],
    logger: d.log,
    metrics: d.metrics,
    // Bodies up to 96 KB are answered (413 beyond); bigger packets close the connection before being buffered.
    maxPacketBytes: 128 * 1024,
  };
  let mqtt: MqttListener;
  try {
    mqtt = await startMqttListener({ ...dpsMqttOpts, port: config.dps.mqttPort });
  } catch (e) {
    if (!isPrivilegedRefusal(e)) {
      await http.close().catch(() => undefined);
      throw e;
    }
    d.fallbacks.push(`provisioning service ${config.dps.hostName}: MQTT port ${config.dps.mqttPort} refused; using ${config.fallbackMqttPort}`);
    mqtt = await startMqttListener({ ...dpsMqttOpts, port: config.fallbackMqttPort });
  }
  const maintenance = setInterval(() => {
    registration.purgeFinishedOperations(OPERATION_RETENTION_MS).catch((err: unknown) => d.log.warn({ err }, 'purging finished operations failed'));
  }, 5 * 60 * 1000);
  maintenance.unref();
  // Hub moves interrupted by a crash or a dead node are resumed now and whenever a lease ends.
  registration.startMoveRecovery();
  // Fleet jobs a previous process was running (or watching) continue.
  await fleet.resumeStored().catch((err: unknown) => d.log.error({ err }, 'resuming fleet jobs failed'));
  return { instance, http, httpsPort, mqtt, mqttPort: mqtt.address().port, admin, enrollments, registration, certificates, hubClients, fleet, maintenance };
}

/**
 * Server child of bench/register-variants.ts. argv[2] = JSON config:
 *   { mode: 'homing' | 'bare', dir: string, cert, key (server TLS), rootCa (device CA root, PEM), budgetMs? }
 * - homing: real parts: SQLite store in `dir`, 2 in-process hubs, the default instance with both linked
 *   (InstanceService.ensureInstance), a symmetric-key group and an X.509 group on a verified CA (uploaded with
 *   CaCertificateService), RegistrationService with caCertificates, the DPS HTTPS app (requestCert) with the device
 *   API, and the DPS MQTT listener (createDpsRealm), both on 127.0.0.1:0.
 * - bare: the ceilings: a bare MQTT/TLS listener (variants-bare.ts) and a bare node:https server with
 *   requestCert + rejectUnauthorized against the device root CA, answering a fixed JSON body.
 * IPC (register-proc.ts protocol): sends {type:'ready', httpsPort, mqttPort, idScope?, groupKey?}; answers
 * {type:'cpu'} with process.cpuUsage(), {type:'stats'} with counts, {type:'stop'} by closing and exiting.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { sql } from 'kysely';
import { deviceListenerTls } from '../../packages/server/src/transport/tls/device-listener-tls.ts';
import { isoTime, systemClock, systemIds, type IdSource } from '../../packages/server/src/core/clock.ts';
import { silentLogger } from '../../packages/server/src/observability/logger.ts';
import { CaCertificateService } from '../../packages/server/src/provisioning/ca-certificates.ts';
import { InProcessHubClientFactory } from '../../packages/server/src/provisioning/hub-client-inprocess.ts';
import { InstanceService } from '../../packages/server/src/provisioning/instances.ts';
import { RegistrationService } from '../../packages/server/src/provisioning/registration.ts';
import { openStore } from '../../packages/server/src/store/open.ts';
import { createHttpsApp } from '../../packages/server/src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../packages/server/src/transport/http/dps-device-api.ts';
import { createDpsRealm } from '../../packages/server/src/transport/mqtt/dps/realm.ts';
import { startMqttListener } from '../../packages/server/src/transport/mqtt/listener.ts';
import { startBareHttps, startBareDpsMqtt } from './variants-bare.ts';
import { createBenchHubs } from './register-world.ts';

interface Config {
  mode: 'homing' | 'bare';
  dir: string;
  cert: string;
  key: string;
  rootCa: string;
  budgetMs?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;
const ids: IdSource = systemIds();
const send = (m: Record<string, unknown>) => process.send?.(m);
const tls = { cert: cfg.cert, key: cfg.key };

interface Running {
  ready: Record<string, unknown>;
  stats: () => Promise<Record<string, unknown>>;
  close: () => Promise<void>;
}

async function startHoming(): Promise<Running> {
  const store = await openStore({ dialect: 'sqlite', sqlitePath: join(cfg.dir, 'homing.db') });
  const key = () => randomBytes(32).toString('base64');
  const { hubs, linked } = createBenchHubs(store, ids);
  const admin = new InstanceService({ store: store.provisioning, ids });
  const { instance } = await admin.ensureInstance({ name: 'bench', serviceHostNames: ['bench.local'], linkedHubs: linked });
  const logger = silentLogger();
  const service = new RegistrationService({
    store: store.provisioning,
    caCertificates: store.caCertificates,
    hubs: new InProcessHubClientFactory(hubs, systemClock),
    clock: systemClock,
    ids,
    logger,
  });
  const cas = new CaCertificateService({ store: store.caCertificates, clock: systemClock, ids, onChange: (i) => service.invalidateTrust(i) });
  await cas.upload(instance.name, 'bench-root', { certificate: cfg.rootCa, isVerified: true });
  const now = isoTime(Date.now());
  const common = {
    capabilities: { iotEdge: false },
    initialTwin: { tags: { fleet: 'bench' }, properties: { desired: { interval: 60 } } },
    provisioningStatus: 'enabled' as const,
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    createdDateTimeUtc: now,
    lastUpdatedDateTimeUtc: now,
  };
  const groupKey = key();
  const r1 = await store.provisioning.createEnrollmentGroup(instance.name, { enrollmentGroupId: 'bench-sym', attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: key() } }, etag: 'g1', ...common });
  const r2 = await store.provisioning.createEnrollmentGroup(instance.name, { enrollmentGroupId: 'bench-x509', attestation: { type: 'x509', x509: { caReferences: { primary: 'bench-root' } } }, etag: 'g2', ...common });
  if (r1 !== 'ok' || r2 !== 'ok') throw new Error(`groups not created: ${String(r1)} ${String(r2)}`);
  service.invalidateTrust(instance.name);
  const app = createHttpsApp({ logger, errorFlavor: 'dps', api: 'dps-device', tls: deviceListenerTls(tls) });
  registerDpsDeviceApi(app, { registration: service, ...(cfg.budgetMs === undefined ? {} : { responseBudgetMs: cfg.budgetMs }) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const mqtt = await startMqttListener({
    host: '127.0.0.1',
    port: 0,
    tls: deviceListenerTls(tls),
    realms: [createDpsRealm(service, { logger, ...(cfg.budgetMs === undefined ? {} : { responseBudgetMs: cfg.budgetMs }) })],
    logger,
    maxPacketBytes: 128 * 1024,
  });
  return {
    ready: { httpsPort: (app.server.address() as { port: number }).port, mqttPort: mqtt.address().port, idScope: instance.idScope, groupKey },
    async stats() {
      const registrations = await store.provisioning.countRegistrations(instance.name);
      const devices = await sql<{ hub_id: string; n: number }>`select hub_id, count(*) as n from hub_devices group by hub_id`.execute(store.db);
      return { registrations, hubDevices: Object.fromEntries(devices.rows.map((r) => [r.hub_id, Number(r.n)])) };
    },
    async close() {
      await mqtt.close();
      await app.close();
      await service.drain();
      for (const h of hubs) h.close();
      await store.close();
    },
  };
}

async function startBare(): Promise<Running> {
  const mqtt = await startBareDpsMqtt(tls);
  const https = await startBareHttps({ ...tls, ca: cfg.rootCa });
  return {
    ready: { httpsPort: https.port, mqttPort: mqtt.port },
    stats: () => Promise.resolve({}),
    async close() {
      await mqtt.close();
      await https.close();
    },
  };
}

async function main(): Promise<void> {
  const r = cfg.mode === 'bare' ? await startBare() : await startHoming();
  process.on('message', (m: unknown) => {
    const msg = m as { type?: string };
    if (msg.type === 'cpu') send({ type: 'cpu', usage: process.cpuUsage() });
    else if (msg.type === 'stats') r.stats().then((s) => send({ type: 'stats', ...s }), (e: unknown) => send({ type: 'stats', error: String(e) }));
    else if (msg.type === 'stop') r.close().catch(() => undefined).finally(() => process.exit(0));
  });
  send({ type: 'ready', ...r.ready });
}

main().catch((e: unknown) => {
  send({ type: 'ready', error: e instanceof Error ? e.stack ?? e.message : String(e) });
  process.exit(1);
});

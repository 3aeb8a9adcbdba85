import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { systemClock, type Clock, type IdSource } from './core/clock.ts';
import type { HomingConfig, HubConfig } from './config/config.ts';
import { HubService } from './hub/hub-service.ts';
import type { Logger } from './observability/logger.ts';
import { Metrics } from './observability/metrics.ts';
import { openStore, type OpenedStore } from './store/open.ts';
import { ensureDevPki, type DevPki } from './transport/tls/dev-ca.ts';
import { createHttpsApp } from './transport/http/app.ts';
import { registerHubApi } from './transport/http/hub-api.ts';
import { startMqttListener, createHubRealm, type MqttListener } from './transport/mqtt/listener.ts';
import { buildSas } from './core/sas.ts';

/** What `homing start` writes to DIR/connection.json so scripts can drive it. */
export interface ConnectionInfo {
  caCertPath: string;
  hubs: { hostName: string; mqttPort: number; httpsPort: number; connectionString: string }[];
}

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
}

const realIds: IdSource = { uuid: () => randomUUID(), bytes: (n) => randomBytes(n) };

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
  const sans = ['localhost', '127.0.0.1', ...config.hubs.flatMap((h) => [h.hostName, h.bindAddress]), ...config.extraSans];
  const pki = await ensureDevPki(config.dataDir, sans);
  const tls = { cert: pki.serverCertPem, key: pki.serverKeyPem };
  const store = await openStore(config.store, { onPoolError: (err) => log.warn({ err }, "database pool error") });
  const fallbacks: string[] = [];
  const hubs: RunningHub[] = [];
  const flushTimer = setInterval(() => {
    for (const h of hubs) h.service.flushActivity().catch((err: unknown) => log.warn({ err, hub: h.config.hostName }, 'flushing connection state failed'));
  }, 5_000);
  flushTimer.unref();

  const stop = async (): Promise<void> => {
    clearInterval(flushTimer);
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
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }

  const connectionInfo: ConnectionInfo = {
    caCertPath: pki.caCertPath,
    hubs: hubs.map((h) => {
      const owner = h.config.policies.find((p) => p.keyName === 'iothubowner') ?? h.config.policies[0];
      return {
        hostName: h.config.hostName,
        mqttPort: h.mqttPort,
        httpsPort: h.httpsPort,
        connectionString: owner ? `HostName=${h.config.hostName};SharedAccessKeyName=${owner.keyName};SharedAccessKey=${owner.primaryKey}` : '',
      };
    }),
  };
  await writeFile(join(config.dataDir, 'connection.json'), `${JSON.stringify(connectionInfo, null, 2)}\n`, { mode: 0o600 });
  return { config, store, pki, hubs, metrics, connectionInfo, fallbacks, stop };
}

/** A service SAS for a hub policy, for scripts and tests. */
export function hubServiceSas(hub: RunningHub, keyName = 'iothubowner', ttlSeconds = 3600): string {
  const p = hub.config.policies.find((x) => x.keyName === keyName);
  if (!p) throw new Error(`no policy ${keyName}`);
  return buildSas({ sr: hub.config.hostName, keyBase64: p.primaryKey, keyName, expirySeconds: Math.floor(Date.now() / 1000) + ttlSeconds });
}

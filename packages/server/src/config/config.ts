import { randomBytes } from 'node:crypto';
import type { HubRight, SharedAccessPolicy } from '../core/policies.ts';
import type { StoreConfig } from '../store/ports.ts';
import type { InstanceQuotaSettings } from '../provisioning/model.ts';
import type { OverloadSettings } from '../provisioning/quotas/overload.ts';
import { parseQuotaSettings, quotaSettingsToJson } from '../provisioning/quotas/settings.ts';
import { validateGeoLatencyConfig, type GeoLatencyConfig } from '../provisioning/allocation/geo-latency.ts';
import { validateCustomAllocationConfig, type CustomAllocationConfig } from '../provisioning/allocation/custom-webhook.ts';

/** One hub role. `hostName` is the hub's id: devices get it as assignedHub and sign tokens for it. */
export interface HubConfig {
  hostName: string;
  /** Address the hub's listeners bind (default: the host name when it is an IP literal, else 127.0.0.1). */
  bindAddress: string;
  mqttPort: number;
  httpsPort: number;
  policies: SharedAccessPolicy<HubRight>[];
}

/** The provisioning service (DPS role). */
export interface DpsConfig {
  /** Instance name (service host label). */
  instanceName: string;
  /** Host name devices pass as provisioning host and the service SDKs use as HostName. */
  hostName: string;
  bindAddress: string;
  httpsPort: number;
  /** DPS over MQTT (the official SDK's default is 8883). */
  mqttPort: number;
  /** How long a register waits for its assignment before answering 202 (ms). */
  responseBudgetMs: number;
  /**
   * Quota settings written over the default instance's stored ones at start (fields not given keep their stored
   * value; the admin API changes them at runtime). docs/api/quotas.md.
   */
  quotas?: InstanceQuotaSettings;
  /** Overload protection of this process (always on; these bounds, else the defaults). */
  overload?: OverloadSettings;
  /**
   * geoLatency allocation: device networks (CIDR → location) and the latency table location → hub location → ms
   * (docs/api/allocation.md). Absent: device-reported times only, else the weighted hash.
   */
  geoLatency?: GeoLatencyConfig;
  /** The custom allocation webhook client: timeout, HMAC signing secret (never logged), extra CA file. */
  customAllocation?: CustomAllocationConfig;
}

export interface HomingConfig {
  dataDir: string;
  store: StoreConfig;
  hubs: HubConfig[];
  dps: DpsConfig;
  /** Extra host names and addresses for the dev server certificate. */
  extraSans: string[];
  logLevel: string;
  /** When binding 443/8883 is refused (not root), fall back to these ports plus an offset per role. */
  fallbackHttpsPort: number;
  fallbackMqttPort: number;
}

export const HUB_RIGHTS: readonly HubRight[] = ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'];

export function newKey(): string {
  return randomBytes(32).toString('base64');
}

/** The shared access policies an IoT hub has by default. */
export function defaultHubPolicies(): SharedAccessPolicy<HubRight>[] {
  const p = (keyName: string, rights: HubRight[]): SharedAccessPolicy<HubRight> => ({ keyName, primaryKey: newKey(), secondaryKey: newKey(), rights });
  return [
    p('iothubowner', [...HUB_RIGHTS]),
    p('service', ['ServiceConnect']),
    p('device', ['DeviceConnect']),
    p('registryRead', ['RegistryRead']),
    p('registryReadWrite', ['RegistryRead', 'RegistryWrite']),
  ];
}

/** Environment variables Homing reads. Nothing outside config/ reads process.env. */
export interface HomingEnv {
  databaseUrl: string | undefined;
  logLevel: string | undefined;
  /** HOMING_DATABASE_POOL_SIZE: PostgreSQL pool size (NaN when set but not a number; validateConfig refuses it). */
  databasePoolSize?: number | undefined;
}

export function readEnv(env: NodeJS.ProcessEnv = process.env): HomingEnv {
  return {
    databaseUrl: env.HOMING_DATABASE_URL || env.DATABASE_URL || undefined,
    logLevel: env.HOMING_LOG_LEVEL || undefined,
    databasePoolSize: env.HOMING_DATABASE_POOL_SIZE ? Number(env.HOMING_DATABASE_POOL_SIZE) : undefined,
  };
}

const HOST_RE = /^[A-Za-z0-9.-]{1,253}$/;

/** Largest PostgreSQL pool a process may ask for (PostgreSQL's own max_connections is 100 by default). */
export const MAX_POOL_SIZE = 1000;

/** Validates a config once and freezes it. Throws an Error naming the first bad field. */
export function validateConfig(c: HomingConfig): Readonly<HomingConfig> {
  const names = new Set<string>();
  if (!c.dataDir) throw new Error('config: dataDir is required');
  if (c.store.dialect === 'postgres' && !c.store.postgresUrl) throw new Error('config: store.postgresUrl is required for postgres');
  const pool = c.store.poolSize;
  if (pool !== undefined && (!Number.isInteger(pool) || pool < 1 || pool > MAX_POOL_SIZE)) {
    throw new Error(`config: store.poolSize must be an integer from 1 to ${MAX_POOL_SIZE}`);
  }
  for (const [i, h] of c.hubs.entries()) {
    if (!HOST_RE.test(h.hostName)) throw new Error(`config: hubs[${i}].hostName is not a host name`);
    const key = h.hostName.toLowerCase();
    if (names.has(key)) throw new Error(`config: hub ${h.hostName} is listed twice`);
    names.add(key);
    for (const port of [h.mqttPort, h.httpsPort]) {
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`config: hubs[${i}] has an invalid port ${port}`);
    }
    if (!h.policies.some((p) => p.rights.includes('RegistryWrite') && p.rights.includes('ServiceConnect'))) {
      throw new Error(`config: hub ${h.hostName} needs a policy with RegistryWrite and ServiceConnect`);
    }
  }
  if (!HOST_RE.test(c.dps.hostName)) throw new Error('config: dps.hostName is not a host name');
  for (const h of c.hubs) {
    if (h.bindAddress === c.dps.bindAddress && (h.httpsPort === c.dps.httpsPort || h.mqttPort === c.dps.mqttPort)) {
      throw new Error(`config: the provisioning service and hub ${h.hostName} cannot share the address ${h.bindAddress} on the same ports; give them distinct host names or addresses`);
    }
  }
  if (!Number.isInteger(c.dps.httpsPort) || c.dps.httpsPort < 0 || c.dps.httpsPort > 65535) throw new Error(`config: dps.httpsPort is invalid`);
  if (c.dps.quotas !== undefined) {
    try {
      parseQuotaSettings(quotaSettingsToJson(c.dps.quotas));
    } catch (e) {
      throw new Error(`config: dps.quotas: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
  for (const [k, v] of Object.entries(c.dps.overload ?? {})) {
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)) throw new Error(`config: dps.overload.${k} must be a positive number`);
  }
  // Messages name fields, never values (signingSecret is a secret).
  const section = (name: string, check: () => void): void => {
    try {
      check();
    } catch (e) {
      throw new Error(`config: dps.${name}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  };
  const { geoLatency, customAllocation } = c.dps;
  if (geoLatency !== undefined) section('geoLatency', () => validateGeoLatencyConfig(geoLatency));
  if (customAllocation !== undefined) section('customAllocation', () => validateCustomAllocationConfig(customAllocation));
  return Object.freeze(structuredClone(c));
}

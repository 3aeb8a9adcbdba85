import { isIP } from 'node:net';
import { resolve, join } from 'node:path';
import { readEnv, validateConfig, type HomingConfig, type HomingEnv } from './config.ts';
import type { InstanceQuotaSettings, QuotaPreset } from '../provisioning/model.ts';
import { loadOrCreateState } from './state.ts';

/** Options of `homing start`, already parsed by the CLI. */
export interface StartOptions {
  dataDir?: string;
  /** Hub host names (IP literals bind that address; names bind 127.0.0.1). Default: 127.0.0.2 and 127.0.0.3. */
  hubHosts?: string[];
  mqttPort?: number;
  httpsPort?: number;
  /** Provisioning service host name or loopback address. Default 127.0.0.1. */
  dpsHost?: string;
  /** PostgreSQL URL; when absent the embedded SQLite store in the data directory is used. */
  databaseUrl?: string;
  logLevel?: string;
  /** Register PUTs + status lookups per minute of the default instance (0: off). Written into the instance at start. */
  registrationsPerMinute?: number;
  /** Quota preset of the default instance (`azure`: Azure DPS's rates). Written into the instance at start. */
  quotaPreset?: QuotaPreset;
}

export const DEFAULT_HUB_HOSTS = ['127.0.0.2', '127.0.0.3'];

/** Builds and validates the configuration of `homing start` from options, the environment and DIR/state.json. */
export async function loadStartConfig(opts: StartOptions, env: HomingEnv = readEnv()): Promise<Readonly<HomingConfig>> {
  const dataDir = resolve(opts.dataDir ?? '.homing');
  const hubHosts = opts.hubHosts && opts.hubHosts.length > 0 ? opts.hubHosts : DEFAULT_HUB_HOSTS;
  const state = await loadOrCreateState(dataDir, hubHosts);
  const databaseUrl = opts.databaseUrl ?? env.databaseUrl;
  const quotas: InstanceQuotaSettings = {
    ...(opts.quotaPreset === undefined ? {} : { preset: opts.quotaPreset }),
    ...(opts.registrationsPerMinute === undefined ? {} : { registrationsPerMinute: opts.registrationsPerMinute }),
  };
  const config: HomingConfig = {
    dataDir,
    store: databaseUrl ? { dialect: 'postgres', postgresUrl: databaseUrl } : { dialect: 'sqlite', sqlitePath: join(dataDir, 'homing.db') },
    hubs: hubHosts.map((hostName) => ({
      hostName,
      bindAddress: isIP(hostName) ? hostName : '127.0.0.1',
      mqttPort: opts.mqttPort ?? 8883,
      httpsPort: opts.httpsPort ?? 443,
      policies: state.hubs[hostName.toLowerCase()]?.policies ?? [],
    })),
    dps: {
      instanceName: 'homing',
      hostName: opts.dpsHost ?? '127.0.0.1',
      bindAddress: isIP(opts.dpsHost ?? '127.0.0.1') ? (opts.dpsHost ?? '127.0.0.1') : '127.0.0.1',
      httpsPort: opts.httpsPort ?? 443,
      mqttPort: opts.mqttPort ?? 8883,
      responseBudgetMs: 100,
      ...(Object.keys(quotas).length > 0 ? { quotas } : {}),
    },
    extraSans: [],
    logLevel: opts.logLevel ?? env.logLevel ?? 'info',
    fallbackHttpsPort: 8443,
    fallbackMqttPort: 8883,
  };
  return validateConfig(config);
}

import { isIP } from 'node:net';
import { readFile } from 'node:fs/promises';
import { dirname, resolve, join } from 'node:path';
import { readEnv, validateConfig, type DpsConfig, type HomingConfig, type HomingEnv } from './config.ts';
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
  /** PostgreSQL pool size (default 8); ignored on the embedded store. */
  databasePoolSize?: number;
  logLevel?: string;
  /** Register PUTs + status lookups per minute of the default instance (0: off). Written into the instance at start. */
  registrationsPerMinute?: number;
  /** Quota preset of the default instance (`azure`: Azure DPS's rates). Written into the instance at start. */
  quotaPreset?: QuotaPreset;
  /**
   * A JSON settings file: `{ "dps": { "geoLatency": {...}, "customAllocation": {...} } }` (docs/api/allocation.md).
   * A relative `customAllocation.caFile` is relative to the file.
   */
  configFile?: string;
}

/** The settings a config file may give (docs/api/allocation.md). */
export type FileSettings = { dps?: Pick<DpsConfig, 'geoLatency' | 'customAllocation'> };

/** Reads a config file; errors name the file and the problem, never its content. */
export async function readConfigFile(path: string): Promise<Pick<DpsConfig, 'geoLatency' | 'customAllocation'>> {
  const file = resolve(path);
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    const why = e instanceof SyntaxError ? 'not valid JSON' : ((e as NodeJS.ErrnoException).code ?? 'unreadable');
    throw new Error(`config file ${file}: ${why}`, { cause: e });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`config file ${file}: expected a JSON object`);
  const known = new Set(['dps']);
  for (const k of Object.keys(parsed)) if (!known.has(k)) throw new Error(`config file ${file}: unknown setting "${k}"`);
  const dps = (parsed as FileSettings).dps ?? {};
  if (typeof dps !== 'object' || dps === null || Array.isArray(dps)) throw new Error(`config file ${file}: "dps" must be an object`);
  const dpsKnown = new Set(['geoLatency', 'customAllocation']);
  for (const k of Object.keys(dps)) if (!dpsKnown.has(k)) throw new Error(`config file ${file}: unknown setting "dps.${k}"`);
  const out: Pick<DpsConfig, 'geoLatency' | 'customAllocation'> = {};
  if (dps.geoLatency !== undefined) out.geoLatency = dps.geoLatency;
  if (dps.customAllocation !== undefined) {
    const ca = dps.customAllocation;
    out.customAllocation = typeof ca === 'object' && ca !== null && typeof ca.caFile === 'string' ? { ...ca, caFile: resolve(dirname(file), ca.caFile) } : ca;
  }
  return out;
}

export const DEFAULT_HUB_HOSTS = ['127.0.0.2', '127.0.0.3'];

/** Builds and validates the configuration of `homing start` from options, the environment and DIR/state.json. */
export async function loadStartConfig(opts: StartOptions, env: HomingEnv = readEnv()): Promise<Readonly<HomingConfig>> {
  const dataDir = resolve(opts.dataDir ?? '.homing');
  const hubHosts = opts.hubHosts && opts.hubHosts.length > 0 ? opts.hubHosts : DEFAULT_HUB_HOSTS;
  const state = await loadOrCreateState(dataDir, hubHosts);
  const databaseUrl = opts.databaseUrl ?? env.databaseUrl;
  const poolSize = opts.databasePoolSize ?? env.databasePoolSize;
  const quotas: InstanceQuotaSettings = {
    ...(opts.quotaPreset === undefined ? {} : { preset: opts.quotaPreset }),
    ...(opts.registrationsPerMinute === undefined ? {} : { registrationsPerMinute: opts.registrationsPerMinute }),
  };
  const fileSettings = opts.configFile === undefined ? {} : await readConfigFile(opts.configFile);
  const config: HomingConfig = {
    dataDir,
    store: databaseUrl
      ? { dialect: 'postgres', postgresUrl: databaseUrl, ...(poolSize === undefined ? {} : { poolSize }) }
      : { dialect: 'sqlite', sqlitePath: join(dataDir, 'homing.db') },
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
      ...fileSettings,
    },
    extraSans: [],
    logLevel: opts.logLevel ?? env.logLevel ?? 'info',
    fallbackHttpsPort: 8443,
    fallbackMqttPort: 8883,
  };
  return validateConfig(config);
}

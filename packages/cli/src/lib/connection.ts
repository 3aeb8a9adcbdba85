import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { argumentError, CliError } from './errors.ts';

/** DIR/connection.json as `homing start` writes it. */
export interface ConnectionFile {
  caCertPath?: string;
  hubs?: { hostName: string; mqttPort?: number; httpsPort?: number; connectionString?: string }[];
  dps?: { idScope?: string; deviceHost?: string; serviceConnectionString?: string; httpsPort?: number; mqttPort?: number };
}

/** Connection options shared by every service command. */
export interface ConnectionFlags {
  connectionString?: string;
  dataDir?: string;
  caCert?: string;
  port?: number;
  hubName?: string;
}

/** A parsed service connection string. */
export interface ServiceCredentials {
  hostName: string;
  keyName: string;
  key: string;
}

/** Where and how to call a service API. */
export interface ServiceTarget extends ServiceCredentials {
  /** Address to dial (the host name). */
  host: string;
  port: number;
  /** PEM of the CA to trust (the dev CA), when known; otherwise the system's CAs. */
  ca?: string;
}

export const DEFAULT_DATA_DIR = '.homing';
export const DPS_ENV = 'HOMING_DPS_CONNECTION_STRING';
export const HUB_ENV = 'HOMING_HUB_CONNECTION_STRING';

export function parsePortOption(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isInteger(n) || n < 1 || n > 65535) throw argumentError(`--port: expected a port number from 1 to 65535, got "${v}"`);
  return n;
}

/** Adds --connection-string, --data-dir, --ca-cert and --port. */
export function withConnectionOptions(cmd: Command, kind: 'dps' | 'hub'): Command {
  const env = kind === 'dps' ? DPS_ENV : HUB_ENV;
  const what = kind === 'dps' ? 'provisioning service (provisioningserviceowner or another policy)' : 'hub (iothubowner or another policy)';
  cmd
    .option('--connection-string <cs>', `connection string of the ${what}; default: $${env}, else connection.json in --data-dir`)
    .option('--data-dir <dir>', 'data directory of `homing start` (connection.json, dev CA)', DEFAULT_DATA_DIR)
    .option('--ca-cert <path>', 'PEM of the CA that signed the server certificate (default: caCertPath from connection.json)')
    .addOption(new Option('--port <port>', 'HTTPS port of the service API (default: from connection.json, else 443)').argParser(parsePortOption));
  if (kind === 'hub') cmd.option('--hub-name <host>', 'hub host name, to pick one of the hubs in connection.json (default: the first)');
  return cmd;
}

/** Parses `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`; never echoes the string in errors. */
export function parseServiceConnectionString(cs: string, what: string): ServiceCredentials {
  const fields: Record<string, string> = {};
  for (const part of cs.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    fields[part.slice(0, eq).trim().toLowerCase()] = part.slice(eq + 1).trim();
  }
  const hostName = fields.hostname;
  const keyName = fields.sharedaccesskeyname;
  const key = fields.sharedaccesskey;
  if (!hostName || !keyName || !key) {
    throw new CliError('ConnectionStringInvalid', `the ${what} connection string must have HostName, SharedAccessKeyName and SharedAccessKey`, 2);
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(key) || Buffer.from(key, 'base64').length < 16) {
    throw new CliError('ConnectionStringInvalid', `the SharedAccessKey of the ${what} connection string is not a base64 key`, 2);
  }
  return { hostName, keyName, key };
}

/** Reads DIR/connection.json; undefined when there is none. */
export function readConnectionFile(dataDir: string | undefined): ConnectionFile | undefined {
  const path = join(resolve(dataDir ?? DEFAULT_DATA_DIR), 'connection.json');
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as ConnectionFile;
  } catch (e) {
    throw new CliError('ConnectionFileInvalid', `${path} is not valid JSON: ${(e as Error).message}`);
  }
}

function readCa(flags: ConnectionFlags, file: ConnectionFile | undefined): string | undefined {
  const path = flags.caCert ?? file?.caCertPath;
  if (!path) return undefined;
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new CliError('CaCertUnreadable', `cannot read the CA certificate ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function splitHost(hostName: string): { host: string; port: number | undefined } {
  const m = /^(.*):(\d{1,5})$/.exec(hostName);
  if (m && !hostName.startsWith('[')) return { host: m[1] ?? hostName, port: Number(m[2]) };
  return { host: hostName, port: undefined };
}

/** The provisioning service API: --connection-string, else $HOMING_DPS_CONNECTION_STRING, else connection.json. */
export function resolveDpsTarget(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): ServiceTarget {
  const file = readConnectionFile(flags.dataDir);
  const cs = flags.connectionString ?? env[DPS_ENV] ?? file?.dps?.serviceConnectionString;
  if (!cs) {
    throw new CliError('NoConnection', `no provisioning service connection string: give --connection-string, set ${DPS_ENV}, or run in a directory with ${join(flags.dataDir ?? DEFAULT_DATA_DIR, 'connection.json')} (--data-dir)`, 2);
  }
  const creds = parseServiceConnectionString(cs, 'provisioning service');
  const hp = splitHost(creds.hostName);
  // connection.json has no DPS port: `homing start` gives the DPS and every hub the same HTTPS port.
  const port = flags.port ?? hp.port ?? file?.dps?.httpsPort ?? file?.hubs?.[0]?.httpsPort ?? 443;
  const ca = readCa(flags, file);
  return { ...creds, host: hp.host, port, ...(ca !== undefined ? { ca } : {}) };
}

/** Every hub of connection.json (for commands that can span hubs), or the one the flags name. */
export function resolveHubTargets(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env, all = false): ServiceTarget[] {
  const file = readConnectionFile(flags.dataDir);
  const ca = readCa(flags, file);
  const explicit = flags.connectionString ?? env[HUB_ENV];
  const fileHubs = file?.hubs ?? [];
  const make = (cs: string): ServiceTarget => {
    const creds = parseServiceConnectionString(cs, 'hub');
    const hp = splitHost(creds.hostName);
    const entry = fileHubs.find((h) => h.hostName.toLowerCase() === hp.host.toLowerCase());
    const port = flags.port ?? hp.port ?? entry?.httpsPort ?? 443;
    return { ...creds, host: hp.host, port, ...(ca !== undefined ? { ca } : {}) };
  };
  if (explicit) return [make(explicit)];
  if (fileHubs.length === 0) {
    throw new CliError('NoConnection', `no hub connection string: give --connection-string, set ${HUB_ENV}, or run in a directory with ${join(flags.dataDir ?? DEFAULT_DATA_DIR, 'connection.json')} (--data-dir)`, 2);
  }
  if (flags.hubName) {
    const entry = fileHubs.find((h) => h.hostName.toLowerCase() === flags.hubName?.toLowerCase());
    if (!entry?.connectionString) throw argumentError(`--hub-name: no hub "${flags.hubName}" in connection.json (hubs: ${fileHubs.map((h) => h.hostName).join(', ')})`);
    return [make(entry.connectionString)];
  }
  const usable = fileHubs.filter((h) => h.connectionString);
  const first = usable[0];
  if (!first?.connectionString) throw new CliError('NoConnection', 'connection.json lists no hub connection string');
  return all ? usable.map((h) => make(h.connectionString ?? '')) : [make(first.connectionString)];
}

export function resolveHubTarget(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): ServiceTarget {
  const [t] = resolveHubTargets(flags, env, false);
  if (!t) throw new CliError('NoConnection', 'no hub');
  return t;
}

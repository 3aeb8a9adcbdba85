import { Command, InvalidArgumentError, Option } from 'commander';
import { createLogger, loadStartConfig, startHoming, type RunningHoming } from '@homing/server';
import { parsePort } from '../main.ts';

interface StartFlags {
  dataDir?: string;
  hubHosts?: string;
  dpsHost?: string;
  mqttPort?: number;
  httpsPort?: number;
  databaseUrl?: string;
  databasePoolSize?: number;
  logLevel?: string;
  registrationsPerMinute?: number;
  quotaPreset?: 'default' | 'azure';
  config?: string;
}

/** A quota value: an integer from 0 (off) to 1,000,000,000. */
export function parseQuota(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < 0 || n > 1_000_000_000) throw new InvalidArgumentError('expected an integer from 0 (off) to 1000000000');
  return n;
}

/** A PostgreSQL pool size: an integer from 1 to 1000. */
export function parsePoolSize(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < 1 || n > 1000) throw new InvalidArgumentError('expected an integer from 1 to 1000');
  return n;
}

/** Human-readable "how to connect" text. */
export function describe(run: RunningHoming): string {
  const lines: string[] = [];
  lines.push('Homing is running.');
  lines.push(`  data directory : ${run.config.dataDir}`);
  lines.push(`  store          : ${run.config.store.dialect === 'sqlite' ? `embedded SQLite (${run.config.store.sqlitePath})` : 'PostgreSQL'}`);
  lines.push(`  dev CA         : ${run.connectionInfo.caCertPath}`);
  lines.push(`                   trust it with NODE_EXTRA_CA_CERTS=${run.connectionInfo.caCertPath}`);
  const dps = run.connectionInfo.dps;
  lines.push(`  provisioning service (DPS) ${dps.deviceHost}`);
  lines.push(`    id scope            : ${dps.idScope}`);
  lines.push(`    device endpoints    : https://${dps.deviceHost}:${run.dps.httpsPort} and mqtts://${dps.deviceHost}:${run.dps.mqttPort} (provisioning host "${dps.deviceHost}")`);
  lines.push('    service connection string: see connection.json (it holds the provisioningserviceowner key)');
  for (const h of run.connectionInfo.hubs) {
    lines.push(`  hub ${h.hostName}`);
    lines.push(`    MQTT (devices)      : mqtts://${h.hostName}:${h.mqttPort}`);
    lines.push(`    HTTPS (service API) : https://${h.hostName}:${h.httpsPort}`);
    lines.push('    service connection string: see connection.json (it holds the iothubowner key)');
  }
  for (const f of run.fallbacks) {
    lines.push(`  warning: ${f}`);
    lines.push('    The official Azure service SDKs and the DPS HTTP device SDK dial port 443 only, so they cannot reach');
    lines.push('    a listener on another port without code changes. Run as root (or grant CAP_NET_BIND_SERVICE) to bind 443.');
  }
  lines.push(`  web portal     : ${run.connectionInfo.portalUrl}`);
  lines.push(`  connection info: ${run.config.dataDir}/connection.json`);
  lines.push('Stop with Ctrl-C (SIGINT) or SIGTERM.');
  return lines.join('\n');
}

export function startCommand(): Command {
  return new Command('start')
    .description('run Homing: every role in one process, on the embedded store unless a database URL is given')
    .option('--data-dir <dir>', 'data directory (store, dev TLS, connection.json)', '.homing')
    .option('--hub-hosts <list>', 'comma-separated hub host names or loopback addresses', '127.0.0.2,127.0.0.3')
    .option('--dps-host <host>', 'host name or loopback address of the provisioning service', '127.0.0.1')
    .addOption(new Option('--mqtt-port <port>', 'MQTT/TLS port of every hub and of the provisioning service').argParser(parsePort).default(8883))
    .addOption(new Option('--https-port <port>', 'HTTPS port of every hub and of the provisioning service (the official service SDKs dial 443 only)').argParser(parsePort).default(443))
    .option('--database-url <url>', 'PostgreSQL URL (default: embedded SQLite; env HOMING_DATABASE_URL)')
    .addOption(new Option('--database-pool-size <n>', 'PostgreSQL connections of this process (default 8; env HOMING_DATABASE_POOL_SIZE)').argParser(parsePoolSize))
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .addOption(new Option('--registrations-per-minute <n>', 'registration quota of the provisioning instance: register + status lookup calls per minute (0: off; stored with the instance)').argParser(parseQuota))
    .option('--config <file>', 'JSON file with dps.geoLatency (network map) and dps.customAllocation (webhook timeout, signing secret, CA) settings (docs/api/allocation.md)')
    .addOption(new Option('--quota-preset <name>', 'quota preset of the provisioning instance (azure: Azure DPS rates; stored with the instance)').choices(['default', 'azure']))
    .action(async (flags: StartFlags) => {
      const config = await loadStartConfig({
        ...(flags.dataDir ? { dataDir: flags.dataDir } : {}),
        ...(flags.hubHosts ? { hubHosts: flags.hubHosts.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
        ...(flags.dpsHost ? { dpsHost: flags.dpsHost } : {}),
        ...(flags.mqttPort !== undefined ? { mqttPort: flags.mqttPort } : {}),
        ...(flags.httpsPort !== undefined ? { httpsPort: flags.httpsPort } : {}),
        ...(flags.databaseUrl ? { databaseUrl: flags.databaseUrl } : {}),
        ...(flags.databasePoolSize !== undefined ? { databasePoolSize: flags.databasePoolSize } : {}),
        ...(flags.logLevel ? { logLevel: flags.logLevel } : {}),
        ...(flags.registrationsPerMinute !== undefined ? { registrationsPerMinute: flags.registrationsPerMinute } : {}),
        ...(flags.quotaPreset ? { quotaPreset: flags.quotaPreset } : {}),
        ...(flags.config ? { configFile: flags.config } : {}),
      });
      // Logs are JSON lines on stderr; stdout carries the human-readable connection summary.
      const logger = createLogger({ level: config.logLevel, destination: process.stderr });
      // Signal handlers go in before anything else: a signal that arrives while starting (or the instant the summary
      // is printed) must stop Homing gracefully, not kill it with the default disposition.
      let requested: NodeJS.Signals | undefined;
      let wake: (() => void) | undefined;
      const onSignal = (sig: NodeJS.Signals) => {
        if (requested) {
          process.stderr.write(`homing: ${sig} again, exiting without a clean stop\n`);
          process.exit(1);
        }
        requested = sig;
        wake?.();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const run = await startHoming(config, { logger });
        process.stdout.write(`${describe(run)}\n`);
        if (!requested) await new Promise<void>((resolve) => (wake = resolve));
        logger.info({ signal: requested }, 'stopping');
        try {
          await run.stop();
          process.stdout.write('Homing stopped.\n');
        } catch (err) {
          logger.error({ err }, 'error while stopping');
          process.exitCode = 1;
        }
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}

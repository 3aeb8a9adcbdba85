import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { readConnectionFile, resolveDpsTarget, DEFAULT_DATA_DIR } from '../lib/connection.ts';
import { argumentError, CliError } from '../lib/errors.ts';
import { seg, ServiceClient } from '../lib/http.ts';
import { printJson, writeErr, writeOut } from '../lib/output.ts';
import { startSimulation, type SimulatedCredential, type SimulationStats } from '../simulator/fleet.ts';

interface SimulateFlags {
  count: number;
  idPrefix: string;
  startIndex: number;
  concurrency: number;
  duration: number;
  telemetryInterval: number;
  groupKey?: string;
  enrollmentGroup?: string;
  deviceCaCert?: string;
  deviceCaKey?: string;
  idScope?: string;
  provisioningHost?: string;
  provisioningPort?: number;
  protocol: 'https' | 'mqtt';
  caCert?: string;
  dataDir: string;
  connectionString?: string;
  progressInterval: number;
  json?: boolean;
}

function intOption(option: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || n < min || n > max) throw argumentError(`${option}: expected an integer from ${min} to ${max}, got "${v}"`);
    return n;
  };
}

function secondsOption(option: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw argumentError(`${option}: expected a number of seconds ≥ 0, got "${v}"`);
    return n;
  };
}

function readFile(path: string, option: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw argumentError(`${option}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

export function progressLine(s: SimulationStats): string {
  const hubs = Object.entries(s.hubs)
    .map(([h, n]) => `${h}=${n}`)
    .join(' ');
  return `[${(s.elapsedMs / 1000).toFixed(0)}s] provisioned ${s.provisioned}/${s.total}, connected ${s.connected}, telemetry ${s.telemetrySent}, reprovisioned ${s.reprovisioned} (moved ${s.moved}), retries ${s.retries} (429: ${s.throttled}), errors ${s.errors}${hubs ? ` | ${hubs}` : ''}${s.everConnected < s.total && s.lastRetry ? ` | last retry: ${s.lastRetry}` : ''}${s.lastError ? ` | last error: ${s.lastError}` : ''}`;
}

/** `homing simulate`: N devices in this process (see simulator/fleet.ts). */
export function simulateCommand(): Command {
  return new Command('simulate')
    .description('simulate a fleet of devices: provision (group key or X.509), connect, report twin properties, answer the reprovision method, send telemetry')
    .addOption(new Option('--count <n>', 'number of devices').argParser(intOption('--count', 1, 1_000_000)).default(10))
    .option('--id-prefix <prefix>', 'registration ids are <prefix><index>', 'sim-')
    .addOption(new Option('--start-index <n>', 'first index').argParser(intOption('--start-index', 0, 1_000_000_000)).default(0))
    .addOption(new Option('--concurrency <n>', 'devices provisioning/connecting at once').argParser(intOption('--concurrency', 1, 10_000)).default(20))
    .addOption(new Option('--duration <s>', 'stop after this many seconds (0: until Ctrl-C)').argParser(secondsOption('--duration')).default(0))
    .addOption(new Option('--telemetry-interval <s>', 'telemetry period per device in seconds (0: none)').argParser(secondsOption('--telemetry-interval')).default(10))
    .option('--group-key <base64>', 'enrollment-group symmetric key (each device derives its key)')
    .option('--enrollment-group <id>', 'read the group key of this enrollment group through the service API (needs the service connection)')
    .option('--device-ca-cert <pem>', 'X.509 devices: CA certificate that issues the device certificates (verified CA or group signing certificate)')
    .option('--device-ca-key <pem>', 'X.509 devices: private key of --device-ca-cert')
    .option('--id-scope <scope>', 'ID scope (default: connection.json)')
    .option('--provisioning-host <host>', 'provisioning device endpoint host (default: connection.json)')
    .addOption(new Option('--provisioning-port <port>', 'provisioning port (default: connection.json, else 443 / 8883)').argParser(intOption('--provisioning-port', 1, 65535)))
    .addOption(new Option('--protocol <protocol>', 'provisioning protocol').choices(['https', 'mqtt']).default('https'))
    .option('--ca-cert <path>', 'PEM of the CA that signed the servers\u2019 certificates (default: connection.json)')
    .option('--data-dir <dir>', 'data directory of `homing start` (connection.json)', DEFAULT_DATA_DIR)
    .option('--connection-string <cs>', 'provisioning service connection string (only for --enrollment-group)')
    .addOption(new Option('--progress-interval <s>', 'progress line period in seconds on stderr (0: none)').argParser(secondsOption('--progress-interval')).default(5))
    .option('--json', 'print a final JSON summary on stdout')
    .action(async (f: SimulateFlags) => {
      const file = readConnectionFile(f.dataDir);
      const modes = [f.groupKey !== undefined, f.enrollmentGroup !== undefined, f.deviceCaCert !== undefined || f.deviceCaKey !== undefined].filter(Boolean).length;
      if (modes !== 1) throw argumentError('give one of --group-key, --enrollment-group, or --device-ca-cert with --device-ca-key');
      let credential: SimulatedCredential;
      if (f.groupKey !== undefined) {
        if (!/^[A-Za-z0-9+/]+={0,2}$/.test(f.groupKey) || Buffer.from(f.groupKey, 'base64').length < 16) throw argumentError('--group-key is not a base64 key of 16 bytes or more');
        credential = { type: 'groupKey', groupKey: f.groupKey };
      } else if (f.enrollmentGroup !== undefined) {
        const client = new ServiceClient(resolveDpsTarget({ ...f, ...(f.connectionString ? { connectionString: f.connectionString } : {}) }), 'dps');
        try {
          const res = await client.call<{ symmetricKey?: { primaryKey?: string } }>('POST', `/enrollmentGroups/${seg(f.enrollmentGroup)}/attestationmechanism`);
          const key = res.body.symmetricKey?.primaryKey;
          if (!key) throw new CliError('NotSymmetricKey', `enrollment group ${f.enrollmentGroup} does not use symmetric keys (use --device-ca-cert/--device-ca-key)`);
          credential = { type: 'groupKey', groupKey: key };
        } finally {
          client.close();
        }
      } else {
        if (!f.deviceCaCert || !f.deviceCaKey) throw argumentError('X.509 devices need both --device-ca-cert and --device-ca-key');
        credential = { type: 'x509', caCertPem: readFile(f.deviceCaCert, '--device-ca-cert'), caKeyPem: readFile(f.deviceCaKey, '--device-ca-key') };
        const { loadIssuer } = await import('../lib/x509.ts');
        await loadIssuer(credential.caCertPem, credential.caKeyPem); // fail fast on a bad pair
      }
      const idScope = f.idScope ?? file?.dps?.idScope;
      const host = f.provisioningHost ?? file?.dps?.deviceHost;
      if (!idScope || !host) throw argumentError('give --id-scope and --provisioning-host (or run where connection.json is, --data-dir)');
      const defaultPort = f.protocol === 'mqtt' ? (file?.dps?.mqttPort ?? file?.hubs?.[0]?.mqttPort) : (file?.dps?.httpsPort ?? file?.hubs?.[0]?.httpsPort);
      const port = f.provisioningPort ?? defaultPort;
      const lookupPort = file?.dps?.httpsPort ?? file?.hubs?.[0]?.httpsPort;
      const caPath = f.caCert ?? file?.caCertPath;
      // A CA passed per connection gives each TLS connection its own certificate store (a few KiB per device, see
      // bench/README.md); when the process already trusts it through NODE_EXTRA_CA_CERTS, the shared store is used.
      const extra = process.env.NODE_EXTRA_CA_CERTS;
      const caTrusted = caPath !== undefined && extra !== undefined && resolve(extra) === resolve(caPath);
      const ca = caPath && !caTrusted ? readFile(caPath, '--ca-cert') : undefined;
      const hubPorts: Record<string, number> = {};
      for (const h of file?.hubs ?? []) if (h.mqttPort !== undefined) hubPorts[h.hostName.toLowerCase()] = h.mqttPort;

      const sim = startSimulation({
        count: f.count,
        idPrefix: f.idPrefix,
        startIndex: f.startIndex,
        concurrency: f.concurrency,
        credential,
        provisioning: { host, idScope, protocol: f.protocol, ...(port !== undefined ? { port } : {}), ...(f.protocol === 'mqtt' && lookupPort !== undefined ? { lookupPort } : {}) },
        ...(ca !== undefined ? { ca } : {}),
        hubPorts,
        telemetryIntervalMs: Math.round(f.telemetryInterval * 1000),
      });
      writeErr(`simulating ${f.count} devices (${f.idPrefix}${f.startIndex}…) against ${host}${port ? `:${port}` : ''}, ID scope ${idScope}; Ctrl-C to stop\n`);
      const progress = f.progressInterval > 0 ? setInterval(() => writeErr(`${progressLine(sim.stats())}\n`), f.progressInterval * 1000) : undefined;
      let wake: (() => void) | undefined;
      const done = new Promise<void>((r) => (wake = r));
      const onSignal = (): void => wake?.();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const timer = f.duration > 0 ? setTimeout(() => wake?.(), f.duration * 1000) : undefined;
      try {
        await done;
      } finally {
        if (timer) clearTimeout(timer);
        if (progress) clearInterval(progress);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        const before = sim.stats();
        await sim.stop();
        if (f.json) printJson({ ...before, connectedAtEnd: before.connected });
        else writeOut(`${progressLine(before)}\nstopped.`);
      }
    });
}

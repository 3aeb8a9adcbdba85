/**
 * Memory per simulated connected device in the `homing simulate` process (packages/cli/src/simulator/fleet.ts on
 * @homing/device). The server (`homing start`, two hubs) runs in one child, the simulator in another (with
 * --expose-gc); N group symmetric-key devices provision over HTTPS, connect over MQTT/TLS, report twin properties and
 * stay connected. The simulator's RSS and heap after GC, before and after, divided by N. Target: < 20 KiB per device.
 *
 *   node --conditions=homing-source --import tsx bench/simulator-memory.ts [--count 2000] [--warmup 100] [--concurrency 50]
 *
 * The last stdout line is one JSON object with the figures.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ServiceClient } from '../packages/cli/src/lib/http.ts';
import { resolveDpsTarget } from '../packages/cli/src/lib/connection.ts';
import { flag, round } from './lib/mqtt-stats.ts';

const TARGET_KIB = 20;
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const count = Math.floor(flag('count', 2000));
const warmup = Math.floor(flag('warmup', 100));
const concurrency = Math.floor(flag('concurrency', 50));
const budgetMs = flag('budget-seconds', 300) * 1000;
/** Trust the dev CA through NODE_EXTRA_CA_CERTS (one shared store) instead of passing it to every connection. */
const systemCa = process.argv.includes('--system-ca');

function loopback(): string {
  const b = randomBytes(3);
  return `127.${10 + ((b[0] ?? 0) % 240)}.${1 + ((b[1] ?? 0) % 254)}.${1 + ((b[2] ?? 0) % 254)}`;
}

function node(args: string[], extraFlags: string[] = [], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, [...extraFlags, '--conditions=homing-source', '--import', 'tsx', ...args], {
    cwd: ROOT,
    env: { ...process.env, HOMING_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

async function startServer(dataDir: string): Promise<ChildProcess> {
  const child = node([join(ROOT, 'packages/cli/src/run.ts'), 'start', '--data-dir', dataDir, '--hub-hosts', `${loopback()},${loopback()}`, '--dps-host', loopback()]);
  let out = '';
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server not ready:\n${out}\n${err}`)), 120_000);
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('Homing is running.')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${err}`));
    });
  });
  return child;
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'homing-simmem-'));
  const server = await startServer(dataDir);
  try {
    const conn = JSON.parse(readFileSync(join(dataDir, 'connection.json'), 'utf8')) as {
      caCertPath: string;
      dps: { idScope: string; deviceHost: string };
      hubs: { hostName: string; mqttPort: number; httpsPort: number }[];
    };
    const groupKey = randomBytes(32).toString('base64');
    const client = new ServiceClient(resolveDpsTarget({ dataDir }), 'dps');
    try {
      await client.call('PUT', '/enrollmentGroups/simmem', { body: { enrollmentGroupId: 'simmem', attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: groupKey } } } });
    } finally {
      client.close();
    }
    console.log(`server: homing start with 2 hubs (${conn.hubs.map((h) => h.hostName).join(', ')}) in its own process; simulator: ${count} devices (warm-up ${warmup}), concurrency ${concurrency}`);
    const input = {
      count,
      warmup,
      concurrency,
      groupKey,
      idScope: conn.dps.idScope,
      dpsHost: conn.dps.deviceHost,
      dpsPort: conn.hubs[0]?.httpsPort ?? 443,
      hubPorts: Object.fromEntries(conn.hubs.map((h) => [h.hostName, h.mqttPort])),
      ca: readFileSync(conn.caCertPath, 'utf8'),
      quietMs: Math.floor(flag('quiet-seconds', 35) * 1000),
      budgetMs,
      systemCa,
    };
    const runChild = async <T>(mode: 'sim' | 'floor'): Promise<T> => {
      const child = node([join(ROOT, 'bench/lib/simulator-child.ts'), JSON.stringify({ ...input, mode })], ['--expose-gc'], systemCa ? { NODE_EXTRA_CA_CERTS: conn.caCertPath } : {});
      let out = '';
      let err = '';
      child.stdout?.on('data', (c: Buffer) => {
        const text = c.toString();
        out += text;
        for (const line of text.split('\n')) if (line.startsWith('  ')) console.log(line);
      });
      child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      const last = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      if (code !== 0 || !last) throw new Error(`simulator child (${mode}) failed (${code}):\n${err}`);
      return JSON.parse(last) as T;
    };
    // The floor first, in its own process: RSS freed by one phase would hide the next phase's growth.
    const floor = await runChild<{ before: NodeJS.MemoryUsage; after: NodeJS.MemoryUsage; open: number }>('floor');
    const r = await runChild<{
      before: NodeJS.MemoryUsage;
      after: NodeJS.MemoryUsage;
      connectS: number;
      stats: { connected: number; reportedSent: number; throttled: number; errors: number; hubs: Record<string, number> };
      fds: number;
    }>('sim');
    const n = r.stats.connected;
    const kib = (a: number, b: number): number => (b - a) / n / 1024;
    const rssKiB = kib(r.before.rss, r.after.rss);
    const heapKiB = kib(r.before.heapUsed, r.after.heapUsed);
    const externalKiB = kib(r.before.external, r.after.external);
    const ratio = TARGET_KIB / rssKiB;
    const floorKiB = (floor.after.rss - floor.before.rss) / floor.open / 1024;
    const floorHeapKiB = (floor.after.heapUsed - floor.before.heapUsed) / floor.open / 1024;
    console.log(`connected ${n} devices in ${round(r.connectS, 1)} s (${round(n / r.connectS, 0)}/s), hubs ${JSON.stringify(r.stats.hubs)}, reported patches ${r.stats.reportedSent}, 429s ${r.stats.throttled}, errors ${r.stats.errors}`);
    console.log(`simulator RSS after GC: ${round(r.before.rss / 2 ** 20)} MiB -> ${round(r.after.rss / 2 ** 20)} MiB`);
    console.log(`per connected device: RSS ${round(rssKiB)} KiB (JS heap ${round(heapKiB)} KiB, external ${round(externalKiB)} KiB)`);
    console.log(`open file descriptors in the simulator at the measurement: ${r.fds} (${round(r.fds / n, 2)} per device)`);
    console.log(`floor: a bare idle TLS connection from a simulator-like process (no MQTT, no device): RSS ${round(floorKiB)} KiB (JS heap ${round(floorHeapKiB)} KiB) per connection, ${floor.open} open`);
    console.log(`target: ${TARGET_KIB} KiB per device; ratio target/measured = ${round(ratio, 2)} (${ratio >= 1 ? 'within' : 'over'} the target); the device costs ${round(rssKiB - floorKiB)} KiB above the TLS floor`);
    console.log(
      JSON.stringify({
        bench: 'simulator-memory',
        devices: n,
        connectSeconds: round(r.connectS, 1),
        rssKiBPerDevice: round(rssKiB),
        heapKiBPerDevice: round(heapKiB),
        externalKiBPerDevice: round(externalKiB),
        targetKiB: TARGET_KIB,
        ratio: round(ratio, 2),
        tlsFloorKiBPerConnection: round(floorKiB),
        aboveFloorKiB: round(rssKiB - floorKiB),
        fdsPerDevice: round(r.fds / n, 2),
        systemCa,
        withinTarget: ratio >= 1,
        throttled: r.stats.throttled,
        errors: r.stats.errors,
      }),
    );
  } finally {
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();

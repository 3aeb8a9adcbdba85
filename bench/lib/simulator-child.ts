/**
 * The simulator side of bench/simulator-memory.ts, in its own process (run with --expose-gc): warms up with a few
 * devices, takes a baseline after GC, connects N devices with `startSimulation`, waits until all are connected and
 * idle, and measures again after GC. Prints progress lines and ends with one JSON line on stdout.
 *
 * Input: one JSON argument {count, warmup, concurrency, groupKey, idScope, dpsHost, dpsPort, hubPorts, ca, quietMs,
 * budgetMs, systemCa, mode}.
 */
import { readdirSync } from 'node:fs';
import { connect, type TLSSocket } from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import { startSimulation, type SimulationOptions } from '../../packages/cli/src/simulator/fleet.ts';

interface Input {
  count: number;
  warmup: number;
  concurrency: number;
  groupKey: string;
  idScope: string;
  dpsHost: string;
  dpsPort: number;
  hubPorts: Record<string, number>;
  ca: string;
  /** Idle time after the last connection before measuring (lets reported-property round trips finish). */
  quietMs: number;
  budgetMs: number;
  systemCa: boolean;
  /** `floor`: only bare TLS connections (the floor under any device), in a process of its own. */
  mode: 'sim' | 'floor';
}

const input = JSON.parse(process.argv[2] ?? '{}') as Input;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

async function settle(): Promise<NodeJS.MemoryUsage> {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await delay(200);
  }
  return process.memoryUsage();
}

function options(prefix: string, count: number): SimulationOptions {
  return {
    count,
    idPrefix: prefix,
    concurrency: input.concurrency,
    credential: { type: 'groupKey', groupKey: input.groupKey },
    provisioning: { host: input.dpsHost, port: input.dpsPort, idScope: input.idScope },
    // systemCa: the CA is trusted through NODE_EXTRA_CA_CERTS (the shared root store) instead of per connection.
    ...(input.systemCa ? {} : { ca: input.ca }),
    hubPorts: input.hubPorts,
    // Idle devices: the measure is the footprint of a connected device, not of traffic in flight.
    telemetryIntervalMs: 0,
  };
}

async function waitAll(sim: ReturnType<typeof startSimulation>, label: string): Promise<void> {
  const progress = setInterval(() => {
    const s = sim.stats();
    process.stdout.write(`  ${label}: provisioned ${s.provisioned}/${s.total}, connected ${s.connected}, retries ${s.retries} (429: ${s.throttled}), errors ${s.errors}${s.retries > 0 && s.provisioned === 0 ? ` (last: ${s.lastRetry ?? s.lastError ?? "?"})` : ""}\n`);
  }, 5000);
  const timeout = delay(input.budgetMs).then(() => {
    throw new Error(`${label}: not all devices connected within ${input.budgetMs / 1000} s: ${JSON.stringify(sim.stats())}`);
  });
  try {
    await Promise.race([sim.allConnected(), timeout]);
  } finally {
    clearInterval(progress);
  }
}

async function main(): Promise<void> {
  // Warm-up: load every module, JIT the hot paths, then drop the devices.
  const warm = startSimulation(options('warm-', input.warmup));
  await waitAll(warm, 'warm-up');
  await warm.stop();
  const before = await settle();
  const t0 = performance.now();
  const sim = startSimulation(options('mem-', input.count));
  await waitAll(sim, 'devices');
  const connectS = (performance.now() - t0) / 1000;
  await delay(input.quietMs);
  const after = await settle();
  const stats = sim.stats();
  const fds = readdirSync('/proc/self/fd').length;
  await sim.stop();
  process.stdout.write(`${JSON.stringify({ before, after, connectS, stats, fds })}\n`);
}

/**
 * The floor under any device: N bare TLS connections from a process of its own, opened the way the device library
 * opens them (a `ca` per connection unless the system store trusts it), with no MQTT on top.
 */
async function tlsFloor(): Promise<{ before: NodeJS.MemoryUsage; after: NodeJS.MemoryUsage; open: number }> {
  // The DPS HTTPS listener keeps an idle TLS connection open (the hubs close one that sends no CONNECT).
  const [host, port] = [input.dpsHost, input.dpsPort];
  const sockets: TLSSocket[] = [];
  let next = 0;
  let limit = input.warmup;
  const worker = async (): Promise<void> => {
    while (next < limit) {
      next++;
      await new Promise<void>((resolve, reject) => {
        const sock = connect({ host, port, ...(input.systemCa ? {} : { ca: input.ca }) }, () => resolve());
        sock.once('error', reject);
        sockets.push(sock);
      });
    }
  };
  // Warm-up connections (loaded code, TLS session machinery), closed before the baseline.
  await Promise.all(Array.from({ length: input.concurrency }, () => worker()));
  for (const x of sockets.splice(0)) x.destroy();
  const before = await settle();
  next = 0;
  limit = input.count;
  await Promise.all(Array.from({ length: input.concurrency }, () => worker()));
  const after = await settle();
  const open = sockets.filter((x) => !x.destroyed).length;
  for (const x of sockets) x.destroy();
  return { before, after, open };
}

(input.mode === 'floor' ? tlsFloor().then((floor) => process.stdout.write(`${JSON.stringify(floor)}\n`)) : main()).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);

/**
 * Idle memory per hub MQTT connection: N SAS devices connect over TLS (clean=false, as the Azure SDK does) and
 * stay idle; the server's RSS after a forced GC, before and after, divided by N. Target < 30 KiB per connection
 * (an idle TLS connection alone costs ~33 KB in aedes on this machine, see perf-limits.md).
 *
 *   node --conditions=homing-source --import tsx bench/hub-mqtt-memory.ts [--devices 20000] [--warmup 2000] [--bare]
 */
import { benchPki } from './lib/mqtt-pki.ts';
import { childFdLimit, cpuCount, startChild, type BenchChild } from './lib/mqtt-proc.ts';
import { flag, round } from './lib/mqtt-stats.ts';

const TARGET_KIB = 30;
const requested = Math.floor(flag('devices', 20_000));
/** fds the server needs besides one per connection (listener, SQLite, stdio, IPC, epoll...). */
const FD_MARGIN = 256;
const nofile = childFdLimit(requested + FD_MARGIN);
const devices = Math.min(requested, nofile - FD_MARGIN);
const loaders = devices >= 4000 ? 2 : 1;
const timeBudgetMs = flag('budget-seconds', 300) * 1000;
/** `--bare` measures the bare TLS MQTT listener instead (the TLS + codec floor), for comparison. */
const mode = process.argv.includes('--bare') ? 'bare' : 'hub';
const warmup = Math.floor(flag('warmup', Math.min(devices, 2000)));

interface Stats {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  connections: number;
  gcAvailable: number;
}

async function main(): Promise<void> {
  const pki = await benchPki();
  const cores = cpuCount();
  const server = startChild('./mqtt-server-child.ts', { label: 'server', cpus: '0', nofile, nodeFlags: ['--expose-gc'] });
  const loads: BenchChild[] = [];
  try {
    const started = await server.request<{ port: number; setupMs: number }>({ cmd: 'start', mode, devices, cert: pki.cert, key: pki.key, requestCert: true }, 600_000);
    if (devices < requested) {
      console.log(`note: ${requested} connections are infeasible here: the hard RLIMIT_NOFILE is ${nofile} and cannot be raised (no CAP_SYS_RESOURCE in this container), and the server needs one fd per connection plus ~${FD_MARGIN}; measuring N = ${devices}`);
    }
    console.log(`server: ${devices} devices created in ${round(started.setupMs / 1000, 1)} s, listening on 127.0.0.1:${started.port}, pinned to CPU ${server.pinned ?? '(not pinned)'}; ${cores} CPUs, fd limit ${nofile}`);
    // Source addresses spread over 127.0.0.1..8 so ephemeral ports never run short.
    const localAddresses = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`);
    const per = Math.ceil(devices / loaders);
    for (let l = 0; l < loaders; l++) loads.push(startChild('./mqtt-load-child.ts', { label: `load${l}`, cpus: cores > 1 ? String(cores - 1) : undefined, nofile }));
    // Warm-up churn (connect + disconnect) so JIT code, allocator free lists and caches exist before the baseline:
    // the baseline is then a server that has already served, not a fresh process.
    const warm = await (loads[0] as BenchChild).request<{ completed: number }>({ cmd: 'connectLoop', port: started.port, ca: pki.ca, concurrency: 16, durationMs: 60_000, maxConnects: warmup, devices }, 120_000);
    const before = await server.request<Stats>({ cmd: 'stats', gc: true });
    if (!before.gcAvailable) throw new Error('the server child has no gc(); --expose-gc did not apply');
    console.log(`warm-up: ${warm.completed} connect/disconnect cycles; baseline RSS ${round(before.rss / 2 ** 20)} MiB after GC`);
    for (const [l, c] of loads.entries()) c.onEvent((m) => {
      if (m.event === 'progress') process.stdout.write(`  load${l}: ${String(m.opened)} open, ${String(m.failed)} failed\n`);
    });
    const t0 = performance.now();
    const results = await Promise.all(
      loads.map((c, l) =>
        c.request<{ opened: number; failed: number; elapsedMs: number; open: number }>(
          { cmd: 'openIdle', port: started.port, ca: pki.ca, from: l * per, to: Math.min(devices, (l + 1) * per), concurrency: 48, localAddresses },
          timeBudgetMs,
        ),
      ),
    );
    const openMs = performance.now() - t0;
    const opened = results.reduce((a, r) => a + r.opened, 0);
    const failed = results.reduce((a, r) => a + r.failed, 0);
    const after = await server.request<Stats>({ cmd: 'stats', gc: true });
    const n = after.connections;
    const perConnKiB = (after.rss - before.rss) / n / 1024;
    const heapPerConnKiB = (after.heapUsed - before.heapUsed) / n / 1024;
    const externalPerConnKiB = (after.external - before.external) / n / 1024;
    console.log(`opened ${opened} idle TLS MQTT connections (${failed} failed) in ${round(openMs / 1000, 1)} s; server holds ${n}`);
    console.log(`server RSS ${round(before.rss / 2 ** 20)} MiB -> ${round(after.rss / 2 ** 20)} MiB after GC`);
    console.log(`per connection: RSS ${round(perConnKiB, 2)} KiB (JS heap ${round(heapPerConnKiB, 2)} KiB, external ${round(externalPerConnKiB, 2)} KiB)`);
    console.log(`ceiling: < ${TARGET_KIB} KiB per connection -> ratio ${round(perConnKiB / TARGET_KIB, 2)} (< 1 meets it)`);
    if (n < devices) console.log(`note: only ${n} of ${devices} connections were open at the end (see failures above)`);
    await Promise.all(loads.map((c) => c.request({ cmd: 'closeAll' })));
    console.log(
      JSON.stringify({
        bench: 'hub-mqtt-memory',
        mode,
        devicesRequested: requested,
        devices,
        connections: n,
        failed,
        openSeconds: round(openMs / 1000, 1),
        rssBeforeMiB: round(before.rss / 2 ** 20),
        rssAfterMiB: round(after.rss / 2 ** 20),
        rssPerConnectionKiB: round(perConnKiB, 2),
        heapPerConnectionKiB: round(heapPerConnKiB, 2),
        ceilingKiB: TARGET_KIB,
        ratio: round(perConnKiB / TARGET_KIB, 3),
      }),
    );
  } finally {
    await server.request({ cmd: 'stop' }, 30_000).catch(() => undefined);
    await Promise.all([server.stop(), ...loads.map((c) => c.stop())]);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

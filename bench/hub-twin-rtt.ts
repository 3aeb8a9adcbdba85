/**
 * Reported-properties round trips: D connected devices (default 1,000) each keep exactly one
 * `$iothub/twin/PATCH/properties/reported/?$rid=..` in flight for a bounded time (default 10 s) and wait for the
 * `$iothub/twin/res/204/...` answer. Reports round trips/s, p50/p99 latency and server CPU µs per round trip
 * (process.cpuUsage() deltas in the pinned server process), next to the ceiling measured in the same run: a bare
 * MQTT/TLS listener that echoes each patch with a 204 at once (same TLS, mqtt-packet, no store, no JSON): what
 * TLS + MQTT framing alone allow on one core. Ratio = hub per-core ceiling / bare per-core ceiling.
 *
 *   node --conditions=homing-source --import tsx bench/hub-twin-rtt.ts [--devices 1000] [--seconds 10]
 */
import { benchPki } from './lib/mqtt-pki.ts';
import { cpuCount, startChild } from './lib/mqtt-proc.ts';
import { cpuMicros, flag, round, type CpuSnapshot } from './lib/mqtt-stats.ts';

const devices = Math.floor(flag('devices', 1000));
const seconds = flag('seconds', 10);
const MAX_ROUND_TRIPS = 5_000_000;

interface Run {
  roundTrips: number;
  errors: number;
  elapsedMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

async function measure(mode: 'hub' | 'bare', pki: { ca: string; cert: string; key: string }, loadCpu: string | undefined): Promise<Run & { cpuUs: number; busy: number }> {
  // --profile writes a V8 CPU profile of the server to ./artifacts/ (for finding where the time goes).
  const nodeFlags = process.argv.includes('--profile') && mode === 'hub' ? ['--cpu-prof', '--cpu-prof-dir=artifacts'] : [];
  const server = startChild('./mqtt-server-child.ts', { label: `${mode} server`, cpus: '0', nofile: devices + 1024, nodeFlags });
  const load = startChild('./mqtt-load-child.ts', { label: 'load', cpus: loadCpu, nofile: devices + 1024 });
  try {
    const s = await server.request<{ port: number }>({ cmd: 'start', mode, devices, cert: pki.cert, key: pki.key, requestCert: true }, 600_000);
    const c = await load.request<{ connected: number; failed: number }>({ cmd: 'twinConnect', port: s.port, ca: pki.ca, devices, concurrency: 32 }, 600_000);
    if (c.connected !== devices) throw new Error(`${mode}: only ${c.connected} of ${devices} devices connected (${c.failed} refused)`);
    // Warm-up, then the measured run.
    await load.request({ cmd: 'twinRun', durationMs: 1000, maxRoundTrips: MAX_ROUND_TRIPS });
    const a = await server.request<CpuSnapshot>({ cmd: 'stats' });
    const r = await load.request<Run>({ cmd: 'twinRun', durationMs: seconds * 1000, maxRoundTrips: MAX_ROUND_TRIPS }, seconds * 1000 + 60_000);
    const b = await server.request<CpuSnapshot>({ cmd: 'stats' });
    const cpu = cpuMicros(a, b);
    return { ...r, cpuUs: cpu / Math.max(1, r.roundTrips), busy: cpu / 1000 / (b.at - a.at) };
  } finally {
    await load.request({ cmd: 'closeAll' }).catch(() => undefined);
    await server.request({ cmd: 'stop' }, 30_000).catch(() => undefined);
    await Promise.all([server.stop(), load.stop()]);
  }
}

async function main(): Promise<void> {
  const pki = await benchPki();
  const cores = cpuCount();
  const loadCpu = cores > 1 ? String(cores - 1) : undefined;
  console.log(`${cores} CPUs; server pinned to CPU 0, load on CPU ${loadCpu ?? '(not pinned)'}; ${devices} devices, one reported patch in flight each, ${seconds} s`);
  const hub = await measure('hub', pki, loadCpu);
  const bare = await measure('bare', pki, loadCpu);
  const rate = hub.roundTrips / (hub.elapsedMs / 1000);
  const bareRate = bare.roundTrips / (bare.elapsedMs / 1000);
  console.log(`hub:  ${round(rate)} round trips/s, p50 ${round(hub.p50Ms, 2)} ms, p90 ${round(hub.p90Ms, 2)} ms, p99 ${round(hub.p99Ms, 2)} ms, max ${round(hub.maxMs)} ms, ${round(hub.cpuUs)} µs server CPU each (server core ${round(hub.busy * 100)} % busy), ${hub.errors} errors`);
  console.log(`bare: ${round(bareRate)} round trips/s, p50 ${round(bare.p50Ms, 2)} ms, p99 ${round(bare.p99Ms, 2)} ms, ${round(bare.cpuUs)} µs server CPU each (server core ${round(bare.busy * 100)} % busy)`);
  const ceiling = 1e6 / hub.cpuUs;
  const bareCeiling = 1e6 / bare.cpuUs;
  const ratio = ceiling / bareCeiling;
  console.log(`per-core ceilings: hub ${round(ceiling)} /s, bare ${round(bareCeiling)} /s -> ratio ${round(ratio, 3)}; the difference, ${round(hub.cpuUs - bare.cpuUs)} µs per round trip, is the twin use case (JSON, validation, store read + compare-and-set write) and the hub realm`);
  console.log(
    JSON.stringify({
      bench: 'hub-twin-rtt',
      devices,
      seconds,
      roundTripsPerSec: round(rate),
      p50Ms: round(hub.p50Ms, 2),
      p99Ms: round(hub.p99Ms, 2),
      cpuUsPerRoundTrip: round(hub.cpuUs),
      serverBusy: round(hub.busy, 3),
      errors: hub.errors,
      hubCeilingPerSec: round(ceiling),
      bareRoundTripsPerSec: round(bareRate),
      bareCpuUsPerRoundTrip: round(bare.cpuUs),
      bareCeilingPerSec: round(bareCeiling),
      ratio: round(ratio, 3),
    }),
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

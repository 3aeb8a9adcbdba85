/**
 * Connect rate of the hub MQTT endpoint: new TLS connection + CONNECT with a valid SAS + CONNACK + DISCONNECT,
 * cycling over N devices, against a bare TLS MQTT listener (same TLS settings, mqtt-packet, CONNACK 0 for every
 * CONNECT, no work) measured in the same run. Servers run pinned to CPU 0, the load to the last CPU; server CPU
 * comes from process.cpuUsage() deltas in the server process. Rounds alternate bare/hub back to back; the ratios
 * are the medians of the per-round ratios (robust against drifting background load), rates and costs are medians.
 * Target: hub rate / bare rate >= 0.7.
 *
 *   node --conditions=homing-source --import tsx bench/hub-mqtt-connect.ts [--devices 2000] [--seconds 4] [--rounds 5] [--concurrency 16] [--profile]
 */
import { benchPki } from './lib/mqtt-pki.ts';
import { cpuCount, startChild, type BenchChild } from './lib/mqtt-proc.ts';
import { cpuMicros, flag, round, type CpuSnapshot } from './lib/mqtt-stats.ts';

const TARGET_RATIO = 0.7;
const devices = Math.floor(flag('devices', 2000));
const seconds = flag('seconds', 4);
const rounds = Math.floor(flag('rounds', 5));
const concurrency = Math.floor(flag('concurrency', 16));
const MAX_CONNECTS_PER_PHASE = 200_000;

interface Phase {
  rate: number;
  cpuPerConnectUs: number;
  serverBusy: number;
  completed: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function phase(server: BenchChild, load: BenchChild, port: number, ca: string, durationMs: number): Promise<Phase> {
  const a = await server.request<CpuSnapshot>({ cmd: 'stats' });
  const r = await load.request<{ completed: number; errors: number; refused: number; elapsedMs: number; p50Ms: number; p99Ms: number }>(
    { cmd: 'connectLoop', port, ca, concurrency, durationMs, maxConnects: MAX_CONNECTS_PER_PHASE, devices },
    durationMs + 60_000,
  );
  const b = await server.request<CpuSnapshot>({ cmd: 'stats' });
  if (r.refused > 0) throw new Error(`${r.refused} CONNECTs were refused`);
  const cpu = cpuMicros(a, b);
  return {
    rate: r.completed / (r.elapsedMs / 1000),
    cpuPerConnectUs: cpu / Math.max(1, r.completed),
    serverBusy: cpu / 1000 / (b.at - a.at),
    completed: r.completed,
    errors: r.errors,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
  };
}

async function main(): Promise<void> {
  const pki = await benchPki();
  const cores = cpuCount();
  const loadCpu = cores > 1 ? String(cores - 1) : undefined;
  // --profile writes a V8 CPU profile of the hub server to ./artifacts/.
  const nodeFlags = process.argv.includes('--profile') ? ['--cpu-prof', '--cpu-prof-dir=artifacts'] : [];
  const hub = startChild('./mqtt-server-child.ts', { label: 'hub', cpus: '0', nofile: 65536, nodeFlags });
  const bare = startChild('./mqtt-server-child.ts', { label: 'bare', cpus: '0', nofile: 65536 });
  const load = startChild('./mqtt-load-child.ts', { label: 'load', cpus: loadCpu, nofile: 65536 });
  try {
    const [h, b] = await Promise.all([
      hub.request<{ port: number; setupMs: number }>({ cmd: 'start', mode: 'hub', devices, cert: pki.cert, key: pki.key, requestCert: true }, 600_000),
      bare.request<{ port: number }>({ cmd: 'start', mode: 'bare', devices: 0, cert: pki.cert, key: pki.key, requestCert: true }),
    ]);
    console.log(`${cores} CPUs; servers pinned to CPU ${hub.pinned ?? '(not pinned)'}, load on CPU ${load.pinned ?? '(not pinned)'}; ${devices} devices; ${concurrency} concurrent loops; TLS 1.3, ECDSA P-256, requestCert on`);
    // Warm-up (JIT, SQLite cache) on both.
    await phase(hub, load, h.port, pki.ca, 1000);
    await phase(bare, load, b.port, pki.ca, 1000);
    const hubPhases: Phase[] = [];
    const barePhases: Phase[] = [];
    for (let i = 0; i < rounds; i++) {
      const pb = await phase(bare, load, b.port, pki.ca, seconds * 1000);
      const ph = await phase(hub, load, h.port, pki.ca, seconds * 1000);
      barePhases.push(pb);
      hubPhases.push(ph);
      const fmt = (p: Phase) => `${round(p.rate)} connects/s, ${round(p.cpuPerConnectUs)} µs server CPU each, server core ${round(p.serverBusy * 100)} % busy, p50 ${round(p.p50Ms)} ms, p99 ${round(p.p99Ms)} ms, ${p.errors} errors`;
      console.log(`round ${i + 1}: bare ${fmt(pb)}`);
      console.log(`round ${i + 1}: hub  ${fmt(ph)}`);
    }
    const hubRate = median(hubPhases.map((p) => p.rate));
    const bareRate = median(barePhases.map((p) => p.rate));
    const hubCpu = median(hubPhases.map((p) => p.cpuPerConnectUs));
    const bareCpu = median(barePhases.map((p) => p.cpuPerConnectUs));
    const ratio = median(hubPhases.map((p, i) => p.rate / (barePhases[i] as Phase).rate));
    const cpuRatio = median(hubPhases.map((p, i) => (barePhases[i] as Phase).cpuPerConnectUs / p.cpuPerConnectUs));
    console.log(`hub:  ${round(hubRate)} connects/s (median), ${round(hubCpu)} µs server CPU per connect -> per-core ceiling ${round(1e6 / hubCpu)} /s`);
    console.log(`bare: ${round(bareRate)} connects/s (median), ${round(bareCpu)} µs server CPU per connect -> per-core ceiling ${round(1e6 / bareCpu)} /s`);
    console.log(`hub work per connect (auth: SAS parse + HMAC, device read, session registration, disconnect): ~${round(hubCpu - bareCpu)} µs over the bare listener`);
    console.log(`ratio hub/bare (median of per-round ratios): observed rate ${round(ratio, 3)}, per-core ceiling ${round(cpuRatio, 3)} (target >= ${TARGET_RATIO})`);
    const busy = median(hubPhases.map((p) => p.serverBusy));
    if (busy < 0.9) console.log(`note: the server core was ${round(busy * 100)} % busy: the load process (TLS client costs more CPU than the server) limits the observed rates; the per-core ceiling ratio compares server cost directly`);
    console.log(
      JSON.stringify({
        bench: 'hub-mqtt-connect',
        devices,
        concurrency,
        hubConnectsPerSec: round(hubRate),
        bareConnectsPerSec: round(bareRate),
        hubCpuUsPerConnect: round(hubCpu),
        bareCpuUsPerConnect: round(bareCpu),
        hubCeilingPerSec: round(1e6 / hubCpu),
        bareCeilingPerSec: round(1e6 / bareCpu),
        ratio: round(ratio, 3),
        cpuCeilingRatio: round(cpuRatio, 3),
        target: TARGET_RATIO,
      }),
    );
  } finally {
    await Promise.all([hub.request({ cmd: 'stop' }, 30_000).catch(() => undefined), bare.request({ cmd: 'stop' }, 30_000).catch(() => undefined)]);
    await Promise.all([hub.stop(), bare.stop(), load.stop()]);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

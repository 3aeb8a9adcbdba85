/**
 * Device registration throughput of the DPS device API over HTTPS, next to a ceiling measured in the same run.
 *
 * Simulated devices each open a NEW TLS connection (as real devices do), PUT a registration signed with a key
 * derived from one symmetric-key group enrollment, hashed over 2 in-process hubs (the full path: SAS check,
 * enrollment match, operation, allocation, hub device + initial twin, record; 200 within the 100 ms budget, else 202
 * and polls like the SDK). The ceiling is the same client against a bare node:https server that answers every
 * request on its new TLS connection with a fixed JSON body. Server children run pinned to CPU 0, load children to
 * CPU 1 (taskset); server CPU per registration comes from process.cpuUsage() deltas inside the server.
 * Rounds alternate ceiling/Homing; medians are reported. Then an open-loop run at half the peak rate gives p99.
 * Targets: rate ratio ≥ 0.6; p99 at half the peak rate < 50 ms.
 *
 *   node --conditions=homing-source --import tsx bench/register.ts [--store sqlite|postgres] [--count 20000]
 *        [--concurrency 32] [--duration 8] [--rounds 3] [--budget 100]
 *   node --conditions=homing-source --import tsx bench/register.ts --total 100000 [--store postgres]
 *
 * PostgreSQL: HOMING_BENCH_DATABASE_URL or DATABASE_URL; a fresh schema is created and dropped.
 * HOMING_BENCH_PROFILE_DIR=<dir>: the server children write V8 CPU profiles there.
 * The last stdout line is one JSON object with the figures.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuCount, firstMessage, startRegisterChild, type RegisterChild } from './lib/register-proc.ts';
import { cpuDeltaMicros, flag, median, numberFlag, round, type CpuUsage } from './lib/register-stats.ts';

const TARGET_RATIO = 0.6;
const TARGET_HALF_RATE_P99_MS = 50;

const storeKind = (flag('store') ?? 'sqlite') as 'sqlite' | 'postgres';
if (storeKind !== 'sqlite' && storeKind !== 'postgres') throw new Error('--store must be sqlite or postgres');
const postgresUrl = process.env.HOMING_BENCH_DATABASE_URL || process.env.DATABASE_URL || undefined;
if (storeKind === 'postgres' && !postgresUrl) throw new Error('--store postgres needs HOMING_BENCH_DATABASE_URL or DATABASE_URL');
const total = flag('total') === undefined ? undefined : Math.floor(numberFlag('total', 100_000));
const count = Math.floor(numberFlag('count', 20_000));
const concurrency = Math.floor(numberFlag('concurrency', 32));
const durationS = numberFlag('duration', total === undefined ? 8 : 1800);
const rounds = total === undefined ? Math.floor(numberFlag('rounds', 3)) : 1;
const budgetMs = flag('budget') === undefined ? 100 : Number(flag('budget'));
/** Warm-up per target: this many registrations or this long, whichever comes first (JIT, SQLite pages). */
const WARMUP_COUNT = 3000;
const WARMUP_MS = 15000;
const MAX_PHASE_COUNT = 1_000_000;

const cpus = cpuCount();
const serverCpu = cpus >= 2 ? '0' : undefined;
const loadCpu = cpus >= 2 ? String(cpus - 1) : undefined;

interface Ready {
  port: number;
  ca: string;
  idScope?: string;
  groupKey?: string;
}

interface RunResult {
  ok: number;
  failed: number;
  polls: number;
  firstStatus: Record<string, number>;
  errors: string[];
  elapsedMs: number;
  rate: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  clientCpuUsPerOp: number;
}

interface Target {
  label: string;
  server: RegisterChild;
  load: RegisterChild;
  ready: Ready;
}

async function startTarget(label: string, mode: 'bare' | 'homing', dir: string): Promise<Target> {
  const profileDir = process.env.HOMING_BENCH_PROFILE_DIR;
  const flags = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const server = startRegisterChild('./register-server.ts', [JSON.stringify({ mode, store: storeKind, dir, postgresUrl, budgetMs })], serverCpu, `${label} server`, flags);
  const ready = await firstMessage<Ready>(server, 'ready', 120_000);
  const load = startRegisterChild(
    './register-load.ts',
    [JSON.stringify({ host: '127.0.0.1', port: ready.port, ca: ready.ca, idScope: ready.idScope ?? '0neBARE0000', groupKey: ready.groupKey ?? Buffer.alloc(32, 7).toString('base64') })],
    loadCpu,
    `${label} load`,
  );
  await firstMessage(load, 'ready', 60_000);
  return { label, server, load, ready };
}

async function cpu(t: Target): Promise<CpuUsage> {
  return (await t.server.request<{ usage: CpuUsage }>({ type: 'cpu' }, 30_000)).usage;
}

interface Phase extends RunResult {
  serverCpuUsPerOp: number;
  serverBusy: number;
}

async function phase(t: Target, prefix: string, o: { mode: 'closed' | 'open'; count: number; durationMs: number; rate?: number }): Promise<Phase> {
  const c0 = await cpu(t);
  const r = await t.load.request<RunResult & { error?: string }>(
    { type: 'run', prefix, mode: o.mode, concurrency, count: Math.min(o.count, MAX_PHASE_COUNT), durationMs: o.durationMs, ...(o.rate ? { rate: o.rate } : {}) },
    o.durationMs + 120_000,
  );
  const c1 = await cpu(t);
  const used = cpuDeltaMicros(c0, c1);
  const ops = r.ok + r.failed;
  return { ...r, serverCpuUsPerOp: ops > 0 ? used / ops : Number.NaN, serverBusy: used / 1000 / r.elapsedMs };
}

function line(label: string, p: Phase): string {
  return `${label.padEnd(26)} ${round(p.rate, 0).toString().padStart(6)} /s  p50 ${round(p.p50Ms, 1).toString().padStart(6)} ms  p99 ${round(p.p99Ms, 1).toString().padStart(6)} ms  server ${round(p.serverCpuUsPerOp, 0).toString().padStart(5)} µs/op (busy ${round(p.serverBusy * 100, 0)} %)  client ${round(p.clientCpuUsPerOp, 0)} µs/op  ok ${p.ok} failed ${p.failed} polls ${p.polls}`;
}

function check(label: string, p: Phase): void {
  if (p.failed > 0) console.log(`  ! ${label}: ${p.failed} failed: ${p.errors.join(' | ')}`);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'homing-bench-register-'));
  const targets: Target[] = [];
  try {
    console.log(`register bench: store=${storeKind} concurrency=${concurrency} duration=${durationS}s rounds=${rounds} budget=${budgetMs}ms cpus=${cpus} server cpu=${serverCpu ?? 'any'} load cpu=${loadCpu ?? 'any'}${total ? ` total=${total}` : ''}`);
    const bare = await startTarget('ceiling', 'bare', dir);
    const homing = await startTarget('homing', 'homing', dir);
    targets.push(bare, homing);
    if (!homing.server.pinned) console.log('  (taskset missing or one CPU: processes are not pinned)');

    // Warm-up (JIT, SQLite pages, TLS contexts).
    await phase(bare, 'warm', { mode: 'closed', count: WARMUP_COUNT, durationMs: WARMUP_MS });
    await phase(homing, 'warm', { mode: 'closed', count: WARMUP_COUNT, durationMs: WARMUP_MS });

    const ceilings: Phase[] = [];
    const regs: Phase[] = [];
    const ceilingMs = Math.min(durationS, 8) * 1000;
    for (let r = 0; r < rounds; r++) {
      const c = await phase(bare, `c${r}`, { mode: 'closed', count, durationMs: ceilingMs });
      console.log(line(`ceiling round ${r + 1}`, c));
      check('ceiling', c);
      ceilings.push(c);
      const h = await phase(homing, `r${r}`, total === undefined ? { mode: 'closed', count, durationMs: durationS * 1000 } : { mode: 'closed', count: total, durationMs: durationS * 1000 });
      console.log(line(total === undefined ? `homing round ${r + 1}` : `homing total ${total}`, h));
      check('homing', h);
      regs.push(h);
    }
    const peak = median(regs.map((p) => p.rate));
    const ceiling = median(ceilings.map((p) => p.rate));
    // Ratios per round (each Homing phase right after its ceiling phase), then the median: drifting machine noise
    // cancels better than in a ratio of medians.
    const ratio = median(regs.map((p, i) => p.rate / ceilings[i]!.rate));
    const cpuRatio = median(regs.map((p, i) => ceilings[i]!.serverCpuUsPerOp / p.serverCpuUsPerOp));
    const cpuPerReg = median(regs.map((p) => p.serverCpuUsPerOp));
    const cpuPerCeil = median(ceilings.map((p) => p.serverCpuUsPerOp));

    let half: Phase | undefined;
    if (total === undefined) {
      const rate = Math.max(1, peak / 2);
      half = await phase(homing, 'half', { mode: 'open', rate, count: Math.ceil(rate * durationS), durationMs: durationS * 1000 });
      console.log(line(`homing at ${round(rate, 0)}/s (half)`, half));
      check('half rate', half);
    }
    const stats = await homing.server.request<{ registrations: number; operations: Record<string, number>; hubDevices: Record<string, number>; storeBytes: number }>({ type: 'stats' }, 120_000);

    console.log('');
    console.log(`registrations/s (median):  ${round(peak, 0)}   p50 ${round(median(regs.map((p) => p.p50Ms)), 1)} ms   p99 ${round(median(regs.map((p) => p.p99Ms)), 1)} ms`);
    console.log(`ceiling (bare HTTPS, new TLS connection per request): ${round(ceiling, 0)}/s   p99 ${round(median(ceilings.map((p) => p.p99Ms)), 1)} ms`);
    console.log(`ratio (median of per-round rate ratios): ${round(ratio, 2)} (target >= ${TARGET_RATIO}) ${ratio >= TARGET_RATIO ? 'OK' : 'BELOW TARGET'}`);
    console.log(`server CPU per registration: ${round(cpuPerReg, 0)} µs (ceiling ${round(cpuPerCeil, 0)} µs per request; CPU ratio ${round(cpuRatio, 2)}; per-core ceiling ${round(1e6 / cpuPerReg, 0)} registrations/s vs ${round(1e6 / cpuPerCeil, 0)}/s)`);
    if (half) console.log(`p99 at half the peak rate (${round(peak / 2, 0)}/s): ${round(half.p99Ms, 1)} ms (target < ${TARGET_HALF_RATE_P99_MS} ms) ${half.p99Ms < TARGET_HALF_RATE_P99_MS ? 'OK' : 'ABOVE TARGET'}`);
    if (total !== undefined) {
      const h = regs[0]!;
      console.log(`total: ${h.ok} registrations in ${round(h.elapsedMs / 1000, 1)} s (${round(h.rate, 0)}/s), ${h.failed} failed`);
    }
    console.log(`store (${storeKind}): ${stats.registrations} registration records, hub devices ${JSON.stringify(stats.hubDevices)}, operations ${JSON.stringify(stats.operations)}, size ${round(stats.storeBytes / 1048576, 1)} MiB`);

    const out: Record<string, unknown> = {
      bench: 'register',
      store: storeKind,
      concurrency,
      rounds,
      budgetMs,
      registrationsPerSecond: round(peak, 1),
      p50Ms: round(median(regs.map((p) => p.p50Ms)), 2),
      p99Ms: round(median(regs.map((p) => p.p99Ms)), 2),
      serverCpuUsPerRegistration: round(cpuPerReg, 1),
      ceilingPerSecond: round(ceiling, 1),
      ceilingServerCpuUsPerRequest: round(cpuPerCeil, 1),
      ratio: round(ratio, 3),
      ratioTarget: TARGET_RATIO,
      cpuRatio: round(cpuRatio, 3),
      failed: regs.reduce((n, p) => n + p.failed, 0),
      polls: regs.reduce((n, p) => n + p.polls, 0),
      storeBytes: stats.storeBytes,
      registrationRecords: stats.registrations,
    };
    if (half) Object.assign(out, { halfRatePerSecond: round(peak / 2, 1), halfRateP99Ms: round(half.p99Ms, 2), halfRateP99TargetMs: TARGET_HALF_RATE_P99_MS });
    if (total !== undefined) Object.assign(out, { total, totalCompleted: regs[0]!.ok, totalSeconds: round(regs[0]!.elapsedMs / 1000, 2) });
    console.log(JSON.stringify(out));
  } finally {
    await Promise.allSettled(targets.flatMap((t) => [t.load.stop(), t.server.stop()]));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);

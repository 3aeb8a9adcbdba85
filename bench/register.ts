/**
 * Device registration throughput of the DPS device API over HTTPS, next to a ceiling measured in the same run.
 *
 * Simulated devices each open a NEW TLS connection (as real devices do), PUT a registration signed with a key
 * derived from one symmetric-key group enrollment, hashed over 2 in-process hubs (the full path: SAS check,
 * enrollment match, allocation, hub device + initial twin, operation and record; 200 within the 100 ms budget, else
 * 202 and polls like the SDK). The ceiling is the SAME load code against a bare node:https server that answers every
 * request on its new TLS connection with a fixed JSON body.
 *
 * Method:
 * - server children pinned to CPU 0, load children to the last CPU (taskset, when there are 2+ CPUs);
 * - a warm-up per target, then `--rounds` closed-loop rounds alternating ceiling/Homing in ABBA order (drift in the
 *   machine's load cancels), medians reported;
 * - per phase: rate, p50/p99, server CPU per request (process.cpuUsage() deltas in the server), server busy share,
 *   client CPU per request (the load child's own cpuUsage), the CPU other processes took (/proc/stat minus ours), and
 *   on PostgreSQL the CPU of this server's database backends;
 * - an open-loop run at half Homing's median peak rate gives p50/p99 at half rate (latency from the scheduled time).
 * One TLS client core cannot saturate the server (a client handshake costs more CPU than the server's), so both
 * closed-loop rates are mostly bound by the load and their ratio flatters the slower server; the CPU ratio (ceiling
 * CPU per request / Homing CPU per registration, i.e. per-core capacity ratio) is the server-side comparison.
 * Targets: ratio ≥ 0.6 (rates and per-core capacity); p99 at half the peak rate < 50 ms.
 *
 *   node --conditions=homing-source --import tsx bench/register.ts [--store sqlite|postgres] [--count 20000]
 *        [--concurrency 32] [--duration 8] [--rounds 4] [--budget 100] [--pool 8] [--warmup 15000]
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
import { cpuDeltaMicros, flag, machineBusyMicros, median, numberFlag, processSetDeltaMicros, round, type CpuUsage } from './lib/register-stats.ts';

const TARGET_RATIO = 0.6;
const TARGET_HALF_RATE_P99_MS = 50;
/** A phase whose server core was busier than this was bound by the server; below, by the load (or the machine). */
const SERVER_BOUND_BUSY = 0.9;

const storeKind = (flag('store') ?? 'sqlite') as 'sqlite' | 'postgres';
if (storeKind !== 'sqlite' && storeKind !== 'postgres') throw new Error('--store must be sqlite or postgres');
const postgresUrl = process.env.HOMING_BENCH_DATABASE_URL || process.env.DATABASE_URL || undefined;
if (storeKind === 'postgres' && !postgresUrl) throw new Error('--store postgres needs HOMING_BENCH_DATABASE_URL or DATABASE_URL');
const total = flag('total') === undefined ? undefined : Math.floor(numberFlag('total', 100_000));
const count = Math.floor(numberFlag('count', 20_000));
const concurrency = Math.floor(numberFlag('concurrency', 32));
const durationS = numberFlag('duration', total === undefined ? 8 : 1800);
const rounds = total === undefined ? Math.floor(numberFlag('rounds', 4)) : 1;
const budgetMs = flag('budget') === undefined ? 100 : Number(flag('budget'));
const poolSize = Math.floor(numberFlag('pool', 8));
/**
 * Warm-up per target: this many registrations or this long, whichever comes first (JIT, SQLite pages, V8's young
 * generation growing to its working size). `--warmup N` sets the count; the time bound follows it (5 ms each, at least
 * 15 s).
 */
const WARMUP_COUNT = Math.floor(numberFlag('warmup', 15000));
const WARMUP_MS = Math.max(15_000, WARMUP_COUNT * 5);
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
  const flags = [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), ...(process.env.HOMING_BENCH_PERF_MAP ? ['--perf-basic-prof'] : [])];
  const server = startRegisterChild('./register-server.ts', [JSON.stringify({ mode, store: storeKind, dir, postgresUrl, poolSize, budgetMs })], serverCpu, `${label} server`, flags);
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

interface CpuSnapshot {
  usage: CpuUsage;
  db: Record<string, number>;
  machine: number | undefined;
  /** The server's event-loop delay since its previous snapshot. */
  loop: { p99Ms: number; maxMs: number };
}

async function cpu(t: Target): Promise<CpuSnapshot> {
  const r = await t.server.request<{ usage: CpuUsage; db?: Record<string, number>; loop?: { p99Ms: number; maxMs: number } }>({ type: 'cpu' }, 30_000);
  return { usage: r.usage, db: r.db ?? {}, machine: machineBusyMicros(), loop: r.loop ?? { p99Ms: Number.NaN, maxMs: Number.NaN } };
}

interface Phase extends RunResult {
  serverCpuUsPerOp: number;
  /** Share of one core the server used. */
  serverBusy: number;
  /** PostgreSQL backends of this server, CPU µs per request (NaN on SQLite). */
  dbCpuUsPerOp: number;
  /** Cores used by everything else on the machine during the phase (other sessions' jobs). */
  otherCores: number;
  /** Longest event-loop stall of the server during the phase, ms. */
  loopMaxMs: number;
}

async function phase(t: Target, prefix: string, o: { mode: 'closed' | 'open'; count: number; durationMs: number; rate?: number }): Promise<Phase> {
  const c0 = await cpu(t);
  const r = await t.load.request<RunResult & { error?: string }>(
    { type: 'run', prefix, mode: o.mode, concurrency, count: Math.min(o.count, MAX_PHASE_COUNT), durationMs: o.durationMs, ...(o.rate ? { rate: o.rate } : {}) },
    o.durationMs + 120_000,
  );
  const c1 = await cpu(t);
  const used = cpuDeltaMicros(c0.usage, c1.usage);
  const ops = r.ok + r.failed;
  const db = processSetDeltaMicros(c0.db, c1.db);
  const client = Number.isFinite(r.clientCpuUsPerOp) ? r.clientCpuUsPerOp * ops : 0;
  const machine = c0.machine !== undefined && c1.machine !== undefined ? c1.machine - c0.machine : Number.NaN;
  return {
    ...r,
    serverCpuUsPerOp: ops > 0 ? used / ops : Number.NaN,
    serverBusy: used / 1000 / r.elapsedMs,
    dbCpuUsPerOp: storeKind === 'postgres' && t.ready.idScope !== undefined && ops > 0 ? db / ops : Number.NaN,
    otherCores: Math.max(0, (machine - used - client - db) / 1000 / r.elapsedMs),
    loopMaxMs: c1.loop.maxMs,
  };
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? String(round(n, digits)) : '-';
}

function line(label: string, p: Phase): string {
  const db = Number.isFinite(p.dbCpuUsPerOp) ? ` + db ${fmt(p.dbCpuUsPerOp)}` : '';
  return (
    `${label.padEnd(24)} ${fmt(p.rate).padStart(5)} /s  p50 ${fmt(p.p50Ms, 1).padStart(6)} ms  p99 ${fmt(p.p99Ms, 1).padStart(6)} ms  ` +
    `server ${fmt(p.serverCpuUsPerOp).padStart(5)}${db} µs/op (busy ${fmt(p.serverBusy * 100)} %)  client ${fmt(p.clientCpuUsPerOp)} µs/op  ` +
    `others ${fmt(p.otherCores, 2)} cores  stall ${fmt(p.loopMaxMs)} ms  ok ${p.ok} failed ${p.failed} polls ${p.polls}`
  );
}

function check(label: string, p: Phase): void {
  if (p.failed > 0) console.log(`  ! ${label}: ${p.failed} failed: ${p.errors.join(' | ')}`);
}

const med = (ps: readonly Phase[], f: (p: Phase) => number): number => median(ps.map(f).filter((x) => Number.isFinite(x)));

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'homing-bench-register-'));
  const targets: Target[] = [];
  try {
    console.log(
      `register bench: store=${storeKind}${storeKind === 'postgres' ? ` pool=${poolSize}` : ''} concurrency=${concurrency} duration=${durationS}s rounds=${rounds} budget=${budgetMs}ms ` +
        `cpus=${cpus} server cpu=${serverCpu ?? 'any'} load cpu=${loadCpu ?? 'any'}${total ? ` total=${total}` : ''}`,
    );
    const bare = await startTarget('ceiling', 'bare', dir);
    const homing = await startTarget('homing', 'homing', dir);
    targets.push(bare, homing);
    if (!homing.server.pinned) console.log('  (taskset missing or one CPU: processes are not pinned)');

    // Warm-up (JIT, SQLite pages, TLS contexts, pool connections).
    await phase(bare, 'warm', { mode: 'closed', count: WARMUP_COUNT, durationMs: WARMUP_MS });
    await phase(homing, 'warm', { mode: 'closed', count: WARMUP_COUNT, durationMs: WARMUP_MS });

    const ceilings: Phase[] = [];
    const regs: Phase[] = [];
    const ceilingMs = Math.min(durationS, 8) * 1000;
    const runCeiling = async (r: number) => {
      const c = await phase(bare, `c${r}`, { mode: 'closed', count, durationMs: ceilingMs });
      console.log(line(`ceiling round ${r + 1}`, c));
      check('ceiling', c);
      ceilings.push(c);
    };
    const runHoming = async (r: number) => {
      const h = await phase(homing, `r${r}`, total === undefined ? { mode: 'closed', count, durationMs: durationS * 1000 } : { mode: 'closed', count: total, durationMs: durationS * 1000 });
      console.log(line(total === undefined ? `homing round ${r + 1}` : `homing total ${total}`, h));
      check('homing', h);
      regs.push(h);
    };
    for (let r = 0; r < rounds; r++) {
      // ABBA: ceiling first in even rounds, Homing first in odd ones.
      if (r % 2 === 0) {
        await runCeiling(r);
        await runHoming(r);
      } else {
        await runHoming(r);
        await runCeiling(r);
      }
    }
    const peak = med(regs, (p) => p.rate);
    const ceiling = med(ceilings, (p) => p.rate);
    // Ratios per round (the two phases of a round ran back to back), then the median.
    const ratio = median(regs.map((p, i) => p.rate / ceilings[i]!.rate));
    const cpuRatio = median(regs.map((p, i) => ceilings[i]!.serverCpuUsPerOp / p.serverCpuUsPerOp));
    const cpuPerReg = med(regs, (p) => p.serverCpuUsPerOp);
    const cpuPerCeil = med(ceilings, (p) => p.serverCpuUsPerOp);
    const dbPerReg = med(regs, (p) => p.dbCpuUsPerOp);
    const serverBound = med(regs, (p) => p.serverBusy) >= SERVER_BOUND_BUSY;

    let half: Phase | undefined;
    if (total === undefined) {
      const rate = Math.max(1, peak / 2);
      half = await phase(homing, 'half', { mode: 'open', rate, count: Math.ceil(rate * durationS), durationMs: durationS * 1000 });
      console.log(line(`homing at ${round(rate, 0)}/s (half)`, half));
      check('half rate', half);
    }
    const stats = await homing.server.request<{
      registrations: number;
      operations: Record<string, number>;
      hubDevices: Record<string, number>;
      storeBytes: number;
      groupCommit?: { commits: number; units: number };
      checkpointer?: { passes: number; caughtUp: number; busy: number };
    }>({ type: 'stats' }, 120_000);

    console.log('');
    console.log(`registrations/s (median):  ${fmt(peak)}   p50 ${fmt(med(regs, (p) => p.p50Ms), 1)} ms   p99 ${fmt(med(regs, (p) => p.p99Ms), 1)} ms`);
    console.log(`ceiling (bare HTTPS, new TLS connection per request): ${fmt(ceiling)}/s   p50 ${fmt(med(ceilings, (p) => p.p50Ms), 1)} ms   p99 ${fmt(med(ceilings, (p) => p.p99Ms), 1)} ms`);
    console.log(`ratio (median of per-round rate ratios): ${fmt(ratio, 2)} (target >= ${TARGET_RATIO}) ${ratio >= TARGET_RATIO ? 'OK' : 'BELOW TARGET'}`);
    console.log(
      `server CPU per registration: ${fmt(cpuPerReg)} µs${Number.isFinite(dbPerReg) ? ` (+ ${fmt(dbPerReg)} µs in PostgreSQL backends)` : ''}; ceiling ${fmt(cpuPerCeil)} µs per request; ` +
        `CPU ratio ${fmt(cpuRatio, 2)} (target >= ${TARGET_RATIO}) ${cpuRatio >= TARGET_RATIO ? 'OK' : 'BELOW TARGET'}; per-core capacity ${fmt(1e6 / cpuPerReg)} registrations/s vs ${fmt(1e6 / cpuPerCeil)}/s`,
    );
    console.log(
      `client CPU per request: homing ${fmt(med(regs, (p) => p.clientCpuUsPerOp))} µs, ceiling ${fmt(med(ceilings, (p) => p.clientCpuUsPerOp))} µs (same load code); ` +
        `server busy: homing ${fmt(med(regs, (p) => p.serverBusy) * 100)} %, ceiling ${fmt(med(ceilings, (p) => p.serverBusy) * 100)} %` +
        `${serverBound ? '' : ' -> rates bound by the load, not by the server'}; other processes took ${fmt(med([...regs, ...ceilings], (p) => p.otherCores), 2)} cores`,
    );
    if (half) {
      console.log(`p50/p99 at half the peak rate (${fmt(peak / 2)}/s): ${fmt(half.p50Ms, 1)} / ${fmt(half.p99Ms, 1)} ms (target p99 < ${TARGET_HALF_RATE_P99_MS} ms) ${half.p99Ms < TARGET_HALF_RATE_P99_MS ? 'OK' : 'ABOVE TARGET'}`);
    }
    if (total !== undefined) {
      const h = regs[0]!;
      console.log(`total: ${h.ok} registrations in ${fmt(h.elapsedMs / 1000, 1)} s (${fmt(h.rate)}/s), ${h.failed} failed, ${h.polls} polls`);
    }
    console.log(`store (${storeKind}): ${stats.registrations} registration records, hub devices ${JSON.stringify(stats.hubDevices)}, operations ${JSON.stringify(stats.operations)}, size ${fmt(stats.storeBytes / 1048576, 1)} MiB`);
    const gc = stats.groupCommit;
    if (gc && gc.commits > 0) console.log(`SQLite group commit (whole run, warm-up included): ${gc.units} writes in ${gc.commits} commits, ${fmt(gc.units / gc.commits, 2)} per commit`);
    const ck = stats.checkpointer;
    if (ck) console.log(`SQLite background checkpoints (whole run): ${ck.passes} passes, ${ck.caughtUp} left the log fully copied back, ${ck.busy} found a lock held`);

    const r2 = (n: number, d = 1) => (Number.isFinite(n) ? round(n, d) : null);
    const out: Record<string, unknown> = {
      bench: 'register',
      store: storeKind,
      ...(storeKind === 'postgres' ? { poolSize } : {}),
      concurrency,
      rounds,
      budgetMs,
      registrationsPerSecond: r2(peak),
      p50Ms: r2(med(regs, (p) => p.p50Ms), 2),
      p99Ms: r2(med(regs, (p) => p.p99Ms), 2),
      serverCpuUsPerRegistration: r2(cpuPerReg),
      ...(Number.isFinite(dbPerReg) ? { dbCpuUsPerRegistration: r2(dbPerReg) } : {}),
      clientCpuUsPerRegistration: r2(med(regs, (p) => p.clientCpuUsPerOp)),
      serverBusy: r2(med(regs, (p) => p.serverBusy), 3),
      ceilingPerSecond: r2(ceiling),
      ceilingP50Ms: r2(med(ceilings, (p) => p.p50Ms), 2),
      ceilingP99Ms: r2(med(ceilings, (p) => p.p99Ms), 2),
      ceilingServerCpuUsPerRequest: r2(cpuPerCeil),
      ceilingClientCpuUsPerRequest: r2(med(ceilings, (p) => p.clientCpuUsPerOp)),
      ceilingServerBusy: r2(med(ceilings, (p) => p.serverBusy), 3),
      ratio: r2(ratio, 3),
      cpuRatio: r2(cpuRatio, 3),
      ratioTarget: TARGET_RATIO,
      ratioMet: ratio >= TARGET_RATIO,
      cpuRatioMet: cpuRatio >= TARGET_RATIO,
      ratesBoundByLoad: !serverBound,
      otherCores: r2(med([...regs, ...ceilings], (p) => p.otherCores), 2),
      failed: regs.reduce((n, p) => n + p.failed, 0),
      polls: regs.reduce((n, p) => n + p.polls, 0),
      storeBytes: stats.storeBytes,
      registrationRecords: stats.registrations,
      ...(stats.groupCommit ? { groupCommitWrites: stats.groupCommit.units, groupCommitCommits: stats.groupCommit.commits } : {}),
      ...(stats.checkpointer ? { checkpointPasses: stats.checkpointer.passes, checkpointPassesCaughtUp: stats.checkpointer.caughtUp } : {}),
    };
    if (half) {
      Object.assign(out, {
        halfRatePerSecond: r2(peak / 2),
        halfRateP50Ms: r2(half.p50Ms, 2),
        halfRateP99Ms: r2(half.p99Ms, 2),
        halfRateP99TargetMs: TARGET_HALF_RATE_P99_MS,
        halfRateP99Met: half.p99Ms < TARGET_HALF_RATE_P99_MS,
        halfRateServerStallMaxMs: r2(half.loopMaxMs),
        halfRatePolls: half.polls,
      });
    }
    if (total !== undefined) Object.assign(out, { total, totalCompleted: regs[0]!.ok, totalSeconds: r2(regs[0]!.elapsedMs / 1000, 2) });
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

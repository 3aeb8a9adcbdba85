/**
 * A/B of the registration path: the server CPU per registration of two source trees of Homing (A, the baseline, and
 * B, by default this checkout), measured at the same time so that the machine's noise falls on both alike.
 *
 * Single runs of bench/register.ts move by ±20 % on a shared machine (other sessions, the host's own load), which
 * buries changes of a few per cent. Here both trees' register servers (`bench/lib/register-server.ts` of each tree,
 * Homing mode, SQLite) are pinned to the same core and both load children to another one; every round loads both
 * servers at once with the same closed-loop concurrency. The figure is B's CPU per registration over A's, per
 * round and its median (below 1: B is cheaper). A is the ceiling B is compared with; two identical trees measure
 * 0.99–1.01 of each other.
 *
 *   git worktree add /tmp/homing-a <ref> && ln -s "$PWD/node_modules" /tmp/homing-a/node_modules
 *   node --conditions=homing-source --import tsx bench/register-ab.ts --a /tmp/homing-a [--b .] [--rounds 6]
 *        [--count 4000] [--concurrency 16] [--warmup 3000]
 *
 * The last stdout line is one JSON object with the figures.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuCount, firstMessage, startRegisterChild, type RegisterChild } from './lib/register-proc.ts';
import { cpuDeltaMicros, flag, median, numberFlag, round, type CpuUsage } from './lib/register-stats.ts';

const here = resolve(fileURLToPath(new URL('..', import.meta.url)));
const treeA = flag('a');
if (treeA === undefined) throw new Error('--a <path of the baseline source tree> is required');
const treeB = flag('b') ?? here;
const rounds = Math.max(1, Math.floor(numberFlag('rounds', 6)));
const count = Math.floor(numberFlag('count', 4000));
const concurrency = Math.floor(numberFlag('concurrency', 16));
const warmup = Math.floor(numberFlag('warmup', 3000));
const ROUND_MS = 60_000;

const cpus = cpuCount();
const serverCpu = cpus >= 2 ? '0' : undefined;
const loadCpu = cpus >= 2 ? String(cpus - 1) : undefined;

interface Side {
  label: 'A' | 'B';
  tree: string;
  server: RegisterChild;
  load: RegisterChild;
}

interface RunResult {
  ok: number;
  failed: number;
  rate: number;
  errors: string[];
}

function serverOf(tree: string): string {
  const entry = join(resolve(tree), 'bench', 'lib', 'register-server.ts');
  if (!existsSync(entry)) throw new Error(`${entry} does not exist: --a/--b name a Homing source tree`);
  if (!existsSync(join(resolve(tree), 'node_modules'))) throw new Error(`${tree} has no node_modules (link this checkout's)`);
  return entry;
}

async function startSide(label: 'A' | 'B', tree: string, dir: string): Promise<Side> {
  const server = startRegisterChild(serverOf(tree), [JSON.stringify({ mode: 'homing', store: 'sqlite', dir, budgetMs: 100 })], serverCpu, `${label} server`);
  const ready = await firstMessage<{ port: number; ca: string; idScope: string; groupKey: string }>(server, 'ready', 120_000);
  const load = startRegisterChild('./register-load.ts', [JSON.stringify({ host: '127.0.0.1', port: ready.port, ca: ready.ca, idScope: ready.idScope, groupKey: ready.groupKey })], loadCpu, `${label} load`);
  await firstMessage(load, 'ready', 60_000);
  return { label, tree, server, load };
}

async function cpuOf(s: Side): Promise<CpuUsage> {
  return (await s.server.request<{ usage: CpuUsage }>({ type: 'cpu' }, 30_000)).usage;
}

/** Both sides at once; CPU µs per registration of each. */
async function both(sides: readonly Side[], prefix: string, n: number): Promise<{ us: number; rate: number; failed: number; errors: string[] }[]> {
  const c0 = await Promise.all(sides.map(cpuOf));
  const runs = await Promise.all(sides.map((s) => s.load.request<RunResult>({ type: 'run', prefix, mode: 'closed', concurrency, count: n, durationMs: ROUND_MS }, ROUND_MS + 60_000)));
  const c1 = await Promise.all(sides.map(cpuOf));
  return runs.map((r, i) => ({ us: cpuDeltaMicros(c0[i]!, c1[i]!) / Math.max(1, r.ok + r.failed), rate: r.rate, failed: r.failed, errors: r.errors }));
}

async function main(): Promise<void> {
  const dirs = [mkdtempSync(join(tmpdir(), 'homing-ab-a-')), mkdtempSync(join(tmpdir(), 'homing-ab-b-'))];
  const sides: Side[] = [];
  try {
    console.log(`register A/B: A=${resolve(treeA!)} B=${resolve(treeB)} rounds=${rounds} count=${count} concurrency=${concurrency} warm-up=${warmup} server cpu=${serverCpu ?? 'any'} load cpu=${loadCpu ?? 'any'}`);
    sides.push(await startSide('A', treeA!, dirs[0]!), await startSide('B', treeB, dirs[1]!));
    if (warmup > 0) await both(sides, 'warm', warmup);
    const a: number[] = [];
    const b: number[] = [];
    const ratios: number[] = [];
    let failed = 0;
    for (let r = 0; r < rounds; r++) {
      const [ra, rb] = await both(sides, `r${r}`, count);
      failed += ra!.failed + rb!.failed;
      for (const x of [ra!, rb!]) if (x.failed > 0) console.log(`  ! ${x.failed} failed: ${x.errors.join(' | ')}`);
      a.push(ra!.us);
      b.push(rb!.us);
      ratios.push(rb!.us / ra!.us);
      console.log(`round ${r + 1}: A ${round(ra!.us, 0)} µs/registration (${round(ra!.rate, 0)}/s)   B ${round(rb!.us, 0)} µs/registration (${round(rb!.rate, 0)}/s)   B/A ${round(rb!.us / ra!.us, 3)}`);
    }
    const ratio = median(ratios);
    console.log('');
    console.log(`server CPU per registration (median): A ${round(median(a), 0)} µs (the baseline, measured at the same time), B ${round(median(b), 0)} µs`);
    console.log(`B/A (median of per-round ratios): ${round(ratio, 3)}${ratio < 1 ? ' (B cheaper)' : ratio > 1 ? ' (B dearer)' : ''}; per round ${ratios.map((x) => round(x, 3)).join(' ')}`);
    console.log(JSON.stringify({ bench: 'register-ab', a: resolve(treeA!), b: resolve(treeB), rounds, count, concurrency, warmup, aCpuUsPerRegistration: round(median(a), 1), bCpuUsPerRegistration: round(median(b), 1), ratio: round(ratio, 4), roundRatios: ratios.map((x) => round(x, 4)), failed }));
  } finally {
    await Promise.allSettled(sides.flatMap((s) => [s.load.stop(), s.server.stop()]));
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);

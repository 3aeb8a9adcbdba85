/**
 * Crash soak of hub migrations: the crash test (packages/server/test/provisioning/reprovision/crash-kill.test.ts) run
 * for longer. `--count` devices (default 500) on hubs A and B migrate to hub C (and back, each time the whole fleet
 * has arrived, so every round has moves to interrupt) in a child process that is SIGKILLed,
 * round after round, at a step boundary (after the move is created, after the twin is copied, after the new hub is
 * written, after the old hub's delete) or after a random delay; a restarted process (same node id) resumes the
 * interrupted moves and checks every device. `--rounds` rounds (default 40) or `--minutes` (default 10), whichever
 * ends first, then a last run moves the rest of the fleet.
 *
 * Ceiling: zero invariant violations (a device on no hub, on two hubs, recorded on another hub, with a changed
 * reported twin, or a move left after recovery). The ratio is violations / 1 (0 meets it).
 *
 *   node --conditions=homing-source --import tsx bench/migrate-soak.ts [--count 500] [--rounds 40] [--minutes 10]
 *        [--store sqlite|postgres]
 *
 * PostgreSQL: HOMING_BENCH_DATABASE_URL or DATABASE_URL (a fresh schema, dropped after). The last stdout line is one
 * JSON object with the figures.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { StoreConfig } from '../packages/server/src/store/ports.ts';
import { crashRound, invariantHolds, prepareWorld, runWorker, type KillPoint } from '../packages/server/test/provisioning/reprovision/support/crash-rounds.ts';
import { newWorldSpec } from '../packages/server/test/provisioning/reprovision/support/move-world.ts';
import { flag, numberFlag } from './lib/register-stats.ts';

const count = numberFlag('count', 500);
const rounds = numberFlag('rounds', 40);
const minutes = numberFlag('minutes', 10);
const only = flag('store');
const dbUrl = process.env.HOMING_BENCH_DATABASE_URL ?? process.env.DATABASE_URL;

const STEPS = ['planned', 'copied', 'written', 'removed'] as const;

function killPoint(i: number): KillPoint {
  // Alternate: a step boundary (rotating, at a random occurrence), then a random time.
  if (i % 2 === 0) return { step: STEPS[(i / 2) % STEPS.length]!, nth: 1 + Math.floor(Math.random() * 20) };
  return { afterMs: 100 + Math.floor(Math.random() * 2000) };
}

interface SoakFigures {
  store: string;
  devices: number;
  rounds: number;
  killed: number;
  resumedMoves: number;
  fleetFlips: number;
  violations: number;
  onTargetHubs: number;
  seconds: number;
}

async function soak(name: string, store: StoreConfig, dir: string): Promise<SoakFigures> {
  const spec = newWorldSpec(store, { count, reportedBytes: 1024 });
  const specFile = await prepareWorld(spec, dir);
  const started = performance.now();
  const deadline = started + minutes * 60_000;
  let killed = 0;
  let resumed = 0;
  let violations = 0;
  let done = 0;
  let flips = 0;
  let target = ['hub-c.move.test'];
  for (let i = 0; i < rounds && performance.now() < deadline; i++) {
    const kill = killPoint(i);
    const r = await crashRound(specFile, kill);
    done++;
    if (r.killed) killed++;
    resumed += r.resumed;
    if (!invariantHolds(r.report)) {
      violations++;
      process.stdout.write(`${name}: round ${i} ${JSON.stringify(kill)}: INVARIANT BROKEN ${JSON.stringify(r.report)}\n`);
    }
    process.stdout.write(`${name}: round ${i + 1} kill ${JSON.stringify(kill)} killed=${r.killed} resumed=${r.resumed} perHub=${JSON.stringify(r.report.perHub)}\n`);
    // The whole fleet reached the group's hubs: send it back the other way, so every round has moves to interrupt.
    if (target.reduce((n, h) => n + (r.report.perHub[h] ?? 0), 0) === count) {
      const f = await runWorker(specFile, 'flip');
      if (f.code !== 0 || !f.out) throw new Error(`flip failed: ${f.stderr.slice(-2000)}`);
      target = f.out.iotHubs as string[];
      flips++;
    }
  }
  const last = await runWorker(specFile, 'move');
  if (last.code !== 0) throw new Error(`the last move run failed: ${last.stderr.slice(-2000)}`);
  const final = await crashRound(specFile, { afterMs: 3_600_000 });
  if (!invariantHolds(final.report)) violations++;
  const onTarget = target.reduce((n, h) => n + (final.report.perHub[h] ?? 0), 0);
  if (onTarget !== count) violations++;
  return { store: name, devices: count, rounds: done, killed, resumedMoves: resumed, fleetFlips: flips, violations, onTargetHubs: onTarget, seconds: Math.round((performance.now() - started) / 1000) };
}

const results: SoakFigures[] = [];
if (only === undefined || only === 'sqlite') {
  const dir = mkdtempSync(join(tmpdir(), 'homing-soak-'));
  try {
    results.push(await soak('sqlite', { dialect: 'sqlite', sqlitePath: join(dir, 'homing.db') }, dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
if ((only === undefined || only === 'postgres') && dbUrl) {
  const dir = mkdtempSync(join(tmpdir(), 'homing-soak-pg-'));
  const schema = `soak_${Date.now().toString(36)}`;
  try {
    results.push(await soak('postgres', { dialect: 'postgres', postgresUrl: dbUrl, postgresSchema: schema, poolSize: 4 }, dir));
  } finally {
    const c = new pg.Client({ connectionString: dbUrl });
    await c.connect();
    await c.query(`drop schema if exists "${schema}" cascade`);
    await c.end();
    rmSync(dir, { recursive: true, force: true });
  }
}
for (const r of results) {
  process.stdout.write(`${r.store}: ${r.rounds} crash rounds (${r.killed} SIGKILLs, ${r.resumedMoves} moves resumed, the fleet sent back and forth ${r.fleetFlips} times) over ${r.devices} devices in ${r.seconds} s; ${r.onTargetHubs} on the group's hubs at the end; invariant violations ${r.violations} (ceiling 0)\n`);
}
const violations = results.reduce((a, r) => a + r.violations, 0);
process.stdout.write(`${JSON.stringify({ bench: 'migrate-soak', ceilingViolations: 0, violations, ratio: violations, results })}\n`);
if (violations > 0) process.exitCode = 1;

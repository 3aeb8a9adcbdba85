/**
 * Registration latency on the embedded SQLite store with WAL checkpoints on a worker thread (the default) against
 * SQLite's automatic checkpoints inside a commit on the event loop, in the same run.
 *
 * In process (no TLS, no HTTP): the real RegistrationService over 2 in-process hubs and a symmetric-key group
 * (bench/lib/register-world.ts), driven open-loop at a fixed rate (`--rate` per second for `--seconds`; latency is
 * measured from each registration's scheduled time, so a stall delays everything behind it). Rounds alternate the two
 * modes in ABBA order, each on a fresh file. Printed per round and as medians per mode: p50/p99/p99.9 latency, the
 * event loop's largest delay, and CPU per registration (process CPU, the worker thread included).
 * The comparison: p99 with automatic checkpoints / p99 with background checkpoints.
 *
 *   node --conditions=homing-source --import tsx bench/sqlite-checkpoints.ts [--rate 1000] [--seconds 10] [--rounds 4]
 *
 * The last stdout line is one JSON object with the figures.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { buildSas, deriveDeviceKey } from '../packages/server/src/core/sas.ts';
import { openStore } from '../packages/server/src/store/open.ts';
import { createRegisterWorld } from './lib/register-world.ts';
import { median, numberFlag, percentile, round } from './lib/register-stats.ts';

const rate = Math.max(1, Math.floor(numberFlag('rate', 1000)));
const seconds = Math.max(1, numberFlag('seconds', 10));
const rounds = Math.max(2, Math.floor(numberFlag('rounds', 4)));
/** A round may take this much longer than its schedule before it is cut (its unfinished registrations count as failed). */
const OVERRUN_MS = 30_000;

interface Round {
  background: boolean;
  done: number;
  failed: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  loopMaxMs: number;
  cpuUsPerRegistration: number;
  checkpointPasses: number | undefined;
}

async function runRound(background: boolean, dir: string, index: number): Promise<Round> {
  const store = await openStore({ dialect: 'sqlite', sqlitePath: join(dir, `r${index}.db`), sqliteBackgroundCheckpoints: background });
  const world = await createRegisterWorld(store);
  try {
    const expiry = Math.floor(Date.now() / 1000) + 3600;
    const n = Math.floor(rate * seconds);
    const devices = Array.from({ length: n }, (_, k) => {
      const id = `ckpt-${index}-${k}`;
      return { id, sas: buildSas({ sr: `${world.idScope}/registrations/${id}`, keyBase64: deriveDeviceKey(world.groupKey, id), keyName: 'registration', expirySeconds: expiry }) };
    });
    const latencies: number[] = [];
    let failed = 0;
    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const pending: Array<Promise<void>> = [];
    let sent = 0;
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now();
        const due = now - t0 > seconds * 1000 + OVERRUN_MS ? n : Math.min(n, Math.floor(((now - t0) / 1000) * rate));
        while (sent < due) {
          const d = devices[sent]!;
          const scheduled = t0 + (sent / rate) * 1000;
          sent++;
          pending.push(
            world.service.register(world.idScope, d.id, { registrationId: d.id }, { kind: 'sas', authorization: d.sas }, { budgetMs: 100 }).then(
              (r) => {
                if (r.reply.httpStatus === 200) latencies.push(performance.now() - scheduled);
                else failed++;
              },
              () => {
                failed++;
              },
            ),
          );
        }
        if (sent >= n) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
    await Promise.all(pending);
    const cpu = process.cpuUsage(c0);
    loop.disable();
    latencies.sort((a, b) => a - b);
    return {
      background,
      done: latencies.length,
      failed,
      p50Ms: round(percentile(latencies, 50), 1),
      p99Ms: round(percentile(latencies, 99), 1),
      p999Ms: round(percentile(latencies, 99.9), 1),
      loopMaxMs: round(loop.max / 1e6, 1),
      cpuUsPerRegistration: round((cpu.user + cpu.system) / n, 1),
      checkpointPasses: store.checkpointer?.stats.passes,
    };
  } finally {
    await world.close();
    await store.close();
  }
}

function summary(rs: readonly Round[]): { p50Ms: number; p99Ms: number; p999Ms: number; loopMaxMs: number; cpuUsPerRegistration: number; failed: number } {
  return {
    p50Ms: round(median(rs.map((r) => r.p50Ms)), 1),
    p99Ms: round(median(rs.map((r) => r.p99Ms)), 1),
    p999Ms: round(median(rs.map((r) => r.p999Ms)), 1),
    loopMaxMs: round(median(rs.map((r) => r.loopMaxMs)), 1),
    cpuUsPerRegistration: round(median(rs.map((r) => r.cpuUsPerRegistration)), 1),
    failed: rs.reduce((a, r) => a + r.failed, 0),
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'homing-sqlite-checkpoints-'));
  try {
    console.log(`# sqlite-checkpoints: ${rate}/s for ${seconds} s per round, ${rounds} rounds per mode (ABBA), cpus ${cpus().length}`);
    // Warm-up (JIT), one short round per mode, not counted.
    await runRound(true, dir, 1000);
    await runRound(false, dir, 1001);
    const bg: Round[] = [];
    const inline: Round[] = [];
    for (let i = 0; i < rounds; i++) {
      for (const b of i % 2 === 0 ? [true, false] : [false, true]) {
        const r = await runRound(b, dir, i * 2 + (b ? 0 : 1));
        (b ? bg : inline).push(r);
        console.log(
          `${b ? 'background' : 'automatic '} round ${i + 1}: p50 ${r.p50Ms} ms  p99 ${r.p99Ms} ms  p99.9 ${r.p999Ms} ms  loop max ${r.loopMaxMs} ms  ${r.cpuUsPerRegistration} µs CPU/registration` +
            `${r.checkpointPasses === undefined ? '' : `  ${r.checkpointPasses} passes`}${r.failed > 0 ? `  failed ${r.failed}` : ''}`,
        );
      }
    }
    const b = summary(bg);
    const a = summary(inline);
    const ratio = round(a.p99Ms / b.p99Ms, 2);
    console.log(`background checkpoints (worker thread): p50 ${b.p50Ms} ms, p99 ${b.p99Ms} ms, p99.9 ${b.p999Ms} ms, loop max ${b.loopMaxMs} ms, ${b.cpuUsPerRegistration} µs CPU/registration`);
    console.log(`automatic checkpoints (in the commit, on the event loop): p50 ${a.p50Ms} ms, p99 ${a.p99Ms} ms, p99.9 ${a.p999Ms} ms, loop max ${a.loopMaxMs} ms, ${a.cpuUsPerRegistration} µs CPU/registration`);
    console.log(`p99 ratio (automatic / background): ${ratio}`);
    console.log(JSON.stringify({ bench: 'sqlite-checkpoints', rate, seconds, rounds, background: b, automatic: a, p99Ratio: ratio }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

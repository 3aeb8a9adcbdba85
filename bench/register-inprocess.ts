/**
 * The registration use case alone, in process (no TLS, no HTTP): what a registration costs the server above the
 * transport, on the embedded store, with the SQLite group commit on and off.
 *
 * `RegistrationService.register` with a device SAS (key derived from one symmetric-key group), hashed over 2
 * in-process hubs, on a SQLite file: SAS check, enrollment match, allocation, the hub device with its initial twin,
 * the finished operation with its record. `--concurrency` registrations in flight (default 32), the answers within
 * the 100 ms budget as over HTTPS. Each round registers `--count` new devices (default 8,000) in a store of its own;
 * rounds alternate grouped / per-write transactions (ABBA), after a warm-up of each.
 *
 * Baseline: the same registrations with every write in its own transaction (the store before the group commit):
 * ratio = baseline CPU per registration / grouped CPU per registration (above 1: the group commit saves CPU).
 * CPU is `process.cpuUsage()` of this process (pinned to one core when `taskset` exists), so it counts every thread.
 *
 *   node --conditions=homing-source --import tsx bench/register-inprocess.ts [--count 8000] [--concurrency 32] [--rounds 4]
 *
 * The last stdout line is one JSON object with the figures.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSas, deriveDeviceKey } from '../packages/server/src/core/sas.ts';
import { openStore } from '../packages/server/src/store/open.ts';
import { createRegisterWorld } from './lib/register-world.ts';
import { median, numberFlag, round } from './lib/register-stats.ts';

const count = Math.floor(numberFlag('count', 8000));
const concurrency = Math.floor(numberFlag('concurrency', 32));
const rounds = Math.max(2, Math.floor(numberFlag('rounds', 4)));
const WARMUP = 2000;
const BUDGET_MS = 100;

interface Figures {
  grouped: boolean;
  registrations: number;
  perSecond: number;
  cpuUsPerRegistration: number;
  non200: number;
}

async function runRound(grouped: boolean, n: number, dir: string): Promise<Figures> {
  const store = await openStore({ dialect: 'sqlite', sqlitePath: join(dir, `${grouped ? 'g' : 'p'}-${Date.now()}-${Math.random().toString(36).slice(2)}.db`), sqliteGroupCommit: grouped });
  const world = await createRegisterWorld(store);
  try {
    const expiry = Math.floor(Date.now() / 1000) + 3600;
    const devices = Array.from({ length: n }, (_, i) => {
      const id = `bench-${i}`;
      const sas = buildSas({ sr: `${world.idScope}/registrations/${id}`, keyBase64: deriveDeviceKey(world.groupKey, id), keyName: 'registration', expirySeconds: expiry });
      return { id, sas };
    });
    let next = 0;
    let non200 = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < devices.length) {
          const d = devices[next++]!;
          const r = await world.service.register(world.idScope, d.id, { registrationId: d.id }, { kind: 'sas', authorization: d.sas }, { budgetMs: BUDGET_MS });
          if (r.reply.httpStatus !== 200 || r.reply.body.status !== 'assigned') non200++;
        }
      }),
    );
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(c0);
    const stored = await store.provisioning.countRegistrations(world.instance);
    if (stored !== n) throw new Error(`expected ${n} registration records, found ${stored}`);
    return { grouped, registrations: n, perSecond: round((n / wallMs) * 1000, 1), cpuUsPerRegistration: round((cpu.user + cpu.system) / n, 1), non200 };
  } finally {
    await world.close();
    await store.close();
  }
}

function pinSelf(): void {
  // One core, as the server children of the other register benches.
  const r = spawnSync('taskset', ['-cp', '0', String(process.pid)], { stdio: 'ignore' });
  if (r.status === 0) console.log('# pinned to CPU 0');
}

async function main(): Promise<void> {
  pinSelf();
  const dir = mkdtempSync(join(tmpdir(), 'homing-register-inprocess-'));
  try {
    console.log(`# register-inprocess: count ${count} per round, concurrency ${concurrency}, rounds ${rounds} per mode, warm-up ${WARMUP} per mode`);
    await runRound(true, WARMUP, dir);
    await runRound(false, WARMUP, dir);
    const grouped: Figures[] = [];
    const baseline: Figures[] = [];
    for (let r = 0; r < rounds; r++) {
      // ABBA: grouped first in even rounds.
      for (const g of r % 2 === 0 ? [true, false] : [false, true]) {
        const f = await runRound(g, count, dir);
        (g ? grouped : baseline).push(f);
        console.log(`${g ? 'grouped    ' : 'per-write  '} round ${r + 1}: ${String(f.perSecond).padStart(8)} /s  ${String(f.cpuUsPerRegistration).padStart(7)} µs CPU/registration  not-200 ${f.non200}`);
      }
    }
    const gCpu = median(grouped.map((f) => f.cpuUsPerRegistration));
    const bCpu = median(baseline.map((f) => f.cpuUsPerRegistration));
    const gRate = median(grouped.map((f) => f.perSecond));
    const bRate = median(baseline.map((f) => f.perSecond));
    const ratio = round(bCpu / gCpu, 2);
    const failed = [...grouped, ...baseline].reduce((a, f) => a + f.non200, 0);
    console.log(`grouped (group commit): ${gRate}/s, ${gCpu} µs CPU per registration`);
    console.log(`baseline (one transaction per write): ${bRate}/s, ${bCpu} µs CPU per registration`);
    console.log(`ratio (baseline CPU / grouped CPU): ${ratio}${failed > 0 ? `; ${failed} registrations did not end assigned within the budget` : ''}`);
    console.log(
      JSON.stringify({
        bench: 'register-inprocess',
        count,
        concurrency,
        rounds,
        groupedPerSecond: gRate,
        groupedCpuUsPerRegistration: gCpu,
        baselinePerSecond: bRate,
        baselineCpuUsPerRegistration: bCpu,
        ratio,
        notAssignedWithinBudget: failed,
      }),
    );
    if (failed > 0) process.exitCode = 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

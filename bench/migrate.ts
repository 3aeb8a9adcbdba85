/**
 * Hub migration throughput (reprovisioning with migrate), next to the ceiling.
 *
 * Provisions `--count` devices (default 100,000) of one symmetric-key group hashed over 2 in-process hubs, each with
 * a reported twin of about `--reported-bytes` (default 2,048), then changes the group to a third hub and re-registers
 * every device through the registration use case (in process: no TLS, so the figure is the migration path itself:
 * enrollment match, allocation, the durable move with its recorded steps, the old hub's read and delete, the new
 * hub's import, the record). `--concurrency` registrations run at once (default 64).
 *
 * Then it checks, over the whole fleet, that no device was lost or duplicated: every device is on exactly one hub
 * (hub C), its record says so, no move is left, and every device's reported twin is byte-identical to what it wrote.
 *
 * Ceiling: 100,000 migrations in 10 minutes (the target), scaled to `--count`; ratio = time / ceiling
 * (below 1 meets it). Runs on the embedded store (a SQLite file) and, when HOMING_BENCH_DATABASE_URL or DATABASE_URL
 * is set, on PostgreSQL (a fresh schema, dropped after). `--store sqlite|postgres` picks one.
 *
 *   node --conditions=homing-source --import tsx bench/migrate.ts [--count 100000] [--concurrency 64] [--pool 16]
 *        [--reported-bytes 2048] [--store sqlite|postgres]
 *
 * The last stdout line is one JSON object with the figures.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import type { StoreConfig } from '../packages/server/src/store/ports.ts';
import { deviceIds, moveAll, moveGroupToHubC, newWorldSpec, openWorld, reportedOf, setupWorld, type World } from '../packages/server/test/provisioning/reprovision/support/move-world.ts';
import { flag, numberFlag, round } from './lib/register-stats.ts';

const count = numberFlag('count', 100_000);
const concurrency = numberFlag('concurrency', 64);
const reportedBytes = numberFlag('reported-bytes', 2048);
const only = flag('store');
const dbUrl = process.env.HOMING_BENCH_DATABASE_URL ?? process.env.DATABASE_URL;
const CEILING_S = (600 * count) / 100_000;

interface StoreFigures {
  store: string;
  devices: number;
  setupSeconds: number;
  migrateSeconds: number;
  migrationsPerSecond: number;
  moved: number;
  otherOutcomes: number;
  lost: number;
  duplicated: number;
  misrecorded: number;
  corrupted: number;
  pendingMoves: number;
  ceilingSeconds: number;
  ratio: number;
  rssMiB: number;
}

/** Whole-fleet invariant in a few set queries (a per-device walk of 100k devices would dominate the run). */
async function verify(w: World): Promise<Pick<StoreFigures, 'lost' | 'duplicated' | 'misrecorded' | 'corrupted' | 'pendingMoves'> & { perHub: Record<string, number> }> {
  const db = w.store.db;
  const hubs = w.spec.hubs.map((h) => h.name);
  const target = hubs[2]!;
  const rows = await sql<{ hub_id: string; n: number }>`select hub_id, count(*) as n from hub_devices where hub_id in (${sql.join(hubs)}) group by hub_id`.execute(db);
  const perHub: Record<string, number> = Object.fromEntries(rows.rows.map((r) => [r.hub_id, Number(r.n)]));
  const dup = await sql<{ n: number }>`select count(*) as n from (select device_id from hub_devices where hub_id in (${sql.join(hubs)}) group by device_id having count(*) > 1) d`.execute(db);
  const distinct = await sql<{ n: number }>`select count(distinct device_id) as n from hub_devices where hub_id in (${sql.join(hubs)})`.execute(db);
  const duplicated = Number(dup.rows[0]?.n ?? 0);
  const lost = w.spec.count - Number(distinct.rows[0]?.n ?? 0);
  // Records: every one assigned to hub C (the JSON document holds status and assignedHub).
  let misrecorded = 0;
  let corrupted = 0;
  const ids = deviceIds(w.spec);
  for (let i = 0; i < ids.length; i += 500) {
    const batch = ids.slice(i, i + 500);
    const recs = await sql<{ doc: string }>`select doc from dps_registrations where instance = ${w.spec.instanceName} and registration_key in (${sql.join(batch)})`.execute(db);
    for (const r of recs.rows) {
      const rec = JSON.parse(r.doc) as { status: string; assignedHub?: string };
      if (rec.status !== 'assigned' || rec.assignedHub !== target) misrecorded++;
    }
    misrecorded += batch.length - recs.rows.length;
    const twins = await sql<{ device_id: string; doc: string }>`select device_id, doc from hub_twins where hub_id = ${target} and device_id in (${sql.join(batch)})`.execute(db);
    for (const t of twins.rows) {
      const twin = JSON.parse(t.doc) as { reported: { props: unknown } };
      if (JSON.stringify(twin.reported.props) !== JSON.stringify(reportedOf(w.spec, t.device_id))) corrupted++;
    }
  }
  return { lost, duplicated, misrecorded, corrupted, pendingMoves: await w.store.provisioning.countHubMoves(w.spec.instanceName), perHub };
}

async function runOn(name: string, store: StoreConfig): Promise<StoreFigures> {
  const spec = newWorldSpec(store, { count, reportedBytes });
  const w = await openWorld(spec, { nodeId: `bench-${name}` });
  try {
    const t0 = performance.now();
    await setupWorld(w, concurrency);
    await moveGroupToHubC(w);
    const setupSeconds = (performance.now() - t0) / 1000;
    process.stdout.write(`${name}: ${count} devices provisioned on 2 hubs with ~${reportedBytes} B reported twins in ${round(setupSeconds, 1)} s\n`);

    const t1 = performance.now();
    const r = await moveAll(w, concurrency);
    const migrateSeconds = (performance.now() - t1) / 1000;
    for (const sample of r.samples) process.stdout.write(`${name}: not moved: ${sample}\n`);
    const v = await verify(w);
    const f: StoreFigures = {
      store: name,
      devices: count,
      setupSeconds: round(setupSeconds, 1),
      migrateSeconds: round(migrateSeconds, 1),
      migrationsPerSecond: round(r.moved / migrateSeconds, 1),
      moved: r.moved,
      otherOutcomes: r.other,
      lost: v.lost,
      duplicated: v.duplicated,
      misrecorded: v.misrecorded,
      corrupted: v.corrupted,
      pendingMoves: v.pendingMoves,
      ceilingSeconds: CEILING_S,
      ratio: round(migrateSeconds / CEILING_S, 3),
      rssMiB: round(process.memoryUsage().rss / 1048576, 0),
    };
    process.stdout.write(
      `${name}: ${r.moved} migrations in ${f.migrateSeconds} s = ${f.migrationsPerSecond}/s (ceiling ${CEILING_S} s for ${count}: ratio ${f.ratio}, below 1 meets it)\n` +
        `${name}: per hub ${JSON.stringify(v.perHub)}; lost ${v.lost}, duplicated ${v.duplicated}, misrecorded ${v.misrecorded}, corrupted twins ${v.corrupted}, moves left ${v.pendingMoves}\n`,
    );
    return f;
  } finally {
    await w.close();
  }
}

const results: StoreFigures[] = [];
if (only === undefined || only === 'sqlite') {
  const dir = mkdtempSync(join(tmpdir(), 'homing-bench-migrate-'));
  try {
    results.push(await runOn('sqlite', { dialect: 'sqlite', sqlitePath: join(dir, 'homing.db') }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
if ((only === undefined || only === 'postgres') && dbUrl) {
  const schema = `bench_migrate_${Date.now().toString(36)}`;
  try {
    results.push(await runOn('postgres', { dialect: 'postgres', postgresUrl: dbUrl, postgresSchema: schema, poolSize: numberFlag('pool', 16) }));
  } finally {
    const c = new pg.Client({ connectionString: dbUrl });
    await c.connect();
    await c.query(`drop schema if exists "${schema}" cascade`);
    await c.end();
  }
} else if (only === 'postgres') {
  throw new Error('set HOMING_BENCH_DATABASE_URL (or DATABASE_URL) for --store postgres');
}
const ok = results.every((r) => r.lost === 0 && r.duplicated === 0 && r.misrecorded === 0 && r.corrupted === 0 && r.pendingMoves === 0 && r.moved === count);
process.stdout.write(`${JSON.stringify({ bench: 'migrate', count, concurrency, reportedBytes, ceilingSeconds: CEILING_S, ok, results, ratio: Math.max(...results.map((r) => r.ratio)) })}\n`);
if (!ok) process.exitCode = 1;

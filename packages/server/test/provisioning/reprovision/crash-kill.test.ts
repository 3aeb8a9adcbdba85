import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { StoreConfig } from '../../../src/store/ports.ts';
import { crashRound, invariantHolds, prepareWorld, runWorker, type KillPoint } from './support/crash-rounds.ts';
import { newWorldSpec } from './support/move-world.ts';

/**
 * Crash-safe migration (issue: "kill the process at each step boundary and at random points, over many devices, on
 * both stores"). Devices on hubs A and B migrate to hub C in a child process that is SIGKILLed at a step boundary
 * (after the move is created, after the old twin is copied, after the new hub is written, after the old hub's device
 * is removed) or after a random delay; a restarted process resumes the interrupted moves. After every round each
 * device is on exactly one hub, the one its registration record names, with its reported twin intact, and no move is
 * left. bench/migrate-soak.ts runs the same rounds for longer.
 */

const DB_URL = process.env.HOMING_TEST_DATABASE_URL;
const DEVICES = 40;

function killPoints(): KillPoint[] {
  const random = (): KillPoint => ({ afterMs: 150 + Math.floor(Math.random() * 900) });
  return [{ step: 'planned', nth: 3 }, { step: 'copied', nth: 5 }, { step: 'written', nth: 4 }, { step: 'removed', nth: 6 }, random(), random()];
}

async function crashSuite(store: StoreConfig, dir: string): Promise<void> {
  const spec = newWorldSpec(store, { count: DEVICES, reportedBytes: 512 });
  const specFile = await prepareWorld(spec, dir);
  let killedAtBoundary = 0;
  for (const kill of killPoints()) {
    const r = await crashRound(specFile, kill);
    if ('step' in kill) {
      assert.ok(r.killed, `the worker should have been killed after step ${kill.step}`);
      killedAtBoundary++;
      // Killed right after recording a step: that move was interrupted, and the restart resumed it.
      assert.ok(r.resumed >= 1, `a move interrupted after ${kill.step} is resumed (resumed ${r.resumed})`);
    }
    assert.ok(invariantHolds(r.report), `invariant after ${JSON.stringify(kill)}: ${JSON.stringify({ ...r.report, perHub: r.report.perHub })}`);
    assert.equal(Object.values(r.report.perHub).reduce((a, b) => a + b, 0), DEVICES);
  }
  assert.equal(killedAtBoundary, 4);
  // Without a kill, the rest of the fleet moves; every device ends on hub C with its data.
  const last = await runWorker(specFile, 'move');
  assert.equal(last.code, 0, last.stderr.slice(-2000));
  const final = await crashRound(specFile, { afterMs: 600_000 });
  assert.ok(invariantHolds(final.report), JSON.stringify(final.report));
  assert.equal(final.report.perHub['hub-c.move.test'], DEVICES);
}

test('SIGKILL during migrations on the embedded store: every device ends on exactly one hub with its data', { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'homing-crash-'));
  try {
    await crashSuite({ dialect: 'sqlite', sqlitePath: join(dir, 'homing.db') }, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGKILL during migrations on PostgreSQL: every device ends on exactly one hub with its data', { skip: DB_URL ? false : 'HOMING_TEST_DATABASE_URL is not set', timeout: 600_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'homing-crash-pg-'));
  const schema = `crash_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
  try {
    await crashSuite({ dialect: 'postgres', postgresUrl: DB_URL!, postgresSchema: schema, poolSize: 4 }, dir);
  } finally {
    const c = new pg.Client({ connectionString: DB_URL });
    await c.connect();
    await c.query(`drop schema if exists "${schema}" cascade`);
    await c.end();
    rmSync(dir, { recursive: true, force: true });
  }
});

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { sql } from 'kysely';
import { openStore, type OpenedStore } from '../../src/store/open.ts';
import { SAFETY_AUTOCHECKPOINT_PAGES, type CheckpointPass, type SqliteCheckpointer } from '../../src/store/kysely/sqlite-checkpointer.ts';
import { WAL_AUTOCHECKPOINT_PAGES } from '../../src/store/kysely/sqlite.ts';
import { sqliteFiles } from '../helpers/store-harness.ts';

const sqliteFile = sqliteFiles('homing-checkpointer-');

async function autocheckpoint(store: OpenedStore): Promise<number> {
  const r = await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(store.db);
  return Number(r.rows[0]?.wal_autocheckpoint);
}

/** Awaits passes (no timers: each pass is an event) until one satisfies `done`; fails after `max` passes. */
async function passUntil(c: SqliteCheckpointer, done: (p: CheckpointPass) => boolean, max = 500): Promise<CheckpointPass> {
  for (let i = 0; i < max; i++) {
    const p = await c.nextPass();
    if (done(p)) return p;
  }
  throw new Error(`no pass satisfied the condition in ${max} passes; last ${JSON.stringify(c.stats.last)}`);
}

/** Inserts `n` rows of about 1 KiB, `perTurn` per transaction, yielding to the event loop between transactions. */
async function fill(store: OpenedStore, n: number, perTurn: number, from = 0): Promise<void> {
  for (let i = from; i < from + n; i += perTurn) {
    await store.db.transaction().execute(async (trx) => {
      for (let j = i; j < Math.min(i + perTurn, from + n); j++) await sql`insert into ckpt (k, v) values (${j}, ${'x'.repeat(1000)})`.execute(trx);
    });
    await new Promise<void>((r) => setImmediate(r));
  }
}

async function count(store: OpenedStore): Promise<number> {
  return Number((await sql<{ n: number }>`select count(*) as n from ckpt`.execute(store.db)).rows[0]?.n);
}

describe('SqliteCheckpointer (WAL checkpoints on a worker thread)', () => {
  it('copies the log back on its worker; the main connection only checkpoints past the safety threshold', async () => {
    const path = sqliteFile();
    const store = await openStore({ dialect: 'sqlite', sqlitePath: path, sqliteCheckpointIntervalMs: 5 });
    try {
      const c = store.checkpointer;
      assert.ok(c, 'a file store has a checkpointer');
      assert.equal(await autocheckpoint(store), SAFETY_AUTOCHECKPOINT_PAGES);
      await sql`create table ckpt (k integer primary key, v text not null)`.execute(store.db);
      await fill(store, 300, 30);
      // A pass that found frames and copied all of them back.
      const p = await passUntil(c, (x) => x.busy === 0 && x.log > 0 && x.checkpointed === x.log);
      assert.ok(p.log > 0);
      assert.ok(c.stats.passes >= 1 && c.stats.caughtUp >= 1, JSON.stringify(c.stats));
      assert.equal(c.fallenBack, false);
      assert.equal(await count(store), 300);
    } finally {
      await store.close();
    }
    // The checkpointer closed first, so the main connection was the last one: it removed the log.
    assert.equal(existsSync(`${path}-wal`), false);
    const again = await openStore({ dialect: 'sqlite', sqlitePath: path });
    try {
      assert.equal(await count(again), 300);
    } finally {
      await again.close();
    }
  });

  it('keeps every commit made while passes run beside the writer', async () => {
    const path = sqliteFile();
    const store = await openStore({ dialect: 'sqlite', sqlitePath: path, sqliteCheckpointIntervalMs: 1 });
    const c = store.checkpointer!;
    try {
      await sql`create table ckpt (k integer primary key, v text not null)`.execute(store.db);
      const before = c.stats.passes;
      await fill(store, 2000, 5);
      // Writes and passes interleaved: passes ended while the rows were going in.
      await passUntil(c, () => c.stats.passes > before + 1);
      assert.equal(await count(store), 2000);
    } finally {
      await store.close();
    }
    const again = await openStore({ dialect: 'sqlite', sqlitePath: path, sqliteBackgroundCheckpoints: false });
    try {
      assert.equal(await count(again), 2000);
      const integrity = await sql<{ integrity_check: string }>`pragma integrity_check`.execute(again.db);
      assert.deepEqual(integrity.rows, [{ integrity_check: 'ok' }]);
    } finally {
      await again.close();
    }
  });

  it('hands checkpoints back to the main connection when its worker dies, and says so', async () => {
    const problems: string[] = [];
    const store = await openStore({ dialect: 'sqlite', sqlitePath: sqliteFile(), sqliteCheckpointIntervalMs: 5 }, { onCheckpointProblem: (m) => problems.push(m) });
    try {
      const c = store.checkpointer!;
      await c.kill();
      assert.equal(c.fallenBack, true);
      assert.equal(problems.length, 1);
      assert.match(problems[0]!, /checkpointer exited/);
      assert.equal(await autocheckpoint(store), WAL_AUTOCHECKPOINT_PAGES);
      // The store keeps working.
      await sql`create table ckpt (k integer primary key, v text not null)`.execute(store.db);
      await fill(store, 50, 10);
      assert.equal(await count(store), 50);
    } finally {
      await store.close();
    }
  });

  it('is absent for in-memory databases and when turned off; a bad interval is refused', async () => {
    const memory = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
    const off = await openStore({ dialect: 'sqlite', sqlitePath: sqliteFile(), sqliteBackgroundCheckpoints: false });
    try {
      assert.equal(memory.checkpointer, undefined);
      assert.equal(off.checkpointer, undefined);
      assert.equal(await autocheckpoint(off), WAL_AUTOCHECKPOINT_PAGES);
    } finally {
      await memory.close();
      await off.close();
    }
    await assert.rejects(openStore({ dialect: 'sqlite', sqlitePath: sqliteFile(), sqliteCheckpointIntervalMs: 0 }), /checkpoint interval must be a positive integer/);
  });
});

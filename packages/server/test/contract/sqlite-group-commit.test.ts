import { describe, it } from 'node:test';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import assert from 'node:assert/strict';
import SqliteDatabase from 'better-sqlite3';
import { CompiledQuery, Kysely, sql } from 'kysely';
import type { Database } from '../../src/store/kysely/schema.ts';
import { HomingSqliteDialect, withStatementCache } from '../../src/store/kysely/sqlite.ts';
import { SqliteGroupCommit, UndoUnit, MAX_UNITS_PER_COMMIT } from '../../src/store/kysely/sqlite-group-commit.ts';
import { sqliteFiles } from '../helpers/store-harness.ts';

const sqliteFile = sqliteFiles('homing-group-commit-');

async function open(): Promise<{ db: Kysely<Database>; group: SqliteGroupCommit; close: () => Promise<void> }> {
  const path = sqliteFile();
  mkdirSync(dirname(path), { recursive: true });
  const raw = new SqliteDatabase(path, { timeout: 5000 });
  raw.pragma('journal_mode = WAL');
  const conn = withStatementCache(raw);
  const db = new Kysely<Database>({ dialect: new HomingSqliteDialect({ database: conn }) });
  await sql`create table kv (k text primary key, v text not null)`.execute(db);
  return { db, group: new SqliteGroupCommit(db, conn), close: () => db.destroy() };
}

const put = (k: string, v: string) => CompiledQuery.raw('insert into kv (k, v) values (?, ?)', [k, v]);
const putIfAbsent = (k: string, v: string) => CompiledQuery.raw('insert into kv (k, v) values (?, ?) on conflict do nothing', [k, v]);
const get = (k: string) => CompiledQuery.raw('select v from kv where k = ?', [k]) as CompiledQuery<{ v: string }>;

async function rows(db: Kysely<Database>): Promise<Array<{ k: string; v: string }>> {
  return (await sql<{ k: string; v: string }>`select k, v from kv order by k`.execute(db)).rows;
}

describe('SqliteGroupCommit', () => {
  it('commits the units of one event-loop turn in one transaction, each settling with its own result', async () => {
    const { db, group, close } = await open();
    try {
      const results = await Promise.all(
        ['a', 'b', 'c', 'd'].map((k) =>
          group.submit((s) => {
            s.run(put(k, k.toUpperCase()));
            return s.all(get(k))[0]?.v;
          }),
        ),
      );
      assert.deepEqual(results, ['A', 'B', 'C', 'D']);
      assert.deepEqual(group.stats, { commits: 1, units: 4 });
      assert.deepEqual(await rows(db), [
        { k: 'a', v: 'A' },
        { k: 'b', v: 'B' },
        { k: 'c', v: 'C' },
        { k: 'd', v: 'D' },
      ]);
    } finally {
      await close();
    }
  });

  it('rolls back only the unit that fails; the others commit', async () => {
    const { db, group, close } = await open();
    try {
      const ok1 = group.submit((s) => s.run(put('x', '1')).changes);
      const failing = group.submit((s) => {
        s.run(put('y', '2'));
        s.run(put('x', 'duplicate')); // primary-key violation: the unit's first insert must go too
        return 'unreachable';
      });
      const undone = group.submit((s) => {
        s.run(put('z', '3'));
        throw new UndoUnit('undone');
      });
      const ok2 = group.submit((s) => s.run(putIfAbsent('x', 'ignored')).changes + s.run(put('w', '4')).changes);
      assert.equal(await ok1, 1);
      await assert.rejects(failing, /UNIQUE constraint failed/);
      assert.equal(await undone, 'undone');
      assert.equal(await ok2, 1);
      assert.deepEqual(await rows(db), [
        { k: 'w', v: '4' },
        { k: 'x', v: '1' },
      ]);
      assert.equal(group.stats.commits, 1);
    } finally {
      await close();
    }
  });

  it('refuses an asynchronous unit (its statements would run outside the transaction) and keeps the others', async () => {
    const { db, group, close } = await open();
    try {
      const asyncUnit = group.submit(async (s) => {
        s.run(put('early', 'x'));
        return 1;
      });
      const ok = group.submit((s) => s.run(put('kept', 'y')).changes);
      await assert.rejects(asyncUnit, /must be synchronous/);
      assert.equal(await ok, 1);
      assert.deepEqual(await rows(db), [{ k: 'kept', v: 'y' }]);
    } finally {
      await close();
    }
  });

  it('splits a large burst into transactions of at most MAX_UNITS_PER_COMMIT units', async () => {
    const { db, group, close } = await open();
    try {
      const n = MAX_UNITS_PER_COMMIT * 2 + 5;
      await Promise.all(Array.from({ length: n }, (_, i) => group.submit((s) => s.run(put(`k${String(i).padStart(4, '0')}`, String(i))))));
      assert.deepEqual(group.stats, { commits: 3, units: n });
      assert.equal((await rows(db)).length, n);
    } finally {
      await close();
    }
  });

  it('never runs inside a Kysely transaction that is waiting between its statements', async () => {
    const { db, group, close } = await open();
    try {
      let unitDone: Promise<number> | undefined;
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await sql`insert into kv (k, v) values ('in-trx', 'rolled back')`.execute(trx);
          // Submitted while the transaction holds the connection: the unit must wait for it, not join it.
          unitDone = group.submit((s) => s.run(put('unit', 'kept')).changes);
          await new Promise((r) => setImmediate(r));
          throw new Error('abort the transaction');
        }),
        /abort the transaction/,
      );
      assert.equal(await unitDone, 1);
      assert.deepEqual(await rows(db), [{ k: 'unit', v: 'kept' }]);
    } finally {
      await close();
    }
  });

  it('rejects every unit of a transaction whose BEGIN fails, and stores none of them', async () => {
    const { db, group, close } = await open();
    try {
      // Another connection holds the write lock; a 0 ms busy timeout makes BEGIN IMMEDIATE fail at once.
      await sql`pragma busy_timeout = 0`.execute(db);
      const path = (await sql<{ file: string }>`select file from pragma_database_list where name = 'main'`.execute(db)).rows[0]!.file;
      const other = new SqliteDatabase(path);
      try {
        other.exec('begin immediate');
        const units = [group.submit((s) => s.run(put('p', '1'))), group.submit((s) => s.run(put('q', '2')))];
        for (const u of units) await assert.rejects(u, /database is locked/);
        other.exec('rollback');
      } finally {
        other.close();
      }
      assert.deepEqual(await rows(db), []);
      // The group commit keeps working afterwards.
      assert.equal(await group.submit((s) => s.run(put('r', '3')).changes), 1);
      assert.deepEqual(await rows(db), [{ k: 'r', v: '3' }]);
    } finally {
      await close();
    }
  });
});

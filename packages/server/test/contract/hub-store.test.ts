import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { sql } from 'kysely';
import { openStore, type OpenedStore } from '../../src/store/open.ts';
import { migrateToLatest, migrations, MIGRATION_TABLE, type StoreMigration } from '../../src/store/migrations/index.ts';
import type { StoreConfig } from '../../src/store/ports.ts';
import { dropPgSchema, freshSchemaName, openFreshPostgres, PG_SKIP, pgTestUrl as pgUrl, runStoreContract, sqliteFiles } from '../helpers/store-harness.ts';
import { hubStoreContract, sampleDevice, sampleTwin } from './hub-store.contract.ts';

const sqliteFile = sqliteFiles('homing-hub-store-');

/** A migration that fails half-way leaves neither its tables nor a history row behind. */
async function checkFailedMigrationRollsBack(store: OpenedStore): Promise<void> {
  const broken: StoreMigration = {
    name: '9999_broken',
    up: async (db) => {
      await db.schema.createTable('half_done').addColumn('id', 'text').execute();
      throw new Error('boom');
    },
  };
  await assert.rejects(migrateToLatest(store.db, store.dialect, [...migrations, broken]), /failed at 9999_broken: boom/);
  const tables = await store.db.introspection.getTables();
  assert.equal(tables.some((t) => t.name === 'half_done'), false);
  const history = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)} order by name`.execute(store.db);
  assert.deepEqual(history.rows.map((r) => r.name), migrations.map((m) => m.name));
  assert.deepEqual(await migrateToLatest(store.db, store.dialect), []);
}

runStoreContract(hubStoreContract, (s) => s.hub, { title: 'HubStore contract', sqliteFile });

describe('openStore: sqlite', () => {
  it('creates the parent directory and sets the pragmas', async () => {
    const path = sqliteFile();
    const store = await openStore({ dialect: 'sqlite', sqlitePath: path });
    try {
      assert.ok(existsSync(path));
      const pragma = async (name: string): Promise<unknown> => {
        const r = await sql<Record<string, unknown>>`select * from ${sql.raw(`pragma_${name}`)}`.execute(store.db);
        return Object.values(r.rows[0] ?? {})[0];
      };
      assert.equal(await pragma('journal_mode'), 'wal');
      assert.equal(await pragma('synchronous'), 1); // NORMAL
      assert.equal(await pragma('foreign_keys'), 1);
      assert.equal(await pragma('busy_timeout'), 5000);
      assert.equal(await pragma('cache_size'), -65536);
    } finally {
      await store.close();
    }
  });

  it('keeps the data when the file is closed and opened again', async () => {
    const path = sqliteFile();
    const hub = 'reopen.test';
    const first = await openStore({ dialect: 'sqlite', sqlitePath: path });
    assert.equal(await first.hub.createDevice(hub, sampleDevice('keep'), sampleTwin('keep')), true);
    await first.hub.recordConnections(hub, [{ deviceId: 'keep', connectionState: 'Connected' }]);
    await first.close();
    await first.close(); // idempotent

    const second = await openStore({ dialect: 'sqlite', sqlitePath: path });
    try {
      assert.deepEqual(await second.hub.getDevice(hub, 'keep'), { ...sampleDevice('keep'), connectionState: 'Connected' });
      assert.deepEqual(await second.hub.getTwin(hub, 'keep'), sampleTwin('keep'));
      assert.equal(await second.hub.createDevice(hub, sampleDevice('keep'), sampleTwin('keep')), false);
    } finally {
      await second.close();
    }
  });

  it('treats running the migrations again as a no-op', async () => {
    const store = await openStore({ dialect: 'sqlite', sqlitePath: sqliteFile() });
    try {
      await store.hub.createDevice('m.test', sampleDevice('m'), sampleTwin('m'));
      assert.deepEqual(await migrateToLatest(store.db, 'sqlite'), []);
      assert.deepEqual(await migrateToLatest(store.db, 'sqlite'), []);
      const history = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)} order by name`.execute(store.db);
      assert.deepEqual(history.rows.map((r) => r.name), migrations.map((m) => m.name));
      assert.equal((await store.hub.countDevices('m.test')).total, 1);
    } finally {
      await store.close();
    }
  });

  it('rolls back a migration that fails half-way', async () => {
    const store = await openStore({ dialect: 'sqlite', sqlitePath: sqliteFile() });
    try {
      await checkFailedMigrationRollsBack(store);
    } finally {
      await store.close();
    }
  });

  it('refuses an out-of-order migration list', async () => {
    const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
    try {
      const noop = async (): Promise<void> => {};
      await assert.rejects(
        migrateToLatest(store.db, 'sqlite', [{ name: '0002_b', up: noop }, { name: '0001_a', up: noop }]),
        /must sort after/,
      );
    } finally {
      await store.close();
    }
  });
});

describe('openStore: postgres', { skip: pgUrl === undefined ? PG_SKIP : false }, () => {
  it('shares one schema between stores, keeps data across reopen, and migrates once', async () => {
    const { store: first, cfg, drop } = await openFreshPostgres(pgUrl ?? '');
    try {
      assert.equal(await first.hub.createDevice('pg.test', sampleDevice('keep'), sampleTwin('keep')), true);
      await first.close();

      const [second, third] = await Promise.all([openStore(cfg), openStore(cfg)]);
      try {
        assert.deepEqual(await second.hub.getDevice('pg.test', 'keep'), sampleDevice('keep'));
        assert.deepEqual(await third.hub.getTwin('pg.test', 'keep'), sampleTwin('keep'));
        assert.deepEqual(await migrateToLatest(second.db, 'postgres'), []);
        const history = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)} order by name`.execute(second.db);
        assert.deepEqual(history.rows.map((r) => r.name), migrations.map((m) => m.name));
        const where = await sql<{ schema: string }>`select current_schema() as schema`.execute(second.db);
        assert.equal(where.rows[0]?.schema, cfg.postgresSchema);
      } finally {
        await Promise.all([second.close(), third.close()]);
      }
    } finally {
      await drop();
    }
  });

  it('rolls back a migration that fails half-way', async () => {
    const { store, drop } = await openFreshPostgres(pgUrl ?? '');
    try {
      await checkFailedMigrationRollsBack(store);
    } finally {
      await store.close();
      await drop();
    }
  });

  it('migrates a fresh schema once when several stores open it at the same time', async () => {
    const schema = freshSchemaName();
    const cfg: StoreConfig = { dialect: 'postgres', postgresUrl: pgUrl ?? '', postgresSchema: schema, poolSize: 2 };
    const opened = await Promise.allSettled([openStore(cfg), openStore(cfg), openStore(cfg)]);
    try {
      for (const r of opened) assert.equal(r.status, 'fulfilled', r.status === 'rejected' ? String(r.reason) : '');
      const [a, b] = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      assert.ok(a && b);
      assert.equal(await a.hub.createDevice('race.test', sampleDevice('one'), sampleTwin('one')), true);
      assert.deepEqual(await b.hub.getDevice('race.test', 'one'), sampleDevice('one'));
      const history = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)} order by name`.execute(a.db);
      assert.deepEqual(history.rows.map((r) => r.name), migrations.map((m) => m.name));
    } finally {
      await Promise.all(opened.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
      await dropPgSchema(pgUrl ?? '', schema);
    }
  });

  it('rejects a schema name that is not a plain identifier', async () => {
    await assert.rejects(openStore({ dialect: 'postgres', postgresUrl: pgUrl ?? '', postgresSchema: 'bad"name' }), /plain identifier/);
  });
});

import { after, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openStore, type OpenedStore } from '../../src/store/open.ts';
import type { StoreConfig } from '../../src/store/ports.ts';

/**
 * Shared scaffolding for tests that run on real stores: SQLite files in a temporary directory, SQLite `:memory:`, and
 * PostgreSQL in a fresh random schema (when HOMING_TEST_DATABASE_URL or DATABASE_URL is set) that is dropped at the end.
 */

/** The PostgreSQL URL tests run against, or undefined when PostgreSQL is not configured. */
export const pgTestUrl: string | undefined = process.env.HOMING_TEST_DATABASE_URL || process.env.DATABASE_URL || undefined;

export const PG_SKIP = 'PostgreSQL not configured: set HOMING_TEST_DATABASE_URL (or DATABASE_URL) to run this suite';

/** A random schema name that is a plain identifier. */
export function freshSchemaName(prefix = 't_'): string {
  return `${prefix}${randomBytes(6).toString('hex')}`;
}

/** Drops a PostgreSQL schema and everything in it (no error when it does not exist). */
export async function dropPgSchema(url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`drop schema if exists "${schema}" cascade`);
  } finally {
    await client.end();
  }
}

export interface FreshPostgres {
  store: OpenedStore;
  cfg: StoreConfig;
  schema: string;
  /** Drops the schema (does not close the store). */
  drop(): Promise<void>;
}

/** Opens a store on a fresh random schema; the schema is dropped again when opening fails half-way. */
export async function openFreshPostgres(url: string, opts: { poolSize?: number } = {}): Promise<FreshPostgres> {
  const schema = freshSchemaName();
  const cfg: StoreConfig = { dialect: 'postgres', postgresUrl: url, postgresSchema: schema, poolSize: opts.poolSize ?? 4 };
  const drop = (): Promise<void> => dropPgSchema(url, schema);
  try {
    return { store: await openStore(cfg), cfg, schema, drop };
  } catch (err) {
    await drop();
    throw err;
  }
}

/** Closes the store, then drops its schema (also when closing failed). */
export async function closeAndDrop(pgStore: Pick<FreshPostgres, 'store' | 'drop'>): Promise<void> {
  try {
    await pgStore.store.close();
  } finally {
    await pgStore.drop();
  }
}

/**
 * A temporary directory for SQLite files, removed after the test file; each call of the returned function gives the
 * path of a new database file (in a directory that does not exist yet).
 */
export function sqliteFiles(prefix: string): () => string {
  const tmp = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(tmp, { recursive: true, force: true }));
  let fileSeq = 0;
  return () => join(tmp, `db${++fileSeq}`, 'homing.db');
}

/** A harness as the store contracts take it: the port under test and how to dispose of it. */
export interface StoreHarness<S> {
  store: S;
  close(): Promise<void>;
}

/**
 * Runs a store contract on SQLite (file), SQLite `:memory:` and PostgreSQL (fresh schema, dropped after each harness),
 * or registers a skipped `<title>: postgres` suite when PostgreSQL is not configured.
 */
export function runStoreContract<S>(
  contract: (name: string, open: () => Promise<StoreHarness<S>>) => void,
  pick: (store: OpenedStore) => S,
  opts: { title: string; sqliteFile: () => string },
): void {
  const harness = (s: OpenedStore, close: () => Promise<void> = () => s.close()): StoreHarness<S> => ({ store: pick(s), close });

  contract('sqlite', async () => harness(await openStore({ dialect: 'sqlite', sqlitePath: opts.sqliteFile() })));

  contract('sqlite :memory:', async () => harness(await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' })));

  const url = pgTestUrl;
  if (url !== undefined) {
    contract('postgres', async () => {
      const fresh = await openFreshPostgres(url);
      return harness(fresh.store, () => closeAndDrop(fresh));
    });
  } else {
    describe(`${opts.title}: postgres`, { skip: PG_SKIP }, () => {
      it('runs the contract on PostgreSQL', () => {});
    });
  }
}

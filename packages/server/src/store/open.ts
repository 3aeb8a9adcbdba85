import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, sql } from 'kysely';
import type { Dialect, Store, StoreConfig } from './ports.ts';
import type { Database } from './kysely/schema.ts';
import { KyselyHubStore } from './kysely/hub-store.ts';
import { KyselyProvisioningStore } from './kysely/provisioning-store.ts';
import { KyselyCaStore } from './kysely/ca-store.ts';
import { HomingSqliteDialect, withStatementCache } from './kysely/sqlite.ts';
import { SqliteGroupCommit } from './kysely/sqlite-group-commit.ts';
import { SqliteCheckpointer } from './kysely/sqlite-checkpointer.ts';
import { NamedStatementPool, checkSchemaName, createPgPool } from './kysely/pg-pool.ts';
import { migrateToLatest } from './migrations/index.ts';

/** The opened store, plus the database itself so other modules can build their own stores on it. */
export interface OpenedStore extends Store {
  readonly db: Kysely<Database>;
  /** SQLite: the group commit of the registration and twin writes (its `stats` count commits and writes). */
  readonly groupCommit: SqliteGroupCommit | undefined;
  /** SQLite file databases: the background checkpointer (its `stats` count passes). */
  readonly checkpointer: SqliteCheckpointer | undefined;
}

export interface OpenStoreOptions {
  /** PostgreSQL: errors of idle pool connections (the pool replaces them by itself). Default: ignored. */
  onPoolError?: (err: Error) => void;
  /**
   * PostgreSQL: run repeated queries as named prepared statements (default true). Turn off behind a pooler that
   * does not support them (PgBouncer in transaction mode before 1.21).
   */
  preparedStatements?: boolean;
  /**
   * SQLite: a problem of the background checkpointer (it failed, so the main connection checkpoints again; or one
   * pass failed). Default: ignored.
   */
  onCheckpointProblem?: (message: string) => void;
}

/** SQLite page cache: 64 MiB (negative = KiB). The default 2 MB leaves a large registry waiting on I/O. */
const SQLITE_CACHE_KIB = 65536;

/**
 * Opens the database named by `cfg`, brings its schema to the latest migration, and returns the stores on it.
 *
 * - SQLite: one better-sqlite3 connection (Kysely serializes queries and transactions on it), WAL with
 *   synchronous=NORMAL, a 5 s busy timeout for other processes on the same file, foreign keys on (twins are deleted
 *   with their device by cascade), and a 64 MiB page cache. The parent directory is created when missing. The
 *   registration path's writes (a hub device with its twin; a finished operation with its record) go through a
 *   group commit (see SqliteGroupCommit): those of one event-loop turn share one transaction. A file database's WAL
 *   checkpoints run on a worker thread with its own connection (see SqliteCheckpointer), not inside a commit.
 *   Open one store per file per process: better-sqlite3 is synchronous, so a second connection in the same process
 *   waiting on the first one's write lock would block the event loop the first one needs to finish.
 * - PostgreSQL: a pg pool of `cfg.poolSize ?? 8`. With `cfg.postgresSchema`, the schema is created when missing and
 *   every pool connection starts with it as search_path.
 */
export async function openStore(cfg: StoreConfig, opts: OpenStoreOptions = {}): Promise<OpenedStore> {
  const opened: OpenedDatabase = cfg.dialect === 'sqlite' ? openSqlite(cfg, opts) : { db: await openPostgres(cfg, opts), groupCommit: undefined, checkpointer: undefined };
  const db = opened.db;
  try {
    await migrateToLatest(db, cfg.dialect);
  } catch (err) {
    await opened.checkpointer?.close();
    await db.destroy();
    throw err;
  }
  return storeOn(cfg.dialect, opened);
}

interface OpenedDatabase {
  db: Kysely<Database>;
  groupCommit: SqliteGroupCommit | undefined;
  checkpointer: SqliteCheckpointer | undefined;
}

function storeOn(dialect: Dialect, { db, groupCommit, checkpointer }: OpenedDatabase): OpenedStore {
  let closed: Promise<void> | undefined;
  const hot = groupCommit === undefined ? {} : { groupCommit };
  return {
    dialect,
    db,
    groupCommit,
    checkpointer,
    hub: new KyselyHubStore(db, dialect, hot),
    provisioning: new KyselyProvisioningStore(db, hot),
    caCertificates: new KyselyCaStore(db, dialect),
    // The checkpointer's connection closes first, so the main one is the last: it checkpoints and removes the log.
    close: () => (closed ??= (checkpointer?.close() ?? Promise.resolve()).then(() => db.destroy())),
  };
}

/**
 * SQLite: the database, the group commit of the registration path's writes on its one connection, and (for a file)
 * the background checkpointer.
 */
function openSqlite(cfg: StoreConfig, opts: OpenStoreOptions): OpenedDatabase {
  const path = cfg.sqlitePath;
  if (!path) throw new Error('store: sqlitePath is required for the sqlite dialect');
  const memory = path === ':memory:';
  if (!memory) mkdirSync(dirname(resolve(path)), { recursive: true });
  const raw = new SqliteDatabase(path, { timeout: 5000 });
  try {
    if (!memory) raw.pragma('journal_mode = WAL');
    raw.pragma('synchronous = NORMAL');
    raw.pragma('busy_timeout = 5000');
    raw.pragma('foreign_keys = ON');
    raw.pragma(`cache_size = -${SQLITE_CACHE_KIB}`);
  } catch (err) {
    raw.close();
    throw err;
  }
  const conn = withStatementCache(raw);
  const db = new Kysely<Database>({ dialect: new HomingSqliteDialect({ database: conn }) });
  const background = !memory && cfg.sqliteBackgroundCheckpoints !== false;
  let checkpointer: SqliteCheckpointer | undefined;
  try {
    checkpointer = background
      ? new SqliteCheckpointer(raw, resolve(path), {
          ...(cfg.sqliteCheckpointIntervalMs === undefined ? {} : { intervalMs: cfg.sqliteCheckpointIntervalMs }),
          ...(opts.onCheckpointProblem ? { onProblem: opts.onCheckpointProblem } : {}),
        })
      : undefined;
  } catch (err) {
    raw.close();
    throw err;
  }
  return { db, groupCommit: cfg.sqliteGroupCommit === false ? undefined : new SqliteGroupCommit(db, conn), checkpointer };
}

async function openPostgres(cfg: StoreConfig, opts: OpenStoreOptions): Promise<Kysely<Database>> {
  const url = cfg.postgresUrl;
  if (!url) throw new Error('store: postgresUrl is required for the postgres dialect');
  const schema = cfg.postgresSchema;
  if (schema !== undefined) checkSchemaName(schema);
  const max = cfg.poolSize ?? 8;
  if (!Number.isInteger(max) || max < 1) throw new Error(`store: poolSize must be a positive integer, got ${max}`);
  const pool = createPgPool({ connectionString: url, max, ...(schema === undefined ? {} : { schema }), ...(opts.onPoolError ? { onError: opts.onPoolError } : {}) });
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: new NamedStatementPool(pool, { enabled: opts.preparedStatements !== false }) }),
  });
  if (schema !== undefined) {
    try {
      await createSchema(db, schema);
    } catch (err) {
      await db.destroy();
      throw err;
    }
  }
  return db;
}

async function createSchema(db: Kysely<Database>, schema: string): Promise<void> {
  try {
    await sql`create schema if not exists ${sql.id(schema)}`.execute(db);
  } catch (err) {
    // Two processes creating the same schema at once: the loser can fail despite IF NOT EXISTS.
    const code = (err as { code?: unknown }).code;
    if (code !== '23505' && code !== '42P06') throw err;
  }
}

import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import type { Dialect } from '../ports.ts';
import { hubMigration } from './0001_hub.ts';
import { provisioningMigration } from './0002_provisioning.ts';
import { caCertificatesMigration } from './0003_ca_certificates.ts';
import { quotasMigration } from './0004_quotas.ts';
import { certificateClaimsMigration } from './0005_certificate_claims.ts';
import { hubMovesMigration } from './0006_hub_moves.ts';
import { fleetJobsMigration } from './0007_fleet_jobs.ts';

/**
 * One numbered step of the schema. Every module appends its own file (`0002_provisioning.ts`, ...) to
 * `migrations` below; names sort in the order they run. A migration gets the dialect so it can use dialect-specific
 * DDL; it runs inside the migration transaction (both dialects have transactional DDL).
 */
export interface StoreMigration {
  /** Unique, `NNNN_module`; the list must be in ascending name order. */
  readonly name: string;
  up(db: Kysely<unknown>, dialect: Dialect): Promise<void>;
  down?(db: Kysely<unknown>, dialect: Dialect): Promise<void>;
}

/** Every migration, in order. Append only: never rename, reorder or edit a released migration. */
export const migrations: readonly StoreMigration[] = [hubMigration, provisioningMigration, caCertificatesMigration, quotasMigration, certificateClaimsMigration, hubMovesMigration, fleetJobsMigration];

/** Names of the tables that record the migration history (kept apart from any other Kysely user's). */
export const MIGRATION_TABLE = 'homing_migration';
export const MIGRATION_LOCK_TABLE = 'homing_migration_lock';

function checkOrder(list: readonly StoreMigration[]): void {
  for (let i = 1; i < list.length; i++) {
    const prev = list[i - 1]!.name;
    const cur = list[i]!.name;
    if (!(prev < cur)) throw new Error(`store migrations: '${cur}' must sort after '${prev}' (unique names in ascending order)`);
  }
}

function provider(list: readonly StoreMigration[], dialect: Dialect): MigrationProvider {
  return {
    getMigrations: () => {
      const out: Record<string, Migration> = {};
      for (const m of list) {
        const down = m.down;
        out[m.name] = {
          up: (db) => m.up(db, dialect),
          ...(down ? { down: (db: Kysely<unknown>) => down.call(m, db, dialect) } : {}),
        };
      }
      return Promise.resolve(out);
    },
  };
}

/**
 * Brings the database to the latest migration and returns the names applied now (empty when it was up to date).
 * Safe to call from several processes at once: Kysely's migrator takes a lock (an advisory lock on PostgreSQL).
 * On PostgreSQL the history tables live in `current_schema()`, the first schema of the connection's search_path.
 */
export async function migrateToLatest<DB>(db: Kysely<DB>, dialect: Dialect, list: readonly StoreMigration[] = migrations): Promise<string[]> {
  checkOrder(list);
  let migrationTableSchema: string | undefined;
  if (dialect === 'postgres') {
    const r = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(db);
    const schema = r.rows[0]?.schema;
    if (!schema) throw new Error('store migrations: no current schema on PostgreSQL (does the search_path schema exist?)');
    // Without an explicit schema, Kysely would see a history table of *any* schema as ours.
    migrationTableSchema = schema;
  }
  const migrator = new Migrator({
    db,
    provider: provider(list, dialect),
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
    ...(migrationTableSchema === undefined ? {} : { migrationTableSchema }),
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    const cause = error instanceof Error ? error : new Error(String(error));
    throw new Error(`store migrations failed${failed ? ` at ${failed}` : ''}: ${cause.message}`, { cause });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

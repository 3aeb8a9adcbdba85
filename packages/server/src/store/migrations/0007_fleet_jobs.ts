import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { StoreMigration } from './index.ts';

/**
 * Phased fleet reprovisioning (provisioning/fleet, store/fleet-ports.ts): one row per job (its document, with the
 * state and a compare-and-set version as columns) and one row per device of a job, in processing order (`seq`),
 * with its progress state as a column so the runner pages through `pending` devices and a restart finds the
 * `invoked` ones it was watching.
 */
function keyText(dialect: Dialect) {
  return dialect === 'postgres' ? sql`text collate "C"` : sql`text`;
}

function bigint(dialect: Dialect) {
  return dialect === 'postgres' ? 'bigint' : 'integer';
}

async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('fleet_jobs')
    .addColumn('id', keyText(dialect), (c) => c.notNull().primaryKey())
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('created_at', keyText(dialect), (c) => c.notNull())
    .addColumn('version', bigint(dialect), (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addCheckConstraint('fleet_jobs_state_ck', sql`state in ('pending', 'running', 'paused', 'completed', 'cancelled', 'failed')`)
    .execute();
  await db.schema.createIndex('fleet_jobs_instance_idx').on('fleet_jobs').columns(['instance', 'created_at']).execute();
  await db.schema.createIndex('fleet_jobs_state_idx').on('fleet_jobs').columns(['state']).execute();

  await db.schema
    .createTable('fleet_job_devices')
    .addColumn('job_id', keyText(dialect), (c) => c.notNull())
    .addColumn('seq', bigint(dialect), (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('fleet_job_devices_pk', ['job_id', 'seq'])
    .addForeignKeyConstraint('fleet_job_devices_job_fk', ['job_id'], 'fleet_jobs', ['id'], (fk) => fk.onDelete('cascade'))
    .addCheckConstraint('fleet_job_devices_state_ck', sql`state in ('pending', 'invoked', 'moved', 'unchanged', 'failed')`)
    .execute();
  await db.schema.createIndex('fleet_job_devices_state_idx').on('fleet_job_devices').columns(['job_id', 'state', 'seq']).execute();
}

async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('fleet_job_devices').execute();
  await db.schema.dropTable('fleet_jobs').execute();
}

export const fleetJobsMigration: StoreMigration = { name: '0007_fleet_jobs', up, down };

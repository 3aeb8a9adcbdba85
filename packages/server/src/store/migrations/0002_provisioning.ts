import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { StoreMigration } from './index.ts';

/**
 * Provisioning (DPS) role: instances, individual enrollments, enrollment groups, registration records and
 * registration operations.
 *
 * - Every row carries the instance name. Case-insensitive ids (registration ids, group ids) are keyed by their
 *   lower-cased form (`*_key`); the id as given lives in the document.
 * - Key columns use binary ordering in both dialects (SQLite BINARY, `COLLATE "C"` on PostgreSQL) so keyset paging
 *   pages identically and the primary key serves `ORDER BY key`.
 * - Documents are TEXT JSON in both dialects; columns hold only what is filtered, counted or compared.
 * - One `assigning` operation per registration id: a partial unique index, so two concurrent registrations of one
 *   device cannot both start.
 */
function keyText(dialect: Dialect) {
  return dialect === 'postgres' ? sql`text collate "C"` : sql`text`;
}

function bigint(dialect: Dialect) {
  return dialect === 'postgres' ? 'bigint' : 'integer';
}

async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('dps_instances')
    .addColumn('name', keyText(dialect), (c) => c.notNull().primaryKey())
    .addColumn('id_scope', keyText(dialect), (c) => c.notNull().unique())
    .addColumn('etag', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('dps_enrollments')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('registration_key', keyText(dialect), (c) => c.notNull())
    .addColumn('attestation_type', 'text', (c) => c.notNull())
    .addColumn('etag', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('dps_enrollments_pk', ['instance', 'registration_key'])
    .execute();

  await db.schema
    .createTable('dps_enrollment_groups')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('group_key', keyText(dialect), (c) => c.notNull())
    .addColumn('attestation_type', 'text', (c) => c.notNull())
    .addColumn('etag', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('dps_enrollment_groups_pk', ['instance', 'group_key'])
    .addCheckConstraint('dps_enrollment_groups_type_ck', sql`attestation_type in ('symmetricKey', 'x509')`)
    .execute();
  await db.schema.createIndex('dps_enrollment_groups_type_idx').on('dps_enrollment_groups').columns(['instance', 'attestation_type', 'group_key']).execute();

  await db.schema
    .createTable('dps_registrations')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('registration_key', keyText(dialect), (c) => c.notNull())
    .addColumn('enrollment_kind', 'text', (c) => c.notNull())
    /** The lower-cased group id for records made through a group, else null. */
    .addColumn('group_key', keyText(dialect))
    .addColumn('etag', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('dps_registrations_pk', ['instance', 'registration_key'])
    .addCheckConstraint('dps_registrations_kind_ck', sql`enrollment_kind in ('individual', 'group')`)
    .execute();
  await db.schema.createIndex('dps_registrations_group_idx').on('dps_registrations').columns(['instance', 'group_key', 'registration_key']).execute();

  await db.schema
    .createTable('dps_operations')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('operation_id', keyText(dialect), (c) => c.notNull())
    .addColumn('registration_key', keyText(dialect), (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('version', bigint(dialect), (c) => c.notNull())
    .addColumn('updated_at', keyText(dialect), (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('dps_operations_pk', ['instance', 'operation_id'])
    .addCheckConstraint('dps_operations_status_ck', sql`status in ('unassigned', 'assigning', 'assigned', 'failed', 'disabled')`)
    .execute();
  await db.schema
    .createIndex('dps_operations_in_flight_uq')
    .on('dps_operations')
    .columns(['instance', 'registration_key'])
    .unique()
    .where(sql.ref('status'), '=', 'assigning')
    .execute();
  await db.schema.createIndex('dps_operations_status_idx').on('dps_operations').columns(['instance', 'status', 'updated_at']).execute();
}

async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('dps_operations').execute();
  await db.schema.dropTable('dps_registrations').execute();
  await db.schema.dropTable('dps_enrollment_groups').execute();
  await db.schema.dropTable('dps_enrollments').execute();
  await db.schema.dropTable('dps_instances').execute();
}

export const provisioningMigration: StoreMigration = { name: '0002_provisioning', up, down };

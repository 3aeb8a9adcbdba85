import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { StoreMigration } from './index.ts';

/**
 * Hub role: device identities and twins, keyed by (hub_id, device_id).
 *
 * - Key columns use binary ordering in both dialects (SQLite's default BINARY collation; `COLLATE "C"` on
 *   PostgreSQL), so keyset pagination pages identically and the primary key index serves `ORDER BY device_id`.
 * - JSON documents are TEXT in both dialects: one code path, and the store never queries inside them.
 * - A twin row references its device with ON DELETE CASCADE: deleting a device is one statement that removes both.
 * - `(hub_id, status)` is indexed so countDevices is an index-only count and never reads the documents.
 */
function keyText(dialect: Dialect) {
  return dialect === 'postgres' ? sql`text collate "C"` : sql`text`;
}

async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('hub_devices')
    .addColumn('hub_id', keyText(dialect), (c) => c.notNull())
    .addColumn('device_id', keyText(dialect), (c) => c.notNull())
    .addColumn('etag', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addColumn('connection_state', 'text', (c) => c.notNull())
    .addColumn('connection_state_updated_time', 'text', (c) => c.notNull())
    .addColumn('last_activity_time', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('hub_devices_pk', ['hub_id', 'device_id'])
    .addCheckConstraint('hub_devices_status_ck', sql`status in ('enabled', 'disabled')`)
    .addCheckConstraint('hub_devices_connection_state_ck', sql`connection_state in ('Connected', 'Disconnected')`)
    .execute();

  await db.schema.createIndex('hub_devices_status_idx').on('hub_devices').columns(['hub_id', 'status']).execute();

  await db.schema
    .createTable('hub_twins')
    .addColumn('hub_id', keyText(dialect), (c) => c.notNull())
    .addColumn('device_id', keyText(dialect), (c) => c.notNull())
    .addColumn('version', dialect === 'postgres' ? 'bigint' : 'integer', (c) => c.notNull())
    .addColumn('etag', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('hub_twins_pk', ['hub_id', 'device_id'])
    .addForeignKeyConstraint('hub_twins_device_fk', ['hub_id', 'device_id'], 'hub_devices', ['hub_id', 'device_id'], (fk) =>
      fk.onDelete('cascade'),
    )
    .execute();
}

async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('hub_twins').execute();
  await db.schema.dropTable('hub_devices').execute();
}

export const hubMigration: StoreMigration = { name: '0001_hub', up, down };

import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { StoreMigration } from './index.ts';

/**
 * Durable hub moves (provisioning/model.ts HubMove): one row per registration id being moved between hubs under the
 * migrate or reset reprovision policy. The primary key makes a second move of the same device impossible; `owner`
 * and `lease_until` let a restarted node resume its own moves at once and other nodes take over after the lease.
 */
function keyText(dialect: Dialect) {
  return dialect === 'postgres' ? sql`text collate "C"` : sql`text`;
}

async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('dps_hub_moves')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('registration_key', keyText(dialect), (c) => c.notNull())
    .addColumn('operation_id', keyText(dialect), (c) => c.notNull())
    .addColumn('version', dialect === 'postgres' ? 'bigint' : 'integer', (c) => c.notNull())
    .addColumn('owner', keyText(dialect), (c) => c.notNull())
    .addColumn('lease_until', keyText(dialect), (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('dps_hub_moves_pk', ['instance', 'registration_key'])
    .execute();
  await db.schema.createIndex('dps_hub_moves_lease_idx').on('dps_hub_moves').columns(['instance', 'lease_until']).execute();
}

async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('dps_hub_moves').execute();
}

export const hubMovesMigration: StoreMigration = { name: '0006_hub_moves', up, down };

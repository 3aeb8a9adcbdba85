import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { StoreMigration } from './index.ts';

/**
 * Rate-quota buckets (store/quota-ports.ts): one row per (instance, bucket), holding a GCRA "theoretical arrival
 * time" in epoch milliseconds. Every check is one `INSERT .. ON CONFLICT DO UPDATE .. RETURNING`, so processes sharing
 * the database share the limits. The rate of the last check (`emission_ms`, `window_ms`) and its time (`seen_ms`) are
 * kept for that statement's arithmetic and for operators looking at the table. PostgreSQL uses the table; the
 * embedded SQLite default keeps its buckets in memory (one process), but the schema is the same on both.
 */
function keyText(dialect: Dialect) {
  return dialect === 'postgres' ? sql`text collate "C"` : sql`text`;
}

async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const float = dialect === 'postgres' ? 'double precision' : 'real';
  await db.schema
    .createTable('dps_quota_buckets')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('bucket', keyText(dialect), (c) => c.notNull())
    .addColumn('tat_ms', float, (c) => c.notNull())
    .addColumn('emission_ms', float, (c) => c.notNull())
    .addColumn('window_ms', float, (c) => c.notNull())
    .addColumn('seen_ms', float, (c) => c.notNull())
    .addColumn('allowed', dialect === 'postgres' ? 'boolean' : 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('dps_quota_buckets_pk', ['instance', 'bucket'])
    .execute();
}

async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('dps_quota_buckets').execute();
}

export const quotasMigration: StoreMigration = { name: '0004_quotas', up, down };

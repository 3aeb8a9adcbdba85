import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { StoreMigration } from './index.ts';

/**
 * Certificate claims (store/certificate-claim-ports.ts): which enrollment entry holds an X.509 certificate, by its
 * SHA-256 thumbprint, so that a certificate is in at most one entry of an instance (dps-behavior.md §6.2: a second
 * entry with the same certificate is 409). One row per (instance, thumbprint); the owner is an individual enrollment
 * or an enrollment group, by lower-cased id. Maintained by the enrollment use cases around their writes.
 */
function keyText(dialect: Dialect) {
  return dialect === 'postgres' ? sql`text collate "C"` : sql`text`;
}

async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('dps_certificate_claims')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('sha256', keyText(dialect), (c) => c.notNull())
    .addColumn('owner_kind', keyText(dialect), (c) => c.notNull())
    .addColumn('owner_key', keyText(dialect), (c) => c.notNull())
    .addColumn('claimed_ms', dialect === 'postgres' ? 'double precision' : 'real', (c) => c.notNull())
    .addPrimaryKeyConstraint('dps_certificate_claims_pk', ['instance', 'sha256'])
    .execute();
  await db.schema.createIndex('dps_certificate_claims_owner').on('dps_certificate_claims').columns(['instance', 'owner_kind', 'owner_key']).execute();
}

async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('dps_certificate_claims').execute();
}

export const certificateClaimsMigration: StoreMigration = { name: '0005_certificate_claims', up, down };

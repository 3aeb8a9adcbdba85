import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { StoreMigration } from './index.ts';

/**
 * CA certificates of provisioning instances (Azure's "certificates" resource): one row per (instance, lower-cased
 * name), at most one row per certificate (SHA-256 thumbprint) per instance.
 *
 * - The immutable certificate facts live in the `doc` JSON; what changes on its own (verification, the pending code,
 *   the CRL, `updated`, the etag) has its own columns, so each change is one compare-and-set UPDATE.
 * - `is_verified` is an integer 0/1 in both dialects (one code path).
 * - Key columns use binary ordering (`COLLATE "C"` on PostgreSQL), as the other modules' tables do.
 */
function keyText(dialect: Dialect) {
  return dialect === 'postgres' ? sql`text collate "C"` : sql`text`;
}

async function up(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('dps_ca_certificates')
    .addColumn('instance', keyText(dialect), (c) => c.notNull())
    .addColumn('name_key', keyText(dialect), (c) => c.notNull())
    .addColumn('sha256_thumbprint', keyText(dialect), (c) => c.notNull())
    .addColumn('etag', 'text', (c) => c.notNull())
    .addColumn('is_verified', 'integer', (c) => c.notNull())
    .addColumn('verification_code', 'text')
    .addColumn('updated', 'text', (c) => c.notNull())
    .addColumn('doc', 'text', (c) => c.notNull())
    .addColumn('crl', 'text')
    .addPrimaryKeyConstraint('dps_ca_certificates_pk', ['instance', 'name_key'])
    .addUniqueConstraint('dps_ca_certificates_thumbprint_uq', ['instance', 'sha256_thumbprint'])
    .addCheckConstraint('dps_ca_certificates_verified_ck', sql`is_verified in (0, 1)`)
    .execute();
}

async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('dps_ca_certificates').execute();
}

export const caCertificatesMigration: StoreMigration = { name: '0003_ca_certificates', up, down };

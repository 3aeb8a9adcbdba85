import { sql, type Kysely, type Transaction } from 'kysely';
import type { Dialect, WriteResult } from '../ports.ts';
import type { CaCertificateRecord, CaCertificateStore, CaCrlRecord, CaPutExpectation, CaPutResult, CaUpdate } from '../ca-ports.ts';
import type { Database } from './schema.ts';

/** Kysely table type of migration 0003_ca_certificates, attached with `withTables`. */
export type DpsCaCertificatesTable = {
  instance: string;
  /** Lower-cased name. */
  name_key: string;
  sha256_thumbprint: string;
  etag: string;
  /** 0 or 1. */
  is_verified: number;
  verification_code: string | null;
  updated: string;
  /** The immutable facts: CaDoc JSON. */
  doc: string;
  /** CaCrlRecord JSON, or null. */
  crl: string | null;
};

type CaTables = { dps_ca_certificates: DpsCaCertificatesTable };
type Db = Kysely<Database & CaTables>;
type Tx = Transaction<Database & CaTables>;

/** What `doc` holds: the fields that only a whole put changes. */
type CaDoc = Pick<CaCertificateRecord, 'name' | 'certificate' | 'subject' | 'thumbprint' | 'sha256Thumbprint' | 'expiry' | 'created'>;

const COLS = ['doc', 'etag', 'is_verified', 'verification_code', 'updated', 'crl'] as const;

function key(name: string): string {
  return name.toLowerCase();
}

function anyEtag(e: string | undefined): boolean {
  return e === undefined || e === '*';
}

function toRecord(r: Pick<DpsCaCertificatesTable, (typeof COLS)[number]>): CaCertificateRecord {
  const doc = JSON.parse(r.doc) as CaDoc;
  const out: CaCertificateRecord = {
    name: doc.name,
    certificate: doc.certificate,
    subject: doc.subject,
    thumbprint: doc.thumbprint,
    sha256Thumbprint: doc.sha256Thumbprint,
    expiry: doc.expiry,
    isVerified: Number(r.is_verified) === 1,
    created: doc.created,
    updated: r.updated,
    etag: r.etag,
  };
  if (r.verification_code !== null) out.verificationCode = r.verification_code;
  if (r.crl !== null) out.crl = JSON.parse(r.crl) as CaCrlRecord;
  return out;
}

function columns(instance: string, c: CaCertificateRecord): DpsCaCertificatesTable {
  const doc: CaDoc = {
    name: c.name,
    certificate: c.certificate,
    subject: c.subject,
    thumbprint: c.thumbprint,
    sha256Thumbprint: c.sha256Thumbprint,
    expiry: c.expiry,
    created: c.created,
  };
  return {
    instance,
    name_key: key(c.name),
    sha256_thumbprint: c.sha256Thumbprint,
    etag: c.etag,
    is_verified: c.isVerified ? 1 : 0,
    verification_code: c.verificationCode ?? null,
    updated: c.updated,
    doc: JSON.stringify(doc),
    crl: c.crl === undefined ? null : JSON.stringify(c.crl),
  };
}

/**
 * CaCertificateStore on Kysely (SQLite and PostgreSQL). Field updates are one compare-and-set UPDATE each; only when
 * it changed nothing does a primary-key read tell 'not-found' from 'precondition-failed'. Puts run in a transaction
 * that serializes the puts of one instance (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock
 * on the instance), so the per-instance limit and the one-name-per-certificate rule hold under concurrent uploads.
 */
export class KyselyCaStore implements CaCertificateStore {
  private readonly db: Db;

  constructor(
    db: Kysely<Database>,
    private readonly dialect: Dialect,
  ) {
    this.db = db.withTables<CaTables>();
  }

  async getCaCertificate(instance: string, name: string): Promise<CaCertificateRecord | undefined> {
    const r = await this.db.selectFrom('dps_ca_certificates').select(COLS).where('instance', '=', instance).where('name_key', '=', key(name)).executeTakeFirst();
    return r ? toRecord(r) : undefined;
  }

  async listCaCertificates(instance: string): Promise<CaCertificateRecord[]> {
    const rows = await this.db.selectFrom('dps_ca_certificates').select(COLS).where('instance', '=', instance).orderBy('name_key').execute();
    return rows.map(toRecord);
  }

  async putCaCertificate(instance: string, record: CaCertificateRecord, expect: CaPutExpectation, maxPerInstance: number): Promise<CaPutResult> {
    const row = columns(instance, record);
    return this.db.transaction().execute(async (trx): Promise<CaPutResult> => {
      await this.lockInstance(trx, instance);
      const current = await trx
        .selectFrom('dps_ca_certificates')
        .select(['etag'])
        .where('instance', '=', instance)
        .where('name_key', '=', row.name_key)
        .executeTakeFirst();
      if (expect.kind === 'absent' && current !== undefined) return 'exists';
      if (expect.kind === 'etag') {
        if (current === undefined) return 'not-found';
        if (!anyEtag(expect.etag) && current.etag !== expect.etag) return 'precondition-failed';
      }
      const clash = await trx
        .selectFrom('dps_ca_certificates')
        .select(['name_key'])
        .where('instance', '=', instance)
        .where('sha256_thumbprint', '=', row.sha256_thumbprint)
        .where('name_key', '!=', row.name_key)
        .executeTakeFirst();
      if (clash !== undefined) return 'thumbprint-taken';
      if (current === undefined) {
        const n = await trx
          .selectFrom('dps_ca_certificates')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('instance', '=', instance)
          .executeTakeFirstOrThrow();
        if (Number(n.n) >= maxPerInstance) return 'limit-reached';
        await trx.insertInto('dps_ca_certificates').values(row).execute();
        return 'ok';
      }
      await trx
        .updateTable('dps_ca_certificates')
        .set({
          sha256_thumbprint: row.sha256_thumbprint,
          etag: row.etag,
          is_verified: row.is_verified,
          verification_code: row.verification_code,
          updated: row.updated,
          doc: row.doc,
          crl: row.crl,
        })
        .where('instance', '=', instance)
        .where('name_key', '=', row.name_key)
        .execute();
      return 'ok';
    });
  }

  async setVerificationCode(instance: string, name: string, code: string, u: CaUpdate): Promise<WriteResult> {
    let q = this.db
      .updateTable('dps_ca_certificates')
      .set({ verification_code: code, etag: u.etag, updated: u.updated })
      .where('instance', '=', instance)
      .where('name_key', '=', key(name));
    if (!anyEtag(u.expectedEtag)) q = q.where('etag', '=', u.expectedEtag as string);
    return this.outcome(await q.executeTakeFirst(), instance, name);
  }

  async markVerified(instance: string, name: string, verificationCode: string, u: CaUpdate): Promise<WriteResult> {
    let q = this.db
      .updateTable('dps_ca_certificates')
      .set({ is_verified: 1, verification_code: null, etag: u.etag, updated: u.updated })
      .where('instance', '=', instance)
      .where('name_key', '=', key(name))
      .where('verification_code', '=', verificationCode);
    if (!anyEtag(u.expectedEtag)) q = q.where('etag', '=', u.expectedEtag as string);
    return this.outcome(await q.executeTakeFirst(), instance, name);
  }

  async putCrl(instance: string, name: string, crl: CaCrlRecord, caSha256Thumbprint: string, u: CaUpdate): Promise<WriteResult> {
    let q = this.db
      .updateTable('dps_ca_certificates')
      .set({ crl: JSON.stringify(crl), etag: u.etag, updated: u.updated })
      .where('instance', '=', instance)
      .where('name_key', '=', key(name))
      .where('sha256_thumbprint', '=', caSha256Thumbprint);
    if (!anyEtag(u.expectedEtag)) q = q.where('etag', '=', u.expectedEtag as string);
    return this.outcome(await q.executeTakeFirst(), instance, name);
  }

  async deleteCaCertificate(instance: string, name: string, expectedEtag?: string): Promise<WriteResult> {
    let q = this.db.deleteFrom('dps_ca_certificates').where('instance', '=', instance).where('name_key', '=', key(name));
    if (!anyEtag(expectedEtag)) q = q.where('etag', '=', expectedEtag as string);
    const r = await q.executeTakeFirst();
    if (Number(r.numDeletedRows) === 1) return 'ok';
    return (await this.exists(instance, name)) ? 'precondition-failed' : 'not-found';
  }

  private async outcome(r: { numUpdatedRows: bigint }, instance: string, name: string): Promise<WriteResult> {
    if (Number(r.numUpdatedRows) === 1) return 'ok';
    return (await this.exists(instance, name)) ? 'precondition-failed' : 'not-found';
  }

  private async exists(instance: string, name: string): Promise<boolean> {
    const r = await this.db.selectFrom('dps_ca_certificates').select('etag').where('instance', '=', instance).where('name_key', '=', key(name)).executeTakeFirst();
    return r !== undefined;
  }

  /** Serializes the puts of one instance. SQLite transactions already hold the write lock (BEGIN IMMEDIATE). */
  private async lockInstance(trx: Tx, instance: string): Promise<void> {
    if (this.dialect !== 'postgres') return;
    await sql`select pg_advisory_xact_lock(hashtextextended(${`homing:dps_ca_certificates:${instance}`}, 0))`.execute(trx);
  }
}

import type { Kysely } from 'kysely';
import type { CertificateClaim, CertificateClaimStore, ClaimOwner } from '../certificate-claim-ports.ts';

interface ClaimTable {
  instance: string;
  sha256: string;
  owner_kind: string;
  owner_key: string;
  claimed_ms: number;
}

interface ClaimDb {
  dps_certificate_claims: ClaimTable;
}

/** CertificateClaimStore on `dps_certificate_claims` (migration 0005_certificate_claims), SQLite and PostgreSQL. */
export class KyselyCertificateClaimStore implements CertificateClaimStore {
  private readonly db: Kysely<ClaimDb>;

  /** `db`: the store's Kysely instance (any table type; only `dps_certificate_claims` is used). */
  static on<DB>(db: Kysely<DB>): KyselyCertificateClaimStore {
    return new KyselyCertificateClaimStore(db as unknown as Kysely<ClaimDb>);
  }

  private constructor(db: Kysely<ClaimDb>) {
    this.db = db;
  }

  async claim(instance: string, sha256s: readonly string[], owner: ClaimOwner, nowMs: number): Promise<CertificateClaim[]> {
    const unique = [...new Set(sha256s)];
    if (unique.length === 0) return [];
    await this.db
      .insertInto('dps_certificate_claims')
      .values(unique.map((sha256) => ({ instance, sha256, owner_kind: owner.kind, owner_key: owner.key, claimed_ms: nowMs })))
      .onConflict((oc) => oc.columns(['instance', 'sha256']).doNothing())
      .execute();
    const rows = await this.db.selectFrom('dps_certificate_claims').selectAll().where('instance', '=', instance).where('sha256', 'in', unique).execute();
    return rows.map((r) => ({ sha256: r.sha256, owner: { kind: r.owner_kind === 'group' ? 'group' : 'individual', key: r.owner_key }, claimedMs: Number(r.claimed_ms) }));
  }

  async takeOver(instance: string, sha256: string, from: ClaimOwner, to: ClaimOwner, nowMs: number): Promise<boolean> {
    const r = await this.db
      .updateTable('dps_certificate_claims')
      .set({ owner_kind: to.kind, owner_key: to.key, claimed_ms: nowMs })
      .where('instance', '=', instance)
      .where('sha256', '=', sha256)
      .where('owner_kind', '=', from.kind)
      .where('owner_key', '=', from.key)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async release(instance: string, owner: ClaimOwner, keep: readonly string[]): Promise<void> {
    let q = this.db.deleteFrom('dps_certificate_claims').where('instance', '=', instance).where('owner_kind', '=', owner.kind).where('owner_key', '=', owner.key);
    if (keep.length > 0) q = q.where('sha256', 'not in', [...keep]);
    await q.execute();
  }
}

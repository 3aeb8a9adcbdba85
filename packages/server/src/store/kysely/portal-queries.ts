import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../ports.ts';
import type { Database } from './schema.ts';
import type { ProvisioningTables } from './provisioning-store.ts';

/**
 * Read-only queries of the web portal's admin routes (transport/http/portal-admin-api.ts) across one instance's
 * registration records and registration operations. They never write; the provisioning store keeps every write.
 *
 * - Record listing pages by the record key (lower-cased registration id, binary order), like the DPS query APIs;
 *   the status / hub / group filters are applied to each scanned batch in code (the record document is JSON text in
 *   both dialects), scanning at most `scanBudget` rows per call and handing back a cursor to go on.
 * - Devices per hub count assigned records grouped by `assignedHub`, extracted with the dialect's JSON function.
 * - Finished operations (the registration attempts, kept for an hour by the server) are read through the
 *   `(instance, status, updated_at)` index: once per status, newer than a cursor, oldest first.
 */
export interface PortalRecordRow {
  key: string;
  etag: string;
  /** The RegistrationRecord JSON document. */
  doc: Record<string, unknown>;
}

export interface PortalRecordFilter {
  status?: string;
  hub?: string;
  /** Records made through this enrollment group (lower-cased compare). */
  groupId?: string;
}

export interface PortalRecordPage {
  items: PortalRecordRow[];
  /** The key to pass as `after` for the next page; absent at the end. */
  next?: string;
}

export interface FinishedOperationRow {
  operationId: string;
  registrationKey: string;
  status: string;
  version: number;
  updatedAt: string;
  /** The DeviceRegistrationResult JSON, when the operation stored one. */
  result?: Record<string, unknown>;
}

type Db = Kysely<Database & ProvisioningTables>;

function parseDoc(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function matches(doc: Record<string, unknown>, f: PortalRecordFilter): boolean {
  if (f.status !== undefined && doc.status !== f.status) return false;
  if (f.hub !== undefined && String(doc.assignedHub ?? '').toLowerCase() !== f.hub.toLowerCase()) return false;
  if (f.groupId !== undefined) {
    const e = doc.enrollment as { kind?: string; enrollmentGroupId?: string } | undefined;
    if (e?.kind !== 'group' || String(e.enrollmentGroupId ?? '').toLowerCase() !== f.groupId.toLowerCase()) return false;
  }
  return true;
}

export class PortalQueries {
  private readonly db: Db;

  constructor(
    db: Kysely<Database>,
    private readonly dialect: Dialect,
  ) {
    this.db = db.withTables<ProvisioningTables>();
  }

  /** One page of records after `after` (exclusive), filtered; scans at most `scanBudget` rows. */
  async listRecords(instance: string, opts: { after?: string; limit: number; filter: PortalRecordFilter; scanBudget?: number }): Promise<PortalRecordPage> {
    const limit = Math.max(1, Math.min(opts.limit, 500));
    const budget = Math.max(limit, opts.scanBudget ?? 5000);
    const batch = Math.min(500, Math.max(limit * 2, 100));
    const items: PortalRecordRow[] = [];
    let cursor = opts.after;
    let scanned = 0;
    for (;;) {
      let q = this.db
        .selectFrom('dps_registrations')
        .select(['registration_key', 'etag', 'doc'])
        .where('instance', '=', instance)
        .orderBy('registration_key')
        .limit(batch);
      if (cursor !== undefined) q = q.where('registration_key', '>', cursor);
      if (opts.filter.groupId !== undefined) q = q.where('group_key', '=', opts.filter.groupId.toLowerCase());
      const rows = await q.execute();
      for (const r of rows) {
        scanned++;
        cursor = r.registration_key;
        const doc = parseDoc(r.doc);
        if (matches(doc, opts.filter)) {
          items.push({ key: r.registration_key, etag: r.etag, doc });
          if (items.length === limit) {
            // More may follow: hand the cursor back unless this was the last row of the table.
            const more = await this.db
              .selectFrom('dps_registrations')
              .select('registration_key')
              .where('instance', '=', instance)
              .where('registration_key', '>', cursor)
              .limit(1)
              .execute();
            return more.length > 0 ? { items, next: cursor } : { items };
          }
        }
      }
      if (rows.length < batch) return { items };
      if (scanned >= budget) return cursor === undefined ? { items } : { items, next: cursor };
    }
  }

  /** Assigned records per hub (`assignedHub`), and records per status. */
  async recordCounts(instance: string): Promise<{ perHub: Map<string, number>; perStatus: Map<string, number> }> {
    const hubExpr = this.dialect === 'postgres' ? sql<string | null>`(doc::json ->> 'assignedHub')` : sql<string | null>`json_extract(doc, '$.assignedHub')`;
    const statusExpr = this.dialect === 'postgres' ? sql<string | null>`(doc::json ->> 'status')` : sql<string | null>`json_extract(doc, '$.status')`;
    const rows = await this.db
      .selectFrom('dps_registrations')
      .select([hubExpr.as('hub'), statusExpr.as('status'), sql<number | string>`count(*)`.as('n')])
      .where('instance', '=', instance)
      .groupBy([hubExpr, statusExpr])
      .execute();
    const perHub = new Map<string, number>();
    const perStatus = new Map<string, number>();
    for (const r of rows) {
      const n = Number(r.n);
      const status = r.status ?? 'unknown';
      perStatus.set(status, (perStatus.get(status) ?? 0) + n);
      if (status === 'assigned' && r.hub) perHub.set(r.hub, (perHub.get(r.hub) ?? 0) + n);
    }
    return { perHub, perStatus };
  }

  /**
   * Finished operations (status assigned, failed or disabled) updated at or after `since` (ISO text), oldest first,
   * at most `limit` per status.
   */
  async finishedOperationsSince(instance: string, since: string, limit = 500): Promise<FinishedOperationRow[]> {
    const out: FinishedOperationRow[] = [];
    for (const status of ['assigned', 'failed', 'disabled'] as const) {
      const rows = await this.db
        .selectFrom('dps_operations')
        .select(['operation_id', 'registration_key', 'status', 'version', 'updated_at', 'doc'])
        .where('instance', '=', instance)
        .where('status', '=', status)
        .where('updated_at', '>=', since)
        .orderBy('updated_at')
        .limit(limit)
        .execute();
      for (const r of rows) {
        const doc = parseDoc(r.doc);
        const result = doc.result;
        out.push({
          operationId: r.operation_id,
          registrationKey: r.registration_key,
          status: r.status,
          version: Number(r.version),
          updatedAt: r.updated_at,
          ...(result !== null && typeof result === 'object' && !Array.isArray(result) ? { result: result as Record<string, unknown> } : {}),
        });
      }
    }
    out.sort((a, b) => (a.updatedAt < b.updatedAt ? -1 : a.updatedAt > b.updatedAt ? 1 : 0));
    return out;
  }

  /** Finished operations per minute (`YYYY-MM-DDTHH:MM`) and status since `since`. */
  async finishedPerMinute(instance: string, since: string): Promise<{ minute: string; status: string; n: number }[]> {
    const minute = sql<string>`substr(updated_at, 1, 16)`;
    const rows = await this.db
      .selectFrom('dps_operations')
      .select([minute.as('minute'), 'status', sql<number | string>`count(*)`.as('n')])
      .where('instance', '=', instance)
      .where('status', 'in', ['assigned', 'failed', 'disabled'])
      .where('updated_at', '>=', since)
      .groupBy([minute, 'status'])
      .execute();
    return rows.map((r) => ({ minute: r.minute, status: r.status, n: Number(r.n) }));
  }
}

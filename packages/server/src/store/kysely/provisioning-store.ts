import { PostgresAdapter, sql, type Compilable, type CompiledQuery, type Kysely, type Transaction } from 'kysely';
import type {
  EnrollmentGroup,
  HubMove,
  IndividualEnrollment,
  OperationStatus,
  ProvisioningInstance,
  RegistrationOperation,
  RegistrationRecord,
} from '../../provisioning/model.ts';
import type { WriteResult } from '../ports.ts';
import { UndoUnit, type SqliteGroupCommit } from './sqlite-group-commit.ts';
import { PreparedQuery, slot } from './prepared.ts';
import type { Database } from './schema.ts';
import type {
  CreateResult,
  ExpectedEtag,
  Page,
  PageRequest,
  ProvisioningStore,
  RecordExpectation,
  RecordWrite,
  RegistrationContext,
} from '../provisioning-ports.ts';

/**
 * Kysely table types of the provisioning module (migration 0002_provisioning). Kept here and attached with
 * `withTables`, so the shared `Database` type stays the hub's.
 */
export type DpsInstancesTable = {
  name: string;
  id_scope: string;
  etag: string;
  /** The ProvisioningInstance JSON. */
  doc: string;
};

export type DpsEnrollmentsTable = {
  instance: string;
  /** Lower-cased registration id. */
  registration_key: string;
  attestation_type: string;
  etag: string;
  /** The IndividualEnrollment JSON. */
  doc: string;
};

export type DpsEnrollmentGroupsTable = {
  instance: string;
  /** Lower-cased enrollment group id. */
  group_key: string;
  attestation_type: 'symmetricKey' | 'x509';
  etag: string;
  /** The EnrollmentGroup JSON. */
  doc: string;
};

export type DpsRegistrationsTable = {
  instance: string;
  registration_key: string;
  enrollment_kind: 'individual' | 'group';
  group_key: string | null;
  etag: string;
  /** The RegistrationRecord JSON. */
  doc: string;
};

export type DpsOperationsTable = {
  instance: string;
  operation_id: string;
  registration_key: string;
  status: OperationStatus;
  version: number;
  /** lastUpdatedDateTimeUtc (fixed-width ISO, so text order is time order). */
  updated_at: string;
  /** The RegistrationOperation JSON. */
  doc: string;
};

export type DpsHubMovesTable = {
  instance: string;
  registration_key: string;
  operation_id: string;
  version: number;
  owner: string;
  /** leaseUntil (fixed-width ISO). */
  lease_until: string;
  /** The HubMove JSON. */
  doc: string;
};

export type ProvisioningTables = {
  dps_hub_moves: DpsHubMovesTable;
  dps_instances: DpsInstancesTable;
  dps_enrollments: DpsEnrollmentsTable;
  dps_enrollment_groups: DpsEnrollmentGroupsTable;
  dps_registrations: DpsRegistrationsTable;
  dps_operations: DpsOperationsTable;
};

type Db = Kysely<Database & ProvisioningTables>;
type Tx = Transaction<Database & ProvisioningTables>;

const MAX_PAGE = 1000;

/** Thrown inside a transaction to roll it back with an expected outcome. */
class Rollback<R extends string = WriteResult> extends Error {
  constructor(readonly result: R) {
    super(result);
  }
}

function key(id: string): string {
  return id.toLowerCase();
}

function anyEtag(e: ExpectedEtag | undefined): boolean {
  return e === undefined || e === '*';
}

function pageLimit(p: PageRequest): number {
  if (!Number.isInteger(p.limit) || p.limit < 1) throw new Error(`store: page limit must be a positive integer, got ${p.limit}`);
  return Math.min(p.limit, MAX_PAGE);
}

/** Cuts a limit+1 fetch to a page; `next` is the key of the page's last row when a further row exists. */
function toPage<R, T>(rows: R[], limit: number, keyOf: (r: R) => string, map: (r: R) => T): Page<T> {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  const last = kept[kept.length - 1];
  return { items: kept.map(map), next: more && last !== undefined ? keyOf(last) : undefined };
}

function parseInstance(r: { doc: string; etag: string }): ProvisioningInstance {
  return { ...(JSON.parse(r.doc) as ProvisioningInstance), etag: r.etag };
}

function parseEnrollment(r: { doc: string; etag: string }): IndividualEnrollment {
  return { ...(JSON.parse(r.doc) as IndividualEnrollment), etag: r.etag };
}

function parseGroup(r: { doc: string; etag: string }): EnrollmentGroup {
  return { ...(JSON.parse(r.doc) as EnrollmentGroup), etag: r.etag };
}

function parseRecord(r: { doc: string; etag: string }): RegistrationRecord {
  return { ...(JSON.parse(r.doc) as RegistrationRecord), etag: r.etag };
}

function parseOperation(r: { doc: string; status: OperationStatus; version: number }): RegistrationOperation {
  return { ...(JSON.parse(r.doc) as RegistrationOperation), status: r.status, version: Number(r.version) };
}

function parseMove(r: { doc: string; version: number }): HubMove {
  return { ...(JSON.parse(r.doc) as HubMove), version: Number(r.version) };
}

function moveColumns(instance: string, m: HubMove): DpsHubMovesTable {
  return {
    instance,
    registration_key: key(m.registrationId),
    operation_id: m.operationId,
    version: m.version,
    owner: m.owner,
    lease_until: m.leaseUntil,
    doc: JSON.stringify(m),
  };
}

function groupAttestationType(g: EnrollmentGroup): 'symmetricKey' | 'x509' {
  const t = g.attestation.type;
  if (t !== 'symmetricKey' && t !== 'x509') throw new Error(`store: enrollment groups attest with symmetricKey or x509, not ${t}`);
  return t;
}

function recordColumns(instance: string, r: RegistrationRecord): DpsRegistrationsTable {
  return {
    instance,
    registration_key: key(r.registrationId),
    enrollment_kind: r.enrollment.kind,
    group_key: r.enrollment.kind === 'group' ? key(r.enrollment.enrollmentGroupId) : null,
    etag: r.etag,
    doc: JSON.stringify(r),
  };
}

const INSTANCE_COLS = ['doc', 'etag'] as const;
const DOC_COLS = ['doc', 'etag'] as const;
const OP_COLS = ['doc', 'status', 'version'] as const;

/**
 * `status = 'assigning'` as a literal in the SQL text, not a parameter: only then can SQLite and a generic
 * PostgreSQL plan use the partial unique index `dps_operations_in_flight_uq` (WHERE status = 'assigning'); with a
 * parameter they scan the instance's operations.
 */
const ASSIGNING = sql<OperationStatus>`'assigning'`;

/** The columns of `getRegistrationContext`: one row per part found, told apart by `part`. */
type ContextRow = { part: 'record' | 'enrollment' | 'operation'; doc: string; etag: string | null; status: OperationStatus | null; version: number | null };

/**
 * The statements of the device hot path (register, status polls), built and compiled once (see PreparedQuery):
 * building and compiling a Kysely query costs more than SQLite takes to run it, and a stable SQL text keeps the
 * adapters' statement caches hitting. Arguments are listed in each query's comment, in `slot` order.
 */
function prepareQueries(db: Db) {
  const part = (p: ContextRow['part']) => sql<ContextRow['part']>`${sql.lit(p)}`.as('part');
  const nullStatus = sql<OperationStatus | null>`cast(null as text)`;
  const nullVersion = sql<number | null>`cast(null as bigint)`;
  return {
    /** idScope */
    instanceByIdScope: new PreparedQuery(db.selectFrom('dps_instances').select(INSTANCE_COLS).where('id_scope', '=', slot(0))),
    /** instance, registrationKey */
    enrollment: new PreparedQuery(db.selectFrom('dps_enrollments').select(DOC_COLS).where('instance', '=', slot(0)).where('registration_key', '=', slot(1))),
    /** instance, groupKey */
    group: new PreparedQuery(db.selectFrom('dps_enrollment_groups').select(DOC_COLS).where('instance', '=', slot(0)).where('group_key', '=', slot(1))),
    /** instance, registrationKey */
    registration: new PreparedQuery(db.selectFrom('dps_registrations').select(DOC_COLS).where('instance', '=', slot(0)).where('registration_key', '=', slot(1))),
    /** instance, operationId */
    operation: new PreparedQuery(db.selectFrom('dps_operations').select(OP_COLS).where('instance', '=', slot(0)).where('operation_id', '=', slot(1))),
    /** instance, registrationKey */
    inFlight: new PreparedQuery(
      db
        .selectFrom('dps_operations')
        .select(OP_COLS)
        .where('instance', '=', slot(0))
        .where('registration_key', '=', slot(1))
        .where('status', '=', ASSIGNING),
    ),
    /** instance, registrationKey: the record, the individual enrollment and the in-flight operation, in one statement. */
    context: new PreparedQuery<ContextRow>(
      db
        .selectFrom('dps_registrations')
        .select((eb) => [part('record'), 'doc', eb.ref('etag').$castTo<string | null>().as('etag'), nullStatus.as('status'), nullVersion.as('version')])
        .where('instance', '=', slot(0))
        .where('registration_key', '=', slot(1))
        .unionAll(
          db
            .selectFrom('dps_enrollments')
            .select((eb) => [part('enrollment'), 'doc', eb.ref('etag').$castTo<string | null>().as('etag'), nullStatus.as('status'), nullVersion.as('version')])
            .where('instance', '=', slot(0))
            .where('registration_key', '=', slot(1)),
        )
        .unionAll(
          db
            .selectFrom('dps_operations')
            .select((eb) => [
              part('operation'),
              'doc',
              sql<string | null>`cast(null as text)`.as('etag'),
              eb.ref('status').$castTo<OperationStatus | null>().as('status'),
              eb.ref('version').$castTo<number | null>().as('version'),
            ])
            .where('instance', '=', slot(0))
            .where('registration_key', '=', slot(1))
            .where('status', '=', ASSIGNING),
        ),
    ),
    /** instance, registrationKey: whether an operation of this registration id is in flight. */
    inFlightExists: new PreparedQuery(
      db.selectFrom('dps_operations').select('version').where('instance', '=', slot(0)).where('registration_key', '=', slot(1)).where('status', '=', ASSIGNING),
    ),
    /** instance, operationId, registrationKey, status, version, updatedAt, doc (nothing inserted on any unique conflict) */
    insertOperation: new PreparedQuery(
      db
        .insertInto('dps_operations')
        .values({
          instance: slot(0),
          operation_id: slot(1),
          registration_key: slot(2),
          status: slot<OperationStatus>(3),
          version: slot<number>(4),
          updated_at: slot(5),
          doc: slot(6),
        })
        .onConflict((oc) => oc.doNothing()),
    ),
    /** instance, operationId, status, version, updatedAt, doc, expectedVersion */
    updateOperation: new PreparedQuery(
      db
        .updateTable('dps_operations')
        .set({ status: slot<OperationStatus>(2), version: slot<number>(3), updated_at: slot(4), doc: slot(5) })
        .where('instance', '=', slot(0))
        .where('operation_id', '=', slot(1))
        .where('version', '=', slot<number>(6)),
    ),
    /** instance, operationId */
    operationVersion: new PreparedQuery(db.selectFrom('dps_operations').select('version').where('instance', '=', slot(0)).where('operation_id', '=', slot(1))),
    /** instance, registrationKey, enrollmentKind, groupKey, etag, doc: only when no record exists */
    insertRecord: new PreparedQuery(
      db
        .insertInto('dps_registrations')
        .values(recordSlots())
        .onConflict((oc) => oc.doNothing()),
    ),
    /** instance, registrationKey, enrollmentKind, groupKey, etag, doc: create or replace */
    upsertRecord: new PreparedQuery(
      db
        .insertInto('dps_registrations')
        .values(recordSlots())
        .onConflict((oc) =>
          oc.columns(['instance', 'registration_key']).doUpdateSet((eb) => ({
            enrollment_kind: eb.ref('excluded.enrollment_kind'),
            group_key: eb.ref('excluded.group_key'),
            etag: eb.ref('excluded.etag'),
            doc: eb.ref('excluded.doc'),
          })),
        ),
    ),
    /** instance, registrationKey, enrollmentKind, groupKey, etag, doc, expectedEtag */
    updateRecord: new PreparedQuery(
      db
        .updateTable('dps_registrations')
        .set({ enrollment_kind: slot<'individual' | 'group'>(2), group_key: slot<string | null>(3), etag: slot(4), doc: slot(5) })
        .where('instance', '=', slot(0))
        .where('registration_key', '=', slot(1))
        .where('etag', '=', slot(6)),
    ),
  };
}

function recordSlots(): DpsRegistrationsTable {
  return {
    instance: slot(0),
    registration_key: slot(1),
    enrollment_kind: slot<'individual' | 'group'>(2),
    group_key: slot<string | null>(3),
    etag: slot(4),
    doc: slot(5),
  };
}

/**
 * PostgreSQL only: `createOperation` with its record as ONE statement (data-modifying CTEs), so the register hot
 * path's single write is one round trip and one commit instead of five round trips (BEGIN, check, record, operation,
 * COMMIT). The record is written only when no operation of the registration id is `assigning` and its expectation
 * holds; the operation only when the record was written. A taken operation id fails the whole statement (unique
 * violation, so the record is not kept either). Arguments: instance, registrationKey, enrollmentKind, groupKey,
 * etag, doc, operationId, status, version, updatedAt, opDoc[, expectedEtag]. The result row tells what happened.
 */
function preparePostgresFinish(db: Db) {
  const variant = (expect: RecordExpectation['kind']) => {
    const rec =
      expect === 'etag'
        ? sql`update dps_registrations set enrollment_kind = ${slot(2)}, group_key = ${slot(3)}, etag = ${slot(4)}, doc = ${slot(5)}
            where instance = ${slot(0)} and registration_key = ${slot(1)} and etag = ${slot(11)} and not exists (select 1 from busy)
            returning 1`
        : sql`insert into dps_registrations (instance, registration_key, enrollment_kind, group_key, etag, doc)
            select ${slot(0)}, ${slot(1)}, ${slot(2)}, ${slot(3)}, ${slot(4)}, ${slot(5)} where not exists (select 1 from busy)
            ${
              expect === 'any'
                ? sql`on conflict (instance, registration_key) do update set enrollment_kind = excluded.enrollment_kind, group_key = excluded.group_key, etag = excluded.etag, doc = excluded.doc`
                : sql`on conflict do nothing`
            }
            returning 1`;
    const raw = sql<{ busy: number; rec: number; op: number }>`with busy as (
        select 1 from dps_operations where instance = ${slot(0)} and registration_key = ${slot(1)} and status = ${ASSIGNING}
      ), rec as (${rec}), op as (
        insert into dps_operations (instance, operation_id, registration_key, status, version, updated_at, doc)
        select ${slot(0)}, ${slot(6)}, ${slot(1)}, ${slot(7)}, ${slot<number>(8)}, ${slot(9)}, ${slot(10)} where exists (select 1 from rec)
        returning 1
      )
      select (select count(*) from busy) as busy, (select count(*) from rec) as rec, (select count(*) from op) as op`;
    const compilable: Compilable<{ busy: number; rec: number; op: number }> = { compile: () => raw.compile(db) };
    return new PreparedQuery(compilable);
  };
  return { any: variant('any'), absent: variant('absent'), etag: variant('etag') };
}

/**
 * PostgreSQL only: the hub-move writes as ONE statement each (data-modifying CTEs) instead of a transaction of four or
 * five round trips. A statement is atomic: when a later part's condition fails after an earlier part wrote, the
 * statement raises division_by_zero on purpose (the `guard` column), which undoes all of it.
 *
 * start — instance, registrationKey, enrollmentKind, groupKey, etag, doc, expectedEtag, operationId, version, owner,
 *   leaseUntil, moveDoc: the record is updated (etag compare-and-set) only when no move of the device exists; the
 *   move is inserted only when the record was (a concurrent insert fails with unique_violation).
 * finish — instance, registrationKey, moveVersion, operationId, status, opVersion, updatedAt, opDoc, expectedOpVersion,
 *   enrollmentKind, groupKey, etag, doc: the move is deleted at its version, the operation updated at its version, and
 *   the record upserted; all or nothing.
 * finishNoOp — the same without the operation (9 arguments: instance, registrationKey, moveVersion, enrollmentKind,
 *   groupKey, etag, doc).
 */
function preparePostgresMoves(db: Db) {
  const prepared = <R>(raw: ReturnType<typeof sql<R>>) => new PreparedQuery<R>({ compile: () => raw.compile(db) });
  const start = prepared(sql<{ rec: number; mv: number; existing: number }>`with rec as (
      update dps_registrations set enrollment_kind = ${slot(2)}, group_key = ${slot(3)}, etag = ${slot(4)}, doc = ${slot(5)}
      where instance = ${slot(0)} and registration_key = ${slot(1)} and etag = ${slot(6)}
        and not exists (select 1 from dps_hub_moves where instance = ${slot(0)} and registration_key = ${slot(1)})
      returning 1
    ), mv as (
      insert into dps_hub_moves (instance, registration_key, operation_id, version, owner, lease_until, doc)
      select ${slot(0)}, ${slot(1)}, ${slot(7)}, ${slot<number>(8)}, ${slot(9)}, ${slot(10)}, ${slot(11)} where exists (select 1 from rec)
      returning 1
    )
    select (select count(*) from rec) as rec, (select count(*) from mv) as mv,
      (select count(*) from dps_hub_moves where instance = ${slot(0)} and registration_key = ${slot(1)}) as existing`);
  const upsertRecord = (i: { kind: number; group: number; etag: number; doc: number }, cond: string) =>
    sql`insert into dps_registrations (instance, registration_key, enrollment_kind, group_key, etag, doc)
      select ${slot(0)}, ${slot(1)}, ${slot(i.kind)}, ${slot(i.group)}, ${slot(i.etag)}, ${slot(i.doc)} where exists (select 1 from ${sql.raw(cond)})
      on conflict (instance, registration_key) do update set enrollment_kind = excluded.enrollment_kind, group_key = excluded.group_key,
        etag = excluded.etag, doc = excluded.doc
      returning 1`;
  const finish = prepared(sql<{ mv: number; op: number; rec: number; guard: number }>`with mv as (
      delete from dps_hub_moves where instance = ${slot(0)} and registration_key = ${slot(1)} and version = ${slot<number>(2)} returning 1
    ), op as (
      update dps_operations set status = ${slot(4)}, version = ${slot<number>(5)}, updated_at = ${slot(6)}, doc = ${slot(7)}
      where instance = ${slot(0)} and operation_id = ${slot(3)} and version = ${slot<number>(8)} and exists (select 1 from mv)
      returning 1
    ), rec as (${upsertRecord({ kind: 9, group: 10, etag: 11, doc: 12 }, 'op')})
    select (select count(*) from mv) as mv, (select count(*) from op) as op, (select count(*) from rec) as rec,
      case when (select count(*) from mv) > 0 then 1 / (select count(*) from op) else 0 end as guard`);
  const finishNoOp = prepared(sql<{ mv: number; rec: number }>`with mv as (
      delete from dps_hub_moves where instance = ${slot(0)} and registration_key = ${slot(1)} and version = ${slot<number>(2)} returning 1
    ), rec as (${upsertRecord({ kind: 3, group: 4, etag: 5, doc: 6 }, 'mv')})
    select (select count(*) from mv) as mv, (select count(*) from rec) as rec`);
  return { start, finish, finishNoOp };
}

/** PostgreSQL division_by_zero: the guard of a hub-move statement whose later part did not hold. */
const PG_DIVISION_BY_ZERO = '22012';

/** PostgreSQL unique_violation. */
const PG_UNIQUE_VIOLATION = '23505';

function operationArgs(instance: string, op: RegistrationOperation): unknown[] {
  return [instance, op.operationId, key(op.registrationId), op.status, op.version, op.lastUpdatedDateTimeUtc, JSON.stringify(op)];
}

/**
 * ProvisioningStore on Kysely: one code path for SQLite (better-sqlite3) and PostgreSQL. Every query names its
 * columns (no `select *`), so prepared statements survive later migrations that add columns. The point reads of the
 * device hot path are compiled once; compare-and-set writes are one UPDATE/DELETE with the expected etag or version
 * in the WHERE clause, and only when it changed nothing does a primary-key read tell 'not-found' from
 * 'precondition-failed'.
 */
export class KyselyProvisioningStore implements ProvisioningStore {
  private readonly db: Db;
  private readonly q: ReturnType<typeof prepareQueries>;
  /** PostgreSQL: the single-statement finishes (see preparePostgresFinish); undefined on SQLite. */
  private readonly pgFinish: ReturnType<typeof preparePostgresFinish> | undefined;
  /** PostgreSQL: the single-statement hub-move writes (see preparePostgresMoves); undefined on SQLite. */
  private readonly pgMoves: ReturnType<typeof preparePostgresMoves> | undefined;

  /** SQLite: the group commit that finished registrations go through (see SqliteGroupCommit). */
  private readonly groupCommit: SqliteGroupCommit | undefined;

  /** `db` is the shared store database; the provisioning tables are attached to its type here. */
  constructor(db: Kysely<Database>, opts: { groupCommit?: SqliteGroupCommit } = {}) {
    this.db = db.withTables<ProvisioningTables>();
    this.groupCommit = opts.groupCommit;
    this.q = prepareQueries(this.db);
    const pgsql = this.db.getExecutor().adapter instanceof PostgresAdapter;
    this.pgFinish = pgsql ? preparePostgresFinish(this.db) : undefined;
    this.pgMoves = pgsql ? preparePostgresMoves(this.db) : undefined;
  }

  // ---- instances -------------------------------------------------------------------------------------------

  async getInstance(name: string): Promise<ProvisioningInstance | undefined> {
    const r = await this.db.selectFrom('dps_instances').select(INSTANCE_COLS).where('name', '=', name).executeTakeFirst();
    return r ? parseInstance(r) : undefined;
  }

  async getInstanceByIdScope(idScope: string): Promise<ProvisioningInstance | undefined> {
    const r = (await this.db.executeQuery(this.q.instanceByIdScope.bind([idScope]))).rows[0];
    return r ? parseInstance(r) : undefined;
  }

  async listInstances(): Promise<ProvisioningInstance[]> {
    const rows = await this.db.selectFrom('dps_instances').select(INSTANCE_COLS).orderBy('name').execute();
    return rows.map(parseInstance);
  }

  async createInstance(instance: ProvisioningInstance): Promise<CreateResult> {
    const r = await this.db
      .insertInto('dps_instances')
      .values({ name: instance.name, id_scope: instance.idScope, etag: instance.etag, doc: JSON.stringify(instance) })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1 ? 'ok' : 'exists';
  }

  async replaceInstance(instance: ProvisioningInstance, expectedEtag: ExpectedEtag): Promise<WriteResult> {
    let q = this.db
      .updateTable('dps_instances')
      .set({ etag: instance.etag, doc: JSON.stringify(instance) })
      .where('name', '=', instance.name)
      .where('id_scope', '=', instance.idScope);
    if (!anyEtag(expectedEtag)) q = q.where('etag', '=', expectedEtag);
    const r = await q.executeTakeFirst();
    if (Number(r.numUpdatedRows) === 1) return 'ok';
    const exists = await this.db.selectFrom('dps_instances').select('name').where('name', '=', instance.name).executeTakeFirst();
    return exists ? 'precondition-failed' : 'not-found';
  }

  // ---- individual enrollments ------------------------------------------------------------------------------

  async getIndividualEnrollment(instance: string, registrationId: string): Promise<IndividualEnrollment | undefined> {
    const r = (await this.db.executeQuery(this.q.enrollment.bind([instance, key(registrationId)]))).rows[0];
    return r ? parseEnrollment(r) : undefined;
  }

  async createIndividualEnrollment(instance: string, e: IndividualEnrollment): Promise<CreateResult> {
    const r = await this.db
      .insertInto('dps_enrollments')
      .values({ instance, registration_key: key(e.registrationId), attestation_type: e.attestation.type, etag: e.etag, doc: JSON.stringify(e) })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1 ? 'ok' : 'exists';
  }

  async replaceIndividualEnrollment(instance: string, e: IndividualEnrollment, expectedEtag: ExpectedEtag): Promise<WriteResult> {
    const k = key(e.registrationId);
    let q = this.db
      .updateTable('dps_enrollments')
      .set({ attestation_type: e.attestation.type, etag: e.etag, doc: JSON.stringify(e) })
      .where('instance', '=', instance)
      .where('registration_key', '=', k);
    if (!anyEtag(expectedEtag)) q = q.where('etag', '=', expectedEtag);
    const r = await q.executeTakeFirst();
    if (Number(r.numUpdatedRows) === 1) return 'ok';
    return (await this.enrollmentExists(this.db, instance, k)) ? 'precondition-failed' : 'not-found';
  }

  async deleteIndividualEnrollment(instance: string, registrationId: string, expectedEtag?: ExpectedEtag): Promise<WriteResult> {
    const k = key(registrationId);
    return this.inTransaction(async (trx) => {
      let q = trx.deleteFrom('dps_enrollments').where('instance', '=', instance).where('registration_key', '=', k);
      if (!anyEtag(expectedEtag)) q = q.where('etag', '=', expectedEtag as string);
      const r = await q.executeTakeFirst();
      if (Number(r.numDeletedRows) !== 1) {
        throw new Rollback((await this.enrollmentExists(trx, instance, k)) ? 'precondition-failed' : 'not-found');
      }
      await trx
        .deleteFrom('dps_registrations')
        .where('instance', '=', instance)
        .where('registration_key', '=', k)
        .where('enrollment_kind', '=', 'individual')
        .execute();
      return 'ok';
    });
  }

  async listIndividualEnrollments(instance: string, page: PageRequest): Promise<Page<IndividualEnrollment>> {
    const limit = pageLimit(page);
    let q = this.db
      .selectFrom('dps_enrollments')
      .select(['registration_key', 'doc', 'etag'])
      .where('instance', '=', instance)
      .orderBy('registration_key')
      .limit(limit + 1);
    if (page.after !== undefined) q = q.where('registration_key', '>', page.after);
    return toPage(await q.execute(), limit, (r) => r.registration_key, parseEnrollment);
  }

  async countIndividualEnrollments(instance: string): Promise<number> {
    const r = await this.db
      .selectFrom('dps_enrollments')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('instance', '=', instance)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  private async enrollmentExists(db: Db | Tx, instance: string, k: string): Promise<boolean> {
    const r = await db.selectFrom('dps_enrollments').select('etag').where('instance', '=', instance).where('registration_key', '=', k).executeTakeFirst();
    return r !== undefined;
  }

  // ---- enrollment groups -----------------------------------------------------------------------------------

  async getEnrollmentGroup(instance: string, enrollmentGroupId: string): Promise<EnrollmentGroup | undefined> {
    const r = (await this.db.executeQuery(this.q.group.bind([instance, key(enrollmentGroupId)]))).rows[0];
    return r ? parseGroup(r) : undefined;
  }

  async listEnrollmentGroups(instance: string, page: PageRequest & { attestationType?: 'symmetricKey' | 'x509' }): Promise<Page<EnrollmentGroup>> {
    const limit = pageLimit(page);
    let q = this.db
      .selectFrom('dps_enrollment_groups')
      .select(['group_key', 'doc', 'etag'])
      .where('instance', '=', instance)
      .orderBy('group_key')
      .limit(limit + 1);
    if (page.attestationType !== undefined) q = q.where('attestation_type', '=', page.attestationType);
    if (page.after !== undefined) q = q.where('group_key', '>', page.after);
    return toPage(await q.execute(), limit, (r) => r.group_key, parseGroup);
  }

  async createEnrollmentGroup(instance: string, g: EnrollmentGroup): Promise<CreateResult> {
    const r = await this.db
      .insertInto('dps_enrollment_groups')
      .values({ instance, group_key: key(g.enrollmentGroupId), attestation_type: groupAttestationType(g), etag: g.etag, doc: JSON.stringify(g) })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1 ? 'ok' : 'exists';
  }

  async replaceEnrollmentGroup(instance: string, g: EnrollmentGroup, expectedEtag: ExpectedEtag): Promise<WriteResult> {
    const k = key(g.enrollmentGroupId);
    let q = this.db
      .updateTable('dps_enrollment_groups')
      .set({ attestation_type: groupAttestationType(g), etag: g.etag, doc: JSON.stringify(g) })
      .where('instance', '=', instance)
      .where('group_key', '=', k);
    if (!anyEtag(expectedEtag)) q = q.where('etag', '=', expectedEtag);
    const r = await q.executeTakeFirst();
    if (Number(r.numUpdatedRows) === 1) return 'ok';
    return (await this.groupExists(instance, k)) ? 'precondition-failed' : 'not-found';
  }

  async deleteEnrollmentGroup(instance: string, enrollmentGroupId: string, expectedEtag?: ExpectedEtag): Promise<WriteResult> {
    const k = key(enrollmentGroupId);
    let q = this.db.deleteFrom('dps_enrollment_groups').where('instance', '=', instance).where('group_key', '=', k);
    if (!anyEtag(expectedEtag)) q = q.where('etag', '=', expectedEtag as string);
    const r = await q.executeTakeFirst();
    if (Number(r.numDeletedRows) === 1) return 'ok';
    return (await this.groupExists(instance, k)) ? 'precondition-failed' : 'not-found';
  }

  async countEnrollmentGroups(instance: string): Promise<{ symmetricKey: number; x509: number }> {
    const rows = await this.db
      .selectFrom('dps_enrollment_groups')
      .select((eb) => ['attestation_type', eb.fn.countAll<number>().as('n')])
      .where('instance', '=', instance)
      .groupBy('attestation_type')
      .execute();
    const out = { symmetricKey: 0, x509: 0 };
    for (const r of rows) out[r.attestation_type] = Number(r.n);
    return out;
  }

  private async groupExists(instance: string, k: string): Promise<boolean> {
    const r = await this.db.selectFrom('dps_enrollment_groups').select('etag').where('instance', '=', instance).where('group_key', '=', k).executeTakeFirst();
    return r !== undefined;
  }

  // ---- registration records --------------------------------------------------------------------------------

  async getRegistration(instance: string, registrationId: string): Promise<RegistrationRecord | undefined> {
    const r = (await this.db.executeQuery(this.q.registration.bind([instance, key(registrationId)]))).rows[0];
    return r ? parseRecord(r) : undefined;
  }

  putRegistration(instance: string, record: RegistrationRecord, expect: RecordExpectation): Promise<'ok' | 'precondition-failed'> {
    return this.writeRecord(this.db, instance, record, expect);
  }

  private async writeRecord(db: Db | Tx, instance: string, record: RegistrationRecord, expect: RecordExpectation): Promise<'ok' | 'precondition-failed'> {
    const r = await db.executeQuery(this.recordWrite(instance, record, expect));
    return Number(r.numAffectedRows ?? 0n) >= 1 ? 'ok' : 'precondition-failed';
  }

  /** The statement writing a record under `expect` (insert, upsert, or update at an etag); one row when it applied. */
  private recordWrite(instance: string, record: RegistrationRecord, expect: RecordExpectation): CompiledQuery {
    const row = recordColumns(instance, record);
    const args: unknown[] = [instance, row.registration_key, row.enrollment_kind, row.group_key, row.etag, row.doc];
    const q = expect.kind === 'etag' ? this.q.updateRecord : expect.kind === 'any' ? this.q.upsertRecord : this.q.insertRecord;
    if (expect.kind === 'etag') args.push(expect.etag);
    return q.bind(args);
  }

  async deleteRegistration(instance: string, registrationId: string, expectedEtag?: ExpectedEtag): Promise<WriteResult> {
    const k = key(registrationId);
    let q = this.db.deleteFrom('dps_registrations').where('instance', '=', instance).where('registration_key', '=', k);
    if (!anyEtag(expectedEtag)) q = q.where('etag', '=', expectedEtag as string);
    const r = await q.executeTakeFirst();
    if (Number(r.numDeletedRows) === 1) return 'ok';
    const exists = await this.db.selectFrom('dps_registrations').select('etag').where('instance', '=', instance).where('registration_key', '=', k).executeTakeFirst();
    return exists ? 'precondition-failed' : 'not-found';
  }

  async listGroupRegistrations(instance: string, enrollmentGroupId: string, page: PageRequest): Promise<Page<RegistrationRecord>> {
    const limit = pageLimit(page);
    let q = this.db
      .selectFrom('dps_registrations')
      .select(['registration_key', 'doc', 'etag'])
      .where('instance', '=', instance)
      .where('group_key', '=', key(enrollmentGroupId))
      .orderBy('registration_key')
      .limit(limit + 1);
    if (page.after !== undefined) q = q.where('registration_key', '>', page.after);
    return toPage(await q.execute(), limit, (r) => r.registration_key, parseRecord);
  }

  async countRegistrations(instance: string): Promise<number> {
    const r = await this.db
      .selectFrom('dps_registrations')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('instance', '=', instance)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  // ---- registration operations -----------------------------------------------------------------------------

  async getOperation(instance: string, operationId: string): Promise<RegistrationOperation | undefined> {
    const r = (await this.db.executeQuery(this.q.operation.bind([instance, operationId]))).rows[0];
    return r ? parseOperation(r) : undefined;
  }

  async findInFlightOperation(instance: string, registrationId: string): Promise<RegistrationOperation | undefined> {
    const r = (await this.db.executeQuery(this.q.inFlight.bind([instance, key(registrationId)]))).rows[0];
    return r ? parseOperation(r) : undefined;
  }

  async getRegistrationContext(instance: string, registrationId: string): Promise<RegistrationContext> {
    const { rows } = await this.db.executeQuery(this.q.context.bind([instance, key(registrationId)]));
    const out: RegistrationContext = { record: undefined, individualEnrollment: undefined, inFlightOperation: undefined };
    for (const r of rows) {
      if (r.part === 'record') out.record = parseRecord({ doc: r.doc, etag: r.etag ?? '' });
      else if (r.part === 'enrollment') out.individualEnrollment = parseEnrollment({ doc: r.doc, etag: r.etag ?? '' });
      else if (r.status !== null && r.version !== null) out.inFlightOperation = parseOperation({ doc: r.doc, status: r.status, version: r.version });
    }
    return out;
  }

  createOperation(instance: string, op: RegistrationOperation): Promise<CreateResult>;
  createOperation(instance: string, op: RegistrationOperation, registration: RecordWrite): Promise<CreateResult | 'precondition-failed'>;
  async createOperation(instance: string, op: RegistrationOperation, registration?: RecordWrite): Promise<CreateResult | 'precondition-failed'> {
    if (registration === undefined) {
      const r = await this.db.executeQuery(this.q.insertOperation.bind(operationArgs(instance, op)));
      return Number(r.numAffectedRows ?? 0n) === 1 ? 'ok' : 'exists';
    }
    if (op.status === 'assigning') throw new Error('store: an operation created with its record must be finished, not assigning');
    if (key(registration.record.registrationId) !== key(op.registrationId)) {
      throw new Error(`store: the record of ${JSON.stringify(registration.record.registrationId)} given with an operation of ${JSON.stringify(op.registrationId)}`);
    }
    if (this.pgFinish) return this.createFinishedPostgres(this.pgFinish, instance, op, registration);
    if (this.groupCommit) return this.createFinishedGrouped(this.groupCommit, instance, op, registration);
    const r = await this.inTransaction<CreateResult | 'precondition-failed'>(async (trx) => {
      // Someone is assigning this registration (its `assigning` row is stored): leave it to them.
      const busy = await trx.executeQuery(this.q.inFlightExists.bind([instance, key(op.registrationId)]));
      if (busy.rows.length > 0) throw new Rollback('exists');
      if ((await this.writeRecord(trx, instance, registration.record, registration.expect)) !== 'ok') throw new Rollback('precondition-failed');
      const ins = await trx.executeQuery(this.q.insertOperation.bind(operationArgs(instance, op)));
      if (Number(ins.numAffectedRows ?? 0n) !== 1) throw new Rollback('exists');
      return 'ok';
    });
    return r;
  }

  /** SQLite: the same three steps as one unit of a group commit (shares its COMMIT with other registrations). */
  private createFinishedGrouped(g: SqliteGroupCommit, instance: string, op: RegistrationOperation, registration: RecordWrite): Promise<CreateResult | 'precondition-failed'> {
    const inFlight = this.q.inFlightExists.bind([instance, key(op.registrationId)]);
    const writeRecord = this.recordWrite(instance, registration.record, registration.expect);
    const insertOp = this.q.insertOperation.bind(operationArgs(instance, op));
    return g.submit<CreateResult | 'precondition-failed'>((s) => {
      // Someone is assigning this registration (its `assigning` row is stored): leave it to them.
      if (s.all(inFlight).length > 0) return 'exists';
      if (s.run(writeRecord).changes < 1) return 'precondition-failed';
      if (s.run(insertOp).changes !== 1) throw new UndoUnit<CreateResult>('exists');
      return 'ok';
    });
  }

  private async createFinishedPostgres(
    q: ReturnType<typeof preparePostgresFinish>,
    instance: string,
    op: RegistrationOperation,
    registration: RecordWrite,
  ): Promise<CreateResult | 'precondition-failed'> {
    const row = recordColumns(instance, registration.record);
    const args: unknown[] = [instance, row.registration_key, row.enrollment_kind, row.group_key, row.etag, row.doc, op.operationId, op.status, op.version, op.lastUpdatedDateTimeUtc, JSON.stringify(op)];
    if (registration.expect.kind === 'etag') args.push(registration.expect.etag);
    try {
      const { rows } = await this.db.executeQuery(q[registration.expect.kind].bind(args));
      const r = rows[0];
      if (r === undefined) throw new Error('store: the finish statement returned no row');
      if (Number(r.busy) > 0) return 'exists';
      if (Number(r.rec) === 0) return 'precondition-failed';
      return 'ok';
    } catch (e) {
      if ((e as { code?: unknown }).code === PG_UNIQUE_VIOLATION) return 'exists';
      throw e;
    }
  }

  async updateOperation(instance: string, op: RegistrationOperation, expectedVersion: number, registration?: RecordWrite): Promise<WriteResult> {
    if (op.version !== expectedVersion + 1) throw new Error(`store: an operation update must write version ${expectedVersion + 1}, got ${op.version}`);
    const write = async (db: Db | Tx): Promise<WriteResult> => {
      const args = [instance, op.operationId, op.status, op.version, op.lastUpdatedDateTimeUtc, JSON.stringify(op), expectedVersion];
      const r = await db.executeQuery(this.q.updateOperation.bind(args));
      if (Number(r.numAffectedRows ?? 0n) === 1) return 'ok';
      const exists = await db.executeQuery(this.q.operationVersion.bind([instance, op.operationId]));
      return exists.rows.length > 0 ? 'precondition-failed' : 'not-found';
    };
    if (registration === undefined) return write(this.db);
    return this.inTransaction(async (trx) => {
      const r = await write(trx);
      if (r !== 'ok') throw new Rollback(r);
      if ((await this.writeRecord(trx, instance, registration.record, registration.expect)) !== 'ok') throw new Rollback('precondition-failed');
      return 'ok';
    });
  }

  async listStaleOperations(instance: string, updatedBefore: string, limit: number): Promise<RegistrationOperation[]> {
    const rows = await this.db
      .selectFrom('dps_operations')
      .select(OP_COLS)
      .where('instance', '=', instance)
      .where('status', '=', ASSIGNING)
      .where('updated_at', '<', updatedBefore)
      .orderBy('updated_at')
      .limit(pageLimit({ limit }))
      .execute();
    return rows.map(parseOperation);
  }

  async purgeFinishedOperations(instance: string, updatedBefore: string): Promise<number> {
    const r = await this.db
      .deleteFrom('dps_operations')
      .where('instance', '=', instance)
      .where('status', '!=', 'assigning')
      .where('updated_at', '<', updatedBefore)
      .executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  // ---- hub moves -------------------------------------------------------------------------------------------

  async createHubMove(instance: string, move: HubMove, registration: RecordWrite): Promise<CreateResult | 'precondition-failed'> {
    if (key(registration.record.registrationId) !== key(move.registrationId)) throw new Error('store: a hub move written with the record of another registration id');
    if (this.pgMoves && registration.expect.kind === 'etag') {
      const row = recordColumns(instance, registration.record);
      const mv = moveColumns(instance, move);
      try {
        const { rows } = await this.db.executeQuery(
          this.pgMoves.start.bind([instance, row.registration_key, row.enrollment_kind, row.group_key, row.etag, row.doc, registration.expect.etag, mv.operation_id, mv.version, mv.owner, mv.lease_until, mv.doc]),
        );
        const r = rows[0];
        if (r && Number(r.mv) === 1) return 'ok';
        return r && Number(r.existing) > 0 ? 'exists' : 'precondition-failed';
      } catch (e) {
        if ((e as { code?: unknown }).code === PG_UNIQUE_VIOLATION) return 'exists';
        throw e;
      }
    }
    return this.inTransaction<CreateResult | 'precondition-failed'>(async (trx) => {
      const ins = await trx
        .insertInto('dps_hub_moves')
        .values(moveColumns(instance, move))
        .onConflict((oc) => oc.doNothing())
        .executeTakeFirst();
      if (Number(ins.numInsertedOrUpdatedRows ?? 0n) !== 1) throw new Rollback('exists');
      if ((await this.writeRecord(trx, instance, registration.record, registration.expect)) !== 'ok') throw new Rollback('precondition-failed');
      return 'ok';
    });
  }

  async getHubMove(instance: string, registrationId: string): Promise<HubMove | undefined> {
    const r = await this.db
      .selectFrom('dps_hub_moves')
      .select(['doc', 'version'])
      .where('instance', '=', instance)
      .where('registration_key', '=', key(registrationId))
      .executeTakeFirst();
    return r ? parseMove(r) : undefined;
  }

  async updateHubMove(instance: string, move: HubMove, expectedVersion: number): Promise<WriteResult> {
    if (move.version !== expectedVersion + 1) throw new Error(`store: a hub move update must write version ${expectedVersion + 1}, got ${move.version}`);
    const c = moveColumns(instance, move);
    const r = await this.db
      .updateTable('dps_hub_moves')
      .set({ version: c.version, owner: c.owner, lease_until: c.lease_until, doc: c.doc, operation_id: c.operation_id })
      .where('instance', '=', instance)
      .where('registration_key', '=', c.registration_key)
      .where('version', '=', expectedVersion)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 1) return 'ok';
    return (await this.getHubMove(instance, move.registrationId)) ? 'precondition-failed' : 'not-found';
  }

  async finishHubMove(
    instance: string,
    registrationId: string,
    expectedVersion: number,
    operation: { operation: RegistrationOperation; expectedVersion: number } | undefined,
    registration: RecordWrite,
  ): Promise<WriteResult> {
    if (this.pgMoves && registration.expect.kind === 'any') {
      if (key(registration.record.registrationId) !== key(registrationId)) throw new Error('store: a hub move finished with the record of another registration id');
      const row = recordColumns(instance, registration.record);
      try {
        let moved: boolean;
        if (operation !== undefined) {
          const op = operation.operation;
          if (op.version !== operation.expectedVersion + 1) throw new Error('store: an operation update must write the next version');
          const { rows } = await this.db.executeQuery(
            this.pgMoves.finish.bind([instance, key(registrationId), expectedVersion, op.operationId, op.status, op.version, op.lastUpdatedDateTimeUtc, JSON.stringify(op), operation.expectedVersion, row.enrollment_kind, row.group_key, row.etag, row.doc]),
          );
          moved = Number(rows[0]?.mv ?? 0) === 1;
        } else {
          const { rows } = await this.db.executeQuery(this.pgMoves.finishNoOp.bind([instance, key(registrationId), expectedVersion, row.enrollment_kind, row.group_key, row.etag, row.doc]));
          moved = Number(rows[0]?.mv ?? 0) === 1;
        }
        if (moved) return 'ok';
      } catch (e) {
        // The guard: the move was there but the operation was not at its version; nothing was written.
        if ((e as { code?: unknown }).code === PG_DIVISION_BY_ZERO) return 'precondition-failed';
        throw e;
      }
      return (await this.getHubMove(instance, registrationId)) ? 'precondition-failed' : 'not-found';
    }
    return this.inTransaction(async (trx) => {
      const del = await trx
        .deleteFrom('dps_hub_moves')
        .where('instance', '=', instance)
        .where('registration_key', '=', key(registrationId))
        .where('version', '=', expectedVersion)
        .executeTakeFirst();
      if (Number(del.numDeletedRows) !== 1) {
        const exists = await trx.selectFrom('dps_hub_moves').select('version').where('instance', '=', instance).where('registration_key', '=', key(registrationId)).executeTakeFirst();
        throw new Rollback(exists ? 'precondition-failed' : 'not-found');
      }
      if (operation !== undefined) {
        const op = operation.operation;
        if (op.version !== operation.expectedVersion + 1) throw new Error('store: an operation update must write the next version');
        const args = [instance, op.operationId, op.status, op.version, op.lastUpdatedDateTimeUtc, JSON.stringify(op), operation.expectedVersion];
        const u = await trx.executeQuery(this.q.updateOperation.bind(args));
        if (Number(u.numAffectedRows ?? 0n) !== 1) throw new Rollback('precondition-failed');
      }
      if ((await this.writeRecord(trx, instance, registration.record, registration.expect)) !== 'ok') throw new Rollback('precondition-failed');
      return 'ok';
    });
  }

  async listHubMoves(instance: string, filter: { owner?: string; leaseBefore?: string; limit: number }): Promise<HubMove[]> {
    const { owner, leaseBefore } = filter;
    if (owner === undefined && leaseBefore === undefined) throw new Error('store: listHubMoves needs an owner or a lease bound');
    const rows = await this.db
      .selectFrom('dps_hub_moves')
      .select(['doc', 'version'])
      .where('instance', '=', instance)
      .where((eb) => {
        const ors = [];
        if (owner !== undefined) ors.push(eb('owner', '=', owner));
        if (leaseBefore !== undefined) ors.push(eb('lease_until', '<', leaseBefore));
        return eb.or(ors);
      })
      .orderBy('lease_until')
      .limit(pageLimit({ limit: filter.limit }))
      .execute();
    return rows.map(parseMove);
  }

  async countHubMoves(instance: string): Promise<number> {
    const r = await this.db
      .selectFrom('dps_hub_moves')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('instance', '=', instance)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  // ---- helpers ---------------------------------------------------------------------------------------------

  private async inTransaction<R extends string = WriteResult>(fn: (trx: Tx) => Promise<R>): Promise<R> {
    try {
      return await this.db.transaction().execute(fn);
    } catch (e) {
      if (e instanceof Rollback) return e.result as R;
      throw e;
    }
  }
}

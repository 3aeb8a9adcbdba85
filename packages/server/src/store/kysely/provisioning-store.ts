import type { Kysely, Transaction } from 'kysely';
import type {
  EnrollmentGroup,
  IndividualEnrollment,
  OperationStatus,
  ProvisioningInstance,
  RegistrationOperation,
  RegistrationRecord,
} from '../../provisioning/model.ts';
import type { WriteResult } from '../ports.ts';
import { PreparedQuery, slot } from './prepared.ts';
import type { Database } from './schema.ts';
import type {
  CreateResult,
  ExpectedEtag,
  Page,
  PageRequest,
  ProvisioningStore,
  RecordExpectation,
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

export type ProvisioningTables = {
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
class Rollback extends Error {
  constructor(readonly result: WriteResult) {
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

function operationColumns(instance: string, op: RegistrationOperation): DpsOperationsTable {
  return {
    instance,
    operation_id: op.operationId,
    registration_key: key(op.registrationId),
    status: op.status,
    version: op.version,
    updated_at: op.lastUpdatedDateTimeUtc,
    doc: JSON.stringify(op),
  };
}

const INSTANCE_COLS = ['doc', 'etag'] as const;
const DOC_COLS = ['doc', 'etag'] as const;
const OP_COLS = ['doc', 'status', 'version'] as const;

/** The point reads of the device hot path (register, status polls), compiled once (see PreparedQuery). */
function prepareQueries(db: Db) {
  return {
    instanceByIdScope: new PreparedQuery(db.selectFrom('dps_instances').select(INSTANCE_COLS).where('id_scope', '=', slot(0))),
    enrollment: new PreparedQuery(db.selectFrom('dps_enrollments').select(DOC_COLS).where('instance', '=', slot(0)).where('registration_key', '=', slot(1))),
    group: new PreparedQuery(db.selectFrom('dps_enrollment_groups').select(DOC_COLS).where('instance', '=', slot(0)).where('group_key', '=', slot(1))),
    registration: new PreparedQuery(db.selectFrom('dps_registrations').select(DOC_COLS).where('instance', '=', slot(0)).where('registration_key', '=', slot(1))),
    operation: new PreparedQuery(db.selectFrom('dps_operations').select(OP_COLS).where('instance', '=', slot(0)).where('operation_id', '=', slot(1))),
    inFlight: new PreparedQuery(
      db
        .selectFrom('dps_operations')
        .select(OP_COLS)
        .where('instance', '=', slot(0))
        .where('registration_key', '=', slot(1))
        .where('status', '=', 'assigning'),
    ),
  };
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

  /** `db` is the shared store database; the provisioning tables are attached to its type here. */
  constructor(db: Kysely<Database>) {
    this.db = db.withTables<ProvisioningTables>();
    this.q = prepareQueries(this.db);
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
    const row = recordColumns(instance, record);
    if (expect.kind === 'etag') {
      const r = await db
        .updateTable('dps_registrations')
        .set({ enrollment_kind: row.enrollment_kind, group_key: row.group_key, etag: row.etag, doc: row.doc })
        .where('instance', '=', instance)
        .where('registration_key', '=', row.registration_key)
        .where('etag', '=', expect.etag)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) === 1 ? 'ok' : 'precondition-failed';
    }
    const r = await db
      .insertInto('dps_registrations')
      .values(row)
      .onConflict((oc) =>
        expect.kind === 'any'
          ? oc.columns(['instance', 'registration_key']).doUpdateSet({ enrollment_kind: row.enrollment_kind, group_key: row.group_key, etag: row.etag, doc: row.doc })
          : oc.doNothing(),
      )
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) >= 1 ? 'ok' : 'precondition-failed';
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

  async createOperation(instance: string, op: RegistrationOperation): Promise<CreateResult> {
    const r = await this.db
      .insertInto('dps_operations')
      .values(operationColumns(instance, op))
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1 ? 'ok' : 'exists';
  }

  async updateOperation(
    instance: string,
    op: RegistrationOperation,
    expectedVersion: number,
    registration?: { record: RegistrationRecord; expect: RecordExpectation },
  ): Promise<WriteResult> {
    if (op.version !== expectedVersion + 1) throw new Error(`store: an operation update must write version ${expectedVersion + 1}, got ${op.version}`);
    const write = async (db: Db | Tx): Promise<WriteResult> => {
      const row = operationColumns(instance, op);
      const r = await db
        .updateTable('dps_operations')
        .set({ status: row.status, version: row.version, updated_at: row.updated_at, doc: row.doc })
        .where('instance', '=', instance)
        .where('operation_id', '=', op.operationId)
        .where('version', '=', expectedVersion)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 1) return 'ok';
      const exists = await db.selectFrom('dps_operations').select('version').where('instance', '=', instance).where('operation_id', '=', op.operationId).executeTakeFirst();
      return exists ? 'precondition-failed' : 'not-found';
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
      .where('status', '=', 'assigning')
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

  // ---- helpers ---------------------------------------------------------------------------------------------

  private async inTransaction(fn: (trx: Tx) => Promise<WriteResult>): Promise<WriteResult> {
    try {
      return await this.db.transaction().execute(fn);
    } catch (e) {
      if (e instanceof Rollback) return e.result;
      throw e;
    }
  }
}

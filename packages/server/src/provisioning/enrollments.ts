import { HomingError } from '../core/errors.ts';
import { isoTime, type Clock, type IdSource } from '../core/clock.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../core/json.ts';
import { registrationKey } from '../core/registration-id.ts';
import type { CreateResult, Page, PageRequest, ProvisioningStore } from '../store/provisioning-ports.ts';
import type { WriteResult } from '../store/ports.ts';
import type { ClaimOwner } from '../store/certificate-claim-ports.ts';
import type { CertificateClaims } from './enrollments/certificate-claims.ts';
import type {
  AttestationMechanism,
  EnrollmentGroup,
  IndividualEnrollment,
  ProvisioningInstance,
  RegistrationRecord,
} from './model.ts';
import { encodeContinuation, validateQuerySpec, type PageParams, type QueryPage } from './enrollments/paging.ts';
import {
  normalizeIfMatch,
  parseEnrollmentGroup,
  parseIndividualEnrollment,
  validateEnrollmentGroupId,
  validateRegistrationId,
  type ParseContext,
} from './enrollments/validation.ts';

export * from './enrollments/paging.ts';
export * from './enrollments/validation.ts';
export * from './enrollments/wire.ts';

/**
 * Use cases of the DPS service API on enrollments, enrollment groups and registration records. Transports resolve
 * the instance and authorize the caller, then hand the raw JSON body and the raw If-Match header here; every rule of
 * dps-behavior.md §1, §5, §7.1 and protocol-service.md §3.2 lives in this module and under enrollments/.
 *
 * Etag rules of a PUT (protocol-service.md §3.2):
 * - no If-Match: create (200); 409 when the id exists;
 * - If-Match `*`: update an existing entry (412 when it does not exist);
 * - If-Match `<etag>`: update when the etag matches (412 otherwise, also when the entry does not exist).
 * Deletes take an optional If-Match (412 when stale, 404 when missing).
 */
export interface EnrollmentLimits {
  maxIndividualEnrollments: number;
  maxSymmetricKeyGroups: number;
  maxX509Groups: number;
}

export const DEFAULT_ENROLLMENT_LIMITS: Readonly<EnrollmentLimits> = Object.freeze({
  maxIndividualEnrollments: 1_000_000,
  maxSymmetricKeyGroups: 100,
  maxX509Groups: 100,
});

/** A bulk operation holds 1 to 10 entries. */
export const BULK_MAX_ITEMS = 10;
/** Generated symmetric keys: 64 random bytes. */
export const GENERATED_KEY_BYTES = 64;

export type BulkMode = 'create' | 'update' | 'updateIfMatchETag' | 'delete';
const BULK_MODES: readonly BulkMode[] = ['create', 'update', 'updateIfMatchETag', 'delete'];

export interface BulkItemError {
  /** The id of the failed entry, as given. */
  id: string;
  errorCode: number;
  errorStatus: string;
}

export interface BulkResult {
  isSuccessful: boolean;
  errors: BulkItemError[];
}

/** How a write relates to the stored entry. */
export type PutCondition =
  /** Create only (PUT without If-Match, bulk create): 409 when the id exists. */
  | { mode: 'create' }
  /** Create or replace, whatever is stored (bulk update). */
  | { mode: 'upsert' }
  /** Replace only when the stored etag matches ('*' any); a missing entry is 412 or 404. */
  | { mode: 'match'; etag: string; missing: 'PreconditionFailed' | 'EnrollmentNotFound' };

export interface EnrollmentServiceDeps {
  store: ProvisioningStore;
  clock: Clock;
  ids: IdSource;
  limits?: Partial<EnrollmentLimits>;
  /** One certificate in one entry only (409 otherwise); without it certificates are not checked across entries. */
  certificateClaims?: CertificateClaims;
  /** Called after an enrollment group of `instance` was written (registrations drop their cached groups). */
  onGroupChange?: (instance: string) => void;
}

/** One of the two enrollment collections, so both share the put/delete/bulk/query logic. */
interface Collection<T extends IndividualEnrollment | EnrollmentGroup> {
  noun: string;
  validateId(id: string): void;
  idOf(e: T): string;
  /** `e` under the id spelling of `existing` (an update through `dev-a` keeps `Dev-A`). */
  keepId(e: T, existing: T): T;
  get(instance: string, id: string): Promise<T | undefined>;
  build(body: JsonValue | undefined, id: string, ctx: ParseContext, meta: { etag: string; created: string; updated: string }): T;
  create(instance: string, e: T): Promise<CreateResult>;
  replace(instance: string, e: T, expectedEtag: string): Promise<WriteResult>;
  delete(instance: string, id: string, expectedEtag: string | undefined): Promise<WriteResult>;
  list(instance: string, page: PageRequest): Promise<Page<T>>;
  checkQuota(instance: ProvisioningInstance, e: T): Promise<void>;
}

function symmetricKeysOf(a: AttestationMechanism): { primaryKey: string; secondaryKey: string } | undefined {
  return a.type === 'symmetricKey' && a.symmetricKey ? { ...a.symmetricKey } : undefined;
}

function writeFailure(r: Exclude<WriteResult, 'ok'>, noun: string, id: string, notFound: 'EnrollmentNotFound' | 'RegistrationNotFound'): HomingError {
  return r === 'not-found'
    ? new HomingError(notFound, `The ${noun} '${id}' does not exist.`)
    : new HomingError('PreconditionFailed', `The If-Match etag does not match the current ${noun} '${id}'.`);
}

export class EnrollmentService {
  private readonly store: ProvisioningStore;
  private readonly clock: Clock;
  private readonly ids: IdSource;
  readonly limits: Readonly<EnrollmentLimits>;
  private readonly individuals: Collection<IndividualEnrollment>;
  private readonly groups: Collection<EnrollmentGroup>;
  private readonly certificateClaims: CertificateClaims | undefined;

  constructor(deps: EnrollmentServiceDeps) {
    this.certificateClaims = deps.certificateClaims;
    this.store = deps.store;
    this.clock = deps.clock;
    this.ids = deps.ids;
    this.limits = Object.freeze({ ...DEFAULT_ENROLLMENT_LIMITS, ...deps.limits });
    const store = deps.store;
    this.individuals = {
      noun: 'enrollment',
      validateId: (id) => validateRegistrationId(id),
      idOf: (e) => e.registrationId,
      keepId: (e, existing) => ({ ...e, registrationId: existing.registrationId }),
      get: (i, id) => store.getIndividualEnrollment(i, id),
      build: (body, id, ctx, m) => ({ ...parseIndividualEnrollment(body, id, ctx), etag: m.etag, createdDateTimeUtc: m.created, lastUpdatedDateTimeUtc: m.updated }),
      create: (i, e) => this.claimed(i, e, () => store.createIndividualEnrollment(i, e)),
      replace: (i, e, etag) => this.claimed(i, e, () => store.replaceIndividualEnrollment(i, e, etag)),
      delete: (i, id, etag) => this.unclaimed(i, { kind: 'individual', key: registrationKey(id) }, store.deleteIndividualEnrollment(i, id, etag)),
      list: (i, p) => store.listIndividualEnrollments(i, p),
      checkQuota: async (inst) => {
        if ((await store.countIndividualEnrollments(inst.name)) >= this.limits.maxIndividualEnrollments) {
          throw new HomingError('QuotaExceeded', `The provisioning service holds the maximum of ${this.limits.maxIndividualEnrollments} individual enrollments.`);
        }
      },
    };
    this.groups = {
      noun: 'enrollment group',
      validateId: (id) => validateEnrollmentGroupId(id),
      idOf: (g) => g.enrollmentGroupId,
      keepId: (g, existing) => ({ ...g, enrollmentGroupId: existing.enrollmentGroupId }),
      get: (i, id) => store.getEnrollmentGroup(i, id),
      build: (body, id, ctx, m) => ({ ...parseEnrollmentGroup(body, id, ctx), etag: m.etag, createdDateTimeUtc: m.created, lastUpdatedDateTimeUtc: m.updated }),
      create: (i, g) => this.claimed(i, g, () => store.createEnrollmentGroup(i, g)).finally(() => deps.onGroupChange?.(i)),
      replace: (i, g, etag) => this.claimed(i, g, () => store.replaceEnrollmentGroup(i, g, etag)).finally(() => deps.onGroupChange?.(i)),
      delete: (i, id, etag) => this.unclaimed(i, { kind: 'group', key: registrationKey(id) }, store.deleteEnrollmentGroup(i, id, etag)).finally(() => deps.onGroupChange?.(i)),
      list: (i, p) => store.listEnrollmentGroups(i, p),
      checkQuota: async (inst, g) => {
        const counts = await store.countEnrollmentGroups(inst.name);
        const [count, max, what] =
          g.attestation.type === 'x509'
            ? [counts.x509, this.limits.maxX509Groups, 'X.509']
            : [counts.symmetricKey, this.limits.maxSymmetricKeyGroups, 'symmetric key'];
        if (count >= max) throw new HomingError('QuotaExceeded', `The provisioning service holds the maximum of ${max} ${what} enrollment groups.`);
      },
    };
  }

  /** Writes an entry with its certificates claimed (409 when another entry holds one). */
  private claimed<R>(instance: string, e: IndividualEnrollment | EnrollmentGroup, write: () => Promise<R>): Promise<R> {
    return this.certificateClaims ? this.certificateClaims.around(instance, e, write) : write();
  }

  /** Deletes an entry, then releases its certificates. */
  private async unclaimed<R>(instance: string, owner: ClaimOwner, deletion: Promise<R>): Promise<R> {
    const r = await deletion;
    if (this.certificateClaims) await this.certificateClaims.released(instance, owner);
    return r;
  }

  // ---- individual enrollments ------------------------------------------------------------------------------

  /** `PUT /enrollments/{id}`. */
  async putIndividualEnrollment(instance: ProvisioningInstance, id: string, body: JsonValue | undefined, ifMatch: string | readonly string[] | undefined): Promise<IndividualEnrollment> {
    return this.put(this.individuals, instance, id, body, conditionOf(ifMatch));
  }

  /** `GET /enrollments/{id}`: the enrollment and, once its device registered, its registration record. */
  async getIndividualEnrollment(instance: ProvisioningInstance, id: string): Promise<{ enrollment: IndividualEnrollment; registrationState: RegistrationRecord | undefined }> {
    const enrollment = await this.mustGet(this.individuals, instance, id);
    const record = await this.store.getRegistration(instance.name, id);
    return { enrollment, registrationState: record?.enrollment.kind === 'individual' ? record : undefined };
  }

  /** `DELETE /enrollments/{id}`: also deletes the enrollment's registration record (dps-behavior.md §5). */
  async deleteIndividualEnrollment(instance: ProvisioningInstance, id: string, ifMatch: string | readonly string[] | undefined): Promise<void> {
    return this.remove(this.individuals, instance, id, normalizeIfMatch(ifMatch));
  }

  /** `POST /enrollments/{id}/attestationmechanism`: the attestation with its keys. */
  async getIndividualAttestation(instance: ProvisioningInstance, id: string): Promise<AttestationMechanism> {
    return (await this.mustGet(this.individuals, instance, id)).attestation;
  }

  /** `POST /enrollments/query`. Query results carry no registrationState (as DPS). */
  async queryIndividualEnrollments(instance: ProvisioningInstance, spec: JsonValue | undefined, page: PageParams): Promise<QueryPage<IndividualEnrollment>> {
    return this.query(this.individuals, instance, spec, page);
  }

  /** `POST /enrollments`: `{mode, enrollments: [...]}`. */
  async bulkIndividualEnrollments(instance: ProvisioningInstance, body: JsonValue | undefined): Promise<BulkResult> {
    return this.bulk(this.individuals, instance, body, 'enrollments', 'registrationId');
  }

  // ---- enrollment groups -----------------------------------------------------------------------------------

  async putEnrollmentGroup(instance: ProvisioningInstance, id: string, body: JsonValue | undefined, ifMatch: string | readonly string[] | undefined): Promise<EnrollmentGroup> {
    return this.put(this.groups, instance, id, body, conditionOf(ifMatch));
  }

  async getEnrollmentGroup(instance: ProvisioningInstance, id: string): Promise<EnrollmentGroup> {
    return this.mustGet(this.groups, instance, id);
  }

  /** Deleting a group keeps its registration records (dps-behavior.md §5). */
  async deleteEnrollmentGroup(instance: ProvisioningInstance, id: string, ifMatch: string | readonly string[] | undefined): Promise<void> {
    return this.remove(this.groups, instance, id, normalizeIfMatch(ifMatch));
  }

  async getGroupAttestation(instance: ProvisioningInstance, id: string): Promise<AttestationMechanism> {
    return (await this.mustGet(this.groups, instance, id)).attestation;
  }

  async queryEnrollmentGroups(instance: ProvisioningInstance, spec: JsonValue | undefined, page: PageParams): Promise<QueryPage<EnrollmentGroup>> {
    return this.query(this.groups, instance, spec, page);
  }

  /** `POST /enrollmentGroups`: `{mode, enrollmentGroups: [...]}`. */
  async bulkEnrollmentGroups(instance: ProvisioningInstance, body: JsonValue | undefined): Promise<BulkResult> {
    return this.bulk(this.groups, instance, body, 'enrollmentGroups', 'enrollmentGroupId');
  }

  // ---- shared logic ----------------------------------------------------------------------------------------

  private newEtag(): string {
    return Buffer.from(`"${this.ids.uuid()}"`, 'utf8').toString('base64');
  }

  private newKey = (): string => this.ids.bytes(GENERATED_KEY_BYTES).toString('base64');

  private async mustGet<T extends IndividualEnrollment | EnrollmentGroup>(c: Collection<T>, instance: ProvisioningInstance, id: string): Promise<T> {
    c.validateId(id);
    const e = await c.get(instance.name, id);
    if (e === undefined) throw new HomingError('EnrollmentNotFound', `The ${c.noun} '${id}' does not exist.`);
    return e;
  }

  private async put<T extends IndividualEnrollment | EnrollmentGroup>(
    c: Collection<T>,
    instance: ProvisioningInstance,
    id: string,
    body: JsonValue | undefined,
    cond: PutCondition,
  ): Promise<T> {
    c.validateId(id);
    const existing = await c.get(instance.name, id);
    const now = isoTime(this.clock.now());
    const ctx: ParseContext = {
      linkedHubs: instance.linkedHubs,
      newKey: this.newKey,
      currentKeys: existing ? symmetricKeysOf(existing.attestation) : undefined,
    };
    const next = c.build(body, id, ctx, { etag: this.newEtag(), created: existing?.createdDateTimeUtc ?? now, updated: now });

    if (existing === undefined) {
      if (cond.mode === 'match') {
        throw cond.missing === 'EnrollmentNotFound'
          ? new HomingError('EnrollmentNotFound', `The ${c.noun} '${id}' does not exist.`)
          : new HomingError('PreconditionFailed', `The ${c.noun} '${id}' does not exist, so If-Match cannot match.`);
      }
      await c.checkQuota(instance, next);
      if ((await c.create(instance.name, next)) === 'exists') {
        throw new HomingError('DeviceAlreadyExists', `The ${c.noun} '${id}' was created concurrently; send If-Match to update it.`);
      }
      return next;
    }

    if (cond.mode === 'create') {
      throw new HomingError('DeviceAlreadyExists', `The ${c.noun} '${c.idOf(existing)}' already exists; send its etag in If-Match (or *) to update it.`);
    }
    if (cond.mode === 'match' && cond.etag !== '*' && cond.etag !== existing.etag) {
      throw new HomingError('PreconditionFailed', `The If-Match etag does not match the current ${c.noun} '${c.idOf(existing)}'.`);
    }
    if (next.attestation.type !== existing.attestation.type) {
      throw new HomingError('ArgumentInvalid', `The attestation type of an existing ${c.noun} cannot change (it is ${existing.attestation.type}).`);
    }
    const replacement = c.keepId(next, existing);
    const r = await c.replace(instance.name, replacement, existing.etag);
    if (r !== 'ok') throw writeFailure('precondition-failed', c.noun, id, 'EnrollmentNotFound');
    return replacement;
  }

  private async remove<T extends IndividualEnrollment | EnrollmentGroup>(c: Collection<T>, instance: ProvisioningInstance, id: string, etag: string | undefined): Promise<void> {
    c.validateId(id);
    const r = await c.delete(instance.name, id, etag);
    if (r !== 'ok') throw writeFailure(r, c.noun, id, 'EnrollmentNotFound');
  }

  private async query<T extends IndividualEnrollment | EnrollmentGroup>(
    c: Collection<T>,
    instance: ProvisioningInstance,
    spec: JsonValue | undefined,
    page: PageParams,
  ): Promise<QueryPage<T>> {
    validateQuerySpec(spec);
    const r = await c.list(instance.name, { limit: page.pageSize, ...(page.after === undefined ? {} : { after: page.after }) });
    return { items: r.items, continuationToken: r.next === undefined ? undefined : encodeContinuation(r.next), pageSize: page.pageSize };
  }

  private async bulk<T extends IndividualEnrollment | EnrollmentGroup>(
    c: Collection<T>,
    instance: ProvisioningInstance,
    body: JsonValue | undefined,
    listField: 'enrollments' | 'enrollmentGroups',
    idField: 'registrationId' | 'enrollmentGroupId',
  ): Promise<BulkResult> {
    const { mode, items } = parseBulk(body, listField, idField);
    const errors: BulkItemError[] = [];
    for (const item of items) {
      const id = item[idField] as string;
      try {
        const etag = normalizeIfMatch(typeof item.etag === 'string' ? item.etag : undefined);
        switch (mode) {
          case 'create':
            await this.put(c, instance, id, item, { mode: 'create' });
            break;
          case 'update':
            await this.put(c, instance, id, item, { mode: 'upsert' });
            break;
          case 'updateIfMatchETag':
            if (etag === undefined) throw new HomingError('PreconditionFailed', `updateIfMatchETag needs the etag of ${c.noun} '${id}'.`);
            await this.put(c, instance, id, item, { mode: 'match', etag, missing: 'EnrollmentNotFound' });
            break;
          case 'delete':
            await this.remove(c, instance, id, etag);
            break;
        }
      } catch (e) {
        if (!(e instanceof HomingError)) throw e;
        errors.push({ id, errorCode: e.code, errorStatus: e.message });
      }
    }
    return { isSuccessful: errors.length === 0, errors };
  }
}

function conditionOf(ifMatch: string | readonly string[] | undefined): PutCondition {
  const etag = normalizeIfMatch(ifMatch);
  return etag === undefined ? { mode: 'create' } : { mode: 'match', etag, missing: 'PreconditionFailed' };
}

/** Validates the envelope of a bulk operation; entries are validated one by one (per-item errors). */
export function parseBulk(
  body: JsonValue | undefined,
  listField: 'enrollments' | 'enrollmentGroups',
  idField: 'registrationId' | 'enrollmentGroupId',
): { mode: BulkMode; items: JsonObject[] } {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', `A bulk operation is a JSON object {mode, ${listField}}.`);
  const mode = body.mode;
  if (typeof mode !== 'string' || !(BULK_MODES as readonly string[]).includes(mode)) {
    throw new HomingError('ArgumentInvalid', `mode must be one of ${BULK_MODES.join(', ')}.`);
  }
  const list = body[listField];
  if (!Array.isArray(list) || list.length < 1 || list.length > BULK_MAX_ITEMS) {
    throw new HomingError('ArgumentInvalid', `${listField} must hold 1 to ${BULK_MAX_ITEMS} entries.`);
  }
  const seen = new Set<string>();
  const items: JsonObject[] = [];
  for (const [i, item] of list.entries()) {
    if (!isPlainObject(item) || typeof item[idField] !== 'string' || (item[idField] as string).length === 0) {
      throw new HomingError('ArgumentInvalid', `${listField}[${i}] must be an object with a ${idField}.`);
    }
    const k = registrationKey(item[idField] as string);
    if (seen.has(k)) throw new HomingError('ArgumentInvalid', `${listField}[${i}]: the ${idField} '${item[idField] as string}' appears more than once.`);
    seen.add(k);
    items.push(item);
  }
  return { mode: mode as BulkMode, items };
}

/** Registration records (DeviceRegistrationState) as the service API exposes them: read, delete, query per group. */
export class RegistrationRecordService {
  private readonly store: ProvisioningStore;

  constructor(deps: { store: ProvisioningStore }) {
    this.store = deps.store;
  }

  /** `GET /registrations/{id}`. */
  async get(instance: ProvisioningInstance, id: string): Promise<RegistrationRecord> {
    validateRegistrationId(id);
    const r = await this.store.getRegistration(instance.name, id);
    if (r === undefined) throw new HomingError('RegistrationNotFound', `No registration record for '${id}'.`);
    return r;
  }

  /** `DELETE /registrations/{id}` (optional If-Match). */
  async delete(instance: ProvisioningInstance, id: string, ifMatch: string | readonly string[] | undefined): Promise<void> {
    validateRegistrationId(id);
    const r = await this.store.deleteRegistration(instance.name, id, normalizeIfMatch(ifMatch));
    if (r !== 'ok') throw writeFailure(r, 'registration record', id, 'RegistrationNotFound');
  }

  /** `POST /registrations/{groupId}/query`: records made through the group (also after the group was deleted). */
  async queryGroup(instance: ProvisioningInstance, groupId: string, spec: JsonValue | undefined, page: PageParams): Promise<QueryPage<RegistrationRecord>> {
    validateEnrollmentGroupId(groupId);
    validateQuerySpec(spec);
    const r = await this.store.listGroupRegistrations(instance.name, groupId, { limit: page.pageSize, ...(page.after === undefined ? {} : { after: page.after }) });
    return { items: r.items, continuationToken: r.next === undefined ? undefined : encodeContinuation(r.next), pageSize: page.pageSize };
  }
}

import { ALLOCATORS, allocationContext, type AllocationDecision, type AllocationContext } from '../core/allocation.ts';
import { isoTime, type Clock, type IdSource } from '../core/clock.ts';
import { ERROR_CATALOGUE, HomingError, type ErrorName } from '../core/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../core/json.ts';
import { assignedDeviceId, registrationKey, sameRegistrationId, validateRegistrationId } from '../core/registration-id.ts';
import type { Logger } from '../observability/logger.ts';
import type { ProvisioningStore } from '../store/provisioning-ports.ts';
import type { HubClientFactory, HubCredentials, HubFailure, InitialTwinContent } from './hub-client.ts';
import type {
  AllocationPolicy,
  EnrollmentCommon,
  EnrollmentGroup,
  IndividualEnrollment,
  LinkedHub,
  ProvisioningInstance,
  RegistrationOperation,
  RegistrationRecord,
} from './model.ts';
import {
  authenticateDevice,
  authenticateForEnrollment,
  listSymmetricKeyGroups,
  unauthorized,
  type DeviceCredential,
  type EnrollmentMatch,
} from './registration/device-auth.ts';
import { ReadCache } from './registration/read-cache.ts';
import { operationStatusBody, registrationResult, resultAsJson, type DeviceRegistrationResult, type RegistrationOperationStatus } from './registration/results.ts';
import { RegistrationThrottle, type RegistrationLimits } from './registration/throttle.ts';

export type { DeviceCredential } from './registration/device-auth.ts';
export type { DeviceRegistrationResult, RegistrationOperationStatus } from './registration/results.ts';
export type { RegistrationLimits } from './registration/throttle.ts';

/**
 * Use cases of the DPS device runtime (dps-behavior.md §2.2, §6): register, operation status, registration status
 * lookup. Transports (HTTP now, MQTT later) translate requests into these calls and replies back.
 *
 * A registration: resolve the id scope, authenticate and select the enrollment, stop at `disabled`, else start an
 * `assigning` operation and, in the background, choose a hub, write the device through the HubClient port, and
 * finish the operation and the registration record in one store transaction.
 */

/** An allocator may do I/O (the custom webhook, later). */
export type AsyncAllocator = (ctx: AllocationContext) => AllocationDecision | Promise<AllocationDecision>;

export interface RegistrationServiceDeps {
  store: ProvisioningStore;
  hubs: HubClientFactory;
  clock: Clock;
  ids: IdSource;
  logger: Logger;
  /** Replaces built-in allocators (e.g. `custom` → a webhook client). */
  allocators?: Partial<Record<AllocationPolicy, AsyncAllocator>>;
  /**
   * An `assigning` operation not updated for this long is treated as abandoned (its node died): the next register
   * takes it over and polls see it failed. Default 60 s.
   */
  staleOperationMs?: number;
  /** Retry-After for `assigning` answers, seconds (≥ 1). Default 1. */
  retryAfterSeconds?: number;
  limits?: RegistrationLimits;
  /**
   * How long the instance of an id scope and its symmetric-key groups are cached, ms (default 1000; 0: read the
   * store every time). Changes to linked hubs and to existing groups (keys, status) reach registrations within this
   * time; a new instance or a new group is seen at once (a refusal re-reads before answering 401). Individual
   * enrollments, records and operations are always read fresh (a blocklisting entry acts at once).
   */
  readCacheMs?: number;
}

/** What a transport sends: 200 with a final status, or 202 `assigning` with Retry-After. */
export interface RegistrationReply {
  httpStatus: 200 | 202;
  body: RegistrationOperationStatus;
  retryAfterSeconds?: number;
}

export interface PendingReply {
  reply: RegistrationReply;
  /** When this process runs the assignment: settles (never rejects) with the final reply. */
  completion?: Promise<RegistrationReply>;
}

type EnrollmentRef = RegistrationRecord['enrollment'];

/** What an operation keeps to carry on (and to re-check the poller's credential). */
interface OperationRequest {
  /** The enrollment whose key the device signs with. */
  auth: EnrollmentRef;
  payload?: JsonObject;
}

export class RegistrationService {
  private readonly d: RegistrationServiceDeps;
  private readonly log: Logger;
  private readonly throttle: RegistrationThrottle;
  /** Assignments running in this process, by `instance \0 operationId`. */
  private readonly running = new Map<string, Promise<RegistrationReply>>();
  private readonly staleMs: number;
  private readonly retryAfter: number;
  private readonly instances: ReadCache<ProvisioningInstance | undefined>;
  private readonly groups: ReadCache<EnrollmentGroup[]>;

  constructor(deps: RegistrationServiceDeps) {
    this.d = deps;
    this.log = deps.logger;
    this.throttle = new RegistrationThrottle(deps.limits ?? {}, deps.clock);
    this.staleMs = deps.staleOperationMs ?? 60_000;
    this.retryAfter = Math.max(1, Math.ceil(deps.retryAfterSeconds ?? 1));
    const ttl = deps.readCacheMs ?? 1000;
    // Unknown scopes are not cached: a new instance answers at once.
    this.instances = new ReadCache(ttl, deps.clock, { keep: (v) => v !== undefined });
    this.groups = new ReadCache(ttl, deps.clock);
  }

  // ------------------------------------------------------------------------------------------------ use cases

  /** `PUT {idScope}/registrations/{registrationId}/register`. */
  async register(idScope: string, registrationIdFromPath: string, body: unknown, credential: DeviceCredential): Promise<PendingReply> {
    const instance = await this.instance(idScope);
    validateRegistrationId(registrationIdFromPath);
    const req = parseRegisterBody(body, registrationIdFromPath);
    this.throttle.registration(instance.name);
    const registrationId = registrationIdFromPath;
    // Both reads at once (one round trip on PostgreSQL).
    const [record, individual] = await Promise.all([
      this.d.store.getRegistration(instance.name, registrationId),
      this.d.store.getIndividualEnrollment(instance.name, registrationId),
    ]);
    const match = await this.authenticate(instance, registrationId, credential, record, individual ?? null);
    const now = this.nowIso();

    const enrollment = enrollmentOf(match);
    if (match.kind === 'blocked' || enrollment.provisioningStatus === 'disabled') {
      return { reply: await this.finishDisabled(instance, registrationId, authRef(match), now) };
    }

    const op: RegistrationOperation = {
      operationId: this.newOperationId(),
      registrationId,
      status: 'assigning',
      version: 1,
      createdDateTimeUtc: now,
      lastUpdatedDateTimeUtc: now,
      request: requestJson({ auth: authRef(match), ...(req.payload === undefined ? {} : { payload: req.payload }) }),
    };
    for (let attempt = 0; attempt < 4; attempt++) {
      if ((await this.d.store.createOperation(instance.name, op)) === 'ok') {
        return { reply: assigningReply(op, this.retryAfter), completion: this.startAssignment(instance, match, registrationId, record, op) };
      }
      // Another registration of this device is in flight: answer with it (dps-behavior.md §2.3).
      const existing = await this.d.store.findInFlightOperation(instance.name, registrationId);
      if (existing === undefined) continue; // it finished meanwhile: try again
      const local = this.running.get(runKey(instance, existing.operationId));
      if (local) return { reply: assigningReply(existing, this.retryAfter), completion: local };
      if (this.isStale(existing)) {
        const claimed: RegistrationOperation = { ...existing, version: existing.version + 1, lastUpdatedDateTimeUtc: this.nowIso(), request: op.request };
        if ((await this.d.store.updateOperation(instance.name, claimed, existing.version)) === 'ok') {
          this.log.warn({ idScope, operationId: existing.operationId }, 'taking over an abandoned registration operation');
          return { reply: assigningReply(claimed, this.retryAfter), completion: this.startAssignment(instance, match, registrationId, record, claimed) };
        }
        continue;
      }
      return { reply: assigningReply(existing, this.retryAfter) };
    }
    throw new HomingError('ServiceUnavailable', 'The registration could not be started; retry.', { retryAfterSeconds: this.retryAfter });
  }

  /** `GET {idScope}/registrations/{registrationId}/operations/{operationId}`. */
  async operationStatus(idScope: string, registrationId: string, operationId: string, credential: DeviceCredential): Promise<PendingReply> {
    const instance = await this.instance(idScope);
    validateRegistrationId(registrationId);
    const op = await this.d.store.getOperation(instance.name, operationId);
    const auth = op === undefined ? undefined : readRequest(op.request)?.auth;
    if (op === undefined || auth === undefined || !sameRegistrationId(op.registrationId, registrationId)) {
      // Authenticate first so a stranger cannot probe operation ids.
      await this.authenticate(instance, registrationId, credential, undefined);
      throw new HomingError('RegistrationNotFound', `No registration operation ${operationId} for this device.`);
    }
    const ok = await authenticateForEnrollment(this.d.store, instance, registrationId, credential, this.nowSeconds(), auth);
    if (!ok) throw unauthorized();
    this.throttle.poll(instance.name, registrationKey(registrationId));
    if (op.status !== 'assigning') return { reply: finalReply(op) };
    // While assigning, a poll carries the registration state too (as DPS does); the register answer does not.
    const pending: RegistrationReply = { httpStatus: 202, body: operationStatusBody(op), retryAfterSeconds: this.retryAfter };
    const local = this.running.get(runKey(instance, op.operationId));
    if (local) return { reply: pending, completion: local };
    if (this.isStale(op)) return { reply: await this.failAbandoned(instance, op) };
    return { reply: pending };
  }

  /** `POST {idScope}/registrations/{registrationId}`: the current record; no operation, hub untouched. */
  async statusLookup(idScope: string, registrationId: string, body: unknown, credential: DeviceCredential): Promise<DeviceRegistrationResult> {
    const instance = await this.instance(idScope);
    validateRegistrationId(registrationId);
    if (body !== undefined && body !== null) parseRegisterBody(body, registrationId, false);
    this.throttle.registration(instance.name);
    const record = await this.d.store.getRegistration(instance.name, registrationId);
    await this.authenticate(instance, registrationId, credential, record);
    if (!record) throw new HomingError('RegistrationNotFound', 'This device has never registered.');
    return registrationResult(record);
  }

  /** Waits for the assignments running in this process. */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  /** Deletes finished operations older than `olderThanMs` in every instance. Returns how many. */
  async purgeFinishedOperations(olderThanMs: number): Promise<number> {
    const before = isoTime(this.d.clock.now() - olderThanMs);
    let n = 0;
    for (const inst of await this.d.store.listInstances()) n += await this.d.store.purgeFinishedOperations(inst.name, before);
    return n;
  }

  // ------------------------------------------------------------------------------------------------ steps

  private async instance(idScope: string): Promise<ProvisioningInstance> {
    // Unknown scopes get the same 401 as bad credentials (no hint).
    const valid = typeof idScope === 'string' && idScope.length > 0 && idScope.length <= 64;
    const inst = valid ? await this.instances.get(idScope, () => this.d.store.getInstanceByIdScope(idScope)) : undefined;
    if (!inst) throw unauthorized();
    return inst;
  }

  private authenticate(
    instance: ProvisioningInstance,
    registrationId: string,
    credential: DeviceCredential,
    record: RegistrationRecord | undefined,
    individual?: IndividualEnrollment | null,
  ): Promise<EnrollmentMatch> {
    return authenticateDevice(this.d.store, instance, registrationId, credential, this.nowSeconds(), {
      record,
      ...(individual === undefined ? {} : { individual }),
      symmetricKeyGroups: (fresh) => {
        const load = () => listSymmetricKeyGroups(this.d.store, instance.name);
        return fresh ? this.groups.refresh(instance.name, load) : this.groups.get(instance.name, load);
      },
      onAmbiguous: (groups) => this.log.error({ idScope: instance.idScope, registrationId, groups }, 'several enrollment groups accept one device credential (duplicated group keys)'),
    });
  }

  private async finishDisabled(instance: ProvisioningInstance, registrationId: string, auth: EnrollmentRef, now: string): Promise<RegistrationReply> {
    const result: DeviceRegistrationResult = {
      registrationId,
      createdDateTimeUtc: now,
      status: 'disabled',
      lastUpdatedDateTimeUtc: now,
      errorMessage: 'The enrollment of this device is disabled.',
    };
    const op: RegistrationOperation = {
      operationId: this.newOperationId(),
      registrationId,
      status: 'disabled',
      version: 1,
      createdDateTimeUtc: now,
      lastUpdatedDateTimeUtc: now,
      request: requestJson({ auth }),
      result: resultAsJson(result),
    };
    // Kept so a poll of this operation id answers; the registration record and the hub stay as they are.
    await this.d.store.createOperation(instance.name, op);
    return finalReply(op);
  }

  private startAssignment(
    instance: ProvisioningInstance,
    match: Exclude<EnrollmentMatch, { kind: 'blocked' }>,
    registrationId: string,
    record: RegistrationRecord | undefined,
    op: RegistrationOperation,
  ): Promise<RegistrationReply> {
    const key = runKey(instance, op.operationId);
    const p = this.assign(instance, match, registrationId, record, op).finally(() => this.running.delete(key));
    this.running.set(key, p);
    return p;
  }

  // TODO(runtime): ProvisioningStore requests (store engineer), from profiling a registration on SQLite:
  //  - the hot-path writes dominate a registration's CPU: updateOperation(+record) ~500 µs, createOperation
  //    ~260 µs wall each; precompiled statements as in hub-store (prepared.ts) would cut the Kysely build/compile
  //    share of that;
  //  - `createOperation(instance, op, registration?)` (insert a final operation and its record in one transaction)
  //    would let an assignment that finishes within the HTTP budget cost one write transaction instead of two.
  /** Runs one assignment to its end. Never rejects: failures end the operation `failed`. */
  private async assign(
    instance: ProvisioningInstance,
    match: Exclude<EnrollmentMatch, { kind: 'blocked' }>,
    registrationId: string,
    prior: RegistrationRecord | undefined,
    op: RegistrationOperation,
  ): Promise<RegistrationReply> {
    let record: RegistrationRecord;
    try {
      record = await this.assignToHub(instance, match, registrationId, prior, op);
    } catch (e) {
      this.log.error({ err: e, idScope: instance.idScope, operationId: op.operationId }, 'registration assignment failed unexpectedly');
      return this.finishWithoutRecord(instance, op, 'ServerError', 'The registration failed because of an internal error; register again.');
    }
    const now = this.nowIso();
    const done: RegistrationOperation = {
      ...op,
      status: record.status,
      version: op.version + 1,
      lastUpdatedDateTimeUtc: now,
      result: resultAsJson(registrationResult(record)),
    };
    try {
      const w = await this.d.store.updateOperation(instance.name, done, op.version, { record, expect: { kind: 'any' } });
      if (w === 'ok') return finalReply(done);
      // Someone else finished or took over the operation: answer with what is stored.
      const stored = await this.d.store.getOperation(instance.name, op.operationId);
      return stored && stored.status !== 'assigning' ? finalReply(stored) : assigningReply(stored ?? op, this.retryAfter);
    } catch (e) {
      this.log.error({ err: e, idScope: instance.idScope, operationId: op.operationId }, 'recording a registration failed');
      return this.finishWithoutRecord(instance, op, 'ServiceUnavailable', 'The registration could not be recorded; register again.');
    }
  }

  /** Chooses the hub, writes the device, and returns the record to store (assigned or failed). */
  private async assignToHub(
    instance: ProvisioningInstance,
    match: Exclude<EnrollmentMatch, { kind: 'blocked' }>,
    registrationId: string,
    prior: RegistrationRecord | undefined,
    op: RegistrationOperation,
  ): Promise<RegistrationRecord> {
    const now = this.nowIso();
    const enrollment = enrollmentOf(match);
    const ref = authRef(match);
    const deviceId = assignedDeviceId(
      match.kind === 'individual' ? { kind: 'individual', enrollment: match.enrollment } : { kind: 'group', enrollmentGroupId: match.group.enrollmentGroupId },
      registrationId,
      prior,
    );
    const base: RegistrationRecord = {
      registrationId,
      createdDateTimeUtc: prior?.createdDateTimeUtc ?? now,
      lastUpdatedDateTimeUtc: now,
      status: 'failed',
      etag: this.newEtag(),
      enrollment: ref,
      attestationType: 'symmetricKey',
      operationId: op.operationId,
    };
    const failed = (errorName: ErrorName, message: string): RegistrationRecord => ({ ...base, status: 'failed', errorCode: ERROR_CATALOGUE[errorName].code, errorMessage: message });

    // Re-registration of an assigned device: it stays on its hub (twin untouched, substatus kept). Moving a device
    // between hubs (the reprovision policies' migrate / reset) is not built yet, so the device stays even when
    // allocation now prefers another hub, which is the `updateHubAssignment: false` behaviour.
    let target: LinkedHub;
    let stays = false;
    const current = prior?.status === 'assigned' && prior.assignedHub !== undefined && prior.deviceId === deviceId ? prior.assignedHub : undefined;
    if (current !== undefined) {
      const linked = instance.linkedHubs.find((h) => h.name.toLowerCase() === current.toLowerCase());
      if (!linked) {
        return failed('NoEligibleHub', `The device is assigned to IoT hub ${current}, which is no longer linked; moving a device to another hub is not supported yet.`);
      }
      target = linked;
      stays = true;
      if (enrollment.reprovisionPolicy.updateHubAssignment) {
        const d = await this.allocate(registrationId, enrollment, instance);
        if (d.kind === 'assigned' && d.hub.name.toLowerCase() !== linked.name.toLowerCase()) {
          this.log.warn({ idScope: instance.idScope, registrationId, currentHub: linked.name, allocatedHub: d.hub.name }, 'reprovisioning to another hub is not supported yet: the device stays on its current hub');
        }
      }
    } else {
      const d = await this.allocate(registrationId, enrollment, instance);
      if (d.kind === 'failed') return failed(d.errorName, d.message);
      target = d.hub;
    }

    const credentials: HubCredentials =
      match.kind === 'individual'
        ? symmetricCredentials(match.enrollment)
        : { type: 'sas', primaryKey: match.derivedKeys.primaryKey, secondaryKey: match.derivedKeys.secondaryKey };
    let client;
    try {
      client = this.d.hubs.forHub(target);
    } catch (e) {
      return failed('HubWriteFailed', `No client for IoT hub ${target.name}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const w = await client.provisionDevice({
      deviceId,
      credentials,
      capabilities: { iotEdge: enrollment.capabilities.iotEdge },
      initialTwin: initialTwinOf(enrollment),
      likelyNew: prior === undefined,
    });
    if (!w.ok) {
      this.log.warn({ idScope: instance.idScope, registrationId, hub: target.name, kind: w.failure.kind, status: w.failure.status }, 'writing a device to its hub failed');
      return failed(hubErrorName(w.failure), w.failure.message);
    }
    const substatus = w.value.created
      ? 'initialAssignment'
      : stays
        ? (prior?.substatus ?? 'initialAssignment')
        : 'reprovisionedToInitialAssignment';
    return { ...base, status: 'assigned', assignedHub: target.name, deviceId, substatus };
  }

  private async allocate(registrationId: string, enrollment: EnrollmentCommon, instance: ProvisioningInstance): Promise<AllocationDecision> {
    const ctx = allocationContext(registrationId, enrollment, instance);
    const allocator = this.d.allocators?.[ctx.policy] ?? ALLOCATORS[ctx.policy];
    return allocator(ctx);
  }

  /** Ends an operation `failed` without touching the record (internal errors). */
  private async finishWithoutRecord(instance: ProvisioningInstance, op: RegistrationOperation, errorName: ErrorName, message: string): Promise<RegistrationReply> {
    const now = this.nowIso();
    const result: DeviceRegistrationResult = {
      registrationId: op.registrationId,
      createdDateTimeUtc: op.createdDateTimeUtc,
      status: 'failed',
      lastUpdatedDateTimeUtc: now,
      errorCode: ERROR_CATALOGUE[errorName].code,
      errorMessage: message,
    };
    const done: RegistrationOperation = { ...op, status: 'failed', version: op.version + 1, lastUpdatedDateTimeUtc: now, result: resultAsJson(result) };
    try {
      await this.d.store.updateOperation(instance.name, done, op.version);
    } catch (e) {
      this.log.error({ err: e, operationId: op.operationId }, 'could not mark a registration operation failed');
    }
    return finalReply(done);
  }

  /** A poll of an operation whose node died: it ends failed so the device registers again. */
  private async failAbandoned(instance: ProvisioningInstance, op: RegistrationOperation): Promise<RegistrationReply> {
    const reply = await this.finishWithoutRecord(instance, op, 'ServiceUnavailable', 'The registration was interrupted; register again.');
    const stored = await this.d.store.getOperation(instance.name, op.operationId);
    if (stored && stored.status !== 'assigning') return finalReply(stored);
    return reply;
  }

  private isStale(op: RegistrationOperation): boolean {
    return Date.parse(op.lastUpdatedDateTimeUtc) + this.staleMs < this.d.clock.now();
  }

  private nowIso(): string {
    return isoTime(this.d.clock.now());
  }

  private nowSeconds(): number {
    return Math.floor(this.d.clock.now() / 1000);
  }

  /** Azure-like: `4.<16 hex>.<uuid>`. */
  private newOperationId(): string {
    return `4.${this.d.ids.bytes(8).toString('hex')}.${this.d.ids.uuid()}`;
  }

  /** Azure-like: base64 of a quoted uuid. */
  private newEtag(): string {
    return Buffer.from(`"${this.d.ids.uuid()}"`).toString('base64');
  }
}

// -------------------------------------------------------------------------------------------------- helpers

function runKey(instance: ProvisioningInstance, operationId: string): string {
  return `${instance.name}\u0000${operationId}`;
}

function enrollmentOf(m: EnrollmentMatch): EnrollmentCommon {
  return m.kind === 'group' ? m.group : m.enrollment;
}

function authRef(m: EnrollmentMatch): EnrollmentRef {
  if (m.kind === 'individual') return { kind: 'individual', registrationId: m.enrollment.registrationId };
  if (m.kind === 'group') return { kind: 'group', enrollmentGroupId: m.group.enrollmentGroupId };
  return { kind: 'group', enrollmentGroupId: m.acceptedBy.enrollmentGroupId };
}

function symmetricCredentials(e: EnrollmentCommon): HubCredentials {
  const sk = e.attestation.symmetricKey;
  if (!sk) throw new Error('a symmetric-key match without keys');
  return { type: 'sas', primaryKey: sk.primaryKey, secondaryKey: sk.secondaryKey };
}

function initialTwinOf(e: EnrollmentCommon): InitialTwinContent | undefined {
  const t = e.initialTwin;
  if (!t) return undefined;
  const out: InitialTwinContent = {};
  if (t.tags && Object.keys(t.tags).length > 0) out.tags = t.tags;
  const desired = t.properties?.desired;
  if (desired && Object.keys(desired).length > 0) out.desired = desired;
  return out.tags === undefined && out.desired === undefined ? undefined : out;
}

/** Hub outages are 503001 (retry later); refusals (stale credential, invalid device) are 400209. */
function hubErrorName(f: HubFailure): ErrorName {
  return f.kind === 'unavailable' || f.kind === 'timeout' ? 'ServiceUnavailable' : 'HubWriteFailed';
}

function assigningReply(op: RegistrationOperation, retryAfterSeconds: number): RegistrationReply {
  return { httpStatus: 202, body: { operationId: op.operationId, status: 'assigning' }, retryAfterSeconds };
}

function finalReply(op: RegistrationOperation): RegistrationReply {
  return { httpStatus: 200, body: operationStatusBody(op) };
}

function requestJson(r: OperationRequest): JsonObject {
  const out: JsonObject = { auth: { ...r.auth } };
  if (r.payload !== undefined) out.payload = r.payload;
  return out;
}

function readRequest(v: JsonObject | undefined): OperationRequest | undefined {
  const auth = v?.auth;
  if (!isPlainObject(auth)) return undefined;
  if (auth.kind === 'individual' && typeof auth.registrationId === 'string') return { auth: { kind: 'individual', registrationId: auth.registrationId } };
  if (auth.kind === 'group' && typeof auth.enrollmentGroupId === 'string') return { auth: { kind: 'group', enrollmentGroupId: auth.enrollmentGroupId } };
  return undefined;
}

/**
 * The DeviceRegistration body: a JSON object whose registrationId equals the path one (case-insensitive), with an
 * optional `payload` object. `tpm` is for the TPM flow (not supported yet: refused by authentication).
 */
function parseRegisterBody(body: unknown, registrationId: string, required = true): { payload?: JsonObject } {
  if (!isPlainObject(body as JsonValue)) throw new HomingError('InvalidJson', 'The body must be a JSON object.');
  const b = body as JsonObject;
  const id = b.registrationId;
  if (id === undefined && !required) return {};
  if (typeof id !== 'string' || !sameRegistrationId(id, registrationId)) {
    throw new HomingError('RegistrationIdMismatch', 'The registrationId in the body must equal the registration id in the path.');
  }
  const payload = b.payload;
  if (payload === undefined || payload === null) return {};
  if (!isPlainObject(payload)) throw new HomingError('ArgumentInvalid', 'payload must be a JSON object.');
  return { payload };
}

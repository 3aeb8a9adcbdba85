import { ALLOCATORS, allocationContext, selectPolicy, type AllocationDecision, type AllocationContext, type AllocationDevice } from '../core/allocation.ts';
import { isoTime, type Clock, type IdSource } from '../core/clock.ts';
import { ERROR_CATALOGUE, HomingError, type ErrorName } from '../core/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../core/json.ts';
import { assignedDeviceId, registrationKey, sameRegistrationId, validateRegistrationId } from '../core/registration-id.ts';
import type { Logger } from '../observability/logger.ts';
import type { ProvisioningStore, RecordExpectation } from '../store/provisioning-ports.ts';
import type { HubClientFactory, HubCredentials, HubFailure, InitialTwinContent } from './hub-client.ts';
import type {
  AllocationPolicy,
  EnrollmentCommon,
  EnrollmentGroup,
  HubMove,
  HubMoveTwin,
  IndividualEnrollment,
  InitialTwin,
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
import { loadX509Trust, x509HubCredentials, x509ResultJson, type X509MatchOptions, type X509Trust } from './registration/x509-auth.ts';
import type { CaCertificateReadStore } from '../store/ca-ports.ts';
import { operationStatusBody, registrationResult, resultAsJson, type DeviceRegistrationResult, type RegistrationOperationStatus } from './registration/results.ts';
import { RegistrationThrottle, type RegistrationLimits } from './registration/throttle.ts';
import type { QuotaService } from './quotas/quota-service.ts';
import { HubMover } from './reprovision/hub-mover.ts';

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
  /** Quota settings for instances without their own, when `quotas` is not given (docs/api/quotas.md). */
  limits?: RegistrationLimits;
  /** Rate quotas and the registration-record limit, shared with the service API (default: in memory, from `limits`). */
  quotas?: QuotaService;
  /**
   * How long the instance of an id scope and its symmetric-key groups are cached, ms (default 1000; 0: read the
   * store every time). Changes to linked hubs and to existing groups (keys, status) reach registrations within this
   * time; a new instance or a new group is seen at once (a refusal re-reads before answering 401). Individual
   * enrollments, records and operations are always read fresh (a blocklisting entry acts at once).
   */
  readCacheMs?: number;
  /**
   * The CA certificates of the instances, for X.509 attestation: verified ones are the trust anchors, `caReferences`
   * name them. Without it, X.509 devices match individual enrollments only (no group has a verified certificate).
   */
  caCertificates?: CaCertificateReadStore;
  /** Durable hub moves (reprovisioning with migrate / reset; docs/adr/015-reprovisioning-and-hub-moves.md). */
  moves?: {
    /** This node's stable id (a restart resumes its own moves at once). Default: random per process. */
    nodeId?: string;
    /** Lease of a running move, ms (default 30 s): another node takes an interrupted move over after it. */
    leaseMs?: number;
    /** How long the new hub is retried before a move is undone, ms (default 60 s). */
    giveUpMs?: number;
    /** Called after each recorded step of a move (crash tests). */
    afterStep?: (move: HubMove) => void | Promise<void>;
  };
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

export interface RegisterOptions {
  /**
   * The transport's response budget (ms): register waits up to this long for the assignment and `reply` is what to
   * send (200 with the final status when it ended in time, else 202 `assigning` with `completion`). With a budget, a
   * new assignment runs before its operation is stored: when it ends in time, the finished operation and the record
   * are one write transaction; the `assigning` operation is stored only when a 202 is about to name it. Without a
   * budget (or 0), the operation is stored first and `reply` is 202 `assigning` (the caller may wait on
   * `completion`).
   */
  budgetMs?: number;
  /** Source IP address of the device's connection (geoLatency allocation, the custom webhook). */
  sourceAddress?: string;
}

type EnrollmentRef = RegistrationRecord['enrollment'];

/** What an operation keeps to carry on (and to re-check the poller's credential). */
interface OperationRequest {
  /** The enrollment whose key the device signs with. */
  auth: EnrollmentRef;
  /** The node that runs it (a restarted node ends its own interrupted operations). */
  node?: string;
  payload?: JsonObject;
}

export class RegistrationService {
  private readonly d: RegistrationServiceDeps;
  private readonly log: Logger;
  private readonly throttle: RegistrationThrottle;
  /** Assignments running in this process, by `instance \0 operationId`. */
  private readonly running = new Map<string, Promise<RegistrationReply>>();
  /** The same assignments by `instance \0 registration key`: a second register of the device joins the first. */
  private readonly byRegistration = new Map<string, Assignment>();
  private readonly staleMs: number;
  private readonly retryAfter: number;
  private readonly instances: ReadCache<ProvisioningInstance | undefined>;
  private readonly groups: ReadCache<EnrollmentGroup[]>;
  /** X.509 trust material by instance name (x509-auth.ts), cached like the groups; dropped by `invalidateTrust`. */
  private readonly x509Trust: ReadCache<X509Trust>;
  /** Runs and resumes durable hub moves. */
  readonly mover: HubMover;

  constructor(deps: RegistrationServiceDeps) {
    this.d = deps;
    this.log = deps.logger;
    this.throttle = new RegistrationThrottle({ clock: deps.clock, store: deps.store, ...(deps.quotas ? { quotas: deps.quotas } : {}), ...(deps.limits ? { limits: deps.limits } : {}) });
    this.staleMs = deps.staleOperationMs ?? 60_000;
    this.retryAfter = Math.max(1, Math.ceil(deps.retryAfterSeconds ?? 1));
    const ttl = deps.readCacheMs ?? 1000;
    // Unknown scopes are not cached: a new instance answers at once.
    this.instances = new ReadCache(ttl, deps.clock, { keep: (v) => v !== undefined });
    this.groups = new ReadCache(ttl, deps.clock);
    this.x509Trust = new ReadCache(ttl, deps.clock);
    const mv = deps.moves ?? {};
    this.mover = new HubMover({
      store: deps.store,
      hubs: deps.hubs,
      clock: deps.clock,
      ids: deps.ids,
      logger: deps.logger,
      nodeId: mv.nodeId ?? deps.ids.uuid(),
      ...(mv.leaseMs === undefined ? {} : { leaseMs: mv.leaseMs }),
      ...(mv.giveUpMs === undefined ? {} : { giveUpMs: mv.giveUpMs }),
      ...(mv.afterStep === undefined ? {} : { afterStep: mv.afterStep }),
    });
  }

  /**
   * After a restart (call once at start): ends this node's interrupted operations that have no hub move (`failed`,
   * so their devices register again at once instead of waiting for them to go stale), resumes its interrupted hub
   * moves, and keeps scanning for moves whose node died.
   */
  startMoveRecovery(intervalMs?: number): void {
    void this.recoverInterrupted(false).catch((err: unknown) => this.log.warn({ err }, 'recovering interrupted registrations failed'));
    this.mover.startRecovery(() => this.d.store.listInstances(), intervalMs);
  }

  /**
   * Ends the `assigning` operations this node started before a restart that are not hub moves, and (unless
   * `movesToo` is false) resumes this node's hub moves and those whose lease ended.
   */
  async recoverInterrupted(movesToo = true): Promise<{ operations: number; moves: number }> {
    const instances = await this.d.store.listInstances();
    let operations = 0;
    for (const inst of instances) {
      const list = await this.d.store.listStaleOperations(inst.name, isoTime(this.d.clock.now() + 1), 1000);
      for (const op of list) {
        if (readRequest(op.request)?.node !== this.mover.nodeId || this.running.has(runKey(inst, op.operationId))) continue;
        const move = await this.d.store.getHubMove(inst.name, op.registrationId);
        if (move && move.operationId === op.operationId) continue;
        await this.finishWithoutRecord(inst, { op, state: 'stored', completion: Promise.resolve(assigningReply(op, this.retryAfter)) }, 'ServiceUnavailable', 'The registration was interrupted by a restart of the service; register again.');
        operations++;
      }
    }
    const moves = movesToo ? await this.mover.resumeAll(instances) : 0;
    return { operations, moves };
  }

  /** Enrollment groups or linked hubs changed: drop the cached instances and groups (the next register reads them). */
  invalidateEnrollments(): void {
    this.instances.clear();
    this.groups.clear();
    this.x509Trust.clear();
  }

  /** A CA certificate or an X.509 group of `instance` changed: drop the cached X.509 trust material. */
  invalidateTrust(_instance?: string): void {
    this.x509Trust.clear();
  }

  // ------------------------------------------------------------------------------------------------ use cases

  /** `PUT {idScope}/registrations/{registrationId}/register`. */
  async register(idScope: string, registrationIdFromPath: string, body: unknown, credential: DeviceCredential, opts: RegisterOptions = {}): Promise<PendingReply> {
    const instance = await this.instance(idScope);
    validateRegistrationId(registrationIdFromPath);
    const req = parseRegisterBody(body, registrationIdFromPath);
    await this.throttle.registration(instance);
    const registrationId = registrationIdFromPath;
    // The record, the individual enrollment and the in-flight operation in one read (one round trip on PostgreSQL).
    const ctx = await this.d.store.getRegistrationContext(instance.name, registrationId);
    const record = ctx.record;
    const match = await this.authenticate(instance, registrationId, credential, record, ctx.individualEnrollment ?? null);
    const now = this.nowIso();
    const budgetMs = Math.max(0, opts.budgetMs ?? 0);
    const extras: AssignmentExtras = { ...(req.payload === undefined ? {} : { payload: req.payload }), ...(opts.sourceAddress === undefined ? {} : { sourceAddress: opts.sourceAddress }) };

    const enrollment = enrollmentOf(match);
    if (record?.status === 'assigning' && ctx.inFlightOperation === undefined) {
      // A record left `assigning` by a hub move whose operation is gone: finish the move before anything else.
      const move = await this.d.store.getHubMove(instance.name, registrationId);
      if (move) {
        void this.claimMove(instance, move);
        return { reply: { httpStatus: 202, body: { operationId: move.operationId, status: 'assigning' }, retryAfterSeconds: this.retryAfter } };
      }
    }
    if (match.kind === 'blocked' || enrollment.provisioningStatus === 'disabled') {
      return { reply: await this.finishDisabled(instance, registrationId, authRef(match), now) };
    }

    // A new device: within the instance's registration-record limit (existing devices re-register freely; a request
    // that joins a running registration of the device creates nothing).
    const runningKey = registrationRunKey(instance, registrationId);
    if (record === undefined && !this.byRegistration.has(runningKey)) await this.throttle.newRecord(instance);
    // A registration of this device running in this process (stored or not yet): answer with it (§2.3). Checked
    // after the last await before starting one, so two requests of one device cannot both start.
    const local = this.byRegistration.get(runningKey);
    if (local) return this.settle(instance, local, budgetMs);

    const op: RegistrationOperation = {
      operationId: this.newOperationId(),
      registrationId,
      status: 'assigning',
      version: 1,
      createdDateTimeUtc: now,
      lastUpdatedDateTimeUtc: now,
      request: requestJson({ auth: authRef(match), node: this.mover.nodeId, ...(req.payload === undefined ? {} : { payload: req.payload }) }),
    };
    if (budgetMs > 0 && ctx.inFlightOperation === undefined) {
      // Run first, store once: the operation is written when the assignment ends (with the record) or when a 202
      // has to name it, whichever comes first.
      return this.settle(instance, this.startAssignment(instance, match, registrationId, record, op, false, extras), budgetMs);
    }
    for (let attempt = 0; attempt < 4; attempt++) {
      if ((await this.d.store.createOperation(instance.name, op)) === 'ok') {
        return this.settle(instance, this.startAssignment(instance, match, registrationId, record, op, true, extras), budgetMs);
      }
      // Another registration of this device is in flight: answer with it (dps-behavior.md §2.3).
      const existing = await this.d.store.findInFlightOperation(instance.name, registrationId);
      if (existing === undefined) continue; // it finished meanwhile: try again
      const running = this.running.get(runKey(instance, existing.operationId));
      if (running) {
        const r = await withinBudget({ reply: assigningReply(existing, this.retryAfter), completion: running }, budgetMs);
        return r.httpStatus === 200 ? { reply: r } : { reply: r, completion: running };
      }
      if (this.isStale(existing)) {
        // A hub move of this device outlived its node: resume the move (never start a second assignment over it).
        if (await this.resumeMoveOf(instance, existing)) return { reply: assigningReply(existing, this.retryAfter) };
        const claimed: RegistrationOperation = { ...existing, version: existing.version + 1, lastUpdatedDateTimeUtc: this.nowIso(), request: op.request };
        if ((await this.d.store.updateOperation(instance.name, claimed, existing.version)) === 'ok') {
          this.log.warn({ idScope, operationId: existing.operationId }, 'taking over an abandoned registration operation');
          return this.settle(instance, this.startAssignment(instance, match, registrationId, record, claimed, true, extras), budgetMs);
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
    const ok = await authenticateForEnrollment(this.d.store, instance, registrationId, credential, this.nowSeconds(), auth, this.x509Options(instance));
    if (!ok) throw unauthorized();
    const pollWait = await this.throttle.poll(instance, registrationKey(registrationId));
    if (op.status !== 'assigning') return { reply: finalReply(op) };
    // While assigning, a poll carries the registration state too (as DPS does); the register answer does not.
    const pending: RegistrationReply = { httpStatus: 202, body: operationStatusBody(op), retryAfterSeconds: Math.max(this.retryAfter, pollWait) };
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
    await this.throttle.lookup(instance);
    const record = await this.d.store.getRegistration(instance.name, registrationId);
    await this.authenticate(instance, registrationId, credential, record);
    if (!record) throw new HomingError('RegistrationNotFound', 'This device has never registered.');
    return registrationResult(record);
  }

  /** Waits for the assignments running in this process. */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  /** Stops resuming moves and waits for the assignments and moves running in this process. */
  async stop(): Promise<void> {
    await this.drain();
    await this.mover.stop();
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
      x509: this.x509Options(instance),
    });
  }

  /** X.509 matching options of an instance: cached trust material; refusals logged without certificates. */
  private x509Options(instance: ProvisioningInstance): X509MatchOptions {
    return {
      trust: (fresh) => {
        const load = async () => {
          const t = await loadX509Trust(this.d.store, this.d.caCertificates, instance.name);
          if (t.problems.length > 0) this.log.warn({ idScope: instance.idScope, problems: t.problems }, 'X.509 trust material has problems');
          return t;
        };
        return fresh ? this.x509Trust.refresh(instance.name, load) : this.x509Trust.get(instance.name, load);
      },
      onRefused: ({ registrationId, leafSha1, reason }) => this.log.warn({ idScope: instance.idScope, registrationId, leafSha1, reason }, 'X.509 device refused'),
    };
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
    stored: boolean,
    extras: AssignmentExtras,
  ): Assignment {
    const key = runKey(instance, op.operationId);
    const byReg = registrationRunKey(instance, registrationId);
    const a: Assignment = { op, state: stored ? 'stored' : 'unstored', completion: undefined as unknown as Promise<RegistrationReply> };
    a.completion = this.assign(instance, match, registrationId, record, a, extras).finally(() => {
      this.running.delete(key);
      if (this.byRegistration.get(byReg) === a) this.byRegistration.delete(byReg);
    });
    this.running.set(key, a.completion);
    this.byRegistration.set(byReg, a);
    return a;
  }

  /**
   * What to answer now for a running assignment: its final reply when it ends within `budgetMs`, else 202 naming its
   * operation, stored first (a poll may reach another node).
   */
  private async settle(instance: ProvisioningInstance, a: Assignment, budgetMs: number): Promise<PendingReply> {
    const done = await withinBudget({ reply: assigningReply(a.op, this.retryAfter), completion: a.completion }, budgetMs);
    if (done.httpStatus === 200) return { reply: done };
    const stored = await this.storeAssigning(instance, a);
    if (stored === 'finishing') return { reply: await a.completion };
    if (stored !== 'stored') return { reply: assigningReply(stored, this.retryAfter) };
    return { reply: assigningReply(a.op, this.retryAfter), completion: a.completion };
  }

  /**
   * Stores the `assigning` operation of an assignment that started without it. 'finishing': the assignment is
   * writing its end (the reply follows from its completion); an operation: another node's assignment of this
   * device, stored first (ours then ends without writing).
   */
  private storeAssigning(instance: ProvisioningInstance, a: Assignment): Promise<'stored' | 'finishing' | RegistrationOperation> {
    if (a.state === 'stored') return Promise.resolve('stored');
    if (a.state === 'finishing') return Promise.resolve('finishing');
    if (a.state === 'lost') return Promise.resolve(a.lostTo ?? 'finishing');
    a.storing ??= (async () => {
      a.state = 'storing';
      try {
        if ((await this.d.store.createOperation(instance.name, a.op)) === 'ok') {
          a.state = 'stored';
          return 'stored';
        }
        const other = await this.d.store.findInFlightOperation(instance.name, a.op.registrationId);
        a.state = 'lost';
        if (other) a.lostTo = other;
        return other ?? 'finishing';
      } catch (e) {
        // Nothing stored: the assignment ends as an unstored one (its single end write), and this reply fails.
        a.state = 'unstored';
        a.storing = undefined;
        throw e;
      }
    })();
    return a.storing;
  }

  /**
   * Writes the end of an assignment: one transaction with its record when present. An operation not stored yet is
   * inserted finished, with the record under compare-and-set on the record this registration read (another node
   * may have registered the device meanwhile); a stored one is updated under compare-and-set on its version.
   */
  private async writeEnd(instance: ProvisioningInstance, a: Assignment, done: RegistrationOperation, prior: RegistrationRecord | undefined, record?: RegistrationRecord): Promise<RegistrationReply> {
    if (a.state === 'storing') await a.storing?.catch(() => undefined);
    if (a.state === 'unstored') {
      a.state = 'finishing';
      if (record === undefined) {
        await this.d.store.createOperation(instance.name, done);
        return finalReply(done);
      }
      let expect: RecordExpectation = prior === undefined ? { kind: 'absent' } : { kind: 'etag', etag: prior.etag };
      for (let attempt = 0; attempt < 3; attempt++) {
        const w = await this.d.store.createOperation(instance.name, done, { record, expect });
        if (w === 'ok') return finalReply(done);
        // Someone else registered this device meanwhile: answer with theirs (the hub write above was idempotent).
        const ctx = await this.d.store.getRegistrationContext(instance.name, a.op.registrationId);
        if (ctx.inFlightOperation) return assigningReply(ctx.inFlightOperation, this.retryAfter);
        const theirs = ctx.record !== undefined && ctx.record.operationId !== undefined && ctx.record.operationId !== a.op.operationId ? await this.d.store.getOperation(instance.name, ctx.record.operationId) : undefined;
        if (theirs && theirs.status !== 'assigning' && theirs.createdDateTimeUtc >= a.op.createdDateTimeUtc) return finalReply(theirs);
        // The record changed otherwise (deleted or replaced by an operator): write ours over it.
        expect = { kind: 'any' };
      }
      throw new Error('the registration record kept changing');
    }
    if (a.state === 'lost') {
      // Another node stored its operation of this device first: ours ends unwritten; answer with what is stored.
      const other = a.lostTo === undefined ? undefined : await this.d.store.getOperation(instance.name, a.lostTo.operationId);
      if (other && other.status !== 'assigning') return finalReply(other);
      return assigningReply(other ?? a.op, this.retryAfter);
    }
    const w = await this.d.store.updateOperation(instance.name, done, a.op.version, record === undefined ? undefined : { record, expect: { kind: 'any' } });
    if (w === 'ok') return finalReply(done);
    // Someone else finished or took over the operation: answer with what is stored.
    const stored = await this.d.store.getOperation(instance.name, a.op.operationId);
    return stored && stored.status !== 'assigning' ? finalReply(stored) : assigningReply(stored ?? a.op, this.retryAfter);
  }

  /** Runs one assignment to its end. Never rejects: failures end the operation `failed`. */
  private async assign(
    instance: ProvisioningInstance,
    match: Exclude<EnrollmentMatch, { kind: 'blocked' }>,
    registrationId: string,
    prior: RegistrationRecord | undefined,
    a: Assignment,
    extras: AssignmentExtras,
  ): Promise<RegistrationReply> {
    const op = a.op;
    let record: RegistrationRecord;
    try {
      const planned = await this.assignToHub(instance, match, registrationId, prior, op, extras);
      if ('move' in planned) return await this.startMove(instance, a, planned.prior, planned.move);
      record = planned;
    } catch (e) {
      this.log.error({ err: e, idScope: instance.idScope, operationId: op.operationId }, 'registration assignment failed unexpectedly');
      return this.finishWithoutRecord(instance, a, 'ServerError', 'The registration failed because of an internal error; register again.');
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
      return await this.writeEnd(instance, a, done, prior, record);
    } catch (e) {
      this.log.error({ err: e, idScope: instance.idScope, operationId: op.operationId }, 'recording a registration failed');
      return this.finishWithoutRecord(instance, a, 'ServiceUnavailable', 'The registration could not be recorded; register again.');
    }
  }

  /**
   * Chooses the hub and either writes the device and returns the record to store (assigned or failed), or, when a
   * re-registration must move the device to another hub (reprovision policy migrate / reset), returns the move to run.
   */
  private async assignToHub(
    instance: ProvisioningInstance,
    match: Exclude<EnrollmentMatch, { kind: 'blocked' }>,
    registrationId: string,
    prior: RegistrationRecord | undefined,
    op: RegistrationOperation,
    extras: AssignmentExtras,
  ): Promise<RegistrationRecord | { move: HubMove; prior: RegistrationRecord }> {
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
      attestationType: match.x509 ? 'x509' : 'symmetricKey',
      ...(match.x509 ? { x509: x509ResultJson(match.x509) } : {}),
      operationId: op.operationId,
    };
    const failed = (errorName: ErrorName, message: string): RegistrationRecord => ({ ...base, status: 'failed', errorCode: ERROR_CATALOGUE[errorName].code, errorMessage: message });

    const current = prior?.status === 'assigned' && prior.assignedHub !== undefined && prior.deviceId === deviceId ? prior.assignedHub : undefined;
    const device: AllocationDevice = {
      ...(extras.sourceAddress === undefined ? {} : { sourceAddress: extras.sourceAddress }),
      ...(extras.payload === undefined ? {} : { payload: extras.payload }),
      ...(current === undefined ? {} : { currentHub: current, currentDeviceId: deviceId }),
      attestation: match.x509 ? { type: 'x509', x509: x509ResultJson(match.x509) } : { type: 'symmetricKey' },
      enrollment: match.kind === 'individual' ? { kind: 'individual', value: match.enrollment } : { kind: 'group', value: match.group },
    };
    const policy = enrollment.reprovisionPolicy;
    const custom = selectPolicy(enrollment, instance) === 'custom';

    // The hub: the current one for a re-registration the policy keeps in place, else what allocation chooses
    // (§3, §4). A custom webhook is called on every registration, with only the current hub under "never".
    let target: LinkedHub;
    let decision: Extract<AllocationDecision, { kind: 'assigned' }> | undefined;
    let stays = false;
    if (current !== undefined) {
      const linked = instance.linkedHubs.find((h) => h.name.toLowerCase() === current.toLowerCase());
      if (!linked) {
        return failed('NoEligibleHub', `The device is assigned to IoT hub ${current}, which is no longer linked to this service.`);
      }
      target = linked;
      stays = true;
      if (policy.updateHubAssignment || custom) {
        const d = await this.allocate(registrationId, enrollment, instance, device, policy.updateHubAssignment ? undefined : [linked]);
        if (d.kind === 'failed') return failed(d.errorName, d.message);
        decision = d;
        if (policy.updateHubAssignment && d.hub.name.toLowerCase() !== linked.name.toLowerCase() && prior !== undefined) {
          return { move: this.planMove(instance, match, registrationId, deviceId, prior, linked, d, base), prior };
        }
      }
    } else {
      const d = await this.allocate(registrationId, enrollment, instance, device);
      if (d.kind === 'failed') return failed(d.errorName, d.message);
      decision = d;
      target = d.hub;
    }

    const credentials = hubCredentialsOf(match);
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
      // Applied only when the device is created on the hub (a first assignment): the webhook's wins (§2.4).
      initialTwin: initialTwinContent(decision?.initialTwin ?? enrollment.initialTwin),
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
    return { ...base, status: 'assigned', assignedHub: target.name, deviceId, substatus, ...(decision?.payload === undefined ? {} : { payload: decision.payload }) };
  }

  /** The durable move of a re-registering device to another hub (model.ts HubMove). */
  private planMove(
    instance: ProvisioningInstance,
    match: Exclude<EnrollmentMatch, { kind: 'blocked' }>,
    registrationId: string,
    deviceId: string,
    prior: RegistrationRecord,
    from: LinkedHub,
    d: Extract<AllocationDecision, { kind: 'assigned' }>,
    base: RegistrationRecord,
  ): HubMove {
    const enrollment = enrollmentOf(match);
    const migrate = enrollment.reprovisionPolicy.migrateDeviceData;
    // Reset: the webhook's initialTwin wins over the enrollment's (§3.5); reported starts empty.
    const initial = moveTwinOf(d.initialTwin ?? enrollment.initialTwin);
    const now = this.nowIso();
    const record: RegistrationRecord = {
      ...base,
      status: 'assigned',
      assignedHub: d.hub.name,
      deviceId,
      substatus: migrate ? 'deviceDataMigrated' : 'deviceDataReset',
      ...(d.payload === undefined ? {} : { payload: d.payload }),
    };
    this.log.info({ idScope: instance.idScope, registrationId, from: from.name, to: d.hub.name, kind: migrate ? 'migrate' : 'reset' }, 'moving a device to another hub');
    return {
      registrationId,
      operationId: base.operationId ?? '',
      kind: migrate ? 'migrate' : 'reset',
      deviceId,
      fromHub: from.name,
      toHub: d.hub.name,
      step: migrate ? 'planned' : 'copied',
      version: 1,
      ...this.mover.lease(),
      createdDateTimeUtc: now,
      lastUpdatedDateTimeUtc: now,
      credentials: hubCredentialsOf(match),
      capabilities: { iotEdge: enrollment.capabilities.iotEdge },
      ...(migrate ? {} : { twin: initial }),
      initialTwin: initial,
      record,
      prior,
      attempts: 0,
    };
  }

  /**
   * Runs a planned move: the operation is stored `assigning` (a poll may reach any node), the move and the record
   * (status `assigning`) are written in one transaction, then the mover runs the steps.
   */
  private async startMove(instance: ProvisioningInstance, a: Assignment, prior: RegistrationRecord, move: HubMove): Promise<RegistrationReply> {
    const stored = await this.storeAssigning(instance, a);
    if (stored === 'finishing') throw new Error('a move planned for an assignment that is finishing');
    if (stored !== 'stored') return stored.status === 'assigning' ? assigningReply(stored, this.retryAfter) : finalReply(stored);
    const assigningRecord: RegistrationRecord = { ...prior, status: 'assigning', operationId: a.op.operationId, lastUpdatedDateTimeUtc: this.nowIso(), etag: this.newEtag() };
    const created = await this.d.store.createHubMove(instance.name, move, { record: assigningRecord, expect: { kind: 'etag', etag: prior.etag } });
    if (created !== 'ok') {
      return this.finishWithoutRecord(instance, a, 'ServiceUnavailable', 'The device registration changed while it was being reprovisioned; register again.');
    }
    try {
      const end = await this.mover.run(instance, move);
      if (end.kind === 'finished' && end.operation) return finalReply(end.operation);
    } catch (e) {
      // The move is stored: the recovery scan carries it on. The device keeps polling.
      this.log.error({ err: e, idScope: instance.idScope, operationId: a.op.operationId }, 'a hub move was interrupted; it is resumed later');
    }
    const now = await this.d.store.getOperation(instance.name, a.op.operationId).catch(() => undefined);
    return now && now.status !== 'assigning' ? finalReply(now) : assigningReply(now ?? a.op, this.retryAfter);
  }

  /** When `op` belongs to a stored hub move: resumes it in the background (if its lease allows) and returns true. */
  private async resumeMoveOf(instance: ProvisioningInstance, op: RegistrationOperation): Promise<boolean> {
    const move = await this.d.store.getHubMove(instance.name, op.registrationId);
    if (!move || move.operationId !== op.operationId) return false;
    void this.claimMove(instance, move);
    return true;
  }

  private async claimMove(instance: ProvisioningInstance, move: HubMove): Promise<void> {
    try {
      const claimed = await this.mover.claim(instance, move);
      await claimed?.done;
    } catch (err) {
      this.log.warn({ err, idScope: instance.idScope }, 'resuming a hub move failed; it is retried later');
    }
  }

  private async allocate(
    registrationId: string,
    enrollment: EnrollmentCommon,
    instance: ProvisioningInstance,
    device: AllocationDevice,
    onlyHubs?: LinkedHub[],
  ): Promise<AllocationDecision> {
    const base = allocationContext(registrationId, enrollment, instance);
    const ctx: AllocationContext = onlyHubs === undefined ? { ...base, device } : { ...base, hubs: onlyHubs, unlinked: [], device };
    const allocator = this.d.allocators?.[ctx.policy] ?? ALLOCATORS[ctx.policy];
    return allocator(ctx);
  }

  /** Ends an operation `failed` without touching the record (internal errors). */
  private async finishWithoutRecord(instance: ProvisioningInstance, a: Assignment, errorName: ErrorName, message: string): Promise<RegistrationReply> {
    const op = a.op;
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
    // A failed write of the end of an unstored operation was rolled back: it is still unstored.
    if (a.state === 'finishing') a.state = 'unstored';
    try {
      return await this.writeEnd(instance, a, done, undefined);
    } catch (e) {
      this.log.error({ err: e, operationId: op.operationId }, 'could not mark a registration operation failed');
      return finalReply(done);
    }
  }

  /** A poll of an operation whose node died: it ends failed so the device registers again. */
  private async failAbandoned(instance: ProvisioningInstance, op: RegistrationOperation): Promise<RegistrationReply> {
    // A hub move is never failed from outside: it is resumed (its steps go on where they stopped).
    if (await this.resumeMoveOf(instance, op)) return assigningReply(op, this.retryAfter);
    const reply = await this.finishWithoutRecord(instance, { op, state: 'stored', completion: Promise.resolve(assigningReply(op, this.retryAfter)) }, 'ServiceUnavailable', 'The registration was interrupted; register again.');
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

/**
 * An assignment running in this process. `unstored`: its operation is not written yet (it ends with one write of the
 * finished operation and the record, unless a 202 must name it first: `storing`, then `stored`); `finishing`: the
 * end of an unstored one is being written; `lost`: another node stored an `assigning` operation of the same device
 * first (`lostTo`), so this one ends without writing.
 */
interface Assignment {
  op: RegistrationOperation;
  state: 'unstored' | 'storing' | 'stored' | 'finishing' | 'lost';
  storing?: Promise<'stored' | 'finishing' | RegistrationOperation>;
  lostTo?: RegistrationOperation;
  completion: Promise<RegistrationReply>;
}

function runKey(instance: ProvisioningInstance, operationId: string): string {
  return `${instance.name}\u0000${operationId}`;
}

function registrationRunKey(instance: ProvisioningInstance, registrationId: string): string {
  return `${instance.name}\u0000${registrationKey(registrationId)}`;
}

/**
 * Waits up to `budgetMs` for the final reply: an assignment that ends in time is answered 200 with its final status,
 * saving the device a poll; otherwise the first reply (202 `assigning`). The timer never outlives the wait. The
 * HTTPS and MQTT transports answer operation polls with it too.
 */
export async function withinBudget(p: PendingReply, budgetMs: number): Promise<RegistrationReply> {
  if (p.completion === undefined || budgetMs <= 0) return p.reply;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), budgetMs);
  });
  try {
    return (await Promise.race([p.completion, timeout])) ?? p.reply;
  } finally {
    clearTimeout(timer);
  }
}

function enrollmentOf(m: EnrollmentMatch): EnrollmentCommon {
  return m.kind === 'group' ? m.group : m.enrollment;
}

function authRef(m: EnrollmentMatch): EnrollmentRef {
  if (m.kind === 'individual') return { kind: 'individual', registrationId: m.enrollment.registrationId };
  if (m.kind === 'group') return { kind: 'group', enrollmentGroupId: m.group.enrollmentGroupId };
  return { kind: 'group', enrollmentGroupId: m.acceptedBy.enrollmentGroupId };
}

/** What the device's request adds to an assignment (allocation reads it). */
interface AssignmentExtras {
  payload?: JsonObject;
  sourceAddress?: string;
}

/** Hub credentials from the attestation used in this registration (§4: derived, never copied from the old hub). */
function hubCredentialsOf(match: Exclude<EnrollmentMatch, { kind: 'blocked' }>): HubCredentials {
  if (match.x509) return x509HubCredentials(match.x509);
  if (match.kind === 'individual') return symmetricCredentials(match.enrollment);
  return { type: 'sas', primaryKey: match.derivedKeys.primaryKey, secondaryKey: match.derivedKeys.secondaryKey };
}

function symmetricCredentials(e: EnrollmentCommon): HubCredentials {
  const sk = e.attestation.symmetricKey;
  if (!sk) throw new Error('a symmetric-key match without keys');
  return { type: 'sas', primaryKey: sk.primaryKey, secondaryKey: sk.secondaryKey };
}

/** The twin a reset installs: the initial tags and desired properties, empty reported, versions 1. */
function moveTwinOf(t: InitialTwin | undefined): HubMoveTwin {
  return { tags: t?.tags ?? {}, desired: t?.properties?.desired ?? {}, reported: {}, desiredVersion: 1, reportedVersion: 1 };
}

function initialTwinContent(t: InitialTwin | undefined): InitialTwinContent | undefined {
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
  if (r.node !== undefined) out.node = r.node;
  if (r.payload !== undefined) out.payload = r.payload;
  return out;
}

function readRequest(v: JsonObject | undefined): OperationRequest | undefined {
  const auth = v?.auth;
  if (!isPlainObject(auth)) return undefined;
  const node = typeof v?.node === 'string' ? { node: v.node } : {};
  if (auth.kind === 'individual' && typeof auth.registrationId === 'string') return { auth: { kind: 'individual', registrationId: auth.registrationId }, ...node };
  if (auth.kind === 'group' && typeof auth.enrollmentGroupId === 'string') return { auth: { kind: 'group', enrollmentGroupId: auth.enrollmentGroupId }, ...node };
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

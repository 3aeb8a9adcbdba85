import { isoTime, type Clock, type IdSource } from '../../core/clock.ts';
import { ERROR_CATALOGUE, type ErrorName } from '../../core/errors.ts';
import { registrationKey } from '../../core/registration-id.ts';
import type { Logger } from '../../observability/logger.ts';
import type { ProvisioningStore } from '../../store/provisioning-ports.ts';
import type { HubClient, HubClientFactory, HubFailure } from '../hub-client.ts';
import type { HubMove, LinkedHub, ProvisioningInstance, RegistrationOperation, RegistrationRecord } from '../model.ts';
import { registrationResult, resultAsJson, type DeviceRegistrationResult } from '../registration/results.ts';

/**
 * Runs durable hub moves (model.ts HubMove; docs/adr/015-reprovisioning-and-hub-moves.md). Each step is idempotent and is
 * recorded before the next starts, so a move interrupted anywhere (a crash, SIGKILL, a lost node) is resumed from its
 * last recorded step by whichever node holds its lease:
 *
 *   planned  --read the old hub's identity and twin-->  copied  --import on the new hub-->  written
 *   written  --delete from the old hub, then finish: delete the move, end the operation, write the record (one
 *            transaction)
 *
 * The delete is not recorded as a step of its own (one write fewer per move): a move resumed from `written` deletes
 * again, which is a no-op when the old hub no longer has the device.
 *
 * A hub that cannot be reached is retried with back-off. When the new hub cannot be written (refused, or still
 * unreachable after `giveUpMs`), the move is undone (`aborting`): the device is removed from the new hub again and
 * the operation ends `failed` with the record back on the old hub. Once the new hub has the device, the move only
 * goes forward.
 */

export interface HubMoverDeps {
  store: ProvisioningStore;
  hubs: HubClientFactory;
  clock: Clock;
  ids: IdSource;
  logger: Logger;
  /** This node's id: a restarted node resumes its own moves at once, other nodes' after their lease. */
  nodeId: string;
  /** How long a move's lease holds after each recorded step (ms). Default 30 s. */
  leaseMs?: number;
  /** How long steps before the new hub is written are retried before the move is undone (ms). Default 60 s. */
  giveUpMs?: number;
  /** Called after each recorded step, before the next starts (crash tests kill the process here). */
  afterStep?: (move: HubMove) => void | Promise<void>;
  /** Waits between retries (tests make it immediate). Default: a timer. */
  delay?: (ms: number) => Promise<void>;
}

export type MoveEnd =
  /** The move ended: the finished operation (or undefined when it had none). */
  | { kind: 'finished'; operation: RegistrationOperation | undefined }
  /** Another node holds the move now, or it was left for later (the old hub kept failing after the write). */
  | { kind: 'handed-over' };

const RETRYABLE = new Set<HubFailure['kind']>(['unavailable', 'timeout', 'conflict']);

export class HubMover {
  private readonly d: HubMoverDeps;
  private readonly leaseMs: number;
  private readonly giveUpMs: number;
  /** Moves running in this process, by `instance \0 registration key`. */
  private readonly running = new Map<string, Promise<MoveEnd>>();
  private recovery: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;

  constructor(deps: HubMoverDeps) {
    this.d = deps;
    this.leaseMs = Math.max(1000, deps.leaseMs ?? 30_000);
    this.giveUpMs = Math.max(0, deps.giveUpMs ?? 60_000);
  }

  get nodeId(): string {
    return this.d.nodeId;
  }

  /** A new move's ownership fields: this node, the lease from now. */
  lease(): { owner: string; leaseUntil: string } {
    return { owner: this.d.nodeId, leaseUntil: isoTime(this.d.clock.now() + this.leaseMs) };
  }

  /** Runs a move this node holds (just created, or claimed). Joins the run already going for the same device. */
  run(instance: ProvisioningInstance, move: HubMove): Promise<MoveEnd> {
    const key = `${instance.name}\u0000${registrationKey(move.registrationId)}`;
    const existing = this.running.get(key);
    if (existing) return existing;
    const p = this.drive(instance, move).finally(() => {
      if (this.running.get(key) === p) this.running.delete(key);
    });
    this.running.set(key, p);
    return p;
  }

  /** Whether this process is running the move of this device. */
  isRunning(instance: ProvisioningInstance, registrationId: string): boolean {
    return this.running.has(`${instance.name}\u0000${registrationKey(registrationId)}`);
  }

  /**
   * Takes over a move whose lease ended (or that this node owned before a restart) and runs it. Undefined when
   * another node holds it or it no longer exists.
   */
  async claim(instance: ProvisioningInstance, move: HubMove): Promise<{ done: Promise<MoveEnd> } | undefined> {
    const key = `${instance.name}\u0000${registrationKey(move.registrationId)}`;
    const running = this.running.get(key);
    if (running) return { done: running };
    const mine = move.owner === this.d.nodeId;
    if (!mine && Date.parse(move.leaseUntil) > this.d.clock.now()) return undefined;
    const claimed: HubMove = { ...move, ...this.lease(), version: move.version + 1, lastUpdatedDateTimeUtc: this.nowIso() };
    if ((await this.d.store.updateHubMove(instance.name, claimed, move.version)) !== 'ok') return undefined;
    if (!mine) this.d.logger.warn({ idScope: instance.idScope, registrationId: move.registrationId, step: move.step, previousOwner: move.owner }, 'taking over an interrupted hub move');
    return { done: this.run(instance, claimed) };
  }

  /** Resumes every move this node owned before and every move whose lease ended. Returns how many it started. */
  async resumeAll(instances: readonly ProvisioningInstance[]): Promise<number> {
    let n = 0;
    for (const instance of instances) {
      // Each move at most once per call: one that ends handed over (a hub still down) waits for the next scan.
      const tried = new Set<string>();
      for (;;) {
        const moves = await this.d.store.listHubMoves(instance.name, { owner: this.d.nodeId, leaseBefore: this.nowIso(), limit: 200 });
        const todo = moves.filter((m) => !this.isRunning(instance, m.registrationId) && !tried.has(registrationKey(m.registrationId)));
        if (todo.length === 0) break;
        const started: Promise<MoveEnd>[] = [];
        for (const m of todo) {
          tried.add(registrationKey(m.registrationId));
          const p = await this.claim(instance, m);
          if (p) started.push(p.done);
        }
        n += started.length;
        // Bounded work per round: wait for this batch before listing again (those still listed are another node's).
        await Promise.allSettled(started);
        if (started.length === 0) break;
      }
    }
    return n;
  }

  /** Scans for moves to resume now and every `intervalMs` until `stop()`. */
  startRecovery(listInstances: () => Promise<ProvisioningInstance[]>, intervalMs = Math.max(1000, Math.floor(this.leaseMs / 2))): void {
    const scan = () => {
      if (this.scanning) return;
      this.scanning = listInstances()
        .then((list) => this.resumeAll(list))
        .then(
          () => undefined,
          (err: unknown) => this.d.logger.warn({ err }, 'resuming hub moves failed; retrying later'),
        )
        .finally(() => {
          this.scanning = undefined;
        });
    };
    scan();
    this.recovery = setInterval(scan, intervalMs);
    this.recovery.unref();
  }

  /** Stops the recovery timer and waits for the moves running here. */
  async stop(): Promise<void> {
    if (this.recovery) clearInterval(this.recovery);
    this.recovery = undefined;
    await this.drain();
  }

  async drain(): Promise<void> {
    while (this.running.size > 0 || this.scanning) {
      await Promise.allSettled([...this.running.values(), ...(this.scanning ? [this.scanning] : [])]);
    }
  }

  // ------------------------------------------------------------------------------------------------ the steps

  private async drive(instance: ProvisioningInstance, start: HubMove): Promise<MoveEnd> {
    let m = start;
    let stepStarted = this.d.clock.now();
    let backoff = 50;
    // Just created (version 1): the first step boundary.
    if (start.version === 1) await this.d.afterStep?.(start);
    for (;;) {
      const outcome = await this.step(instance, m);
      if (outcome.kind === 'end') return outcome.end;
      if (outcome.kind === 'next') {
        const saved = await this.save(instance, outcome.move);
        if (!saved) return { kind: 'handed-over' };
        m = saved;
        stepStarted = this.d.clock.now();
        backoff = 50;
        await this.d.afterStep?.(m);
        continue;
      }
      // A failure: retry, undo, or leave it for the recovery scan.
      const f = outcome.failure;
      const canUndo = m.step === 'planned' || m.step === 'copied';
      const expired = this.d.clock.now() - stepStarted >= this.giveUpMs;
      if (canUndo && (!RETRYABLE.has(f.kind) || expired)) {
        this.d.logger.warn({ idScope: instance.idScope, registrationId: m.registrationId, step: m.step, kind: f.kind, status: f.status }, 'a hub move is undone: the new hub could not be written');
        const errorName: ErrorName = f.kind === 'unavailable' || f.kind === 'timeout' ? 'ServiceUnavailable' : 'HubWriteFailed';
        const next: HubMove = {
          ...m,
          step: m.step === 'planned' ? 'removed' : 'aborting',
          abort: { errorCode: ERROR_CATALOGUE[errorName].code, errorMessage: `Moving the device to IoT hub ${m.toHub} failed: ${f.message}` },
        };
        if (next.step === 'removed') {
          // Nothing was written anywhere yet: end at once.
          return this.finishAborted(instance, m, next.abort!);
        }
        const saved = await this.save(instance, next);
        if (!saved) return { kind: 'handed-over' };
        m = saved;
        stepStarted = this.d.clock.now();
        continue;
      }
      if (!canUndo && expired) {
        // The new hub has the device; only the old hub's delete (or the undo's) is left. The recovery scan retries.
        this.d.logger.warn({ idScope: instance.idScope, registrationId: m.registrationId, step: m.step, kind: f.kind }, 'a hub move is waiting for a hub; it is retried later');
        await this.save(instance, { ...m, attempts: m.attempts + 1, lastError: f.message });
        return { kind: 'handed-over' };
      }
      const saved = await this.save(instance, { ...m, attempts: m.attempts + 1, lastError: f.message });
      if (!saved) return { kind: 'handed-over' };
      m = saved;
      await this.wait(backoff);
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  private async step(
    instance: ProvisioningInstance,
    m: HubMove,
  ): Promise<{ kind: 'next'; move: HubMove } | { kind: 'failed'; failure: HubFailure } | { kind: 'end'; end: MoveEnd }> {
    switch (m.step) {
      case 'planned': {
        const from = this.client(instance, m.fromHub);
        if (!from.ok) return { kind: 'failed', failure: from.failure };
        const r = await from.client.getDeviceState(m.deviceId);
        if (!r.ok) return { kind: 'failed', failure: r.failure };
        if (r.value === undefined) {
          // The old hub no longer has the device: nothing to migrate; the new hub gets the initial state (ADR 015).
          const twin = m.initialTwin ?? emptyTwin();
          return { kind: 'next', move: { ...m, step: 'copied', twin, record: { ...m.record, substatus: 'deviceDataReset' }, attempts: 0 } };
        }
        const s = r.value;
        return {
          kind: 'next',
          move: {
            ...m,
            step: 'copied',
            capabilities: { iotEdge: s.device.capabilities.iotEdge },
            twin: { tags: s.twin.tags, desired: s.twin.desired, reported: s.twin.reported, desiredVersion: s.twin.desiredVersion, reportedVersion: s.twin.reportedVersion },
            attempts: 0,
          },
        };
      }
      case 'copied': {
        const to = this.client(instance, m.toHub);
        if (!to.ok) return { kind: 'failed', failure: to.failure };
        const r = await to.client.importDeviceState({ deviceId: m.deviceId, credentials: m.credentials, capabilities: m.capabilities, twin: m.twin ?? emptyTwin(), likelyNew: m.attempts === 0 });
        if (!r.ok) return { kind: 'failed', failure: r.failure };
        return { kind: 'next', move: { ...m, step: 'written', attempts: 0 } };
      }
      case 'written': {
        const linked = findHub(instance, m.fromHub);
        if (linked) {
          const from = this.client(instance, m.fromHub);
          if (!from.ok) return { kind: 'failed', failure: from.failure };
          const r = await from.client.deleteDevice(m.deviceId);
          if (!r.ok) return { kind: 'failed', failure: r.failure };
        } else {
          this.d.logger.warn({ idScope: instance.idScope, registrationId: m.registrationId, hub: m.fromHub }, 'the old hub of a moved device is no longer linked: the device could not be removed from it');
        }
        // Not recorded: the finish follows at once, and a resume from `written` repeats the (idempotent) delete.
        await this.d.afterStep?.({ ...m, step: 'removed' });
        return { kind: 'end', end: await this.finish(instance, m) };
      }
      case 'removed':
        if (m.abort) return { kind: 'end', end: await this.finishAborted(instance, m, m.abort) };
        return { kind: 'end', end: await this.finish(instance, m) };
      case 'aborting': {
        const to = this.client(instance, m.toHub);
        if (to.ok) {
          const r = await to.client.deleteDevice(m.deviceId);
          if (!r.ok) return { kind: 'failed', failure: r.failure };
        }
        return { kind: 'end', end: await this.finishAborted(instance, m, m.abort ?? { errorCode: ERROR_CATALOGUE.ServerError.code, errorMessage: 'The move was undone.' }) };
      }
    }
  }

  /** Records a step (compare-and-set; renews the lease). Undefined when another node took the move over. */
  private async save(instance: ProvisioningInstance, next: HubMove): Promise<HubMove | undefined> {
    const now = this.d.clock.now();
    const m: HubMove = { ...next, version: next.version + 1, owner: this.d.nodeId, leaseUntil: isoTime(now + this.leaseMs), lastUpdatedDateTimeUtc: isoTime(now) };
    const w = await this.d.store.updateHubMove(instance.name, m, next.version);
    if (w === 'ok') return m;
    this.d.logger.warn({ idScope: instance.idScope, registrationId: next.registrationId }, 'a hub move was taken over by another node');
    return undefined;
  }

  /** Ends a move: the device is on the new hub only. */
  private async finish(instance: ProvisioningInstance, m: HubMove): Promise<MoveEnd> {
    const now = this.nowIso();
    const record: RegistrationRecord = { ...m.record, status: 'assigned', lastUpdatedDateTimeUtc: now, etag: this.newEtag(), operationId: m.operationId };
    return this.end(instance, m, record, registrationResult(record));
  }

  /** Ends an undone move: the device stays on the old hub; the operation fails. */
  private async finishAborted(instance: ProvisioningInstance, m: HubMove, abort: { errorCode: number; errorMessage: string }): Promise<MoveEnd> {
    const now = this.nowIso();
    const record: RegistrationRecord = { ...m.prior, lastUpdatedDateTimeUtc: now, etag: this.newEtag() };
    const result: DeviceRegistrationResult = {
      registrationId: m.registrationId,
      createdDateTimeUtc: m.createdDateTimeUtc,
      status: 'failed',
      lastUpdatedDateTimeUtc: now,
      errorCode: abort.errorCode,
      errorMessage: abort.errorMessage,
    };
    return this.end(instance, m, record, result);
  }

  private async end(instance: ProvisioningInstance, m: HubMove, record: RegistrationRecord, result: DeviceRegistrationResult): Promise<MoveEnd> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const op = await this.d.store.getOperation(instance.name, m.operationId);
      const done: RegistrationOperation | undefined =
        op && op.status === 'assigning'
          ? { ...op, status: result.status, version: op.version + 1, lastUpdatedDateTimeUtc: result.lastUpdatedDateTimeUtc ?? this.nowIso(), result: resultAsJson(result) }
          : undefined;
      const w = await this.d.store.finishHubMove(instance.name, m.registrationId, m.version, done && op ? { operation: done, expectedVersion: op.version } : undefined, { record, expect: { kind: 'any' } });
      if (w === 'ok') return { kind: 'finished', operation: done };
      if (w === 'not-found') return { kind: 'handed-over' };
      const current = await this.d.store.getHubMove(instance.name, m.registrationId);
      if (!current || current.version !== m.version) return { kind: 'handed-over' };
      // The operation changed under us (e.g. a poll marked it): read it again.
    }
    throw new Error('finishing a hub move kept conflicting');
  }

  private client(instance: ProvisioningInstance, hubName: string): { ok: true; client: HubClient } | { ok: false; failure: HubFailure } {
    const hub = findHub(instance, hubName);
    if (!hub) return { ok: false, failure: { kind: 'rejected', message: `IoT hub ${hubName} is no longer linked.` } };
    try {
      return { ok: true, client: this.d.hubs.forHub(hub) };
    } catch (e) {
      return { ok: false, failure: { kind: 'rejected', message: `No client for IoT hub ${hubName}: ${e instanceof Error ? e.message : String(e)}` } };
    }
  }

  private wait(ms: number): Promise<void> {
    if (this.d.delay) return this.d.delay(ms);
    return new Promise((resolve) => setTimeout(resolve, ms).unref());
  }

  private nowIso(): string {
    return isoTime(this.d.clock.now());
  }

  private newEtag(): string {
    return Buffer.from(`"${this.d.ids.uuid()}"`).toString('base64');
  }
}

function findHub(instance: ProvisioningInstance, name: string): LinkedHub | undefined {
  const k = name.toLowerCase();
  return instance.linkedHubs.find((h) => h.name.toLowerCase() === k);
}

function emptyTwin(): NonNullable<HubMove['twin']> {
  return { tags: {}, desired: {}, reported: {}, desiredVersion: 1, reportedVersion: 1 };
}

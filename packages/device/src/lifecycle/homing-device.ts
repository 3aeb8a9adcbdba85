import { EventEmitter } from 'node:events';
import { resolveCredential, type DeviceCredential, type HubCredential, type TlsOptions } from '../credentials.ts';
import { ProvisioningClient, type ProvisioningClientOptions } from '../dps/provisioning-client.ts';
import type { AssignedRegistration, DeviceRegistrationResult } from '../dps/types.ts';
import { AbortedError, NotConnectedError } from '../errors.ts';
import {
  HubClient,
  type CloudToDeviceMessage,
  type HubClientOptions,
  type MethodHandler,
  type TelemetryOptions,
  type Twin,
} from '../hub/hub-client.ts';
import type { JsonObject, JsonValue } from '../json.ts';
import { resolveRuntime, sleep, type Runtime } from '../runtime.ts';
import { FileAssignmentStore, type Assignment, type AssignmentStore } from './assignment-store.ts';
import { backoffDelay, classifyFailure, resolveRetryPolicy, type Failure, type RetryPolicy, type RetryPolicyOverrides } from './policy.ts';

/** Why the device (re-)registered. */
export type ProvisioningReason =
  /** Nothing cached: first boot, or the cache was cleared or belongs to another identity. */
  | 'initial'
  /** The hub refused the device (CONNACK 2, 4 or 5: unknown, disabled, moved or deleted). */
  | 'hub-rejected'
  /** The hub stayed unreachable for `retry.deadHubTimeoutMs`. */
  | 'hub-unreachable'
  /** The built-in direct method (default `homing.reprovision`). */
  | 'method'
  /** `reprovision()`. */
  | 'api';

export const DEFAULT_REPROVISION_METHOD = 'homing.reprovision';

export interface HubConnectionSettings
  extends Omit<HubClientOptions, 'hostName' | 'deviceId' | 'credential' | 'address' | 'runtime' | 'receiveMessages' | 'tls'> {
  /**
   * Maps the assigned hub's host name to the address to dial (default: the host name itself, `host:port` honoured,
   * port 8883). `servername` overrides the TLS server name checked.
   */
  resolve?: (assignedHub: string) => { host: string; port?: number; servername?: string };
  tls?: TlsOptions;
  /** Subscribe to cloud-to-device messages. Default: when a `message` listener exists at connect time. */
  receiveMessages?: boolean;
}

export interface HomingDeviceOptions {
  registrationId: string;
  /** Individual symmetric key, enrollment-group key (derived on the device), or X.509 certificate and key. */
  credential: DeviceCredential;
  /** The DPS endpoint and registration settings. */
  provisioning: Omit<ProvisioningClientOptions, 'registrationId' | 'credential' | 'runtime'>;
  hub?: HubConnectionSettings;
  /** Where the assignment is persisted: a store, or the path of a JSON file (FileAssignmentStore). */
  store: AssignmentStore | string;
  retry?: RetryPolicyOverrides;
  /** Name of the built-in direct method that makes the device re-register; false disables it. */
  reprovisionMethod?: string | false;
  runtime?: Partial<Runtime>;
}

export interface ProvisionedEvent {
  assignment: Assignment;
  registration: AssignedRegistration;
  reason: ProvisioningReason;
}

export interface ReprovisionedEvent {
  previous: Assignment;
  assignment: Assignment;
  reason: ProvisioningReason;
  /** `register`: a new registration; `lookup`: the registration status lookup showed the device had moved. */
  via: 'register' | 'lookup';
  /** The hub or the device id differs from the previous assignment. */
  hubChanged: boolean;
}

export interface ConnectedEvent {
  assignment: Assignment;
}

export interface DisconnectedEvent {
  assignment: Assignment;
  /** `lost`: the connection broke; `moving`: closed to follow a new assignment; `stopped`: stop(). */
  reason: 'lost' | 'moving' | 'stopped';
  error: Error | undefined;
}

export interface RetryEvent {
  /** What failed and will be retried after `delayMs`. */
  operation: 'register' | 'lookup' | 'connect' | 'reconnect';
  kind: Exclude<Failure['kind'], 'aborted'>;
  /** 1 for the first retry of this operation after a failure of this kind (counted while failures continue). */
  attempt: number;
  delayMs: number;
  error: Error;
}

export interface HomingDeviceEvents {
  provisioned: [event: ProvisionedEvent];
  reprovisioned: [event: ReprovisionedEvent];
  connected: [event: ConnectedEvent];
  disconnected: [event: DisconnectedEvent];
  retry: [event: RetryEvent];
  desired: [patch: JsonObject, version: number | undefined];
  message: [message: CloudToDeviceMessage];
  /** Refusals that need an operator (DPS 401/403/404, `failed`, `disabled`), failed saves, handler errors. Only emitted when listened to. */
  error: [error: Error];
}

type Step =
  | { kind: 'register'; reason: ProvisioningReason }
  | { kind: 'recover'; reason: 'hub-rejected' | 'hub-unreachable' }
  | { kind: 'connect' }
  | { kind: 'online' };

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // callers may not await
  return { promise, resolve, reject };
}

/**
 * A provisioned device with the DPS lifecycle rules built in (dps-behavior.md §9):
 * - boots onto the cached hub without contacting DPS; registers only when nothing is cached;
 * - hub refusal (CONNACK 2/4/5) → registration status lookup → the new hub if the device moved, else re-register;
 * - unreachable hub (network, CONNACK 3) → back-off with jitter, first retry ≥ 5 s; after `deadHubTimeoutMs` back to
 *   DPS the same way;
 * - DPS 429 → wait at least Retry-After, growing with jitter while the quota lasts; 5xx/network → back-off ≥ 5 s;
 *   refusals (401/403/404, failed, disabled) → slow back-off and an `error` event;
 * - re-registers on the built-in direct method and on `reprovision()`, and follows a move to another hub.
 */
export class HomingDevice extends EventEmitter<HomingDeviceEvents> {
  readonly registrationId: string;
  readonly idScope: string;
  private readonly runtime: Runtime;
  private readonly policy: RetryPolicy;
  private readonly store: AssignmentStore;
  private readonly provisioning: ProvisioningClient;
  private readonly hubCredential: HubCredential;
  private readonly hubSettings: HubConnectionSettings;
  private readonly reprovisionMethod: string | undefined;
  private readonly methodHandlers = new Map<string, MethodHandler>();

  private current: Assignment | undefined;
  private link: HubClient | undefined;
  private running: { controller: AbortController; loop: Promise<void> } | undefined;
  private firstConnection: Deferred<void> | undefined;
  private reprovisionRequest: { reason: 'method' | 'api'; waiters: Deferred<Assignment>[] } | undefined;
  private lost: Error | undefined;
  private wakeUp: (() => void) | undefined;
  private interrupter: AbortController | undefined;
  private hubAttempt = 0;
  private deadSince: number | undefined;
  private movedByLookup = false;

  constructor(options: HomingDeviceOptions) {
    super();
    this.registrationId = options.registrationId;
    this.idScope = options.provisioning.idScope;
    this.runtime = resolveRuntime(options.runtime);
    this.policy = resolveRetryPolicy(options.retry);
    this.store = typeof options.store === 'string' ? new FileAssignmentStore(options.store) : options.store;
    this.provisioning = new ProvisioningClient({
      ...options.provisioning,
      registrationId: options.registrationId,
      credential: options.credential,
      runtime: this.runtime,
    });
    this.hubCredential = resolveCredential(options.credential, options.registrationId);
    this.hubSettings = { ...options.hub };
    this.reprovisionMethod = options.reprovisionMethod === false ? undefined : (options.reprovisionMethod ?? DEFAULT_REPROVISION_METHOD);
  }

  /** The current assignment (cached or fresh), if any. */
  get assignment(): Assignment | undefined {
    return this.current === undefined ? undefined : { ...this.current };
  }

  get connected(): boolean {
    return this.link?.connected ?? false;
  }

  /** The live hub client, for anything this class does not wrap. Replaced on every (re)connection. */
  get hubClient(): HubClient | undefined {
    return this.link;
  }

  /**
   * Starts the lifecycle. Resolves once the device is connected to its hub for the first time; it keeps retrying
   * (with the back-off rules) until then, so bound the wait yourself if you need to. Rejects with AbortedError when
   * stop() comes first.
   */
  start(): Promise<void> {
    if (this.running && this.firstConnection) return this.firstConnection.promise;
    const controller = new AbortController();
    this.firstConnection = deferred<void>();
    const loop = this.run(controller.signal).catch((e: unknown) => {
      if (!controller.signal.aborted) this.report(e);
    });
    this.running = { controller, loop };
    return this.firstConnection.promise;
  }

  /** Stops retrying, closes the hub connection and DPS sockets. Pending start()/reprovision() reject with AbortedError. */
  async stop(): Promise<void> {
    const running = this.running;
    if (!running) return;
    this.running = undefined;
    running.controller.abort();
    this.wakeUp?.();
    await running.loop;
    const client = this.link;
    this.link = undefined;
    if (client) {
      await client.close();
      if (this.current) this.emit('disconnected', { assignment: { ...this.current }, reason: 'stopped', error: undefined });
    }
    await this.provisioning.close();
    const stopped = new AbortedError('device stopped');
    this.firstConnection?.reject(stopped);
    const waiters = this.reprovisionRequest?.waiters ?? [];
    this.reprovisionRequest = undefined;
    for (const w of waiters) w.reject(stopped);
  }

  /**
   * Re-registers now (as the built-in direct method does) and resolves with the new assignment; the device moves to
   * the new hub by itself. Requests made while a registration is running share its result. If the device is online
   * and DPS refuses, the device stays on its hub and the promise rejects.
   */
  reprovision(): Promise<Assignment> {
    return this.requestReprovision('api');
  }

  /** Registers a direct method handler (kept across reconnections and hub moves). */
  onMethod(name: string, handler: MethodHandler): this {
    this.methodHandlers.set(name, handler);
    this.link?.onMethod(name, handler);
    if (name === this.reprovisionMethod) this.installReprovisionMethod(this.link);
    return this;
  }

  removeMethod(name: string): this {
    this.methodHandlers.delete(name);
    this.link?.removeMethod(name);
    if (name === this.reprovisionMethod) this.installReprovisionMethod(this.link);
    return this;
  }

  /** Subscribes to cloud-to-device messages now and on every later connection. */
  async enableMessages(): Promise<void> {
    this.hubSettings.receiveMessages = true;
    await this.link?.enableMessages();
  }

  /** Telemetry on the current hub connection (QoS 1). Rejects with NotConnectedError while offline: no queueing. */
  async sendTelemetry(body: string | Uint8Array, options?: TelemetryOptions): Promise<void> {
    return this.requireHub().sendTelemetry(body, options);
  }

  async sendJson(value: JsonValue, options?: TelemetryOptions): Promise<void> {
    return this.requireHub().sendJson(value, options);
  }

  async getTwin(): Promise<Twin> {
    return this.requireHub().getTwin();
  }

  async updateReported(patch: JsonObject): Promise<number | undefined> {
    return this.requireHub().updateReported(patch);
  }

  // ------------------------------------------------------------------------------------------------ the loop

  private requireHub(): HubClient {
    const h = this.link;
    if (!h || !h.connected) throw new NotConnectedError();
    return h;
  }

  private requestReprovision(reason: 'method' | 'api'): Promise<Assignment> {
    if (!this.running) return Promise.reject(new Error('the device is not started'));
    const d = deferred<Assignment>();
    this.reprovisionRequest ??= { reason, waiters: [] };
    this.reprovisionRequest.waiters.push(d);
    this.wakeUp?.();
    this.interrupter?.abort();
    return d.promise;
  }

  private async run(signal: AbortSignal): Promise<void> {
    this.current = await this.loadAssignment();
    let step: Step = this.current ? { kind: 'connect' } : { kind: 'register', reason: 'initial' };
    while (!signal.aborted) {
      if (this.reprovisionRequest && step.kind !== 'register') step = { kind: 'register', reason: this.reprovisionRequest.reason };
      try {
        step = await this.perform(step, signal);
      } catch (e) {
        if (signal.aborted) break;
        // Not expected (every step handles its failures): report, breathe, carry on where we were.
        this.report(e);
        await this.pause(backoffDelay(this.policy.transient, 1, this.runtime.random), signal).catch(() => undefined);
      }
    }
  }

  private perform(step: Step, signal: AbortSignal): Promise<Step> {
    switch (step.kind) {
      case 'register':
        return this.doRegister(step.reason, signal);
      case 'recover':
        return this.doRecover(step.reason, signal);
      case 'connect':
        return this.doConnect(signal);
      case 'online':
        return this.doOnline(signal);
    }
  }

  private async loadAssignment(): Promise<Assignment | undefined> {
    let a: Assignment | undefined;
    try {
      a = await this.store.load();
    } catch (e) {
      this.report(e);
      return undefined;
    }
    // A cache written for another identity or scope is not ours to use.
    if (a && (a.registrationId !== this.registrationId || a.idScope !== this.idScope)) return undefined;
    return a;
  }

  private async doRegister(reason: ProvisioningReason, signal: AbortSignal): Promise<Step> {
    const optional = (reason === 'method' || reason === 'api') && this.current !== undefined;
    // Consecutive failures are counted per kind: a 5xx after two 429s is the first 5xx (first retry ≥ 5 s).
    const attempts = { throttled: 0, transient: 0, rejected: 0 };
    for (;;) {
      try {
        const registration = await this.provisioning.register({ signal });
        const waiters = this.reprovisionRequest?.waiters ?? [];
        this.reprovisionRequest = undefined;
        const previous = this.current;
        const next = await this.adopt(registration, reason, 'register');
        for (const w of waiters) w.resolve({ ...next });
        if (this.link?.connected && previous && sameTarget(previous, next)) return { kind: 'online' };
        await this.dropHub('moving');
        return { kind: 'connect' };
      } catch (e) {
        const f = classifyFailure(e);
        if (f.kind === 'aborted' || signal.aborted) throw e;
        const err = asError(e);
        if (f.kind === 'rejected') this.report(err);
        // An optional re-registration never strands a working device: on a refusal, or once its hub is gone too,
        // the request fails and the normal connection rules take over.
        if (optional && (f.kind === 'rejected' || !this.link?.connected)) {
          const waiters = this.reprovisionRequest?.waiters ?? [];
          this.reprovisionRequest = undefined;
          for (const w of waiters) w.reject(err);
          return this.link?.connected ? { kind: 'online' } : this.afterLoss(signal);
        }
        const attempt = ++attempts[f.kind];
        const delayMs = this.delayFor(f, attempt);
        this.emit('retry', { operation: 'register', kind: f.kind, attempt, delayMs, error: err });
        await this.pause(delayMs, signal);
      }
    }
  }

  private async doRecover(reason: 'hub-rejected' | 'hub-unreachable', signal: AbortSignal): Promise<Step> {
    // The hub a lookup pointed to failed us before we ever connected: no second lookup, re-register.
    if (this.movedByLookup) return { kind: 'register', reason };
    try {
      const r = await this.provisioning.lookup({ signal });
      const cur = this.current;
      if (cur && isAssigned(r) && (r.assignedHub !== cur.assignedHub || r.deviceId !== cur.deviceId)) {
        this.movedByLookup = true;
        await this.adopt(r, reason, 'lookup');
        return { kind: 'connect' };
      }
    } catch (e) {
      const f = classifyFailure(e);
      if (f.kind === 'aborted' || signal.aborted) throw e;
      if (f.kind === 'throttled') {
        // The lookup counts against the registration rate: registering straight away would be throttled too.
        const delayMs = this.delayFor(f, 1);
        this.emit('retry', { operation: 'lookup', kind: f.kind, attempt: 1, delayMs, error: asError(e) });
        await this.pause(delayMs, signal);
      }
      // Any other lookup failure: re-register.
    }
    return { kind: 'register', reason };
  }

  private async doConnect(signal: AbortSignal): Promise<Step> {
    const a = this.current;
    if (!a) return { kind: 'register', reason: 'initial' };
    const client = this.createHubClient(a);
    try {
      await client.connect(signal);
    } catch (e) {
      await client.close();
      const f = classifyFailure(e);
      if (f.kind === 'aborted' || signal.aborted) throw e;
      if (f.kind === 'rejected') {
        this.hubAttempt = 0;
        this.deadSince = undefined;
        return { kind: 'recover', reason: 'hub-rejected' };
      }
      const now = this.runtime.clock.now();
      this.deadSince ??= now;
      if (now - this.deadSince >= this.policy.deadHubTimeoutMs) {
        this.hubAttempt = 0;
        this.deadSince = undefined;
        return { kind: 'recover', reason: 'hub-unreachable' };
      }
      this.hubAttempt++;
      const delayMs = this.delayFor(f, this.hubAttempt);
      this.emit('retry', { operation: 'connect', kind: f.kind, attempt: this.hubAttempt, delayMs, error: asError(e) });
      await this.pause(delayMs, signal);
      return { kind: 'connect' };
    }
    if (signal.aborted) {
      await client.close();
      throw new AbortedError();
    }
    this.link = client;
    this.lost = undefined;
    this.hubAttempt = 0;
    this.deadSince = undefined;
    this.movedByLookup = false;
    this.emit('connected', { assignment: { ...a } });
    this.firstConnection?.resolve();
    return { kind: 'online' };
  }

  private async doOnline(signal: AbortSignal): Promise<Step> {
    if (this.lost === undefined && this.reprovisionRequest === undefined && !signal.aborted) {
      await new Promise<void>((resolve) => {
        this.wakeUp = resolve;
      });
      this.wakeUp = undefined;
    }
    if (signal.aborted) return { kind: 'online' };
    if (this.lost !== undefined) {
      const e = this.lost;
      this.lost = undefined;
      const f = classifyFailure(e);
      if (f.kind === 'rejected') return { kind: 'recover', reason: 'hub-rejected' };
      return this.afterLoss(signal, e);
    }
    if (this.reprovisionRequest) return { kind: 'register', reason: this.reprovisionRequest.reason };
    return { kind: 'online' };
  }

  /** A live connection broke: the dead-hub clock starts, and the first reconnect waits the transient back-off. */
  private async afterLoss(signal: AbortSignal, error?: Error): Promise<Step> {
    this.deadSince ??= this.runtime.clock.now();
    this.hubAttempt = 1;
    const delayMs = this.delayFor({ kind: 'transient' }, 1);
    if (error) this.emit('retry', { operation: 'reconnect', kind: 'transient', attempt: 1, delayMs, error });
    await this.pause(delayMs, signal);
    return { kind: 'connect' };
  }

  private delayFor(f: Failure, attempt: number): number {
    switch (f.kind) {
      case 'throttled':
        return backoffDelay(this.policy.throttled, attempt, this.runtime.random, f.retryAfterMs ?? 0);
      case 'rejected':
        return backoffDelay(this.policy.rejected, attempt, this.runtime.random);
      default:
        return backoffDelay(this.policy.transient, attempt, this.runtime.random);
    }
  }

  /** Waits on the runtime timers; returns early (no error) when reprovision() interrupts, throws when stopped. */
  private async pause(ms: number, signal: AbortSignal): Promise<void> {
    const interrupter = new AbortController();
    this.interrupter = interrupter;
    try {
      if (this.reprovisionRequest) return;
      await sleep(this.runtime, ms, AbortSignal.any([signal, interrupter.signal]));
    } catch (e) {
      if (signal.aborted) throw e;
    } finally {
      if (this.interrupter === interrupter) this.interrupter = undefined;
    }
  }

  private async adopt(r: DeviceRegistrationResult & { assignedHub: string; deviceId: string }, reason: ProvisioningReason, via: 'register' | 'lookup'): Promise<Assignment> {
    const previous = this.current;
    const next: Assignment = {
      idScope: this.idScope,
      registrationId: this.registrationId,
      assignedHub: r.assignedHub,
      deviceId: r.deviceId,
      assignedAt: new Date(this.runtime.clock.now()).toISOString(),
      ...(r.substatus !== undefined ? { substatus: r.substatus } : {}),
      ...(r.payload !== undefined ? { payload: r.payload } : {}),
      ...(r.etag !== undefined ? { etag: r.etag } : {}),
    };
    try {
      await this.store.save(next);
    } catch (e) {
      this.report(e); // keep going with the assignment in memory
    }
    this.current = next;
    if (via === 'register') this.emit('provisioned', { assignment: { ...next }, registration: r as AssignedRegistration, reason });
    if (previous) this.emit('reprovisioned', { previous, assignment: { ...next }, reason, via, hubChanged: !sameTarget(previous, next) });
    return next;
  }

  private async dropHub(reason: 'moving'): Promise<void> {
    const client = this.link;
    this.link = undefined;
    this.lost = undefined;
    if (!client) return;
    const was = client.connected;
    await client.close();
    if (was && this.current) this.emit('disconnected', { assignment: { ...this.current }, reason, error: undefined });
  }

  private createHubClient(a: Assignment): HubClient {
    const { resolve, tls, receiveMessages, ...rest } = this.hubSettings;
    const target = resolve?.(a.assignedHub);
    const client = new HubClient({
      ...rest,
      hostName: a.assignedHub,
      deviceId: a.deviceId,
      credential: this.hubCredential,
      ...(target ? { address: { host: target.host, ...(target.port !== undefined ? { port: target.port } : {}) } } : {}),
      ...(tls !== undefined || target?.servername !== undefined ? { tls: { ...tls, ...(target?.servername !== undefined ? { servername: target.servername } : {}) } } : {}),
      receiveMessages: receiveMessages ?? this.listenerCount('message') > 0,
      runtime: this.runtime,
    });
    for (const [name, handler] of this.methodHandlers) client.onMethod(name, handler);
    this.installReprovisionMethod(client);
    client.on('desired', (patch, version) => this.emit('desired', patch, version));
    client.on('message', (m) => this.emit('message', m));
    client.on('handlerError', (e) => this.report(e));
    client.on('disconnect', (e) => {
      if (this.link !== client) return;
      this.link = undefined;
      this.lost = e;
      void client.close();
      this.emit('disconnected', { assignment: { ...a }, reason: 'lost', error: e });
      this.wakeUp?.();
    });
    return client;
  }

  private installReprovisionMethod(client: HubClient | undefined): void {
    if (!client || this.reprovisionMethod === undefined || this.methodHandlers.has(this.reprovisionMethod)) return;
    client.onMethod(this.reprovisionMethod, () => {
      // Answer first (the response goes out on this connection), then re-register.
      this.requestReprovision('method').catch(() => undefined);
      return { status: 202, payload: { status: 'reprovisioning' } };
    });
  }

  private report(e: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', asError(e));
  }
}

function isAssigned(r: DeviceRegistrationResult): r is DeviceRegistrationResult & { assignedHub: string; deviceId: string } {
  return r.status === 'assigned' && typeof r.assignedHub === 'string' && r.assignedHub !== '' && typeof r.deviceId === 'string' && r.deviceId !== '';
}

function sameTarget(a: Assignment, b: Assignment): boolean {
  return a.assignedHub === b.assignedHub && a.deviceId === b.deviceId;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

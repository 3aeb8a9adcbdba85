import type { Clock, IdSource } from '../../core/clock.ts';
import { isoTime } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../../core/json.ts';
import type { Logger } from '../../observability/logger.ts';
import type { FleetJobStore } from '../../store/fleet-ports.ts';
import type { ProvisioningReadStore, ProvisioningStore } from '../../store/provisioning-ports.ts';
import type { EnrollmentGroup, IndividualEnrollment, ProvisioningInstance, RegistrationRecord } from '../model.ts';
import type { EffectiveQuotas } from '../quotas/settings.ts';
import type { FleetHubs } from './hubs.ts';
import { TERMINAL_STATES, type FailureThreshold, type FleetDevice, type FleetJob, type FleetSelection, type PlannedMove } from './model.ts';
import { planMove, summarizePlan } from './plan.ts';
import { JobRunner, stateConflict } from './runner.ts';
import { chooseRate, globMatcher, parseFailureThreshold } from './schedule.ts';

export const DEFAULT_REPROVISION_METHOD = 'homing.reprovision';
export const DEFAULT_FAILURE_THRESHOLD: FailureThreshold = { percent: 10 };
export const DEFAULT_METHOD_TIMEOUT_SECONDS = 30;
export const DEFAULT_DEVICE_TIMEOUT_SECONDS = 120;
/** How long a device that is not connected is waited for before its method fails (DeviceNotOnline). */
export const DEFAULT_CONNECT_TIMEOUT_SECONDS = 15;
/** Devices one job may hold. */
export const MAX_JOB_DEVICES = 1_000_000;
/** Devices listed in a dry run's answer (the summary counts all). */
export const MAX_PLAN_LISTED = 10_000;

export interface FleetServiceDeps {
  store: FleetJobStore;
  provisioning: ProvisioningReadStore & Pick<ProvisioningStore, 'listGroupRegistrations'>;
  hubs: FleetHubs;
  quotas: { effective(instance: ProvisioningInstance): EffectiveQuotas };
  clock: Clock;
  ids: IdSource;
  logger: Logger;
  /** How often in-flight registrations are looked at, ms (default 250). */
  pollIntervalMs?: number;
  /** Method invocations at once within a wave (default 200). */
  invokeConcurrency?: number;
  /** Target time between waves, ms (default 6000; tests shorten it). */
  targetWaveIntervalMs?: number;
  /**
   * Wait before a new job's first wave, ms (default 1000: how long an enrollment change takes to reach the
   * registration service's read cache on every node, so an operator who changes a group and starts a job at once
   * does not see the first devices allocated with the old group).
   */
  firstWaveDelayMs?: number;
  /** Watch time before the method is invoked again on a device that dropped the call, ms (default 3000). */
  retryGraceMs?: number;
}

/** A validated `POST /homing/fleet/jobs` body. */
export interface CreateFleetJobRequest {
  selection: FleetSelection;
  rate?: number;
  failureThreshold?: FailureThreshold;
  methodName?: string;
  methodTimeoutSeconds?: number;
  connectTimeoutSeconds?: number;
  deviceTimeoutSeconds?: number;
  dryRun?: boolean;
}

export interface DryRunResult {
  dryRun: true;
  selection: FleetSelection;
  total: number;
  skipped: number;
  summary: ReturnType<typeof summarizePlan>;
  devices: PlannedMove[];
  truncated: boolean;
}

function bad(message: string): HomingError {
  return new HomingError('ArgumentInvalid', message);
}

function optionalInt(o: JsonObject, name: string, min: number, max: number): number | undefined {
  const v = o[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(`${name} must be an integer from ${min} to ${max}.`);
  return v;
}

/** Parses and validates a job request body (400 ArgumentInvalid / InvalidJson with the reason). */
export function parseCreateRequest(body: JsonValue | undefined): CreateFleetJobRequest {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The body is a JSON object {"selection": {...}, "rate"?, "failureThreshold"?, "dryRun"?}.');
  const known = new Set(['selection', 'rate', 'failureThreshold', 'methodName', 'methodTimeoutSeconds', 'connectTimeoutSeconds', 'deviceTimeoutSeconds', 'dryRun']);
  for (const k of Object.keys(body)) if (!known.has(k)) throw bad(`Unknown field "${k}".`);
  const out: CreateFleetJobRequest = { selection: parseSelection(body.selection) };
  const rate = optionalInt(body, 'rate', 1, 1_000_000);
  if (rate !== undefined) out.rate = rate;
  if (body.failureThreshold !== undefined && body.failureThreshold !== null) out.failureThreshold = parseFailureThreshold(body.failureThreshold);
  if (body.methodName !== undefined) {
    if (typeof body.methodName !== 'string' || body.methodName.length === 0 || body.methodName.length > 128) throw bad('methodName must be a method name of 1 to 128 characters.');
    out.methodName = body.methodName;
  }
  const mt = optionalInt(body, 'methodTimeoutSeconds', 5, 300);
  if (mt !== undefined) out.methodTimeoutSeconds = mt;
  const ct = optionalInt(body, 'connectTimeoutSeconds', 0, 300);
  if (ct !== undefined) out.connectTimeoutSeconds = ct;
  const dt = optionalInt(body, 'deviceTimeoutSeconds', 5, 3600);
  if (dt !== undefined) out.deviceTimeoutSeconds = dt;
  if (body.dryRun !== undefined) {
    if (typeof body.dryRun !== 'boolean') throw bad('dryRun must be true or false.');
    out.dryRun = body.dryRun;
  }
  return out;
}

function parseSelection(v: JsonValue | undefined): FleetSelection {
  if (!isPlainObject(v)) throw bad('selection is an object with one of enrollmentGroupId, registrationId, hub, pattern or query.');
  const entries = Object.entries(v).filter(([, x]) => x !== undefined && x !== null);
  if (entries.length !== 1) throw bad('selection names exactly one of enrollmentGroupId, registrationId, hub, pattern or query.');
  const [name, value] = entries[0] as [string, JsonValue];
  if (typeof value !== 'string' || value.trim().length === 0 || value.length > 8192) throw bad(`selection.${name} must be a non-empty string.`);
  switch (name) {
    case 'enrollmentGroupId':
      return { kind: 'enrollmentGroup', enrollmentGroupId: value };
    case 'registrationId':
      return { kind: 'enrollment', registrationId: value };
    case 'hub':
      return { kind: 'hub', hub: value };
    case 'pattern':
      return { kind: 'pattern', pattern: value };
    case 'query':
      return { kind: 'query', query: value };
    default:
      throw bad(`Unknown selection "${name}": use enrollmentGroupId, registrationId, hub, pattern or query.`);
  }
}

export function selectionToJson(s: FleetSelection): JsonObject {
  switch (s.kind) {
    case 'enrollmentGroup':
      return { enrollmentGroupId: s.enrollmentGroupId };
    case 'enrollment':
      return { registrationId: s.registrationId };
    case 'hub':
      return { hub: s.hub };
    case 'pattern':
      return { pattern: s.pattern };
    case 'query':
      return { query: s.query };
  }
}

type Assigned = RegistrationRecord & { assignedHub: string; deviceId: string };

function isAssigned(r: RegistrationRecord): r is Assigned {
  return r.status === 'assigned' && typeof r.assignedHub === 'string' && r.assignedHub !== '' && typeof r.deviceId === 'string' && r.deviceId !== '';
}

/**
 * Phased fleet reprovisioning (docs/api/fleet.md): creates jobs from a selection, runs them in waves under the
 * registration quota (JobRunner), and answers the admin API. Jobs live in the store; `resumeStored()` (at start)
 * picks up the jobs a previous process was running or watching.
 */
export class FleetService {
  private readonly d: FleetServiceDeps;
  private readonly runners = new Map<string, JobRunner>();
  private closed = false;

  constructor(deps: FleetServiceDeps) {
    this.d = deps;
  }

  /** Creates and starts a job, or answers a dry run. */
  async create(instance: ProvisioningInstance, req: CreateFleetJobRequest): Promise<FleetJob | DryRunResult> {
    const rate = req.dryRun ? undefined : chooseRate(req.rate, this.d.quotas.effective(instance).registrationsPerMinute, this.d.targetWaveIntervalMs);
    const { records, skipped } = await this.select(instance, req.selection);
    if (req.dryRun) return this.plan(instance, req.selection, records, skipped);
    if (rate === undefined) throw new Error('unreachable: no rate');
    if (records.length > MAX_JOB_DEVICES) throw bad(`The selection holds ${records.length} devices; a job takes at most ${MAX_JOB_DEVICES}.`);
    const now = isoTime(this.d.clock.now());
    const id = this.d.ids.uuid();
    const job: FleetJob = {
      id,
      instance: instance.name,
      state: 'pending',
      selection: req.selection,
      method: { name: req.methodName ?? DEFAULT_REPROVISION_METHOD, responseTimeoutSeconds: req.methodTimeoutSeconds ?? DEFAULT_METHOD_TIMEOUT_SECONDS, connectTimeoutSeconds: req.connectTimeoutSeconds ?? DEFAULT_CONNECT_TIMEOUT_SECONDS },
      rate,
      failureThreshold: req.failureThreshold ?? DEFAULT_FAILURE_THRESHOLD,
      deviceTimeoutMs: (req.deviceTimeoutSeconds ?? DEFAULT_DEVICE_TIMEOUT_SECONDS) * 1000,
      counts: { total: records.length, pending: records.length, inFlight: 0, moved: 0, unchanged: 0, failed: 0 },
      skipped,
      baseline: { processed: 0, failed: 0 },
      createdDateTimeUtc: now,
      lastUpdatedDateTimeUtc: now,
      version: 1,
    };
    const devices: FleetDevice[] = records.map((r, seq) => ({ jobId: id, seq, registrationId: r.registrationId, deviceId: r.deviceId, fromHub: r.assignedHub, state: 'pending' }));
    await this.d.store.createJob(job, devices);
    this.d.logger.info({ job: id, instance: instance.name, total: records.length, rate: rate.perMinute }, 'fleet job created');
    const runner = this.runnerFor(job);
    await runner.start(this.d.firstWaveDelayMs ?? 1000);
    return runner.snapshot();
  }

  async get(instance: ProvisioningInstance, id: string): Promise<{ job: FleetJob; nextWaveAtMs: number | undefined }> {
    const runner = this.runners.get(id);
    if (runner && runner.job.instance === instance.name) return { job: runner.snapshot(), nextWaveAtMs: runner.nextWaveAtMs };
    const job = await this.d.store.getJob(instance.name, id);
    if (!job) throw notFound(id);
    return { job, nextWaveAtMs: undefined };
  }

  async list(instance: ProvisioningInstance, limit = 100): Promise<FleetJob[]> {
    const jobs = await this.d.store.listJobs(instance.name, limit);
    return jobs.map((j) => this.runners.get(j.id)?.snapshot() ?? j);
  }

  /** A job's devices in processing order (optionally of one state), after `afterSeq`. */
  async devices(instance: ProvisioningInstance, id: string, opts: { state?: FleetDevice['state']; afterSeq?: number; limit: number }): Promise<FleetDevice[]> {
    await this.get(instance, id);
    return this.d.store.listDevices(id, opts);
  }

  async pause(instance: ProvisioningInstance, id: string): Promise<FleetJob> {
    return (await this.runnerOf(instance, id, 'pause')).pause('operator');
  }

  async resume(instance: ProvisioningInstance, id: string): Promise<FleetJob> {
    return (await this.runnerOf(instance, id, 'resume')).resume();
  }

  async cancel(instance: ProvisioningInstance, id: string): Promise<FleetJob> {
    return (await this.runnerOf(instance, id, 'cancel')).cancel();
  }

  /** Picks up stored jobs that are running, paused (devices may be in flight) or not started. */
  async resumeStored(): Promise<number> {
    const jobs = await this.d.store.listJobsInStates(['pending', 'running', 'paused']);
    for (const job of jobs) {
      if (this.runners.has(job.id)) continue;
      const runner = this.runnerFor(job);
      await runner.start();
      if (job.state !== 'paused') this.d.logger.info({ job: job.id }, 'fleet job resumed');
    }
    return jobs.length;
  }

  /** Stops every runner without changing the stored jobs (they resume at the next start). */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.runners.values()];
    this.runners.clear();
    await Promise.allSettled(all.map((r) => r.stop()));
  }

  // ---------------------------------------------------------------- internals

  private runnerFor(job: FleetJob): JobRunner {
    if (this.closed) throw new HomingError('ServiceUnavailable', 'The server is stopping.');
    const runner = new JobRunner(job, {
      store: this.d.store,
      provisioning: this.d.provisioning,
      hubs: this.d.hubs,
      clock: this.d.clock,
      logger: this.d.logger,
      pollIntervalMs: this.d.pollIntervalMs ?? 250,
      invokeConcurrency: this.d.invokeConcurrency ?? 200,
      ...(this.d.retryGraceMs === undefined ? {} : { retryGraceMs: this.d.retryGraceMs }),
      onIdle: (r) => {
        if (this.runners.get(r.job.id) === r) this.runners.delete(r.job.id);
      },
    });
    this.runners.set(job.id, runner);
    return runner;
  }

  /** The live runner of a job, or one made for a stored job that is not terminal (a paused job after a restart). */
  private async runnerOf(instance: ProvisioningInstance, id: string, action: string): Promise<JobRunner> {
    const live = this.runners.get(id);
    if (live && live.job.instance === instance.name) return live;
    const job = await this.d.store.getJob(instance.name, id);
    if (!job) throw notFound(id);
    if (TERMINAL_STATES.includes(job.state)) throw stateConflict(job, action);
    const runner = this.runnerFor(job);
    await runner.start();
    return runner;
  }

  /** The assigned registration records a selection names, in registration id order, and how many were skipped. */
  private async select(instance: ProvisioningInstance, sel: FleetSelection): Promise<{ records: Assigned[]; skipped: number }> {
    const found: RegistrationRecord[] = [];
    switch (sel.kind) {
      case 'enrollmentGroup': {
        const group = await this.d.provisioning.getEnrollmentGroup(instance.name, sel.enrollmentGroupId);
        if (!group) throw new HomingError('EnrollmentNotFound', `Enrollment group ${sel.enrollmentGroupId} does not exist.`);
        let after: string | undefined;
        do {
          const page = await this.d.provisioning.listGroupRegistrations(instance.name, sel.enrollmentGroupId, { limit: 1000, ...(after === undefined ? {} : { after }) });
          found.push(...page.items);
          after = page.next;
        } while (after !== undefined);
        break;
      }
      case 'enrollment': {
        const e = await this.d.provisioning.getIndividualEnrollment(instance.name, sel.registrationId);
        if (!e) throw new HomingError('EnrollmentNotFound', `Individual enrollment ${sel.registrationId} does not exist.`);
        const r = await this.d.provisioning.getRegistration(instance.name, sel.registrationId);
        if (r && r.enrollment.kind === 'individual') found.push(r);
        else return { records: [], skipped: 1 };
        break;
      }
      case 'hub': {
        const hub = sel.hub.toLowerCase();
        if (!instance.linkedHubs.some((h) => h.name.toLowerCase() === hub)) throw new HomingError('NotFound', `IoT hub ${sel.hub} is not linked to this provisioning service.`);
        await this.scan(instance, (r) => r.assignedHub?.toLowerCase() === hub && r.status === 'assigned', found);
        break;
      }
      case 'pattern': {
        const match = globMatcher(sel.pattern);
        await this.scan(instance, (r) => match(r.registrationId), found);
        break;
      }
      case 'query': {
        const hits = await this.d.hubs.query(sel.query);
        const keys = new Set(hits.map((h) => `${h.hub.toLowerCase()}\u0000${h.deviceId}`));
        if (keys.size > 0) await this.scan(instance, (r) => r.assignedHub !== undefined && r.deviceId !== undefined && keys.has(`${r.assignedHub.toLowerCase()}\u0000${r.deviceId}`), found);
        break;
      }
    }
    const records = found.filter(isAssigned);
    return { records, skipped: found.length - records.length };
  }

  private async scan(instance: ProvisioningInstance, keep: (r: RegistrationRecord) => boolean, into: RegistrationRecord[]): Promise<void> {
    let after: string | undefined;
    do {
      const page = await this.d.store.scanRegistrations(instance.name, after, 1000);
      for (const r of page.items) if (keep(r)) into.push(r);
      after = page.next;
    } while (after !== undefined);
  }

  private async plan(instance: ProvisioningInstance, selection: FleetSelection, records: readonly Assigned[], skipped: number): Promise<DryRunResult> {
    const groups = new Map<string, EnrollmentGroup | undefined>();
    const moves: PlannedMove[] = [];
    for (const r of records) {
      let enrollment: IndividualEnrollment | EnrollmentGroup | undefined;
      if (r.enrollment.kind === 'group') {
        const key = r.enrollment.enrollmentGroupId.toLowerCase();
        if (!groups.has(key)) groups.set(key, await this.d.provisioning.getEnrollmentGroup(instance.name, r.enrollment.enrollmentGroupId));
        enrollment = groups.get(key);
      } else {
        enrollment = await this.d.provisioning.getIndividualEnrollment(instance.name, r.enrollment.registrationId);
      }
      moves.push(planMove(r, enrollment, instance));
    }
    return { dryRun: true, selection, total: records.length, skipped, summary: summarizePlan(moves), devices: moves.slice(0, MAX_PLAN_LISTED), truncated: moves.length > MAX_PLAN_LISTED };
  }
}

function notFound(id: string): HomingError {
  return new HomingError('NotFound', `Fleet job ${id} does not exist.`);
}

/** A job as the admin API shows it (docs/api/fleet.md). */
export function fleetJobToJson(job: FleetJob, nowMs: number, nextWaveAtMs?: number): JsonObject {
  const c = job.counts;
  const done = c.moved + c.unchanged + c.failed;
  const started = job.startedDateTimeUtc ? Date.parse(job.startedDateTimeUtc) : undefined;
  const end = job.finishedDateTimeUtc ? Date.parse(job.finishedDateTimeUtc) : nowMs;
  const elapsedMs = started === undefined ? 0 : Math.max(0, end - started);
  // Remaining waves at the job's rate, from the next wave (or now); devices in flight finish within that time.
  let etaSeconds: number | null = null;
  if (job.state === 'running') {
    const waves = Math.ceil(c.pending / job.rate.waveSize);
    const untilNext = nextWaveAtMs === undefined ? 0 : Math.max(0, nextWaveAtMs - nowMs);
    etaSeconds = Math.ceil((waves === 0 ? 0 : untilNext + (waves - 1) * job.rate.waveIntervalMs) / 1000);
  }
  const out: JsonObject = {
    id: job.id,
    state: job.state,
    selection: selectionToJson(job.selection),
    methodName: job.method.name,
    methodTimeoutSeconds: job.method.responseTimeoutSeconds,
    connectTimeoutSeconds: job.method.connectTimeoutSeconds,
    rate: { perMinute: job.rate.perMinute, source: job.rate.source, waveSize: job.rate.waveSize, waveIntervalMs: job.rate.waveIntervalMs },
    failureThreshold: { ...(job.failureThreshold.percent === undefined ? {} : { percent: job.failureThreshold.percent }), ...(job.failureThreshold.count === undefined ? {} : { count: job.failureThreshold.count }) },
    deviceTimeoutSeconds: job.deviceTimeoutMs / 1000,
    progress: { total: c.total, done, pending: c.pending, inFlight: c.inFlight, moved: c.moved, unchanged: c.unchanged, failed: c.failed, skipped: job.skipped },
    observedPerMinute: elapsedMs > 0 ? Math.round((done * 60_000 * 10) / elapsedMs) / 10 : 0,
    etaSeconds,
    createdDateTimeUtc: job.createdDateTimeUtc,
    lastUpdatedDateTimeUtc: job.lastUpdatedDateTimeUtc,
  };
  if (job.startedDateTimeUtc) out.startedDateTimeUtc = job.startedDateTimeUtc;
  if (job.finishedDateTimeUtc) out.finishedDateTimeUtc = job.finishedDateTimeUtc;
  if (job.pausedReason) out.pausedReason = job.pausedReason;
  if (job.error) out.error = job.error;
  return out;
}

export function fleetDeviceToJson(d: FleetDevice): JsonObject {
  const out: JsonObject = { registrationId: d.registrationId, deviceId: d.deviceId, state: d.state, fromHub: d.fromHub };
  if (d.toHub !== undefined) out.toHub = d.toHub;
  if (d.substatus !== undefined) out.substatus = d.substatus;
  if (d.error !== undefined) out.error = d.error;
  if (d.invokedMs !== undefined) out.invokedDateTimeUtc = isoTime(d.invokedMs);
  if (d.finishedMs !== undefined) out.finishedDateTimeUtc = isoTime(d.finishedMs);
  return out;
}

export function dryRunToJson(r: DryRunResult): JsonObject {
  return {
    dryRun: true,
    selection: selectionToJson(r.selection),
    total: r.total,
    skipped: r.skipped,
    summary: r.summary,
    devices: r.devices.map((m) => ({ ...m }) as JsonObject),
    truncated: r.truncated,
  };
}

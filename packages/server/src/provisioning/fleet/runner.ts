import type { Clock } from '../../core/clock.ts';
import { isoTime } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import type { Logger } from '../../observability/logger.ts';
import type { FleetJobStore } from '../../store/fleet-ports.ts';
import type { ProvisioningReadStore } from '../../store/provisioning-ports.ts';
import type { RegistrationRecord } from '../model.ts';
import type { FleetHubs } from './hubs.ts';
import { TERMINAL_STATES, type FleetDevice, type FleetJob } from './model.ts';
import { thresholdExceeded } from './schedule.ts';

export interface RunnerDeps {
  store: FleetJobStore;
  provisioning: Pick<ProvisioningReadStore, 'getRegistration'>;
  hubs: FleetHubs;
  clock: Clock;
  logger: Logger;
  /** How often in-flight registrations are looked at, ms (default 250). */
  pollIntervalMs: number;
  /** Method invocations running at once within a wave (default 200). */
  invokeConcurrency: number;
  /** Watch time before a failed call is retried, ms (default RETRY_GRACE_MS). */
  retryGraceMs?: number;
  /** Called when the runner has nothing left to do (terminal state, nothing in flight). */
  onIdle: (runner: JobRunner) => void;
}

const FINAL_STATUSES = new Set(['assigned', 'failed', 'disabled']);
/** Method attempts per device (see JobRunner.call). */
export const MAX_ATTEMPTS = 3;
/** How long a device whose call failed is watched before the method is invoked again, ms. */
export const RETRY_GRACE_MS = 3000;

function describe(e: unknown): string {
  if (e instanceof HomingError) {
    if (e.errorName === 'DeviceNotOnline') return 'device offline (DeviceNotOnline)';
    if (e.errorName === 'GatewayTimeout') return 'the device did not answer the method in time (GatewayTimeout)';
    if (e.errorName === 'DeviceNotFound') return 'the device is not on its hub (DeviceNotFound)';
    return `${e.message} (${e.errorName})`;
  }
  return e instanceof Error ? e.message : String(e);
}

/** Runs tasks with at most `limit` at once. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  });
  await Promise.all(workers);
}

/**
 * Drives one fleet job in this process (docs/adr/014-fleet-reprovisioning.md):
 * - every `waveIntervalMs`, takes the next `waveSize` pending devices (in `seq` order), reads each registration
 *   record (its etag is the "before" marker), and invokes the reprovision method on the device's current hub;
 * - watches the devices that answered: a registration record with another etag and a final status ends the device
 *   (`assigned` on another hub or device id → moved, same → unchanged; `failed`/`disabled` → failed); no such record
 *   within `deviceTimeoutMs` → failed;
 * - after each look, stores the devices that changed and the job's counts, pauses the job when the failure
 *   threshold is passed, and completes it when nothing is pending or in flight.
 * The runner is the only writer of its job while it lives; pause/resume/cancel go through it.
 */
export class JobRunner {
  job: FleetJob;
  private readonly d: RunnerDeps;
  private readonly inFlight = new Map<number, FleetDevice>();
  private readonly dirty = new Map<number, FleetDevice>();
  /** Devices whose call failed: when to invoke again (if their record has not changed), the attempt, the error. */
  private readonly retries = new Map<number, { atMs: number; attempt: number; error: string }>();
  private calling = 0;
  private cursor = -1;
  private waveTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private nextWaveAt = 0;
  private wavesRunning = 0;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  /** Serializes writes of the job document. */
  private saving: Promise<void> = Promise.resolve();

  constructor(job: FleetJob, deps: RunnerDeps) {
    this.job = job;
    this.d = deps;
  }

  /**
   * Loads progress from the store (a restart resumes here), then runs waves if the job is running; a job that was
   * pending starts its first wave after `firstWaveDelayMs`.
   */
  async start(firstWaveDelayMs = 0): Promise<void> {
    const counts = await this.d.store.countDevices(this.job.id);
    this.job.counts = { ...this.job.counts, pending: counts.pending, inFlight: counts.invoked, moved: counts.moved, unchanged: counts.unchanged, failed: counts.failed };
    // Devices that answered the method before a restart are watched again, with a fresh timeout.
    let after: number | undefined;
    for (;;) {
      const page = await this.d.store.listDevices(this.job.id, { state: 'invoked', limit: 1000, ...(after === undefined ? {} : { afterSeq: after }) });
      for (const dev of page) this.inFlight.set(dev.seq, { ...dev, invokedMs: this.d.clock.now() });
      if (page.length < 1000) break;
      after = page[page.length - 1]?.seq;
    }
    const fresh = this.job.state === 'pending';
    if (fresh) await this.transition({ state: 'running', startedDateTimeUtc: this.job.startedDateTimeUtc ?? isoTime(this.d.clock.now() + firstWaveDelayMs) });
    if (this.job.state === 'running') this.scheduleWave(fresh ? firstWaveDelayMs : 0);
    this.schedulePoll();
    this.checkDone();
  }

  /**
   * Stops timers without changing the job (server shutdown); the stored job resumes on the next start. Outcomes that
   * arrive from now on are not recorded: a method cut short by the hubs closing is not the device's failure, so the
   * device stays `pending` (invoked again after the restart) or `invoked` (watched again).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.waveTimer) clearTimeout(this.waveTimer);
    if (this.pollTimer) clearTimeout(this.pollTimer);
    await this.ticking;
    // What was recorded before the stop is stored (with the counts), so a restart does not redo it.
    const changed = [...this.dirty.values()];
    this.dirty.clear();
    try {
      if (changed.length > 0) await this.d.store.updateDevices(changed);
      await this.transition({});
    } catch (err) {
      this.d.logger.warn({ err, job: this.job.id }, 'storing fleet job progress at stop failed');
    }
    await this.saving.catch(() => undefined);
  }

  get idle(): boolean {
    return TERMINAL_STATES.includes(this.job.state) && this.inFlight.size === 0 && this.wavesRunning === 0 && this.calling === 0;
  }

  async pause(reason: 'operator' | 'failureThreshold'): Promise<FleetJob> {
    if (this.job.state !== 'running' && this.job.state !== 'pending') throw stateConflict(this.job, 'pause');
    if (this.waveTimer) clearTimeout(this.waveTimer);
    this.waveTimer = undefined;
    await this.transition({ state: 'paused', pausedReason: reason });
    return this.snapshot();
  }

  async resume(): Promise<FleetJob> {
    if (this.job.state !== 'paused') throw stateConflict(this.job, 'resume');
    const c = this.job.counts;
    delete this.job.pausedReason;
    await this.transition({ state: 'running', baseline: { processed: c.moved + c.unchanged + c.failed, failed: c.failed } });
    this.scheduleWave(0);
    this.schedulePoll();
    this.checkDone();
    return this.snapshot();
  }

  async cancel(): Promise<FleetJob> {
    if (TERMINAL_STATES.includes(this.job.state)) throw stateConflict(this.job, 'cancel');
    if (this.waveTimer) clearTimeout(this.waveTimer);
    this.waveTimer = undefined;
    await this.transition({ state: 'cancelled', finishedDateTimeUtc: isoTime(this.d.clock.now()) });
    this.checkIdle();
    return this.snapshot();
  }

  snapshot(): FleetJob {
    return structuredClone(this.job);
  }

  /** When the next wave starts (ms since the epoch), while running. */
  get nextWaveAtMs(): number | undefined {
    return this.job.state === 'running' && this.waveTimer !== undefined ? this.nextWaveAt : undefined;
  }

  // ---------------------------------------------------------------- waves

  private scheduleWave(delayMs: number): void {
    if (this.stopped) return;
    if (this.waveTimer) clearTimeout(this.waveTimer);
    this.nextWaveAt = this.d.clock.now() + delayMs;
    this.waveTimer = setTimeout(() => this.runWave(), Math.max(0, delayMs));
  }

  private runWave(): void {
    this.waveTimer = undefined;
    if (this.stopped || this.job.state !== 'running') return;
    const started = this.nextWaveAt;
    // The next wave is anchored on this one's planned start, so timer lateness does not add up.
    const interval = this.job.rate.waveIntervalMs;
    this.wavesRunning++;
    void this.wave()
      .then((taken) => {
        if (this.stopped || this.job.state !== 'running') return;
        if (taken > 0 && this.job.counts.pending > 0) {
          this.nextWaveAt = started + interval;
          const delay = Math.max(0, this.nextWaveAt - this.d.clock.now());
          this.waveTimer = setTimeout(() => this.runWave(), delay);
        }
      })
      .catch((err: unknown) => {
        this.d.logger.error({ err, job: this.job.id }, 'fleet job wave failed');
        void this.fail(`a wave failed: ${describe(err)}`);
      })
      .finally(() => {
        this.wavesRunning--;
        this.schedulePoll();
        this.checkDone();
      });
  }

  /** Takes one wave of pending devices and invokes them. Returns how many were taken. */
  private async wave(): Promise<number> {
    const devices = await this.d.store.listDevices(this.job.id, { state: 'pending', afterSeq: this.cursor, limit: this.job.rate.waveSize });
    if (devices.length === 0) {
      this.job.counts.pending = 0;
      return 0;
    }
    this.cursor = devices[devices.length - 1]?.seq ?? this.cursor;
    this.job.counts.pending = Math.max(0, this.job.counts.pending - devices.length);
    this.job.counts.inFlight += devices.length;
    await pool(devices, this.d.invokeConcurrency, (dev) => this.invoke(dev));
    await this.flush();
    return devices.length;
  }

  private async invoke(dev: FleetDevice): Promise<void> {
    let record: RegistrationRecord | undefined;
    try {
      record = await this.d.provisioning.getRegistration(this.job.instance, dev.registrationId);
    } catch (err) {
      this.finish(dev, { state: 'failed', error: `reading the registration record failed: ${describe(err)}` });
      return;
    }
    if (record === undefined) return this.finish(dev, { state: 'failed', error: 'the registration record no longer exists' });
    if (record.status !== 'assigned' || !record.assignedHub || !record.deviceId) {
      return this.finish(dev, { state: 'failed', error: `the registration is ${record.status}, not assigned` });
    }
    dev.fromHub = record.assignedHub;
    dev.deviceId = record.deviceId;
    dev.beforeEtag = record.etag;
    dev.invokedMs = this.d.clock.now();
    // Watched from now on: the device may re-register before the method's answer comes back.
    this.inFlight.set(dev.seq, dev);
    await this.call(dev, 1);
  }

  /**
   * Invokes the method (attempt n). A device that was not reachable or dropped the call (DeviceNotOnline,
   * GatewayTimeout) may still have received it and be re-registering (a device that is reconnecting, or that
   * closes its connection to re-register before its answer is out): it stays watched, and if its record has not
   * changed after RETRY_GRACE_MS the method is invoked again, up to MAX_ATTEMPTS. The before-etag is kept, so a
   * registration caused by an earlier attempt still ends the device.
   */
  private async call(dev: FleetDevice, attempt: number): Promise<void> {
    try {
      const answer = await this.d.hubs.invoke(dev.fromHub, dev.deviceId, this.job.method.name, {}, { responseSeconds: this.job.method.responseTimeoutSeconds, connectSeconds: this.job.method.connectTimeoutSeconds ?? 0 });
      if (answer.status < 200 || answer.status > 299) {
        if (this.inFlight.has(dev.seq)) this.finish(dev, { state: 'failed', error: `the device answered the method with status ${answer.status}` });
        return;
      }
    } catch (err) {
      if (!this.inFlight.has(dev.seq)) return;
      const retryable = err instanceof HomingError && (err.errorName === 'DeviceNotOnline' || err.errorName === 'GatewayTimeout');
      if (retryable && attempt < MAX_ATTEMPTS && !this.stopped) {
        this.retries.set(dev.seq, { atMs: this.d.clock.now() + (this.d.retryGraceMs ?? RETRY_GRACE_MS), attempt: attempt + 1, error: describe(err) });
        return;
      }
      this.finish(dev, { state: 'failed', error: describe(err) });
      return;
    }
    if (!this.stopped && this.inFlight.has(dev.seq) && dev.state === 'pending') {
      dev.state = 'invoked';
      dev.invokedMs = this.d.clock.now();
      this.dirty.set(dev.seq, dev);
    }
  }

  private finish(dev: FleetDevice, outcome: Pick<FleetDevice, 'state'> & Partial<FleetDevice>): void {
    // Every device that gets here was counted in flight (taken by a wave, or `invoked` when the runner started).
    if (this.stopped || (dev.state !== 'pending' && dev.state !== 'invoked')) return;
    this.inFlight.delete(dev.seq);
    this.retries.delete(dev.seq);
    Object.assign(dev, outcome, { finishedMs: this.d.clock.now() });
    const c = this.job.counts;
    c.inFlight = Math.max(0, c.inFlight - 1);
    if (outcome.state === 'moved') c.moved++;
    else if (outcome.state === 'unchanged') c.unchanged++;
    else if (outcome.state === 'failed') c.failed++;
    this.dirty.set(dev.seq, dev);
  }

  // ---------------------------------------------------------------- watching

  private schedulePoll(): void {
    if (this.stopped || this.pollTimer !== undefined || this.inFlight.size === 0) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = undefined;
      this.ticking = this.tick()
        .catch((err: unknown) => this.d.logger.warn({ err, job: this.job.id }, 'fleet job: watching registrations failed'))
        .finally(() => {
          this.ticking = undefined;
          this.schedulePoll();
          this.checkDone();
        });
    }, this.d.pollIntervalMs);
  }

  private async tick(): Promise<void> {
    const now = this.d.clock.now();
    const watched = [...this.inFlight.values()];
    await pool(watched, 50, async (dev) => {
      const rec = await this.d.provisioning.getRegistration(this.job.instance, dev.registrationId);
      if (!this.inFlight.has(dev.seq)) return;
      if (rec === undefined) return this.finish(dev, { state: 'failed', error: 'the registration record was deleted' });
      if (rec.etag !== dev.beforeEtag && FINAL_STATUSES.has(rec.status)) {
        if (rec.status === 'assigned' && rec.assignedHub) {
          const moved = rec.assignedHub.toLowerCase() !== dev.fromHub.toLowerCase() || rec.deviceId !== dev.deviceId;
          return this.finish(dev, { state: moved ? 'moved' : 'unchanged', toHub: rec.assignedHub, ...(rec.substatus ? { substatus: rec.substatus } : {}) });
        }
        return this.finish(dev, { state: 'failed', error: `the registration ended ${rec.status}${rec.errorMessage ? `: ${rec.errorMessage}` : ''}` });
      }
      const retry = this.retries.get(dev.seq);
      if (retry !== undefined) {
        if (now < retry.atMs) return;
        this.retries.delete(dev.seq);
        if (this.job.state === 'cancelled' || now - (dev.invokedMs ?? now) > this.job.deviceTimeoutMs) return this.finish(dev, { state: 'failed', error: retry.error });
        this.calling++;
        void this.call(dev, retry.attempt).finally(() => {
          this.calling--;
          this.checkDone();
        });
        return;
      }
      if (now - (dev.invokedMs ?? now) > this.job.deviceTimeoutMs) {
        this.finish(dev, { state: 'failed', error: `the registration did not complete within ${Math.round(this.job.deviceTimeoutMs / 1000)} s` });
      }
    });
    await this.flush();
  }

  /** Stores changed devices and the counts; pauses on the failure threshold. */
  private async flush(): Promise<void> {
    if (this.stopped) return;
    const changed = [...this.dirty.values()];
    this.dirty.clear();
    if (changed.length > 0) await this.d.store.updateDevices(changed);
    if (this.job.state === 'running' && thresholdExceeded(this.job.failureThreshold, this.job.counts, this.job.baseline)) {
      this.d.logger.warn({ job: this.job.id, counts: this.job.counts }, 'fleet job paused: failures passed the threshold');
      await this.pause('failureThreshold');
      return;
    }
    if (changed.length > 0) await this.transition({});
  }

  private checkDone(): void {
    if (this.stopped) return;
    if (this.job.state === 'running' && this.job.counts.pending === 0 && this.inFlight.size === 0 && this.wavesRunning === 0 && this.calling === 0 && this.dirty.size === 0) {
      void this.transition({ state: 'completed', finishedDateTimeUtc: isoTime(this.d.clock.now()) }).then(() => this.checkIdle());
      return;
    }
    this.checkIdle();
  }

  /**
   * Hands the runner back once the job is terminal and nothing runs, after its queued writes are stored: until then
   * readers must keep seeing this runner's state, not the stored row that the write is still bringing up to date.
   */
  private checkIdle(): void {
    if (!this.idle || this.stopped) return;
    void this.saving.then(() => {
      if (this.idle && !this.stopped) this.d.onIdle(this);
    });
  }

  private async fail(error: string): Promise<void> {
    if (TERMINAL_STATES.includes(this.job.state)) return;
    if (this.waveTimer) clearTimeout(this.waveTimer);
    this.waveTimer = undefined;
    await this.transition({ state: 'failed', error, finishedDateTimeUtc: isoTime(this.d.clock.now()) });
  }

  /** Applies a change to the job and stores it (writes are serialized; the version is the compare-and-set key). */
  private transition(change: Partial<FleetJob>): Promise<void> {
    Object.assign(this.job, change);
    this.job.lastUpdatedDateTimeUtc = isoTime(this.d.clock.now());
    const write = this.saving.then(async () => {
      const expected = this.job.version;
      const next = { ...this.job, version: expected + 1 };
      if (await this.d.store.updateJob(next, expected)) {
        this.job.version = expected + 1;
        return;
      }
      // Someone else wrote the job (another node, or an operator's direct store edit): its state wins.
      const theirs = await this.d.store.getJob(this.job.instance, this.job.id);
      if (!theirs) return;
      this.d.logger.warn({ job: this.job.id, state: theirs.state }, 'fleet job changed elsewhere; following the stored state');
      const merged = { ...this.job, state: theirs.state, version: theirs.version + 1 };
      if (await this.d.store.updateJob(merged, theirs.version)) this.job = merged;
    });
    this.saving = write.catch((err: unknown) => this.d.logger.warn({ err, job: this.job.id }, 'storing fleet job progress failed'));
    return write;
  }
}

export function stateConflict(job: FleetJob, action: string): HomingError {
  return new HomingError('JobStateConflict', `Fleet job ${job.id} is ${job.state}; it cannot be ${action === 'pause' ? 'paused' : action === 'resume' ? 'resumed' : 'cancelled'}.`);
}

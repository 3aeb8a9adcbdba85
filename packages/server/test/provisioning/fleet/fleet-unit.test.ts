import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { sql } from 'kysely';
import { systemClock } from '../../../src/core/clock.ts';
import { HomingError } from '../../../src/core/errors.ts';
import type { JsonValue } from '../../../src/core/json.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { FleetService } from '../../../src/provisioning/fleet/fleet-service.ts';
import type { FleetHubs } from '../../../src/provisioning/fleet/hubs.ts';
import type { FleetJob } from '../../../src/provisioning/fleet/model.ts';
import { planMove, summarizePlan } from '../../../src/provisioning/fleet/plan.ts';
import { chooseRate, globMatcher, maxInWindow, parseFailureThreshold, thresholdExceeded, waveSchedule, waveStartMs } from '../../../src/provisioning/fleet/schedule.ts';
import type { EnrollmentGroup, LinkedHub, ProvisioningInstance, RegistrationRecord } from '../../../src/provisioning/model.ts';
import { KyselyFleetJobStore } from '../../../src/store/kysely/fleet-job-store.ts';
import { openStore, type OpenedStore } from '../../../src/store/open.ts';
import { realIds } from '../../helpers/ids.ts';
import { enrollmentGroupFixture } from '../../helpers/model-fixtures.ts';

const hub = (name: string, o: Partial<LinkedHub> = {}): LinkedHub => ({ name, connectionString: '', location: 'local', allocationWeight: 1, applyAllocationPolicy: true, ...o });

describe('fleet wave schedule', () => {
  it('sizes waves from the rate: 1000/min → 100 every 6.2 s (2 s left for a wave to register); odd rates round the wave count down', () => {
    assert.deepEqual(waveSchedule(1000, 'quota'), { perMinute: 1000, source: 'quota', waveSize: 100, waveIntervalMs: 6200 });
    assert.deepEqual(waveSchedule(1234, 'request'), { perMinute: 1234, source: 'request', waveSize: 123, waveIntervalMs: 6200 });
    assert.equal(waveSchedule(7, 'request').waveSize, 1);
    assert.equal(waveSchedule(1, 'request').waveIntervalMs, 62_000);
    for (const bad of [0, -5, 1.5, Number.NaN, 2_000_000]) assert.throws(() => waveSchedule(bad, 'request'), /rate/);
  });

  it('never starts more devices in any minute than the rate, for any rate and fleet size', () => {
    for (const rate of [1, 2, 7, 59, 60, 61, 99, 100, 101, 999, 1000, 1001, 1234, 5000, 9999, 60_001]) {
      const r = waveSchedule(rate, 'request');
      for (const total of [1, r.waveSize, 10_000, 3 * rate + 17]) {
        const most = maxInWindow(r, total);
        assert.ok(most <= rate, `rate ${rate}, total ${total}: ${most} in a minute`);
      }
      // And the schedule does not waste the quota: ≥ 90 % of it over a long run.
      const waves = Math.ceil((10 * rate) / r.waveSize);
      const lastStart = waveStartMs(r, waves - 1);
      assert.ok((waves * r.waveSize * 60_000) / (lastStart + r.waveIntervalMs) >= 0.9 * rate, `rate ${rate} uses its quota`);
    }
  });

  it('defaults to the registration quota; a rate above the quota or no rate at all is refused', () => {
    assert.equal(chooseRate(undefined, 600).source, 'quota');
    assert.equal(chooseRate(100, 600).perMinute, 100);
    assert.throws(() => chooseRate(700, 600), (e: unknown) => e instanceof HomingError && e.errorName === 'ArgumentInvalid' && /quota of 600/.test(e.message));
    assert.throws(() => chooseRate(undefined, undefined), /no registration quota/);
  });

  it('failure thresholds: N % of processed devices (after a sample of 10) or more than N failures, counted since the last resume', () => {
    const counts = (moved: number, failed: number, total = 100) => ({ total, pending: 0, inFlight: 0, moved, unchanged: 0, failed });
    const zero = { processed: 0, failed: 0 };
    assert.equal(thresholdExceeded({ percent: 10 }, counts(0, 1), zero), false, 'one early failure is not 100 %');
    assert.equal(thresholdExceeded({ percent: 10 }, counts(8, 2), zero), true, '20 % of 10');
    assert.equal(thresholdExceeded({ percent: 10 }, counts(9, 1), zero), false, '10 % is not past 10 %');
    assert.equal(thresholdExceeded({ percent: 10 }, counts(1, 1, 2), zero), true, 'a job smaller than the sample');
    assert.equal(thresholdExceeded({ count: 3 }, counts(0, 3), zero), false);
    assert.equal(thresholdExceeded({ count: 3 }, counts(0, 4), zero), true);
    assert.equal(thresholdExceeded({ percent: 10 }, counts(30, 12), { processed: 20, failed: 10 }), false, 'after a resume: 2 of 22');
    assert.deepEqual(parseFailureThreshold('10%'), { percent: 10 });
    assert.deepEqual(parseFailureThreshold('25'), { count: 25 });
    assert.deepEqual(parseFailureThreshold({ percent: 5, count: 2 }), { percent: 5, count: 2 });
    for (const bad of ['abc', '150%', -1, 1.5, {}, null]) assert.throws(() => parseFailureThreshold(bad), /failureThreshold/);
  });

  it('patterns are case-insensitive globs', () => {
    const m = globMatcher('sn-*-a?');
    assert.equal(m('SN-123-ab'), true);
    assert.equal(m('sn--a1'), true);
    assert.equal(m('sn-1-abc'), false);
    assert.equal(globMatcher('a.b')('axb'), false);
  });
});

describe('fleet dry-run plan', () => {
  const instance: ProvisioningInstance = {
    name: 'i',
    idScope: '0ne1',
    serviceHostNames: ['i.test'],
    allocationPolicy: 'hashed',
    policies: [],
    linkedHubs: [hub('hub-a'), hub('hub-b'), hub('hub-c')],
    etag: 'e',
  };
  const group = enrollmentGroupFixture;
  const rec = (id: string, assignedHub: string) =>
    ({ registrationId: id, deviceId: id, assignedHub, status: 'assigned', etag: 'x', createdDateTimeUtc: '', lastUpdatedDateTimeUtc: '', enrollment: { kind: 'group', enrollmentGroupId: 'g' }, attestationType: 'symmetricKey' }) as RegistrationRecord & { assignedHub: string; deviceId: string };

  it('predicts hashed and static allocation, and says what it cannot predict', () => {
    const toC = group({ allocationPolicy: 'static', iotHubs: ['hub-c'] });
    assert.deepEqual(planMove(rec('d1', 'hub-a'), toC, instance), { registrationId: 'd1', deviceId: 'd1', fromHub: 'hub-a', toHub: 'hub-c', outcome: 'move' });
    assert.equal(planMove(rec('d1', 'hub-c'), toC, instance).outcome, 'stay');
    // Hashed over a and b only: every device of hub-c moves, devices on a or b stay where hashing puts them.
    const ab = group({ iotHubs: ['hub-a', 'hub-b'] });
    const plans = Array.from({ length: 200 }, (_, i) => planMove(rec(`dev-${i}`, 'hub-c'), ab, instance));
    assert.ok(plans.every((p) => p.outcome === 'move' && (p.toHub === 'hub-a' || p.toHub === 'hub-b')));
    const s = summarizePlan(plans);
    assert.equal(s.move, 200);
    assert.ok((s.byHub['hub-a'] ?? 0) > 60 && (s.byHub['hub-b'] ?? 0) > 60, JSON.stringify(s.byHub));
    const again = planMove(rec('dev-1', plans[1]?.toHub ?? ''), ab, instance);
    assert.equal(again.outcome, 'stay');
    assert.equal(planMove(rec('d1', 'hub-a'), group({ allocationPolicy: 'geoLatency' }), instance).outcome, 'unknown');
    assert.equal(planMove(rec('d1', 'hub-a'), group({ allocationPolicy: 'custom' }), instance).outcome, 'unknown');
    const never = planMove(rec('d1', 'hub-a'), group({ allocationPolicy: 'static', iotHubs: ['hub-c'], reprovisionPolicy: { updateHubAssignment: false, migrateDeviceData: false } }), instance);
    assert.equal(never.outcome, 'stay');
    assert.equal(planMove(rec('d1', 'hub-a'), undefined, instance).outcome, 'fail');
    assert.equal(planMove(rec('d1', 'hub-a'), group({ iotHubs: ['hub-z'] }), instance).outcome, 'fail');
  });
});

/**
 * Devices simulated at the FleetHubs port: the method answer is followed by a "re-registration" that writes a new
 * registration record (new etag), on the target hub the test chose. Offline devices throw DeviceNotOnline.
 */
class ScriptedHubs extends EventEmitter implements FleetHubs {
  readonly invocations: { deviceId: string; atMs: number }[] = [];
  offline = new Set<string>();
  silent = new Set<string>();
  /** Re-register, but the call fails (the device closed its connection before answering). */
  dropsCall = new Set<string>();
  /** Offline for the first call only. */
  lateOnline = new Set<string>();
  target: (deviceId: string, from: string) => string = (_d, from) => from;
  private seq = 0;
  constructor(
    private readonly store: OpenedStore,
    private readonly instance: string,
  ) {
    super();
  }

  async invoke(hubName: string, deviceId: string): Promise<{ status: number; payload: JsonValue }> {
    this.invocations.push({ deviceId, atMs: Date.now() });
    this.emit('invoked', deviceId);
    if (this.offline.has(deviceId)) throw new HomingError('DeviceNotOnline', `Device ${deviceId} is not connected.`);
    if (this.lateOnline.delete(deviceId)) throw new HomingError('DeviceNotOnline', `Device ${deviceId} is not connected yet.`);
    if (!this.silent.has(deviceId)) {
      setImmediate(() => {
        void (async () => {
          const before = await this.store.provisioning.getRegistration(this.instance, deviceId);
          if (!before) return;
          const to = this.target(deviceId, hubName);
          const rec: RegistrationRecord = { ...before, assignedHub: to, etag: `etag-${++this.seq}`, lastUpdatedDateTimeUtc: new Date().toISOString(), substatus: to === hubName ? 'initialAssignment' : 'deviceDataMigrated' };
          await this.store.provisioning.putRegistration(this.instance, rec, { kind: 'any' });
        })();
      });
    }
    if (this.dropsCall.has(deviceId)) throw new HomingError('DeviceNotOnline', `Device ${deviceId} disconnected before answering.`);
    return { status: 202, payload: { status: 'reprovisioning' } };
  }

  query(): Promise<{ hub: string; deviceId: string }[]> {
    return Promise.resolve([]);
  }
}

const pgUrl = process.env.HOMING_TEST_DATABASE_URL || process.env.DATABASE_URL || undefined;

for (const dialect of ['sqlite', 'postgres'] as const) describe(`fleet jobs on ${dialect} (service and runner on a real store, devices simulated at the hub port)`, { skip: dialect === 'postgres' && !pgUrl ? 'PostgreSQL not configured: set HOMING_TEST_DATABASE_URL' : false }, () => {
  let store: OpenedStore;
  let instance: ProvisioningInstance;
  const NAME = 'fleet-unit';
  const schema = `t_fleet_${realIds.bytes(5).toString('hex')}`;

  before(async () => {
    store = dialect === 'sqlite' ? await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' }) : await openStore({ dialect: 'postgres', postgresUrl: pgUrl ?? '', postgresSchema: schema, poolSize: 4 });
    instance = { name: NAME, idScope: '0neFLEET', serviceHostNames: ['fleet.test'], allocationPolicy: 'hashed', policies: [], linkedHubs: [hub('hub-a'), hub('hub-b'), hub('hub-c')], etag: 'e1' };
    assert.equal(await store.provisioning.createInstance(instance), 'ok');
  });
  after(async () => {
    if (dialect === 'postgres') await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(store.db).catch(() => undefined);
    await store?.close();
  });

  async function seed(group: string, n: number, hubName = 'hub-a'): Promise<void> {
    const now = new Date().toISOString();
    for (let i = 0; i < n; i++) {
      const id = `${group}-dev-${String(i).padStart(3, '0')}`;
      await store.provisioning.putRegistration(
        NAME,
        { registrationId: id, deviceId: id, assignedHub: hubName, status: 'assigned', substatus: 'initialAssignment', etag: 'seed', createdDateTimeUtc: now, lastUpdatedDateTimeUtc: now, enrollment: { kind: 'group', enrollmentGroupId: group }, attestationType: 'symmetricKey' },
        { kind: 'any' },
      );
    }
    const g: EnrollmentGroup = {
      enrollmentGroupId: group,
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: 'a', secondaryKey: 'b' } },
      capabilities: { iotEdge: false },
      provisioningStatus: 'enabled',
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
      allocationPolicy: 'static',
      iotHubs: ['hub-c'],
      etag: 'e',
      createdDateTimeUtc: now,
      lastUpdatedDateTimeUtc: now,
    };
    assert.equal(await store.provisioning.createEnrollmentGroup(NAME, g), 'ok');
  }

  function service(hubs: FleetHubs, quota?: number): FleetService {
    return new FleetService({
      store: KyselyFleetJobStore.on(store.db),
      provisioning: store.provisioning,
      hubs,
      quotas: { effective: () => ({ registrationsPerMinute: quota, operationsPerMinute: undefined, pollsPer10Seconds: undefined, maxRegistrations: undefined }) },
      clock: systemClock,
      ids: realIds,
      logger: silentLogger(),
      pollIntervalMs: 20,
      targetWaveIntervalMs: 200,
      firstWaveDelayMs: 0,
      retryGraceMs: 50,
    });
  }

  async function until(fleet: FleetService, id: string, pred: (j: FleetJob) => boolean, what: string, ms = 20_000): Promise<FleetJob> {
    const deadline = Date.now() + ms;
    for (;;) {
      const { job } = await fleet.get(instance, id);
      if (pred(job)) return job;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(job.counts)} ${job.state}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('runs waves at the quota rate (never ahead of the schedule) and counts moved and unchanged devices', async () => {
    await seed('wave', 30);
    const hubs = new ScriptedHubs(store, NAME);
    hubs.target = (d, from) => (Number(d.slice(-3)) % 3 === 0 ? from : 'hub-c');
    const fleet = service(hubs, 600);
    try {
      const job = (await fleet.create(instance, { selection: { kind: 'enrollmentGroup', enrollmentGroupId: 'wave' } })) as FleetJob;
      assert.equal(job.rate.source, 'quota');
      assert.equal(job.rate.waveSize, 2);
      assert.equal(job.rate.waveIntervalMs, 62_000 / 300);
      const done = await until(fleet, job.id, (j) => j.state === 'completed', 'completion');
      assert.deepEqual({ ...done.counts }, { total: 30, pending: 0, inFlight: 0, moved: 20, unchanged: 10, failed: 0 });
      // The n-th invocation is never earlier than the planned start of its wave (wave 0 starts with the job).
      const t0 = Date.parse(done.startedDateTimeUtc ?? '');
      hubs.invocations.forEach((inv, n) => {
        assert.ok(inv.atMs >= t0 + Math.floor(n / 2) * 200 - 5, `invocation ${n} at +${inv.atMs - t0} ms is ahead of wave ${Math.floor(n / 2)}`);
      });
      const stored = await KyselyFleetJobStore.on(store.db).countDevices(job.id);
      assert.deepEqual(stored, { pending: 0, invoked: 0, moved: 20, unchanged: 10, failed: 0 });
      const devices = await fleet.devices(instance, job.id, { state: 'moved', limit: 100 });
      assert.ok(devices.every((d) => d.toHub === 'hub-c' && d.fromHub === 'hub-a' && d.substatus === 'deviceDataMigrated'));
    } finally {
      await fleet.close();
    }
  });

  it('pauses by itself when failures pass the threshold, and finishes after a resume', async () => {
    await seed('thr', 40);
    const hubs = new ScriptedHubs(store, NAME);
    for (let i = 0; i < 8; i++) hubs.offline.add(`thr-dev-${String(i).padStart(3, '0')}`);
    hubs.target = () => 'hub-c';
    const fleet = service(hubs);
    try {
      const job = (await fleet.create(instance, { selection: { kind: 'pattern', pattern: 'THR-*' }, rate: 600, failureThreshold: { percent: 20 } })) as FleetJob;
      const paused = await until(fleet, job.id, (j) => j.state === 'paused' && j.counts.inFlight === 0, 'the automatic pause');
      assert.equal(paused.pausedReason, 'failureThreshold');
      assert.ok(paused.counts.failed >= 3 && paused.counts.pending > 0, JSON.stringify(paused.counts));
      await assert.rejects(fleet.pause(instance, job.id), (e: unknown) => e instanceof HomingError && e.errorName === 'JobStateConflict');
      const failures = await fleet.devices(instance, job.id, { state: 'failed', limit: 100 });
      assert.match(failures[0]?.error ?? '', /offline/);
      await fleet.resume(instance, job.id);
      const done = await until(fleet, job.id, (j) => j.state === 'completed', 'completion after resume');
      assert.deepEqual({ ...done.counts }, { total: 40, pending: 0, inFlight: 0, moved: 32, unchanged: 0, failed: 8 });
      await assert.rejects(fleet.resume(instance, job.id), (e: unknown) => e instanceof HomingError && e.errorName === 'JobStateConflict');
    } finally {
      await fleet.close();
    }
  });

  it('a device that answers but never re-registers fails after the device timeout', async () => {
    await seed('slow', 3);
    const hubs = new ScriptedHubs(store, NAME);
    hubs.silent.add('slow-dev-001');
    const fleet = service(hubs);
    try {
      const job = (await fleet.create(instance, { selection: { kind: 'enrollmentGroup', enrollmentGroupId: 'slow' }, rate: 600, deviceTimeoutSeconds: 5, failureThreshold: { count: 5 } })) as FleetJob;
      const done = await until(fleet, job.id, (j) => j.state === 'completed', 'completion');
      assert.equal(done.counts.failed, 1);
      assert.equal(done.counts.unchanged, 2);
      const [failed] = await fleet.devices(instance, job.id, { state: 'failed', limit: 10 });
      assert.equal(failed?.registrationId, 'slow-dev-001');
      assert.match(failed?.error ?? '', /did not complete within 5 s/);
    } finally {
      await fleet.close();
    }
  });

  it('a dropped call is not a failure when the device re-registers; an unreachable device is called again', async () => {
    await seed('drop', 4);
    const hubs = new ScriptedHubs(store, NAME);
    hubs.target = () => 'hub-b';
    hubs.dropsCall.add('drop-dev-000');
    hubs.lateOnline.add('drop-dev-001');
    hubs.offline.add('drop-dev-002');
    const fleet = service(hubs);
    try {
      const job = (await fleet.create(instance, { selection: { kind: 'enrollmentGroup', enrollmentGroupId: 'drop' }, rate: 600, failureThreshold: { count: 3 } })) as FleetJob;
      const done = await until(fleet, job.id, (j) => j.state === 'completed', 'completion');
      assert.deepEqual({ moved: done.counts.moved, failed: done.counts.failed }, { moved: 3, failed: 1 });
      const calls = (id: string) => hubs.invocations.filter((i) => i.deviceId === id).length;
      assert.equal(calls('drop-dev-000'), 1, 'its registration ended the watch');
      assert.equal(calls('drop-dev-001'), 2, 'called again once');
      assert.equal(calls('drop-dev-002'), 3, 'three attempts, then failed');
      const [failed] = await fleet.devices(instance, job.id, { state: 'failed', limit: 10 });
      assert.equal(failed?.registrationId, 'drop-dev-002');
    } finally {
      await fleet.close();
    }
  });

  it('survives a restart: a new service on the same store resumes the job and finishes every device once', async () => {
    await seed('restart', 24);
    const hubs = new ScriptedHubs(store, NAME);
    hubs.target = () => 'hub-b';
    const first = service(hubs);
    const job = (await first.create(instance, { selection: { kind: 'enrollmentGroup', enrollmentGroupId: 'restart' }, rate: 600 })) as FleetJob;
    // Stop the process's runner after a few waves, mid-job.
    while (hubs.invocations.filter((i) => i.deviceId.startsWith('restart')).length < 6) await once(hubs, 'invoked');
    await first.close();
    const stopped = await KyselyFleetJobStore.on(store.db).getJob(NAME, job.id);
    assert.equal(stopped?.state, 'running');
    assert.ok((stopped?.counts.pending ?? 0) > 0, 'the job was interrupted mid-way');

    const second = service(hubs);
    try {
      assert.ok((await second.resumeStored()) >= 1);
      const done = await until(second, job.id, (j) => j.state === 'completed', 'completion after restart');
      assert.equal(done.counts.total, 24);
      assert.equal(done.counts.moved + done.counts.unchanged + done.counts.failed, 24);
      assert.equal(done.counts.failed, 0);
      const invoked = new Set(hubs.invocations.filter((i) => i.deviceId.startsWith('restart')).map((i) => i.deviceId));
      assert.equal(invoked.size, 24);
      const list = await second.list(instance);
      assert.ok(list.some((j) => j.id === job.id && j.state === 'completed'));
    } finally {
      await second.close();
    }
  });

  it('dry run: plans the selection without touching any device; bad selections are clear errors', async () => {
    await seed('dry', 5, 'hub-a');
    const hubs = new ScriptedHubs(store, NAME);
    const fleet = service(hubs);
    try {
      const plan = await fleet.create(instance, { selection: { kind: 'enrollmentGroup', enrollmentGroupId: 'dry' }, dryRun: true });
      assert.ok('dryRun' in plan);
      assert.equal(plan.total, 5);
      assert.equal(plan.summary.move, 5);
      assert.deepEqual(plan.summary.byHub, { 'hub-c': 5 });
      assert.equal(hubs.invocations.length, 0);
      await assert.rejects(fleet.create(instance, { selection: { kind: 'enrollmentGroup', enrollmentGroupId: 'nope' }, dryRun: true }), (e: unknown) => e instanceof HomingError && e.errorName === 'EnrollmentNotFound');
      await assert.rejects(fleet.create(instance, { selection: { kind: 'hub', hub: 'hub-z' }, rate: 10 }), (e: unknown) => e instanceof HomingError && e.errorName === 'NotFound');
      await assert.rejects(fleet.create(instance, { selection: { kind: 'hub', hub: 'hub-a' } }), /no registration quota/);
      await assert.rejects(fleet.get(instance, 'no-such-job'), (e: unknown) => e instanceof HomingError && e.errorName === 'NotFound');
    } finally {
      await fleet.close();
    }
  });
});

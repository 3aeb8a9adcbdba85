import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HomingDevice, MemoryAssignmentStore } from '../../../../device/src/index.ts';
import { loadStartConfig } from '../../../src/config/load.ts';
import type { HomingConfig } from '../../../src/config/config.ts';
import { buildSas } from '../../../src/core/sas.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { startHoming, type RunningHoming } from '../../../src/server.ts';
import { uniqueLoopback } from '../../helpers/ids.ts';

/**
 * Phased fleet reprovisioning end to end (issue 6): `homing start`'s composition (startHoming) with three hubs and a
 * registration quota, 200 @homing/device devices on two hubs, the enrollment group changed to the third hub (static,
 * migrate), then the fleet job through the admin API over HTTPS: a dry run, the job in waves, a pause and a resume
 * mid-job, then every device on the new hub with its reported properties migrated, and no 429. A second job is
 * interrupted by stopping the server and finished by the restarted server on the same data directory.
 */

const DEVICES = Number(process.env.HOMING_FLEET_E2E_DEVICES ?? 200);
const GROUP = 'fleet-e2e';

async function freePort(host: string): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(0, host, resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (!addr || typeof addr !== 'object') throw new Error('no port');
  return addr.port;
}

interface Answer {
  status: number;
  body: unknown;
}

describe('fleet reprovisioning end to end', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'homing-fleet-e2e-'));
  let config: Readonly<HomingConfig>;
  let homing: RunningHoming;
  const devices: HomingDevice[] = [];
  let throttledRetries = 0;
  let hubNames: string[] = [];

  const hubPort = (name: string): number => homing.hubs.find((h) => h.config.hostName === name)?.mqttPort ?? 1;

  async function api(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<Answer> {
    const cs = Object.fromEntries(homing.connectionInfo.dps.serviceConnectionString.split(';').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const host = config.dps.hostName;
    const sas = buildSas({ sr: host, keyBase64: cs.SharedAccessKey ?? '', keyName: cs.SharedAccessKeyName ?? '', expirySeconds: Math.floor(Date.now() / 1000) + 600 });
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<Answer>((resolve, reject) => {
      const req = request(
        {
          host,
          port: homing.dps.httpsPort,
          method,
          path: `${path}${path.includes('?') ? '&' : '?'}api-version=2021-10-01`,
          ca: homing.pki.caCertPem,
          headers: { authorization: sas, ...extra, ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }) },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text === '' ? undefined : JSON.parse(text) }));
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  type JobJson = { id: string; state: string; pausedReason?: string; progress: { total: number; done: number; pending: number; inFlight: number; moved: number; unchanged: number; failed: number }; rate: { perMinute: number; waveSize: number; waveIntervalMs: number } };

  async function job(id: string): Promise<JobJson> {
    const r = await api('GET', `/homing/fleet/jobs/${id}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as JobJson;
  }

  /** Polls the admin API (what the CLI and the portal do) until the job satisfies `pred`. */
  async function waitJob(id: string, pred: (j: JobJson) => boolean, what: string, ms = 120_000): Promise<JobJson> {
    const deadline = Date.now() + ms;
    for (;;) {
      const j = await job(id);
      if (pred(j)) return j;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(j)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function start(): Promise<void> {
    homing = await startHoming(config, { logger: silentLogger() });
  }

  async function dps429(): Promise<number> {
    const { values } = await homing.metrics.httpRequests.get();
    return values.filter((v) => v.labels.api === 'dps' && String(v.labels.status) === '429').reduce((a, v) => a + v.value, 0);
  }

  async function putGroup(hubs: string[], policy: 'hashed' | 'static'): Promise<{ primaryKey: string }> {
    const current = await api('GET', `/enrollmentGroups/${GROUP}`);
    const body = {
      enrollmentGroupId: GROUP,
      attestation: { type: 'symmetricKey' },
      provisioningStatus: 'enabled',
      allocationPolicy: policy,
      iotHubs: hubs,
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
      initialTwin: { tags: { fleet: 'e2e' }, properties: { desired: { mode: 'eco' } } },
      ...(current.status === 200 ? { attestation: (current.body as { attestation: unknown }).attestation } : {}),
    };
    const r = await api('PUT', `/enrollmentGroups/${GROUP}`, body, current.status === 200 ? { 'if-match': '*' } : {});
    assert.ok(r.status === 200 || r.status === 201, JSON.stringify(r.body));
    const key = (r.body as { attestation: { symmetricKey: { primaryKey: string } } }).attestation.symmetricKey.primaryKey;
    return { primaryKey: key };
  }

  before(async () => {
    const hubHosts = [uniqueLoopback(), uniqueLoopback(), uniqueLoopback()];
    const dpsHost = uniqueLoopback();
    config = await loadStartConfig({ dataDir, hubHosts, dpsHost, httpsPort: await freePort(dpsHost), mqttPort: await freePort(dpsHost), registrationsPerMinute: 1200 }, { databaseUrl: undefined, logLevel: undefined });
    hubNames = hubHosts;
    await start();
  });

  after(async () => {
    await Promise.allSettled(devices.map((d) => d.stop()));
    await homing?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('moves 200 devices from two hubs to a third one in waves, pausing and resuming mid-job, with their twins', async () => {
    const [hub1, hub2, hub3] = hubNames as [string, string, string];
    const { primaryKey } = await putGroup([hub1, hub2], 'hashed');
    const dpsHost = config.dps.hostName;
    for (let i = 0; i < DEVICES; i++) {
      const d = new HomingDevice({
        registrationId: `fleet-dev-${String(i).padStart(3, '0')}`,
        credential: { type: 'groupKey', groupKey: primaryKey },
        provisioning: { host: dpsHost, port: homing.dps.httpsPort, idScope: homing.dps.instance.idScope, tls: { ca: homing.pki.caCertPem }, pollIntervalMs: 250, minPollIntervalMs: 250 },
        hub: { resolve: (name) => ({ host: name, port: hubPort(name) }), tls: { ca: homing.pki.caCertPem } },
        store: new MemoryAssignmentStore(),
        retry: { transient: { initialDelayMs: 100, maxDelayMs: 500 } },
      });
      d.on('retry', (e) => {
        if (e.kind === 'throttled') throttledRetries++;
      });
      devices.push(d);
    }
    // Boot in batches (the machine is shared); every device registers and reports its firmware.
    for (let i = 0; i < DEVICES; i += 25) {
      await Promise.all(
        devices.slice(i, i + 25).map(async (d, j) => {
          await d.start();
          await d.updateReported({ fw: '1.0', n: i + j });
        }),
      );
    }
    const before = new Map<string, number>();
    for (const d of devices) before.set(d.assignment?.assignedHub ?? '?', (before.get(d.assignment?.assignedHub ?? '?') ?? 0) + 1);
    assert.deepEqual([...before.keys()].sort(), [hub1, hub2].sort(), 'devices start spread over the first two hubs');

    // The operator moves the group to the third hub.
    await putGroup([hub3], 'static');

    const dry = await api('POST', '/homing/fleet/jobs', { selection: { enrollmentGroupId: GROUP }, dryRun: true });
    assert.equal(dry.status, 200, JSON.stringify(dry.body));
    const plan = dry.body as { total: number; summary: { move: number; byHub: Record<string, number> }; devices: unknown[] };
    assert.equal(plan.total, DEVICES);
    assert.equal(plan.summary.move, DEVICES);
    assert.deepEqual(plan.summary.byHub, { [hub3]: DEVICES });
    assert.ok(devices.every((d) => d.assignment?.assignedHub !== hub3), 'a dry run moves nothing');

    const bad = await api('POST', '/homing/fleet/jobs', { selection: { enrollmentGroupId: GROUP }, rate: 5000 });
    assert.equal(bad.status, 400, 'a rate above the quota');
    assert.equal((bad.body as { errorCode: number }).errorCode, 400004);

    const created = await api('POST', '/homing/fleet/jobs', { selection: { enrollmentGroupId: GROUP }, rate: 600, failureThreshold: '5%' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = (created.body as JobJson).id;
    assert.deepEqual((created.body as JobJson).rate, { perMinute: 600, source: 'request', waveSize: 60, waveIntervalMs: 6200 });

    // Interrupt after the first wave; nothing new starts while paused; then resume.
    await waitJob(id, (j) => j.progress.done >= 30, 'the first wave');
    const paused = await api('POST', `/homing/fleet/jobs/${id}/pause`);
    assert.equal(paused.status, 200, JSON.stringify(paused.body));
    const settled = await waitJob(id, (j) => j.state === 'paused' && j.progress.inFlight === 0, 'the in-flight devices of the paused job');
    assert.ok(settled.progress.pending > 0 && settled.progress.pending < DEVICES, JSON.stringify(settled.progress));
    const list = await api('GET', '/homing/fleet/jobs');
    assert.ok((list.body as JobJson[]).some((j) => j.id === id && j.state === 'paused'));
    assert.equal((await api('POST', `/homing/fleet/jobs/${id}/pause`)).status, 409);
    assert.equal((await api('POST', `/homing/fleet/jobs/${id}/resume`)).status, 200);

    const done = await waitJob(id, (j) => j.state === 'completed', 'completion');
    assert.deepEqual({ ...done.progress }, { total: DEVICES, done: DEVICES, pending: 0, inFlight: 0, moved: DEVICES, unchanged: 0, failed: 0, skipped: 0 });

    // Every device is on the new hub, with its twin migrated; the old hubs no longer hold it.
    const h3 = homing.hubs.find((h) => h.config.hostName === hub3)?.service;
    assert.ok(h3);
    for (const d of devices) {
      const a = d.assignment;
      assert.equal(a?.assignedHub, hub3);
      assert.equal(a?.substatus, 'deviceDataMigrated');
      const { twin } = await h3.getTwinState(a.deviceId);
      assert.equal(twin.reported.props.fw, '1.0');
      assert.equal(twin.tags.fleet, 'e2e');
    }
    for (const h of homing.hubs.filter((x) => x.config.hostName !== hub3)) assert.equal((await h.service.statistics()).totalDeviceCount, 0);
    assert.equal(await dps429(), 0, 'no registration was throttled (429) on the DPS HTTPS API');
    assert.equal(throttledRetries, 0, 'no device waited out a 429');
  });

  it('a job interrupted by a server stop is finished by the restarted server', async () => {
    const [hub1, , hub3] = hubNames as [string, string, string];
    await putGroup([hub1], 'static');
    const records = (await api('POST', `/registrations/${GROUP}/query`, { query: '*' }, { 'x-ms-max-item-count': '1000' })).body as { assignedHub: string; status: string }[];
    assert.deepEqual(records.map((r) => `${r.status}@${r.assignedHub}`).filter((x) => x !== `assigned@${hub3}`), [], 'every record is on the third hub');
    const created = await api('POST', '/homing/fleet/jobs', { selection: { hub: hub3 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = (created.body as JobJson).id;
    assert.equal((created.body as JobJson).rate.perMinute, 1200, 'the default rate is the registration quota');
    assert.equal((created.body as JobJson).rate.waveSize, 120);
    await waitJob(id, (j) => j.progress.done >= 1, 'the first results');
    const stoppedAt = new Date().toISOString();
    await homing.stop();
    await start();
    const restartedAt = new Date().toISOString();
    const resumed = await job(id);
    assert.ok(resumed.state === 'running' || resumed.state === 'completed', resumed.state);
    const done = await waitJob(id, (j) => j.state !== 'running', 'the end after the restart', 180_000);
    const failures = (await api('GET', `/homing/fleet/jobs/${id}/devices?state=failed&top=3`)).body;
    assert.equal(done.state, 'completed', JSON.stringify({ stoppedAt, restartedAt, progress: done.progress, failures }));
    assert.equal(done.progress.total, DEVICES);
    assert.equal(done.progress.failed, 0, JSON.stringify(done.progress));
    assert.equal(done.progress.moved, DEVICES);
    const h1 = homing.hubs.find((h) => h.config.hostName === hub1)?.service;
    assert.ok(h1);
    assert.equal((await h1.statistics()).totalDeviceCount, DEVICES);
  });
});

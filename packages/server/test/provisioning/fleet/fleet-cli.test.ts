import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { fleetCommand, parseRate, parseThreshold } from '../../../../cli/src/commands/fleet.ts';
import { CliError } from '../../../../cli/src/lib/errors.ts';
import { setIo } from '../../../../cli/src/lib/output.ts';
import { loadStartConfig } from '../../../src/config/load.ts';
import { buildSas } from '../../../src/core/sas.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { startHoming, type RunningHoming } from '../../../src/server.ts';
import { uniqueLoopback } from '../../helpers/ids.ts';

/** `homing fleet` against a real server (startHoming, HTTPS with the dev CA from connection.json). */
describe('homing fleet (CLI)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'homing-fleet-cli-'));
  let homing: RunningHoming;

  before(async () => {
    const config = await loadStartConfig({ dataDir, hubHosts: [uniqueLoopback(), uniqueLoopback()], dpsHost: uniqueLoopback(), httpsPort: 0, mqttPort: 0 }, { databaseUrl: undefined, logLevel: undefined });
    homing = await startHoming(config, { logger: silentLogger() });
    // Registration records of a group, as registrations leave them (the dry run reads records and enrollments).
    const now = new Date().toISOString();
    const [hubA, hubB] = homing.hubs.map((h) => h.config.hostName) as [string, string];
    const instance = homing.dps.instance.name;
    assert.equal(
      await homing.store.provisioning.createEnrollmentGroup(instance, {
        enrollmentGroupId: 'cli-group',
        attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: Buffer.alloc(32, 1).toString('base64'), secondaryKey: Buffer.alloc(32, 2).toString('base64') } },
        capabilities: { iotEdge: false },
        provisioningStatus: 'enabled',
        reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
        allocationPolicy: 'static',
        iotHubs: [hubB],
        etag: 'e1',
        createdDateTimeUtc: now,
        lastUpdatedDateTimeUtc: now,
      }),
      'ok',
    );
    for (let i = 0; i < 3; i++) {
      const id = `cli-dev-${i}`;
      await homing.store.provisioning.putRegistration(
        instance,
        { registrationId: id, deviceId: id, assignedHub: hubA, status: 'assigned', substatus: 'initialAssignment', etag: `r${i}`, createdDateTimeUtc: now, lastUpdatedDateTimeUtc: now, enrollment: { kind: 'group', enrollmentGroupId: 'cli-group' }, attestationType: 'symmetricKey' },
        { kind: 'any' },
      );
    }
  });

  after(async () => {
    await homing?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** Runs `homing fleet ...` in process; returns stdout, stderr and the error (a CliError) if any. */
  async function run(...args: string[]): Promise<{ out: string; err: string; error: CliError | undefined }> {
    let out = '';
    let err = '';
    const restore = setIo({ out: (t) => (out += t), err: (t) => (err += t) });
    const program = new Command('homing').exitOverride();
    program.addCommand(fleetCommand());
    try {
      await program.parseAsync(['node', 'homing', 'fleet', ...args, '--data-dir', dataDir, '--port', String(homing.dps.httpsPort)]);
      return { out, err, error: undefined };
    } catch (e) {
      if (e instanceof CliError) return { out, err, error: e };
      throw e;
    } finally {
      restore();
    }
  }

  /** The admin API as any HTTPS client: a SAS of `policy` (a key of the instance), or `auth` as given. */
  function raw(method: string, path: string, o: { policy?: string; auth?: string; body?: string; ct?: string } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
    const host = homing.config.dps.hostName;
    const p = homing.dps.instance.policies.find((x) => x.keyName === (o.policy ?? 'provisioningserviceowner'));
    const auth = o.auth ?? buildSas({ sr: host, keyBase64: p?.primaryKey ?? '', keyName: p?.keyName ?? '', expirySeconds: Math.floor(Date.now() / 1000) + 600 });
    return new Promise((resolve, reject) => {
      const req = request(
        { host, port: homing.dps.httpsPort, method, path, ca: homing.pki.caCertPem, headers: { authorization: auth, ...(o.body === undefined ? {} : { 'content-type': o.ct ?? 'application/json' }) } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
        },
      );
      req.on('error', reject);
      req.end(o.body);
    });
  }

  it('admin API: authentication and rights (401 401000 alike), bad bodies 400 with the reason', async () => {
    assert.equal((await raw('GET', '/homing/fleet/jobs', { auth: 'SharedAccessSignature sr=x&sig=y&se=1&skn=z' })).body.errorCode, 401000);
    assert.equal((await raw('GET', '/homing/fleet/jobs', { auth: '' })).status, 401);
    // Reading needs RegistrationStatusRead; starting a job needs RegistrationStatusWrite (checked before the body is read).
    assert.equal((await raw('GET', '/homing/fleet/jobs', { policy: 'registrationstatusread' })).status, 200);
    assert.equal((await raw('GET', '/homing/fleet/jobs', { policy: 'enrollmentread' })).status, 401);
    const readOnly = await raw('POST', '/homing/fleet/jobs', { policy: 'registrationstatusread', body: '{not json' });
    assert.deepEqual([readOnly.status, readOnly.body.errorCode], [401, 401000]);
    const cases: [string, number][] = [
      ['{not json', 400],
      ['[]', 400006],
      ['{}', 400004],
      ['{"selection":{"hub":"a","pattern":"b"}}', 400004],
      ['{"selection":{"colour":"red"}}', 400004],
      ['{"selection":{"pattern":"x*"},"rate":0}', 400004],
      ['{"selection":{"pattern":"x*"},"rate":60,"failureThreshold":"lots"}', 400004],
      ['{"selection":{"pattern":"x*"},"rate":60,"extra":1}', 400004],
    ];
    for (const [body, expected] of cases) {
      const r = await raw('POST', '/homing/fleet/jobs', { policy: 'registrationstatuswrite', body });
      if (expected === 400) assert.equal(r.status, 400, body);
      else assert.deepEqual([r.status, r.body.errorCode], [Math.floor(expected / 1000), expected], body);
      assert.equal(typeof r.body.message, 'string');
    }
    assert.deepEqual((await raw('GET', '/homing/fleet/jobs/nope/devices?state=bogus')).status, 400);
    assert.deepEqual((await raw('POST', '/homing/fleet/jobs/nope/resume')).body.errorCode, 404000);
  });

  it('parses rates and thresholds, refusing bad ones with exit code 2', () => {
    assert.equal(parseRate('600'), 600);
    assert.equal(parseRate('600/min'), 600);
    assert.equal(parseRate('10/s'), 600);
    for (const bad of ['', 'fast', '0', '-5', '1.5/min', '5/h']) assert.throws(() => parseRate(bad), (e: unknown) => e instanceof CliError && e.exitCode === 2, bad);
    assert.equal(parseThreshold('10%'), '10%');
    assert.equal(parseThreshold('25'), 25);
    for (const bad of ['ten', '150%', '-1']) assert.throws(() => parseThreshold(bad), (e: unknown) => e instanceof CliError && e.exitCode === 2, bad);
  });

  it('needs exactly one selection', async () => {
    const none = await run('reprovision', '--rate', '60');
    assert.equal(none.error?.exitCode, 2);
    assert.match(none.error?.message ?? '', /exactly one of --enrollment-group/);
    const two = await run('reprovision', '--hub', 'x', '--pattern', 'y*', '--rate', '60');
    assert.equal(two.error?.exitCode, 2);
  });

  it('--dry-run shows who would move where; nothing is started', async () => {
    const [, hubB] = homing.hubs.map((h) => h.config.hostName) as [string, string];
    const r = await run('reprovision', '--enrollment-group', 'cli-group', '--dry-run');
    assert.equal(r.error, undefined, r.error?.message);
    assert.match(r.out, /dry run: 3 devices: 3 would move/);
    assert.match(r.out, new RegExp(`→ ${hubB.replace(/\./g, '\\.')}: 3`));
    assert.match(r.out, /cli-dev-0/);
    const json = await run('reprovision', '--enrollment-group', 'cli-group', '--dry-run', '--json');
    assert.equal(JSON.parse(json.out).summary.move, 3);
    const list = await run('list', '--json');
    assert.deepEqual(JSON.parse(list.out), []);
  });

  it('server errors are one line with the code: no quota and no rate, unknown group, unknown job', async () => {
    const noRate = await run('reprovision', '--enrollment-group', 'cli-group');
    assert.equal(noRate.error?.code, '400004');
    assert.match(noRate.error?.message ?? '', /no registration quota/);
    const unknown = await run('reprovision', '--enrollment-group', 'nope', '--rate', '60');
    assert.equal(unknown.error?.code, '404201');
    const job = await run('status', 'no-such-job', '--no-watch');
    assert.equal(job.error?.code, '404000');
  });

  it('runs a job to the end with --json, then status, list and a refused pause', async () => {
    // These devices are not on their hub: each fails at once (DeviceNotFound), and the job pauses on the threshold.
    const r = await run('reprovision', '--pattern', 'cli-dev-*', '--rate', '600', '--failure-threshold', '1', '--json');
    const job = JSON.parse(r.out) as { id: string; state: string; pausedReason?: string; progress: { failed: number } };
    assert.equal(r.error?.code, 'FailureThresholdPassed');
    assert.equal(r.error?.exitCode, 3);
    assert.equal(job.state, 'paused');
    assert.equal(job.pausedReason, 'failureThreshold');
    assert.ok(job.progress.failed >= 2, JSON.stringify(job.progress));
    const status = await run('status', job.id, '--no-watch', '--failed', '--json');
    assert.equal(status.error, undefined);
    assert.match(status.out, /DeviceNotFound/);
    const list = await run('list');
    assert.match(list.out, new RegExp(job.id));
    const cancel = await run('cancel', job.id);
    assert.match(cancel.out, /cancelled/);
    const pause = await run('pause', job.id);
    assert.equal(pause.error?.code, '409010');
  });
});

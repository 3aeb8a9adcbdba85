import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isoTime } from '../../../src/core/clock.ts';
import { openStore } from '../../../src/store/open.ts';
import type { EnrollmentGroup, ProvisioningInstance } from '../../../src/provisioning/model.ts';
import { realIds } from '../../helpers/ids.ts';
import { dropPgSchema, freshSchemaName, pgTestUrl as pgUrl } from '../../helpers/store-harness.ts';
import { newKey, ownerPolicy } from '../runtime/fixture.ts';

/**
 * Two server processes on one PostgreSQL database share one registration quota: each builds a RegistrationService
 * and a DPS device API on the same schema (support/quota-worker.ts) and fires registrations at once; together they
 * get exactly the limit accepted. Their clocks are frozen at the same instant, so only the shared bucket decides.
 */
const WORKER = fileURLToPath(new URL('./support/quota-worker.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../../../../', import.meta.url));

interface WorkerResult {
  accepted: number;
  throttled: number;
  other: number[];
}

function startWorker(args: Record<string, unknown>): { child: ChildProcess; ready: Promise<void>; result: Promise<WorkerResult> } {
  const child = spawn(process.execPath, ['--conditions=homing-source', '--import', 'tsx', WORKER, JSON.stringify(args)], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
    if (out.includes('ready\n')) onReady();
  });
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  const result = new Promise<WorkerResult>((resolve, reject) => {
    child.once('exit', (code) => {
      const last = out.trim().split('\n').at(-1) ?? '';
      if (code !== 0 || !last.startsWith('{')) reject(new Error(`worker exited ${String(code)}\nstdout:\n${out}\nstderr:\n${err}`));
      else resolve(JSON.parse(last) as WorkerResult);
    });
  });
  // A worker that dies before `ready` must not leave the test waiting.
  const readyOrExit = Promise.race([ready, result.then(() => Promise.reject(new Error(`worker ended before ready\n${err}`)))]);
  return { child, ready: readyOrExit, result };
}

describe('two processes on one PostgreSQL database share the registration quota', { skip: pgUrl === undefined ? 'set HOMING_TEST_DATABASE_URL to run on PostgreSQL' : false }, () => {
  it('together they accept exactly registrationsPerMinute within the window', { timeout: 120_000 }, async (t) => {
    const url = pgUrl ?? '';
    const schema = freshSchemaName();
    const store = await openStore({ dialect: 'postgres', postgresUrl: url, postgresSchema: schema, poolSize: 2 });
    const workers: ReturnType<typeof startWorker>[] = [];
    try {
      const nowMs = Date.parse('2026-03-01T12:00:00Z');
      const now = isoTime(nowMs);
      const hubName = 'hub-a.quota2p.test';
      const hubPolicy = ownerPolicy();
      const idScope = `0ne${realIds.bytes(4).toString('hex').toUpperCase()}`;
      const instance: ProvisioningInstance = {
        name: 'two-process',
        idScope,
        serviceHostNames: ['two-process.test'],
        allocationPolicy: 'hashed',
        policies: [],
        linkedHubs: [{ name: hubName, connectionString: `HostName=${hubName};SharedAccessKeyName=${hubPolicy.keyName};SharedAccessKey=${hubPolicy.primaryKey}`, location: 'local', allocationWeight: 1, applyAllocationPolicy: true }],
        etag: 'e1',
        quotas: { registrationsPerMinute: 10 },
      };
      assert.equal(await store.provisioning.createInstance(instance), 'ok');
      const groupKey = newKey();
      const group: EnrollmentGroup = {
        enrollmentGroupId: 'fleet',
        attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupKey, secondaryKey: newKey() } },
        capabilities: { iotEdge: false },
        provisioningStatus: 'enabled',
        reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
        etag: 'g1',
        createdDateTimeUtc: now,
        lastUpdatedDateTimeUtc: now,
      };
      assert.equal(await store.provisioning.createEnrollmentGroup(instance.name, group), 'ok');

      const common = { url, schema, idScope, hub: hubName, hubPolicy, groupKey, count: 16, nowMs };
      workers.push(startWorker({ ...common, prefix: 'a' }), startWorker({ ...common, prefix: 'b' }));
      await Promise.all(workers.map((w) => w.ready));
      for (const w of workers) w.child.stdin?.write('go\n');
      const [a, b] = await Promise.all(workers.map((w) => w.result));
      assert.ok(a && b);
      t.diagnostic(`accepted: process A ${a.accepted}, process B ${b.accepted}`);
      assert.deepEqual([a.other, b.other], [[], []], 'only accepted or throttled answers');
      assert.equal(a.accepted + a.throttled, 16);
      assert.equal(b.accepted + b.throttled, 16);
      assert.equal(a.accepted + b.accepted, 10, `accepted: ${a.accepted} + ${b.accepted}`);
      assert.equal(await store.provisioning.countRegistrations(instance.name), 10);
    } finally {
      for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
      await store.close();
      await dropPgSchema(url, schema);
    }
  });
});

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { createHttpsApp } from '../../src/transport/http/app.ts';
import { registerDpsServiceApi } from '../../src/transport/http/dps-service-api.ts';
import { createFixture, HUB1, type Fixture } from '../provisioning/fixtures.ts';
import { runSdkScript, type ScriptLine } from '../helpers/homing-process.ts';
import { uniqueLoopback } from '../helpers/ids.ts';
import { createTestPki } from '../helpers/pki.ts';

const SCRIPT = fileURLToPath(new URL('./sdk/dps-service-scenario.mjs', import.meta.url));

/**
 * The DPS service API against the unchanged azure-iot-provisioning-service SDK: a real HTTPS listener on
 * <unique loopback>:443 (the SDK dials nothing else), and the SDK in a child process that trusts the test CA through
 * NODE_EXTRA_CA_CERTS (read only at process start). Connection strings are built exactly as a user would.
 */
describe('DPS service API interop with azure-iot-provisioning-service', () => {
  let f: Fixture;
  let app: FastifyInstance;
  let tmp: string;
  let lines: ScriptLine[] = [];
  let stderr = '';

  before(async () => {
    const host = uniqueLoopback();
    const pki = await createTestPki([host]);
    tmp = mkdtempSync(join(tmpdir(), 'homing-dps-sdk-'));
    const caPath = join(tmp, 'ca.pem');
    writeFileSync(caPath, pki.ca.certPem);

    f = await createFixture({ hostNames: [host] });
    for (const id of ['fleet-dev-3', 'fleet-dev-1', 'fleet-dev-2']) {
      await f.store.provisioning.putRegistration(
        f.instance.name,
        {
          registrationId: id,
          createdDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
          lastUpdatedDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
          assignedHub: HUB1,
          deviceId: id,
          status: 'assigned',
          substatus: 'initialAssignment',
          etag: Buffer.from(`"${id}"`).toString('base64'),
          enrollment: { kind: 'group', enrollmentGroupId: 'sdk-fleet' },
          attestationType: 'symmetricKey',
        },
        { kind: 'absent' },
      );
    }
    app = createHttpsApp({ tls: { cert: pki.server.certPem, key: pki.server.keyPem }, logger: silentLogger(), errorFlavor: 'dps', api: 'dps-service' });
    registerDpsServiceApi(app, { instances: f.resolver, enrollments: f.enrollments, registrations: f.registrations, admin: f.instances, clock: systemClock });
    await app.listen({ host, port: 443 });

    const cs = (policy: string): string => {
      const p = f.instance.policies.find((x) => x.keyName === policy);
      assert.ok(p);
      return `HostName=${host};SharedAccessKeyName=${policy};SharedAccessKey=${p.primaryKey}`;
    };
    const r = await runSdkScript(SCRIPT, [cs('provisioningserviceowner'), cs('enrollmentread')], caPath, 120_000);
    lines = r.lines;
    stderr = r.stderr;
  });

  after(async () => {
    await app?.close();
    await f?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  const result = (name: string): ScriptLine => {
    const l = lines.find((x) => x.step === name);
    assert.ok(l, `step "${name}" did not run. Steps: ${JSON.stringify(lines)}\nstderr: ${stderr}`);
    assert.equal(l.ok, true, `step "${name}" failed: ${l.error ?? ''} ${JSON.stringify(l)}`);
    return l;
  };

  it('creates an individual enrollment with generated 64-byte keys (200)', () => {
    const r = result('create enrollment with generated keys');
    assert.equal(r.statusCode, 200);
    assert.equal(r.registrationId, 'sdk-gen');
    assert.equal(r.primaryKeyBytes, 64);
    assert.equal(r.secondaryKeyBytes, 64);
    assert.equal(r.provisioningStatus, 'enabled');
    assert.equal(typeof r.etag, 'string');
  });

  it('creates an individual enrollment with given keys and settings', () => {
    const r = result('create enrollment with given keys');
    assert.equal(r.keysKept, true);
    assert.equal(r.deviceId, 'sdk-device-1');
    assert.deepEqual(r.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: false });
    assert.deepEqual(r.initialTwin, { tags: { site: 'lab' }, properties: { desired: { interval: 30 } } });
    assert.match(String(r.created), /\.\d{7}Z$/);
  });

  it('gets an enrollment by its id in another case', () => {
    const r = result('get enrollment case-insensitively');
    assert.equal(r.registrationId, 'Sdk-Given');
    assert.equal(r.keysKept, true);
  });

  it('refuses a create without etag on an existing id with 409 (DeviceAlreadyExistsError)', () => {
    const r = result('create again without etag');
    assert.equal(r.statusCode, 409);
    assert.equal(r.errorName, 'DeviceAlreadyExistsError');
    assert.match(String(r.responseBody), /"errorCode":409001/);
  });

  it('updates with the returned etag, and refuses a stale etag with 412 (InvalidEtagError)', () => {
    const u = result('update with etag');
    assert.equal(u.provisioningStatus, 'disabled');
    assert.equal(u.etagChanged, true);
    assert.equal(u.keysKept, true);
    const s = result('update with stale etag');
    assert.equal(s.statusCode, 412);
    assert.equal(s.errorName, 'InvalidEtagError');
  });

  it('returns the attestation mechanism with keys', () => {
    const r = result('attestation mechanism');
    assert.equal(r.type, 'symmetricKey');
    assert.equal(r.keysKept, true);
  });

  it('creates, gets, queries and deletes an enrollment group', () => {
    const r = result('enrollment group create get delete');
    assert.equal(r.enrollmentGroupId, 'sdk-group');
    assert.equal(r.sameEtag, true);
    assert.equal(r.groupKeyBytes, 64);
    assert.deepEqual(r.queried, ['sdk-group']);
    assert.deepEqual((r.afterDelete as { statusCode: number }).statusCode, 404);
  });

  it('pages a query over 25 enrollments by 10, by callback and by explicit token', () => {
    const r = result('query paging');
    assert.deepEqual(r.callbackPageSizes, [10, 10, 5]);
    assert.deepEqual(r.callbackIds, Array.from({ length: 25 }, (_, n) => `page-${String(n).padStart(2, '0')}`));
    assert.equal(r.lastContinuation, 'absent');
    assert.equal(r.itemType, 'enrollment');
    assert.deepEqual(r.tokenPageSizes, [10, 10, 5]);
  });

  it('runs a bulk create (callback style) with a per-item error', () => {
    const r = result('bulk create with a per-item error');
    assert.equal(r.isSuccessful, false);
    const errors = r.errors as { registrationId: string; errorCode: number; errorStatus: string }[];
    assert.equal(errors.length, 1);
    assert.equal(errors[0]?.registrationId, 'bulk bad!');
    assert.equal(errors[0]?.errorCode, 400008);
    assert.equal(r.bulk2, 'bulk-2');
  });

  it('runs a bulk delete', () => {
    const r = result('bulk delete');
    assert.equal(r.isSuccessful, true);
    assert.deepEqual(r.errors, []);
    assert.equal((r.gone as { statusCode: number }).statusCode, 404);
  });

  it('refuses writes by a policy without EnrollmentWrite (UnauthorizedError) while reads work', () => {
    const r = result('read-only policy');
    const write = r.write as { errorName: string; statusCode: number; responseBody: string };
    assert.equal(write.statusCode, 401);
    assert.equal(write.errorName, 'UnauthorizedError');
    assert.match(write.responseBody, /"errorCode":401000/);
    assert.equal(r.readId, 'sdk-gen');
    assert.equal(r.notCreated, 404);
  });

  it('answers 404 for the registration state of an unknown id', () => {
    const r = result('registration state of an unknown id');
    assert.equal(r.statusCode, 404);
    assert.match(String(r.responseBody), /"errorCode":404202/);
  });

  it('queries the registration states of a group, and deletes one', () => {
    const r = result('group registration query');
    assert.deepEqual(r.pageSizes, [2, 1]);
    assert.deepEqual(r.ids, ['fleet-dev-1', 'fleet-dev-2', 'fleet-dev-3']);
    assert.deepEqual(r.statuses, ['assigned', 'assigned', 'assigned']);
    assert.equal(r.itemType, 'deviceRegistration');
    assert.equal(r.assignedHub, HUB1);
    assert.equal(r.gone, 404);
  });

  it('deletes enrollments by object and by id + etag; a stale etag is 412 and a missing id 404', () => {
    const r = result('delete enrollments with etags');
    assert.equal((r.stale as { statusCode: number }).statusCode, 412);
    assert.equal((r.gone as { statusCode: number }).statusCode, 404);
    assert.equal((r.again as { statusCode: number }).statusCode, 404);
  });

  it('ran every step without an unexpected failure', () => {
    assert.deepEqual(lines.filter((l) => !l.ok).map((l) => l.step), []);
    assert.equal(lines.length, 15, JSON.stringify(lines.map((l) => l.step)));
  });
});

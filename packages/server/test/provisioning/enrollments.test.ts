import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { JsonObject } from '../../src/core/json.ts';
import {
  decodeContinuation,
  encodeContinuation,
  individualEnrollmentToJson,
  parsePageSize,
  validateQuerySpec,
  type PageParams,
} from '../../src/provisioning/enrollments.ts';
import type { RegistrationRecord } from '../../src/provisioning/model.ts';
import { createFixture, HUB1, key, rejectsWith, throwsWith, type Fixture } from './fixtures.ts';

const ETAG_RE = /^[A-Za-z0-9+/]+=*$/;
const TIME_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/;
const FIRST: PageParams = { pageSize: 10, after: undefined };

function symBody(extra: JsonObject = {}): JsonObject {
  return { attestation: { type: 'symmetricKey' }, ...extra };
}

function record(registrationId: string, via: { group?: string } = {}): RegistrationRecord {
  return {
    registrationId,
    createdDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
    lastUpdatedDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
    assignedHub: HUB1,
    deviceId: registrationId,
    status: 'assigned',
    substatus: 'initialAssignment',
    etag: 'InJlYyI=',
    enrollment: via.group ? { kind: 'group', enrollmentGroupId: via.group } : { kind: 'individual', registrationId },
    attestationType: 'symmetricKey',
  };
}

describe('EnrollmentService', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await createFixture({ limits: { maxIndividualEnrollments: 30, maxSymmetricKeyGroups: 2, maxX509Groups: 1 } });
  });
  afterEach(async () => {
    await f.close();
  });

  describe('put / get with etag rules', () => {
    it('creates on a PUT without If-Match: etag is base64 of a quoted uuid, times have 7 fractional digits', async () => {
      const e = await f.enrollments.putIndividualEnrollment(f.instance, 'dev-1', symBody({ deviceId: 'device-1' }), undefined);
      assert.match(e.etag, ETAG_RE);
      assert.match(Buffer.from(e.etag, 'base64').toString(), /^"[0-9a-f-]{36}"$/);
      assert.match(e.createdDateTimeUtc, TIME_RE);
      assert.equal(e.lastUpdatedDateTimeUtc, e.createdDateTimeUtc);
      const got = await f.enrollments.getIndividualEnrollment(f.instance, 'dev-1');
      assert.deepEqual(got.enrollment, e);
      assert.equal(got.registrationState, undefined);
    });

    it('refuses a PUT without If-Match on an existing id with 409 and changes nothing', async () => {
      const e = await f.enrollments.putIndividualEnrollment(f.instance, 'Dev-A', symBody(), undefined);
      await rejectsWith(f.enrollments.putIndividualEnrollment(f.instance, 'dev-a', symBody({ provisioningStatus: 'disabled' }), undefined), 'DeviceAlreadyExists');
      assert.deepEqual((await f.enrollments.getIndividualEnrollment(f.instance, 'DEV-A')).enrollment, e);
    });

    it('updates with the current etag (quoted or not) or *, keeping the creation time and the keys', async () => {
      const e = await f.enrollments.putIndividualEnrollment(f.instance, 'dev-u', symBody(), undefined);
      f.clock.advance(1500);
      const u1 = await f.enrollments.putIndividualEnrollment(f.instance, 'dev-u', symBody({ provisioningStatus: 'disabled' }), `"${e.etag}"`);
      assert.notEqual(u1.etag, e.etag);
      assert.equal(u1.createdDateTimeUtc, e.createdDateTimeUtc);
      assert.ok(u1.lastUpdatedDateTimeUtc > e.lastUpdatedDateTimeUtc);
      assert.equal(u1.provisioningStatus, 'disabled');
      assert.deepEqual(u1.attestation.symmetricKey, e.attestation.symmetricKey, 'omitted keys are kept on update');
      const k = { primaryKey: key(), secondaryKey: key() };
      const u2 = await f.enrollments.putIndividualEnrollment(f.instance, 'dev-u', symBody({ attestation: { type: 'symmetricKey', symmetricKey: k } }), '*');
      assert.deepEqual(u2.attestation.symmetricKey, k);
    });

    it('answers 412 for a stale etag, and for If-Match on a missing id', async () => {
      const e = await f.enrollments.putIndividualEnrollment(f.instance, 'dev-s', symBody(), undefined);
      await f.enrollments.putIndividualEnrollment(f.instance, 'dev-s', symBody(), e.etag);
      await rejectsWith(f.enrollments.putIndividualEnrollment(f.instance, 'dev-s', symBody({ provisioningStatus: 'disabled' }), e.etag), 'PreconditionFailed');
      assert.equal((await f.enrollments.getIndividualEnrollment(f.instance, 'dev-s')).enrollment.provisioningStatus, 'enabled');
      await rejectsWith(f.enrollments.putIndividualEnrollment(f.instance, 'missing', symBody(), '*'), 'PreconditionFailed');
      await rejectsWith(f.enrollments.putIndividualEnrollment(f.instance, 'missing', symBody(), e.etag), 'PreconditionFailed');
      await rejectsWith(f.enrollments.getIndividualEnrollment(f.instance, 'missing'), 'EnrollmentNotFound');
    });

    it('refuses to change the attestation type of an existing enrollment', async () => {
      const e = await f.enrollments.putIndividualEnrollment(f.instance, 'dev-t', symBody(), undefined);
      await rejectsWith(
        f.enrollments.putIndividualEnrollment(f.instance, 'dev-t', { attestation: { type: 'tpm', tpm: { endorsementKey: key(64) } } }, e.etag),
        'ArgumentInvalid',
        /attestation type/,
      );
      assert.deepEqual((await f.enrollments.getIndividualEnrollment(f.instance, 'dev-t')).enrollment, e);
    });

    it('treats ids case-insensitively and keeps the id as created', async () => {
      const e = await f.enrollments.putIndividualEnrollment(f.instance, 'Dev-A', symBody(), undefined);
      assert.equal((await f.enrollments.getIndividualEnrollment(f.instance, 'dev-a')).enrollment.registrationId, 'Dev-A');
      assert.equal((await f.enrollments.getIndividualAttestation(f.instance, 'DEV-A')).type, 'symmetricKey');
      const u = await f.enrollments.putIndividualEnrollment(f.instance, 'dev-a', symBody({ registrationId: 'DEV-a' }), e.etag);
      assert.equal(u.registrationId, 'Dev-A', 'an update through another spelling keeps the id as created');
      const g = await f.enrollments.putEnrollmentGroup(f.instance, 'Grp-A', symBody(), undefined);
      assert.equal((await f.enrollments.putEnrollmentGroup(f.instance, 'grp-a', symBody(), g.etag)).enrollmentGroupId, 'Grp-A');
    });

    it('embeds the registration record of the enrollment in GET, not one made through a group', async () => {
      await f.enrollments.putIndividualEnrollment(f.instance, 'reg-1', symBody(), undefined);
      await f.enrollments.putIndividualEnrollment(f.instance, 'reg-2', symBody(), undefined);
      await f.store.provisioning.putRegistration(f.instance.name, record('reg-1'), { kind: 'absent' });
      await f.store.provisioning.putRegistration(f.instance.name, record('reg-2', { group: 'g' }), { kind: 'absent' });
      const r1 = await f.enrollments.getIndividualEnrollment(f.instance, 'REG-1');
      assert.equal(r1.registrationState?.assignedHub, HUB1);
      assert.equal(individualEnrollmentToJson(r1.enrollment, r1.registrationState).registrationState !== undefined, true);
      assert.equal((await f.enrollments.getIndividualEnrollment(f.instance, 'reg-2')).registrationState, undefined);
    });

    it('rejects invalid input before writing anything', async () => {
      await rejectsWith(f.enrollments.putIndividualEnrollment(f.instance, 'bad id', symBody(), undefined), 'InvalidRegistrationId');
      await rejectsWith(
        f.enrollments.putIndividualEnrollment(f.instance, 'dev', symBody({ attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: 'bad' } } }), undefined),
        'ArgumentInvalid',
      );
      assert.equal(await f.store.provisioning.countIndividualEnrollments(f.instance.name), 0);
    });
  });

  describe('delete', () => {
    it('deletes with an optional If-Match: 404 when missing, 412 when stale, and drops the record', async () => {
      const e = await f.enrollments.putIndividualEnrollment(f.instance, 'del', symBody(), undefined);
      await f.store.provisioning.putRegistration(f.instance.name, record('del'), { kind: 'absent' });
      await rejectsWith(f.enrollments.deleteIndividualEnrollment(f.instance, 'del', 'InN0YWxlIg=='), 'PreconditionFailed');
      assert.ok(await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'del'));
      await f.enrollments.deleteIndividualEnrollment(f.instance, 'DEL', `"${e.etag}"`);
      assert.equal(await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'del'), undefined);
      assert.equal(await f.store.provisioning.getRegistration(f.instance.name, 'del'), undefined);
      const err = await rejectsWith(f.enrollments.deleteIndividualEnrollment(f.instance, 'del', undefined), 'EnrollmentNotFound');
      assert.equal(err.code, 404201);
    });

    it('deletes a group and keeps its registration records', async () => {
      await f.enrollments.putEnrollmentGroup(f.instance, 'Fleet', symBody(), undefined);
      await f.store.provisioning.putRegistration(f.instance.name, record('m1', { group: 'fleet' }), { kind: 'absent' });
      await f.enrollments.deleteEnrollmentGroup(f.instance, 'FLEET', undefined);
      await rejectsWith(f.enrollments.getEnrollmentGroup(f.instance, 'fleet'), 'EnrollmentNotFound');
      assert.equal((await f.registrations.get(f.instance, 'm1')).registrationId, 'm1');
      const q = await f.registrations.queryGroup(f.instance, 'fleet', { query: '*' }, FIRST);
      assert.deepEqual(q.items.map((r) => r.registrationId), ['m1']);
    });
  });

  describe('quotas', () => {
    it('refuses enrollments past the limit with 403 QuotaExceeded', async () => {
      const small = await createFixture({ limits: { maxIndividualEnrollments: 2 } });
      try {
        await small.enrollments.putIndividualEnrollment(small.instance, 'a', symBody(), undefined);
        const b = await small.enrollments.putIndividualEnrollment(small.instance, 'b', symBody(), undefined);
        const e = await rejectsWith(small.enrollments.putIndividualEnrollment(small.instance, 'c', symBody(), undefined), 'QuotaExceeded');
        assert.equal(e.code, 403002);
        await small.enrollments.putIndividualEnrollment(small.instance, 'b', symBody({ provisioningStatus: 'disabled' }), b.etag);
      } finally {
        await small.close();
      }
    });

    it('counts symmetric-key and X.509 groups separately', async () => {
      await f.enrollments.putEnrollmentGroup(f.instance, 'g1', symBody(), undefined);
      await f.enrollments.putEnrollmentGroup(f.instance, 'g2', symBody(), undefined);
      await rejectsWith(f.enrollments.putEnrollmentGroup(f.instance, 'g3', symBody(), undefined), 'QuotaExceeded', /2 symmetric key/);
      await f.enrollments.putEnrollmentGroup(f.instance, 'x1', { attestation: { type: 'x509', x509: { caReferences: { primary: 'root' } } } }, undefined);
      await rejectsWith(
        f.enrollments.putEnrollmentGroup(f.instance, 'x2', { attestation: { type: 'x509', x509: { caReferences: { primary: 'root' } } } }, undefined),
        'QuotaExceeded',
        /1 X.509/,
      );
    });
  });

  describe('bulk', () => {
    it('creates entries and reports per-item errors with HTTP-style codes', async () => {
      await f.enrollments.putIndividualEnrollment(f.instance, 'exists', symBody(), undefined);
      const r = await f.enrollments.bulkIndividualEnrollments(f.instance, {
        mode: 'create',
        enrollments: [
          { registrationId: 'b-1', ...symBody() },
          { registrationId: 'bad id!', ...symBody() },
          { registrationId: 'EXISTS', ...symBody() },
          { registrationId: 'b-2', attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: 'nope' } } },
          { registrationId: 'b-3', ...symBody() },
        ],
      });
      assert.equal(r.isSuccessful, false);
      assert.deepEqual(
        r.errors.map((e) => [e.id, e.errorCode]),
        [
          ['bad id!', 400008],
          ['EXISTS', 409001],
          ['b-2', 400004],
        ],
      );
      for (const e of r.errors) assert.ok(e.errorStatus.length > 0);
      assert.ok(await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'b-1'));
      assert.ok(await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'b-3'));
      assert.equal(await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'b-2'), undefined);
    });

    it('updates unconditionally, updates on matching etags, and deletes', async () => {
      const a = await f.enrollments.putIndividualEnrollment(f.instance, 'a', symBody(), undefined);
      await f.enrollments.putIndividualEnrollment(f.instance, 'b', symBody(), undefined);
      const up = await f.enrollments.bulkIndividualEnrollments(f.instance, {
        mode: 'update',
        enrollments: [{ registrationId: 'a', ...symBody({ provisioningStatus: 'disabled' }) }, { registrationId: 'new', ...symBody() }],
      });
      assert.deepEqual(up, { isSuccessful: true, errors: [] });
      const a2 = await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'a');
      assert.equal(a2?.provisioningStatus, 'disabled');
      assert.ok(await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'new'));

      const ifm = await f.enrollments.bulkIndividualEnrollments(f.instance, {
        mode: 'updateIfMatchETag',
        enrollments: [
          { registrationId: 'a', etag: a.etag, ...symBody() },
          { registrationId: 'b', ...symBody() },
          { registrationId: 'new', etag: a2?.etag ?? '', ...symBody() },
          { registrationId: 'ghost', etag: 'x', ...symBody() },
        ],
      });
      assert.deepEqual(
        ifm.errors.map((e) => [e.id, e.errorCode]),
        [
          ['a', 412002],
          ['b', 412002],
          ['new', 412002],
          ['ghost', 404201],
        ],
      );
      const okIfm = await f.enrollments.bulkIndividualEnrollments(f.instance, { mode: 'updateIfMatchETag', enrollments: [{ registrationId: 'a', etag: a2?.etag ?? '', ...symBody() }] });
      assert.equal(okIfm.isSuccessful, true);

      const del = await f.enrollments.bulkIndividualEnrollments(f.instance, { mode: 'delete', enrollments: [{ registrationId: 'a' }, { registrationId: 'ghost' }] });
      assert.deepEqual(del.errors.map((e) => [e.id, e.errorCode]), [['ghost', 404201]]);
      assert.equal(await f.store.provisioning.getIndividualEnrollment(f.instance.name, 'a'), undefined);
    });

    it('rejects a malformed envelope as a whole', async () => {
      const items = (n: number) => Array.from({ length: n }, (_, i) => ({ registrationId: `d${i}`, ...symBody() }));
      await rejectsWith(f.enrollments.bulkIndividualEnrollments(f.instance, { mode: 'create', enrollments: items(11) }), 'ArgumentInvalid', /1 to 10/);
      await rejectsWith(f.enrollments.bulkIndividualEnrollments(f.instance, { mode: 'create', enrollments: [] }), 'ArgumentInvalid', /1 to 10/);
      await rejectsWith(f.enrollments.bulkIndividualEnrollments(f.instance, { mode: 'upsert', enrollments: items(1) }), 'ArgumentInvalid', /mode/);
      await rejectsWith(f.enrollments.bulkIndividualEnrollments(f.instance, { mode: 'create', enrollments: [{ ...symBody() }] }), 'ArgumentInvalid', /registrationId/);
      await rejectsWith(
        f.enrollments.bulkIndividualEnrollments(f.instance, { mode: 'create', enrollments: [{ registrationId: 'x', ...symBody() }, { registrationId: 'X', ...symBody() }] }),
        'ArgumentInvalid',
        /more than once/,
      );
      await rejectsWith(f.enrollments.bulkIndividualEnrollments(f.instance, [1]), 'InvalidJson');
      assert.equal(await f.store.provisioning.countIndividualEnrollments(f.instance.name), 0);
    });

    it('runs on enrollment groups too', async () => {
      const r = await f.enrollments.bulkEnrollmentGroups(f.instance, {
        mode: 'create',
        enrollmentGroups: [
          { enrollmentGroupId: 'g-a', ...symBody() },
          { enrollmentGroupId: 'g-b', ...symBody({ deviceId: 'no' }) },
        ],
      });
      assert.deepEqual(r.errors.map((e) => [e.id, e.errorCode]), [['g-b', 400004]]);
      assert.ok(await f.store.provisioning.getEnrollmentGroup(f.instance.name, 'g-a'));
    });
  });

  describe('queries and paging', () => {
    it('pages 25 enrollments by 10 with continuation tokens only while more follow', async () => {
      for (let n = 0; n < 25; n++) await f.enrollments.putIndividualEnrollment(f.instance, `dev-${String(n).padStart(2, '0')}`, symBody(), undefined);
      const ids: string[] = [];
      let page: PageParams = FIRST;
      const tokens: (string | undefined)[] = [];
      for (;;) {
        const r = await f.enrollments.queryIndividualEnrollments(f.instance, { query: 'SELECT * FROM enrollments' }, page);
        ids.push(...r.items.map((e) => e.registrationId));
        tokens.push(r.continuationToken);
        if (r.continuationToken === undefined) break;
        page = { pageSize: 10, after: decodeContinuation(r.continuationToken) };
      }
      assert.equal(tokens.length, 3);
      assert.equal(tokens[2], undefined);
      assert.deepEqual(ids, Array.from({ length: 25 }, (_, n) => `dev-${String(n).padStart(2, '0')}`));
    });

    it('validates query specs, page sizes and tokens', () => {
      const oks: (JsonObject | undefined)[] = [undefined, { query: '*' }, { query: 'select * from enrollmentGroups' }, { query: 'SELECT * FROM enrollments;' }, {}];
      for (const ok of oks) validateQuerySpec(ok);
      throwsWith(() => validateQuerySpec({ query: "SELECT * FROM enrollments WHERE registrationId = 'x'" }), 'ArgumentInvalid', /Only the queries/);
      throwsWith(() => validateQuerySpec({ query: 5 }), 'ArgumentInvalid');
      throwsWith(() => validateQuerySpec('*'), 'InvalidJson');
      assert.equal(parsePageSize(undefined), 100);
      assert.equal(parsePageSize('10'), 10);
      assert.equal(parsePageSize('5000'), 1000);
      for (const bad of ['0', '-1', 'ten', '1.5']) throwsWith(() => parsePageSize(bad), 'ArgumentInvalid', /x-ms-max-item-count/);
      assert.equal(decodeContinuation(encodeContinuation('dev-09')), 'dev-09');
      assert.equal(decodeContinuation(''), undefined);
      for (const bad of ['garbage', 'c1.', 'c1.***', 'c2.ZGV2']) throwsWith(() => decodeContinuation(bad), 'ArgumentInvalid', /continuation/);
    });

    it('queries groups and the registrations of a group', async () => {
      await f.enrollments.putEnrollmentGroup(f.instance, 'grp-b', symBody(), undefined);
      await f.enrollments.putEnrollmentGroup(f.instance, 'Grp-A', symBody(), undefined);
      const groups = await f.enrollments.queryEnrollmentGroups(f.instance, { query: '*' }, { pageSize: 1, after: undefined });
      assert.deepEqual(groups.items.map((g) => g.enrollmentGroupId), ['Grp-A']);
      assert.ok(groups.continuationToken);
      for (const id of ['r3', 'r1', 'r2']) await f.store.provisioning.putRegistration(f.instance.name, record(id, { group: 'grp-b' }), { kind: 'absent' });
      const regs = await f.registrations.queryGroup(f.instance, 'GRP-B', { query: '*' }, FIRST);
      assert.deepEqual(regs.items.map((r) => r.registrationId), ['r1', 'r2', 'r3']);
      assert.equal(regs.continuationToken, undefined);
    });
  });
});

describe('RegistrationRecordService', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await createFixture();
  });
  afterEach(async () => {
    await f.close();
  });

  it('gets, refuses stale deletes, deletes, and answers 404202 for unknown ids', async () => {
    await f.store.provisioning.putRegistration(f.instance.name, record('Rec-1'), { kind: 'absent' });
    assert.equal((await f.registrations.get(f.instance, 'rec-1')).registrationId, 'Rec-1');
    await rejectsWith(f.registrations.delete(f.instance, 'rec-1', '"stale"'), 'PreconditionFailed');
    await f.registrations.delete(f.instance, 'REC-1', '"InJlYyI="');
    const e = await rejectsWith(f.registrations.get(f.instance, 'rec-1'), 'RegistrationNotFound');
    assert.equal(e.code, 404202);
    await rejectsWith(f.registrations.delete(f.instance, 'rec-1', undefined), 'RegistrationNotFound');
    await rejectsWith(f.registrations.get(f.instance, 'bad/id'), 'InvalidRegistrationId');
  });
});

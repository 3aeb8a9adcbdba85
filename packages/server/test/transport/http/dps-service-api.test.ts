import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildSas } from '../../../src/core/sas.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { createHttpsApp } from '../../../src/transport/http/app.ts';
import { hostOf, registerDpsServiceApi } from '../../../src/transport/http/dps-service-api.ts';
import type { RegistrationRecord } from '../../../src/provisioning/model.ts';
import { createFixture, HUB1, hubConnectionString, key, type Fixture } from '../../provisioning/fixtures.ts';

const HOST = 'dps.homing.test';
const JSON_CT = 'application/json; charset=utf-8';

type Json = Record<string, unknown>;

interface Harness {
  f: Fixture;
  app: FastifyInstance;
  /** A request signed with `policy` (default the owner) for HOST. */
  call(method: InjectOptions['method'], url: string, opts?: { body?: unknown; raw?: string; headers?: Record<string, string>; policy?: string; sas?: string | null }): Promise<LightMyRequestResponse>;
  sas(policy: string, opts?: { sr?: string; expiry?: number; key?: string }): string;
}

async function harness(): Promise<Harness> {
  const f = await createFixture({ hostNames: [HOST] });
  const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps-service' });
  registerDpsServiceApi(app, { instances: f.resolver, enrollments: f.enrollments, registrations: f.registrations, admin: f.instances, clock: f.clock });
  await app.ready();
  const nowS = (): number => Math.floor(f.clock.now() / 1000);
  const sas: Harness['sas'] = (policy, o = {}) => {
    const p = f.instance.policies.find((x) => x.keyName === policy);
    if (!p) throw new Error(`no policy ${policy}`);
    return buildSas({ sr: o.sr ?? HOST, keyBase64: o.key ?? p.primaryKey, expirySeconds: o.expiry ?? nowS() + 3600, keyName: policy });
  };
  const call: Harness['call'] = (method, url, o = {}) => {
    const headers: Record<string, string> = { host: HOST, ...o.headers };
    const token = o.sas === undefined ? sas(o.policy ?? 'provisioningserviceowner') : o.sas;
    if (token !== null) headers.authorization = token;
    let payload: string | undefined;
    if (o.raw !== undefined) payload = o.raw;
    else if (o.body !== undefined) payload = JSON.stringify(o.body);
    if (payload !== undefined) headers['content-type'] ??= JSON_CT;
    return app.inject({ method, url, headers, ...(payload !== undefined ? { payload } : {}) });
  };
  return { f, app, call, sas };
}

function json(r: LightMyRequestResponse): Json {
  assert.equal(r.headers['content-type'], JSON_CT);
  return r.json<Json>();
}

/** Asserts a DPS error answer: status, six-digit code in body and header, and the body shape. */
function assertDpsError(r: LightMyRequestResponse, status: number, code: number): Json {
  assert.equal(r.statusCode, status, r.body);
  const body = json(r);
  assert.equal(body.errorCode, code);
  assert.equal(r.headers['x-ms-error-code'], String(code));
  assert.equal(typeof body.trackingId, 'string');
  assert.equal(typeof body.message, 'string');
  assert.match(String(body.timestampUtc), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
  return body;
}

const SYM = { attestation: { type: 'symmetricKey' } };
const V = '?api-version=2021-10-01';

describe('DPS service API', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness();
  });
  afterEach(async () => {
    await h.app.close();
    await h.f.close();
  });
  const count = () => h.f.store.provisioning.countIndividualEnrollments(h.f.instance.name);

  describe('individual enrollments', () => {
    it('creates with 200, generated keys, etag and timestamps; GET returns the same document with keys', async () => {
      const r = await h.call('PUT', `/enrollments/dev-1${V}`, { body: { registrationId: 'dev-1', ...SYM, capabilities: { iotEdge: true }, futureField: 7 } });
      assert.equal(r.statusCode, 200);
      const e = json(r);
      assert.equal(e.registrationId, 'dev-1');
      const keys = (e.attestation as { symmetricKey: { primaryKey: string; secondaryKey: string } }).symmetricKey;
      assert.equal(Buffer.from(keys.primaryKey, 'base64').length, 64);
      assert.equal(e.provisioningStatus, 'enabled');
      assert.deepEqual(e.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: true });
      assert.deepEqual(e.capabilities, { iotEdge: true });
      assert.equal(e.futureField, 7, 'unknown fields round-trip');
      assert.match(String(e.etag), /^[A-Za-z0-9+/]+=*$/);
      const g = await h.call('GET', `/enrollments/dev-1${V}`);
      assert.equal(g.statusCode, 200);
      assert.deepEqual(json(g), e);
    });

    it('finds ids case-insensitively, on any path case, with or without a trailing slash', async () => {
      assert.equal((await h.call('PUT', '/enrollments/Dev-A', { body: SYM })).statusCode, 200);
      for (const url of ['/enrollments/dev-a', '/ENROLLMENTS/DEV-A', '/enrollments/dev-a/', '/Enrollments/dEV-a?api-version=2099-12-31-preview']) {
        const r = await h.call('GET', url);
        assert.equal(r.statusCode, 200, url);
        assert.equal(json(r).registrationId, 'Dev-A');
      }
      assertDpsError(await h.call('PUT', '/enrollments/dev-a', { body: SYM }), 409, 409001);
    });

    it('applies the etag rules: 409 without If-Match, 412 when stale, 200 with the current etag', async () => {
      const created = json(await h.call('PUT', '/enrollments/etag-dev', { body: SYM }));
      assertDpsError(await h.call('PUT', '/enrollments/etag-dev', { body: { ...SYM, provisioningStatus: 'disabled' } }), 409, 409001);
      const updated = await h.call('PUT', '/enrollments/etag-dev', { body: { ...created, provisioningStatus: 'disabled' }, headers: { 'if-match': String(created.etag) } });
      assert.equal(updated.statusCode, 200);
      assert.equal(json(updated).provisioningStatus, 'disabled');
      assertDpsError(await h.call('PUT', '/enrollments/etag-dev', { body: SYM, headers: { 'if-match': String(created.etag) } }), 412, 412002);
      assertDpsError(await h.call('PUT', '/enrollments/never', { body: SYM, headers: { 'if-match': '*' } }), 412, 412002);
      assert.equal(json(await h.call('GET', '/enrollments/etag-dev')).provisioningStatus, 'disabled');
      assertDpsError(await h.call('DELETE', '/enrollments/etag-dev', { headers: { 'if-match': String(created.etag) } }), 412, 412002);
      const del = await h.call('DELETE', '/enrollments/etag-dev', { headers: { 'if-match': `"${String(json(updated).etag)}"` } });
      assert.equal(del.statusCode, 204);
      assert.equal(del.body, '');
      assertDpsError(await h.call('DELETE', '/enrollments/etag-dev'), 404, 404201);
      assertDpsError(await h.call('GET', '/enrollments/etag-dev'), 404, 404201);
    });

    it('returns the attestation mechanism with keys on an empty POST, and embeds the registration state in GET', async () => {
      const k = { primaryKey: key(32), secondaryKey: key(32) };
      await h.call('PUT', '/enrollments/att', { body: { attestation: { type: 'symmetricKey', symmetricKey: k } } });
      const r = await h.app.inject({ method: 'POST', url: `/enrollments/att/attestationmechanism${V}`, headers: { host: HOST, authorization: h.sas('enrollmentread'), 'content-length': '0' } });
      assert.equal(r.statusCode, 200);
      assert.deepEqual(json(r), { type: 'symmetricKey', symmetricKey: k });
      const record: RegistrationRecord = {
        registrationId: 'att', createdDateTimeUtc: '2026-01-01T00:00:00.0000000Z', lastUpdatedDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
        assignedHub: HUB1, deviceId: 'att', status: 'assigned', substatus: 'initialAssignment', etag: 'InIi',
        enrollment: { kind: 'individual', registrationId: 'att' }, attestationType: 'symmetricKey',
      };
      await h.f.store.provisioning.putRegistration(h.f.instance.name, record, { kind: 'absent' });
      const g = json(await h.call('GET', '/enrollments/att'));
      assert.deepEqual(g.registrationState, {
        registrationId: 'att', createdDateTimeUtc: record.createdDateTimeUtc, assignedHub: HUB1, deviceId: 'att', status: 'assigned',
        substatus: 'initialAssignment', lastUpdatedDateTimeUtc: record.lastUpdatedDateTimeUtc, etag: 'InIi',
      });
      const q = await h.call('POST', '/enrollments/query', { body: { query: '*' } });
      assert.equal((q.json<Json[]>()[0] ?? {}).registrationState, undefined, 'query results omit registrationState');
      assert.equal(json(await h.call('GET', '/registrations/ATT')).assignedHub, HUB1);
      assert.equal((await h.call('DELETE', '/enrollments/att')).statusCode, 204);
      assertDpsError(await h.call('GET', '/registrations/att'), 404, 404202);
    });

    it('pages a query with x-ms-max-item-count and sends x-ms-continuation only while more follow', async () => {
      for (let n = 0; n < 25; n++) await h.f.enrollments.putIndividualEnrollment(h.f.instance, `q-${String(n).padStart(2, '0')}`, SYM, undefined);
      const ids: string[] = [];
      let token: string | undefined;
      let pages = 0;
      do {
        const headers: Record<string, string> = { 'x-ms-max-item-count': '10', ...(token ? { 'x-ms-continuation': token } : {}) };
        const r = await h.call('POST', `/enrollments/query${V}`, { body: { query: 'SELECT * FROM enrollments' }, headers });
        assert.equal(r.statusCode, 200);
        assert.equal(r.headers['x-ms-item-type'], 'enrollment');
        assert.equal(r.headers['x-ms-max-item-count'], '10');
        const items = r.json<Json[]>();
        ids.push(...items.map((e) => String(e.registrationId)));
        token = r.headers['x-ms-continuation'] as string | undefined;
        pages++;
        if (pages === 3) assert.equal('x-ms-continuation' in r.headers, false, 'no header on the last page');
      } while (token !== undefined);
      assert.equal(pages, 3);
      assert.equal(ids.length, 25);
      assert.deepEqual(ids, [...ids].sort());
      assertDpsError(await h.call('POST', '/enrollments/query', { body: { query: '*' }, headers: { 'x-ms-continuation': 'bogus' } }), 400, 400004);
      assertDpsError(await h.call('POST', '/enrollments/query', { body: { query: '*' }, headers: { 'x-ms-max-item-count': 'zero' } }), 400, 400004);
    });

    it('runs bulk operations with per-item errors (trailing slash as the SDK sends it)', async () => {
      const r = await h.call('POST', `/enrollments/${V}`, {
        body: { mode: 'create', enrollments: [{ registrationId: 'bulk-1', ...SYM }, { registrationId: 'bulk bad', ...SYM }, { registrationId: 'bulk-2', ...SYM }] },
      });
      assert.equal(r.statusCode, 200);
      const body = json(r);
      assert.equal(body.isSuccessful, false);
      assert.deepEqual(
        (body.errors as Json[]).map((e) => [e.registrationId, e.errorCode]),
        [['bulk bad', 400008]],
      );
      assert.equal(await count(), 2);
      const del = json(await h.call('POST', '/enrollments', { body: { mode: 'delete', enrollments: [{ registrationId: 'bulk-1' }, { registrationId: 'BULK-2' }] } }));
      assert.deepEqual(del, { isSuccessful: true, errors: [] });
      assert.equal(await count(), 0);
      assertDpsError(await h.call('POST', '/enrollments', { body: { mode: 'create', enrollments: Array.from({ length: 11 }, (_, i) => ({ registrationId: `b${i}`, ...SYM })) } }), 400, 400004);
    });
  });

  describe('enrollment groups and registrations', () => {
    it('creates, reads (also lower-case path), queries, bulk-runs and deletes groups', async () => {
      const c = await h.call('PUT', '/enrollmentGroups/Fleet-1', { body: { enrollmentGroupId: 'Fleet-1', ...SYM } });
      assert.equal(c.statusCode, 200);
      assert.equal(json(c).enrollmentGroupId, 'Fleet-1');
      assert.equal(json(await h.call('GET', '/enrollmentgroups/fleet-1')).enrollmentGroupId, 'Fleet-1');
      const att = await h.call('POST', '/enrollmentgroups/FLEET-1/attestationmechanism');
      assert.equal(json(att).type, 'symmetricKey');
      const q = await h.call('POST', '/enrollmentGroups/query', { body: { query: '*' } });
      assert.equal(q.headers['x-ms-item-type'], 'enrollmentGroup');
      assert.deepEqual(q.json<Json[]>().map((g) => g.enrollmentGroupId), ['Fleet-1']);
      const bulk = json(await h.call('POST', '/enrollmentGroups', { body: { mode: 'create', enrollmentGroups: [{ enrollmentGroupId: 'fleet-1', ...SYM }] } }));
      assert.deepEqual(bulk.errors, [{ enrollmentGroupId: 'fleet-1', errorCode: 409001, errorStatus: (bulk.errors as Json[])[0]?.errorStatus }]);
      assertDpsError(await h.call('PUT', '/enrollmentGroups/tpm-group', { body: { attestation: { type: 'tpm', tpm: { endorsementKey: key() } } } }), 400, 400004);
      assert.equal((await h.call('DELETE', '/enrollmentGroups/fleet-1')).statusCode, 204);
      assertDpsError(await h.call('GET', '/enrollmentGroups/fleet-1'), 404, 404201);
    });

    it('gets, queries per group and deletes registration records', async () => {
      for (const id of ['m-2', 'm-1']) {
        await h.f.store.provisioning.putRegistration(h.f.instance.name, {
          registrationId: id, createdDateTimeUtc: '2026-01-01T00:00:00.0000000Z', lastUpdatedDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
          assignedHub: HUB1, deviceId: id, status: 'assigned', etag: 'InIi', enrollment: { kind: 'group', enrollmentGroupId: 'fleet' }, attestationType: 'symmetricKey',
        }, { kind: 'absent' });
      }
      assertDpsError(await h.call('GET', '/registrations/unknown-dev'), 404, 404202);
      const q = await h.call('POST', '/registrations/FLEET/query', { body: { query: '*' }, headers: { 'x-ms-max-item-count': '1' } });
      assert.equal(q.headers['x-ms-item-type'], 'deviceRegistration');
      assert.deepEqual(q.json<Json[]>().map((r) => r.registrationId), ['m-1']);
      const q2 = await h.call('POST', '/registrations/fleet/query', { body: { query: '*' }, headers: { 'x-ms-continuation': String(q.headers['x-ms-continuation']) } });
      assert.deepEqual(q2.json<Json[]>().map((r) => r.registrationId), ['m-2']);
      assertDpsError(await h.call('DELETE', '/registrations/m-1', { headers: { 'if-match': 'stale' } }), 412, 412002);
      assert.equal((await h.call('DELETE', '/registrations/m-1', { headers: { 'if-match': 'InIi' } })).statusCode, 204);
      assertDpsError(await h.call('DELETE', '/registrations/m-1'), 404, 404202);
    });
  });

  describe('authorization', () => {
    it('answers 401 401000 for every bad credential without saying which part failed', async () => {
      const nowS = Math.floor(h.f.clock.now() / 1000);
      const cases: Record<string, string | null> = {
        missing: null,
        malformed: 'SharedAccessSignature garbage',
        bearer: 'Bearer abc.def.ghi',
        expired: h.sas('provisioningserviceowner', { expiry: nowS - 3600 }),
        'wrong key': h.sas('provisioningserviceowner', { key: key() }),
        'other host': h.sas('provisioningserviceowner', { sr: 'other.homing.test' }),
        'unknown policy': h.sas('provisioningserviceowner').replace('skn=provisioningserviceowner', 'skn=nobody'),
      };
      for (const [name, sas] of Object.entries(cases)) {
        const r = await h.call('PUT', '/enrollments/auth-dev', { body: SYM, sas });
        const body = assertDpsError(r, 401, 401000);
        assert.equal(body.message, 'Unauthorized', name);
      }
      const otherHost = await h.app.inject({ method: 'GET', url: '/enrollments/x', headers: { host: 'unknown.test', authorization: h.sas('provisioningserviceowner', { sr: 'unknown.test' }) } });
      assertDpsError(otherHost, 401, 401000);
      assert.equal(await count(), 0, 'nothing was written');
    });

    it('checks the right of the policy: a read-only policy reads but cannot write', async () => {
      await h.call('PUT', '/enrollments/ro', { body: SYM });
      assertDpsError(await h.call('PUT', '/enrollments/ro-2', { body: SYM, policy: 'enrollmentread' }), 401, 401000);
      assertDpsError(await h.call('DELETE', '/enrollments/ro', { policy: 'enrollmentread' }), 401, 401000);
      assertDpsError(await h.call('POST', '/enrollments', { body: { mode: 'delete', enrollments: [{ registrationId: 'ro' }] }, policy: 'enrollmentread' }), 401, 401000);
      assert.equal((await h.call('GET', '/enrollments/ro', { policy: 'enrollmentread' })).statusCode, 200);
      assert.equal((await h.call('PUT', '/enrollments/rw', { body: SYM, policy: 'enrollmentwrite' })).statusCode, 200);
      assertDpsError(await h.call('GET', '/registrations/ro', { policy: 'enrollmentread' }), 401, 401000);
      assertDpsError(await h.call('GET', '/registrations/ro', { policy: 'registrationstatusread' }), 404, 404202);
      assertDpsError(await h.call('DELETE', '/registrations/ro', { policy: 'registrationstatusread' }), 401, 401000);
      assertDpsError(await h.call('GET', '/homing/instance', { policy: 'enrollmentwrite' }), 401, 401000);
      assert.equal(await count(), 2);
    });

    it('finds the instance by the sr host when the Host header names none', async () => {
      await h.call('PUT', '/enrollments/via-sr', { body: SYM });
      const r = await h.app.inject({ method: 'GET', url: '/enrollments/via-sr', headers: { host: 'proxy.local:8443', authorization: h.sas('enrollmentread') } });
      assert.equal(r.statusCode, 200);
      assert.equal(hostOf('[::1]:443'), '::1');
      assert.equal(hostOf('dps.test:443'), 'dps.test');
      assert.equal(hostOf('dps.test/enrollments'), 'dps.test');
    });

    it('authenticates before reading the body: 401, not 400 or 413, for anonymous junk', async () => {
      assertDpsError(await h.call('PUT', '/enrollments/anon', { raw: '{not json', sas: null }), 401, 401000);
      assertDpsError(await h.call('PUT', '/enrollments/anon', { raw: 'x'.repeat(100 * 1024), sas: null }), 401, 401000);
    });
  });

  describe('bad input changes nothing', () => {
    it('answers malformed JSON with 400 400006', async () => {
      assertDpsError(await h.call('PUT', '/enrollments/dev-json', { raw: '{"attestation": ' }), 400, 400006);
      assertDpsError(await h.call('PUT', '/enrollments/dev-json', { raw: '[1,2]' }), 400, 400006);
      assert.equal(await count(), 0);
    });

    it('answers a body over 96 KB with 413 and the DPS body', async () => {
      const big = { ...SYM, initialTwin: { tags: { blob: 'x'.repeat(97 * 1024) } } };
      assertDpsError(await h.call('PUT', '/enrollments/dev-big', { body: big }), 413, 413001);
      const justUnder = { ...SYM, padding: 'x'.repeat(90 * 1024) };
      assert.equal((await h.call('PUT', '/enrollments/dev-ok', { body: justUnder })).statusCode, 200);
      assert.equal(await count(), 1);
    });

    it('rejects registration ids outside the charset or longer than 128 with 400 400008', async () => {
      for (const id of ['bad%20id', 'dev!', 'dev.', 'd%C3%A9v', 'a%2Fb', 'x'.repeat(129)]) {
        assertDpsError(await h.call('PUT', `/enrollments/${id}`, { body: SYM }), 400, 400008);
        assertDpsError(await h.call('GET', `/enrollments/${id}`), 400, 400008);
      }
      assert.equal((await h.call('PUT', `/enrollments/${'x'.repeat(128)}`, { body: SYM })).statusCode, 200);
      assert.equal((await h.call('PUT', '/enrollments/reg%3A1', { body: SYM })).statusCode, 200);
      assert.equal(json(await h.call('GET', '/enrollments/REG:1')).registrationId, 'reg:1');
      assert.equal(await count(), 2);
    });

    it('rejects bad base64 keys and bad allocation settings with 400 400004', async () => {
      for (const body of [
        { attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: 'short', secondaryKey: key() } } },
        { attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key(8), secondaryKey: key() } } },
        { ...SYM, allocationPolicy: 'custom' },
        { ...SYM, allocationPolicy: 'static' },
        { ...SYM, iotHubs: ['not-linked.test'] },
        { ...SYM, reprovisionPolicy: { updateHubAssignment: true } },
      ]) {
        assertDpsError(await h.call('PUT', '/enrollments/dev-bad', { body }), 400, 400004);
      }
      assert.equal(await count(), 0);
    });

    it('accepts any api-version, or none', async () => {
      assert.equal((await h.call('PUT', '/enrollments/v1?api-version=1999-01-01', { body: SYM })).statusCode, 200);
      assert.equal((await h.call('PUT', '/enrollments/v2', { body: SYM })).statusCode, 200);
      assert.equal((await h.call('GET', '/enrollments/v1?api-version=2026-04-01&x=1')).statusCode, 200);
    });
  });

  describe('Homing admin API', () => {
    it('reads the instance without keys, lists keys, and sets the default allocation policy', async () => {
      const r = await h.call('GET', '/homing/instance', { policy: 'serviceconfig' });
      const body = json(r);
      assert.equal(body.idScope, h.f.instance.idScope);
      assert.ok(!r.body.includes(h.f.instance.policies[0]?.primaryKey ?? '-'));
      const keys = json(await h.call('POST', '/homing/instance/listKeys', { policy: 'serviceconfig' }));
      assert.equal((keys.authorizationPolicies as Json[]).find((p) => p.keyName === 'provisioningserviceowner')?.primaryKey, h.f.instance.policies[0]?.primaryKey);
      assertDpsError(await h.call('PUT', '/homing/instance', { body: { allocationPolicy: 'custom' }, policy: 'serviceconfig' }), 400, 400004);
      const put = await h.call('PUT', '/homing/instance', { body: { allocationPolicy: 'geoLatency' }, headers: { 'if-match': String(body.etag) }, policy: 'serviceconfig' });
      assert.equal(json(put).allocationPolicy, 'geoLatency');
      assertDpsError(await h.call('PUT', '/homing/instance', { body: { allocationPolicy: 'static' }, headers: { 'if-match': String(body.etag) } }), 412, 412002);
    });

    it('links, lists, updates and unlinks hubs; enrollments can name a newly linked hub at once', async () => {
      const cs = hubConnectionString('hub9.homing.test');
      const put = await h.call('PUT', '/homing/linkedHubs/hub9.homing.test', { body: { connectionString: cs, location: 'south', allocationWeight: 10 } });
      assert.equal(put.statusCode, 200);
      assert.deepEqual(json(put), { name: 'hub9.homing.test', connectionString: 'HostName=hub9.homing.test;SharedAccessKeyName=iothubowner;SharedAccessKey=****', location: 'south', allocationWeight: 10, applyAllocationPolicy: true });
      assertDpsError(await h.call('PUT', '/homing/linkedHubs/HUB9.homing.test', { body: { connectionString: cs } }), 409, 409001);
      assert.deepEqual((await h.call('GET', '/homing/linkedHubs')).json<Json[]>().map((x) => x.name), [HUB1, 'Hub2.Homing.Test', 'hub9.homing.test']);
      assert.equal((await h.call('PUT', '/enrollments/static-9', { body: { ...SYM, allocationPolicy: 'static', iotHubs: ['hub9.homing.test'] } })).statusCode, 200);
      const patch = await h.call('PATCH', '/homing/linkedHubs/hub9.homing.test', { body: { applyAllocationPolicy: false } });
      assert.equal(json(patch).applyAllocationPolicy, false);
      assertDpsError(await h.call('PATCH', '/homing/linkedHubs/hub9.homing.test', { body: { allocationWeight: 0 } }), 400, 400004);
      assert.equal((await h.call('DELETE', '/homing/linkedHubs/hub9.homing.test')).statusCode, 204);
      assertDpsError(await h.call('DELETE', '/homing/linkedHubs/hub9.homing.test'), 404, 404000);
      assertDpsError(await h.call('PUT', '/enrollments/static-10', { body: { ...SYM, iotHubs: ['hub9.homing.test'] } }), 400, 400004);
    });
  });
});

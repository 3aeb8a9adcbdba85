import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { isoTime } from '../../../src/core/clock.ts';
import type { JsonObject } from '../../../src/core/json.ts';
import { deriveDeviceKey } from '../../../src/core/sas.ts';
import { RestHubClientFactory } from '../../../src/provisioning/hub-client-rest.ts';
import { ManualClock } from '../../helpers/ids.ts';
import { gatedHubClients } from '../../helpers/wrapped-hub-clients.ts';
import { createRuntimeFixture, newKey, type FixtureOptions, type RuntimeFixture } from './fixture.ts';

const API = 'api-version=2019-03-31';

function put(f: RuntimeFixture, id: string, key: string | null, o: { body?: unknown; rawBody?: string; scope?: string; sas?: string; query?: string } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
  const auth = o.sas ?? (key === null ? undefined : f.deviceSas(id, key));
  if (auth !== undefined) headers.authorization = auth;
  return f.app.inject({
    method: 'PUT',
    url: `/${o.scope ?? f.idScope}/registrations/${id}/register?${o.query ?? API}`,
    headers,
    payload: o.rawBody ?? JSON.stringify(o.body ?? { registrationId: id }),
  });
}

function poll(f: RuntimeFixture, id: string, operationId: string, key: string, sas?: string) {
  return f.app.inject({
    method: 'GET',
    url: `/${f.idScope}/registrations/${id}/operations/${operationId}?${API}`,
    headers: { 'content-type': 'application/json; charset=utf-8', authorization: sas ?? f.deviceSas(id, key) },
    payload: '{}',
  });
}

function lookup(f: RuntimeFixture, id: string, key: string) {
  return f.app.inject({
    method: 'POST',
    url: `/${f.idScope}/registrations/${id}?api-version=2021-06-01`,
    headers: { 'content-type': 'application/json', authorization: f.deviceSas(id, key) },
    payload: JSON.stringify({ registrationId: id }),
  });
}

interface OpBody {
  operationId: string;
  status: string;
  registrationState?: JsonObject & { status: string; assignedHub?: string; deviceId?: string; substatus?: string; errorCode?: number; errorMessage?: string };
}

function json(r: LightMyRequestResponse): OpBody {
  assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
  return r.json<OpBody>();
}

function assertDpsError(r: LightMyRequestResponse, status: number, code: number): void {
  assert.equal(r.statusCode, status, r.body);
  assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
  const b = r.json<{ errorCode: number; trackingId: string; message: string; timestampUtc: string }>();
  assert.equal(b.errorCode, code, r.body);
  assert.equal(r.headers['x-ms-error-code'], String(code));
  assert.ok(b.trackingId.length > 0 && b.timestampUtc.endsWith('Z') && typeof b.message === 'string');
}

async function withFixture(o: FixtureOptions, fn: (f: RuntimeFixture) => Promise<void>): Promise<void> {
  const f = await createRuntimeFixture(o);
  try {
    await fn(f);
  } finally {
    await f.close();
  }
}

test('group enrollment, derived key: 200 assigned within the budget; hub has the device, derived keys and the initial twin', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1', { initialTwin: { tags: { site: 'A' }, properties: { desired: { mode: 'eco' } } }, iotEdge: true });
    const key = f.derivedKey(g, 'sn-001');
    const r = await put(f, 'sn-001', key);
    assert.equal(r.statusCode, 200, r.body);
    const b = json(r);
    assert.equal(b.status, 'assigned');
    assert.match(b.operationId, /^4\.[0-9a-f]{16}\.[0-9a-f-]{36}$/);
    const s = b.registrationState!;
    assert.equal(s.registrationId, 'sn-001');
    assert.equal(s.deviceId, 'sn-001');
    assert.equal(s.status, 'assigned');
    assert.equal(s.substatus, 'initialAssignment');
    assert.deepEqual(s.symmetricKey, { enrollmentGroupId: 'G1' });
    assert.ok(['hub-a.test', 'hub-b.test'].includes(s.assignedHub!));
    assert.ok(typeof s.etag === 'string' && s.createdDateTimeUtc === s.lastUpdatedDateTimeUtc);
    assert.deepEqual(Object.keys(s), ['registrationId', 'createdDateTimeUtc', 'assignedHub', 'deviceId', 'status', 'substatus', 'lastUpdatedDateTimeUtc', 'etag', 'symmetricKey']);

    const hub = f.hubs.get(s.assignedHub!)!;
    const { device, twin } = await hub.getTwinState('sn-001');
    assert.equal(device.authentication.type, 'sas');
    assert.equal(device.authentication.symmetricKey.primaryKey, key);
    assert.equal(device.authentication.symmetricKey.secondaryKey, f.derivedKey(g, 'sn-001', 'secondary'));
    assert.equal(device.capabilities.iotEdge, true);
    assert.deepEqual(twin.tags, { site: 'A' });
    assert.deepEqual(twin.desired.props, { mode: 'eco' });
    assert.deepEqual(twin.reported.props, {});
    // The device authenticates to its hub with the same key.
    const other = [...f.hubs.values()].find((h) => h !== hub)!;
    assert.equal(await other.findDevice('sn-001'), undefined);
  });
});

test('individual enrollment with deviceId and static hub: keys = enrollment keys; the secondary key works too', async () => {
  await withFixture({}, async (f) => {
    const e = await f.addIndividual('dev-1', { deviceId: 'custom-7', allocationPolicy: 'static', iotHubs: ['hub-b.test'] });
    const sk = e.attestation.symmetricKey!;
    const r = await put(f, 'dev-1', sk.secondaryKey);
    assert.equal(r.statusCode, 200, r.body);
    const s = json(r).registrationState!;
    assert.equal(s.assignedHub, 'hub-b.test');
    assert.equal(s.deviceId, 'custom-7');
    assert.equal(s.symmetricKey, undefined);
    const d = await f.hubs.get('hub-b.test')!.getDevice('custom-7');
    assert.equal(d.authentication.symmetricKey.primaryKey, sk.primaryKey);
    assert.equal(d.authentication.symmetricKey.secondaryKey, sk.secondaryKey);
  });
});

test('budget 0: 202 assigning with an integer Retry-After, then the poll answers 200 with the final status', async () => {
  await withFixture({ responseBudgetMs: 0 }, async (f) => {
    const g = await f.addGroup('G1');
    const key = f.derivedKey(g, 'sn-2');
    const r = await put(f, 'sn-2', key);
    assert.equal(r.statusCode, 202, r.body);
    assert.equal(r.headers['retry-after'], '1');
    const b = json(r);
    assert.deepEqual(Object.keys(b), ['operationId', 'status']);
    assert.equal(b.status, 'assigning');
    await f.service.drain();
    const p = await poll(f, 'sn-2', b.operationId, key);
    assert.equal(p.statusCode, 200, p.body);
    const pb = json(p);
    assert.equal(pb.operationId, b.operationId);
    assert.equal(pb.status, 'assigned');
    assert.equal(pb.registrationState!.deviceId, 'sn-2');
  });
});

test('a register while one is assigning returns the same operation; polls answer 202 until it ends', async () => {
  let gate!: ReturnType<typeof gatedHubClients>;
  await withFixture({ responseBudgetMs: 0, hubClients: (inner) => (gate = gatedHubClients(inner)).factory }, async (f) => {
    const g = await f.addGroup('G1');
    const key = f.derivedKey(g, 'sn-3');
    const first = json(await put(f, 'sn-3', key));
    const second = await put(f, 'SN-3', f.derivedKey(g, 'SN-3'));
    assert.equal(second.statusCode, 202);
    assert.equal(json(second).operationId, first.operationId);
    const p = await poll(f, 'sn-3', first.operationId, key);
    assert.equal(p.statusCode, 202);
    assert.equal(p.headers['retry-after'], '1');
    assert.deepEqual(json(p), { operationId: first.operationId, status: 'assigning', registrationState: { registrationId: 'sn-3', status: 'assigning' } });
    // The lookup during assignment: never registered before.
    assert.equal((await lookup(f, 'sn-3', key)).statusCode, 404);
    gate.open();
    await f.service.drain();
    assert.equal(gate.writes(), 1, 'one hub write for both requests');
    assert.equal(json(await poll(f, 'sn-3', first.operationId, key)).status, 'assigned');
  });
});

test('re-registration with the same hubs: same hub, twin untouched, substatus kept; lookup shows the record without a new operation', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1', { initialTwin: { tags: { site: 'A' }, properties: { desired: { mode: 'eco' } } } });
    const key = f.derivedKey(g, 'sn-4');
    const first = json(await put(f, 'sn-4', key)).registrationState!;
    const hub = f.hubs.get(first.assignedHub!)!;
    await hub.updateTwin('sn-4', { tags: { site: 'B' }, properties: { desired: { mode: 'turbo' } } }, '*');
    await hub.patchReported('sn-4', { fw: '1.0' });
    const before = await hub.getTwinState('sn-4');
    (f.clock as ManualClock).advance(5000);

    const again = json(await put(f, 'sn-4', key)).registrationState!;
    assert.equal(again.assignedHub, first.assignedHub);
    assert.equal(again.substatus, 'initialAssignment');
    assert.equal(again.createdDateTimeUtc, first.createdDateTimeUtc);
    assert.notEqual(again.lastUpdatedDateTimeUtc, first.lastUpdatedDateTimeUtc);
    assert.notEqual(again.etag, first.etag);
    const after = await hub.getTwinState('sn-4');
    assert.deepEqual(after.twin, before.twin, 'twin untouched');
    assert.equal(after.device.etag, before.device.etag, 'identity untouched when nothing changed');

    const ops = (await f.counts()).dps_operations;
    const l = await lookup(f, 'sn-4', key);
    assert.equal(l.statusCode, 200, l.body);
    const rec = l.json<JsonObject>();
    assert.equal(rec.assignedHub, first.assignedHub);
    assert.equal(rec.deviceId, 'sn-4');
    assert.equal(rec.status, 'assigned');
    assert.equal(rec.substatus, 'initialAssignment');
    assert.equal(rec.etag, again.etag);
    assert.equal((await f.counts()).dps_operations, ops, 'no new operation');
    assert.deepEqual((await hub.getTwinState('sn-4')).twin, before.twin, 'hub untouched');
  });
});

test('a device already on the hub without a record: reprovisionedToInitialAssignment, its twin kept', async () => {
  await withFixture({}, async (f) => {
    const e = await f.addIndividual('d9', { allocationPolicy: 'static', iotHubs: ['hub-a.test'], initialTwin: { tags: { t: 1 } } });
    const key = e.attestation.symmetricKey!.primaryKey;
    assert.equal(json(await put(f, 'd9', key)).registrationState!.substatus, 'initialAssignment');
    await f.hubs.get('hub-a.test')!.updateTwin('d9', { tags: { t: 2 } }, '*');
    assert.equal(await f.store.provisioning.deleteRegistration(f.instanceName, 'd9'), 'ok');
    const s = json(await put(f, 'd9', key)).registrationState!;
    assert.equal(s.status, 'assigned');
    assert.equal(s.substatus, 'reprovisionedToInitialAssignment');
    assert.deepEqual((await f.hubs.get('hub-a.test')!.getTwinState('d9')).twin.tags, { t: 2 });
  });
});

test('rotated individual keys are refreshed on the same hub at re-registration', async () => {
  await withFixture({}, async (f) => {
    const e = await f.addIndividual('dev-r', { allocationPolicy: 'static', iotHubs: ['hub-a.test'] });
    assert.equal(json(await put(f, 'dev-r', e.attestation.symmetricKey!.primaryKey)).status, 'assigned');
    const keys = { primaryKey: newKey(), secondaryKey: newKey() };
    const next = { ...e, attestation: { type: 'symmetricKey' as const, symmetricKey: keys }, etag: 'e2' };
    assert.equal(await f.store.provisioning.replaceIndividualEnrollment(f.instanceName, next, e.etag), 'ok');
    assert.equal(json(await put(f, 'dev-r', keys.primaryKey)).status, 'assigned');
    const d = await f.hubs.get('hub-a.test')!.getDevice('dev-r');
    assert.equal(d.authentication.symmetricKey.primaryKey, keys.primaryKey);
  });
});

test('disabled enrollments end `disabled` without touching the hub; a blocklisted group device too, its siblings register', async () => {
  await withFixture({ responseBudgetMs: 0 }, async (f) => {
    const e = await f.addIndividual('dev-off', { status: 'disabled' });
    const r = await put(f, 'dev-off', e.attestation.symmetricKey!.primaryKey);
    assert.equal(r.statusCode, 200, 'final at once, whatever the budget');
    const b = json(r);
    assert.equal(b.status, 'disabled');
    assert.equal(b.registrationState!.status, 'disabled');
    assert.equal(b.registrationState!.assignedHub, undefined);
    // The operation can be polled.
    assert.equal(json(await poll(f, 'dev-off', b.operationId, e.attestation.symmetricKey!.primaryKey)).status, 'disabled');

    const g = await f.addGroup('G1');
    await f.addIndividual('dev-7', { status: 'disabled' });
    const blocked = json(await put(f, 'dev-7', f.derivedKey(g, 'dev-7')));
    assert.equal(blocked.status, 'disabled');
    const sib = await put(f, 'dev-8', f.derivedKey(g, 'dev-8'));
    assert.equal(sib.statusCode, 202);
    await f.service.drain();
    const counts = await f.counts();
    assert.equal(counts.hub_devices, 1, 'only dev-8 on a hub');
    assert.equal(counts.dps_registrations, 1, 'only dev-8 has a record');

    const gOff = await f.addGroup('G-off', { status: 'disabled' });
    assert.equal(json(await put(f, 'x-1', f.derivedKey(gOff, 'x-1'))).status, 'disabled');
  });
});

test('a disabled enrollment keeps the existing record and the hub device as they are', async () => {
  await withFixture({}, async (f) => {
    const e = await f.addIndividual('dev-5');
    const key = e.attestation.symmetricKey!.primaryKey;
    const first = json(await put(f, 'dev-5', key)).registrationState!;
    const hub = f.hubs.get(first.assignedHub!)!;
    const dev = await hub.getDevice('dev-5');
    await f.store.provisioning.replaceIndividualEnrollment(f.instanceName, { ...e, provisioningStatus: 'disabled' }, e.etag);
    assert.equal(json(await put(f, 'dev-5', key)).status, 'disabled');
    const after = await hub.getDevice('dev-5');
    assert.equal(after.status, 'enabled');
    assert.equal(after.etag, dev.etag);
    const rec = await f.store.provisioning.getRegistration(f.instanceName, 'dev-5');
    assert.equal(rec?.status, 'assigned');
    assert.equal(rec?.etag, first.etag);
  });
});

test('a linked hub with a stale key: failed 400209 naming hub authorization, no device, no record claiming assigned', async () => {
  await withFixture({}, async (f) => {
    await f.setLinkedHubs([f.linkedHub('hub-a.test', { connectionString: `HostName=hub-a.test;SharedAccessKeyName=iothubowner;SharedAccessKey=${newKey()}` })]);
    const g = await f.addGroup('G1');
    const r = await put(f, 'sn-41', f.derivedKey(g, 'sn-41'));
    assert.equal(r.statusCode, 200);
    const b = json(r);
    assert.equal(b.status, 'failed');
    assert.equal(b.registrationState!.errorCode, 400209);
    assert.match(b.registrationState!.errorMessage!, /hub-a\.test refused the linked hub credential .*IotHubUnauthorizedAccess/);
    assert.equal(b.registrationState!.assignedHub, undefined);
    assert.equal(await f.hubs.get('hub-a.test')!.findDevice('sn-41'), undefined);
    const rec = await f.store.provisioning.getRegistration(f.instanceName, 'sn-41');
    assert.equal(rec?.status, 'failed');
    assert.equal(rec?.assignedHub, undefined);
  });
});

test('an unreachable hub: failed 503001', async () => {
  const rest = new RestHubClientFactory({ clock: new ManualClock(), port: 1, resolveAddress: () => '127.0.0.1', timeoutMs: 2000 });
  await withFixture({ hubClients: () => rest }, async (f) => {
    const g = await f.addGroup('G1');
    const b = json(await put(f, 'sn-u', f.derivedKey(g, 'sn-u')));
    assert.equal(b.status, 'failed');
    assert.equal(b.registrationState!.errorCode, 503001);
    assert.match(b.registrationState!.errorMessage!, /unreachable/);
  });
  rest.close();
});

test('no eligible hub: failed 400208 and no hub touched, under hashed and geoLatency', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1', { iotHubs: ['not-linked.test'] });
    const b = json(await put(f, 'sn-n', f.derivedKey(g, 'sn-n')));
    assert.equal(b.status, 'failed');
    assert.equal(b.registrationState!.errorCode, 400208);
    assert.match(b.registrationState!.errorMessage!, /not-linked\.test/);
    const geo = await f.addGroup('G-geo', { allocationPolicy: 'geoLatency', iotHubs: ['not-linked.test'] });
    const gb = json(await put(f, 'sn-g', f.derivedKey(geo, 'sn-g')));
    assert.equal(gb.registrationState!.errorCode, 400208);
    assert.match(gb.registrationState!.errorMessage!, /not-linked\.test/);
    assert.equal((await f.counts()).hub_devices, 0);
  });
});

test('hashed over two hubs with weights: devices spread, each on the hub allocation chose', async () => {
  await withFixture({}, async (f) => {
    await f.setLinkedHubs([f.linkedHub('hub-a.test', { allocationWeight: 1 }), f.linkedHub('hub-b.test', { allocationWeight: 3 })]);
    const g = await f.addGroup('G1');
    const on: Record<string, number> = {};
    for (let i = 0; i < 80; i++) {
      const id = `w-${i}`;
      const s = json(await put(f, id, f.derivedKey(g, id))).registrationState!;
      on[s.assignedHub!] = (on[s.assignedHub!] ?? 0) + 1;
    }
    assert.ok((on['hub-b.test'] ?? 0) > (on['hub-a.test'] ?? 0), JSON.stringify(on));
    assert.equal((on['hub-a.test'] ?? 0) + (on['hub-b.test'] ?? 0), 80);
  });
});

test('registration ids are case-insensitive: Dev-A and dev-a are one registration and one hub device', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1');
    const a = json(await put(f, 'Dev-A', f.derivedKey(g, 'Dev-A'))).registrationState!;
    assert.equal(a.deviceId, 'Dev-A');
    const b = json(await put(f, 'dev-a', f.derivedKey(g, 'dev-a'))).registrationState!;
    assert.equal(b.deviceId, 'Dev-A', 'the hub device id of the first registration');
    assert.equal(b.assignedHub, a.assignedHub);
    const c = await f.counts();
    assert.equal(c.dps_registrations, 1);
    assert.equal(c.hub_devices, 1);
    // Body and path may differ in case.
    const r = await put(f, 'DEV-A', f.derivedKey(g, 'DEV-A'), { body: { registrationId: 'dev-A' } });
    assert.equal(r.statusCode, 200, r.body);
  });
});

test('bad input is refused and nothing stored changes', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1');
    const key = (id: string) => f.derivedKey(g, id);
    const before = await f.counts();
    const nowS = Math.floor(f.clock.now() / 1000);

    assertDpsError(await put(f, 'dev-x', key('dev-x'), { rawBody: '{"registrationId":' }), 400, 400006);
    assertDpsError(await put(f, 'dev-x', key('dev-x'), { rawBody: '[1,2]' }), 400, 400006);
    assertDpsError(await put(f, 'dev-x', key('dev-x'), { body: { registrationId: 'dev-x', payload: { pad: 'x'.repeat(97 * 1024) } } }), 413, 413001);
    assertDpsError(await put(f, 'dev-x', key('dev-x'), { body: { registrationId: 'dev-y' } }), 400, 400009);
    assertDpsError(await put(f, 'dev-x', key('dev-x'), { body: {} }), 400, 400009);
    assertDpsError(await put(f, 'dev-x', key('dev-x'), { body: { registrationId: 'dev-x', payload: [1] } }), 400, 400004);
    assertDpsError(await put(f, 'dev-x', null, { sas: f.deviceSas('dev-x', key('dev-x'), { expirySeconds: nowS - 3600 }) }), 401, 401000);
    assertDpsError(await put(f, 'dev-x', null, { sas: f.deviceSas('dev-y', key('dev-x')) }), 401, 401000);
    assertDpsError(await put(f, 'dev-x', null, { sas: f.deviceSas('dev-x', key('dev-x'), { keyName: 'owner' }) }), 401, 401000);
    assertDpsError(await put(f, 'dev-x', null), 401, 401000);
    const goodSas = f.deviceSas('dev-x', key('dev-x'));
    assertDpsError(await put(f, 'dev-x', null, { sas: goodSas.replace(/sig=[^&]+/, 'sig=%%%not*base64!!') }), 401, 401000);
    assertDpsError(await put(f, 'dev-x', null, { sas: goodSas.replace(/sig=[^&]+/, 'sig=AAAA') }), 401, 401000);
    assertDpsError(await put(f, 'dev-x', null, { sas: 'SharedAccessSignature sr=&sig=&se=x' }), 401, 401000);
    for (const bad of ['dev.', 'dev_', 'x'.repeat(129), 'd%C3%A9v', 'a+b']) {
      assertDpsError(await put(f, bad, key(bad), { body: { registrationId: decodeURIComponent(bad) } }), 400, 400008);
    }
    assertDpsError(await put(f, 'dev-x', key('dev-x'), { scope: '0neFFFFFFFF' }), 401, 401000);
    const unknownScope = await put(f, 'dev-x', key('dev-x'), { scope: '0neFFFFFFFF' });
    assert.doesNotMatch(unknownScope.body, /scope/i, 'no hint');
    assert.deepEqual(await f.counts(), before, 'nothing stored changed');

    // Any api-version (or none) is accepted.
    for (const q of ['api-version=2099-01-01-preview', 'api-version=x', '']) {
      const id = `dev-v${q.length}`;
      assert.equal((await put(f, id, key(id), { query: q })).statusCode, 200);
    }
  });
});

test('polls: unknown operation → 404, another device`s operation → 404, a wrong key → 401', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1');
    const k1 = f.derivedKey(g, 'p-1');
    const op = json(await put(f, 'p-1', k1)).operationId;
    assertDpsError(await poll(f, 'p-1', '4.0000000000000000.00000000-0000-0000-0000-000000000000', k1), 404, 404202);
    assertDpsError(await poll(f, 'p-2', op, f.derivedKey(g, 'p-2')), 404, 404202);
    assertDpsError(await poll(f, 'p-1', op, newKey()), 401, 401000);
    assertDpsError(await poll(f, 'p-2', 'nope', newKey()), 401, 401000);
    assert.equal((await poll(f, 'P-1', op, f.derivedKey(g, 'P-1'))).statusCode, 200);
  });
});

test('status lookup: 404 before the first registration; 401 with a bad key; 400 on a mismatched body', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1');
    const k = f.derivedKey(g, 'l-1');
    assertDpsError(await lookup(f, 'l-1', k), 404, 404202);
    assertDpsError(await lookup(f, 'l-1', newKey()), 401, 401000);
    const r = await f.app.inject({
      method: 'POST',
      url: `/${f.idScope}/registrations/l-1`,
      headers: { 'content-type': 'application/json', authorization: f.deviceSas('l-1', k) },
      payload: JSON.stringify({ registrationId: 'l-2' }),
    });
    assertDpsError(r, 400, 400009);
    assert.deepEqual(await f.counts(), { dps_operations: 0, dps_registrations: 0, hub_devices: 0, hub_twins: 0 });
  });
});

test('throttling: registrations per minute and polls per device answer 429 with Retry-After', async () => {
  await withFixture({ limits: { registrationsPerMinute: 3, pollsPer10Seconds: 5 } }, async (f) => {
    const g = await f.addGroup('G1');
    const k = f.derivedKey(g, 't-1');
    const op = json(await put(f, 't-1', k)).operationId;
    for (let i = 0; i < 2; i++) assert.equal((await put(f, `t-${i + 2}`, f.derivedKey(g, `t-${i + 2}`))).statusCode, 200);
    const r = await put(f, 't-9', f.derivedKey(g, 't-9'));
    assertDpsError(r, 429, 429001);
    assert.ok(Number(r.headers['retry-after']) >= 1 && Number.isInteger(Number(r.headers['retry-after'])));
    for (let i = 0; i < 5; i++) assert.equal((await poll(f, 't-1', op, k)).statusCode, 200);
    const p = await poll(f, 't-1', op, k);
    assertDpsError(p, 429, 429001);
    assert.ok(Number(p.headers['retry-after']) >= 1);
    (f.clock as ManualClock).advance(60_000);
    assert.equal((await put(f, 't-9', f.derivedKey(g, 't-9'))).statusCode, 200);
    assert.equal((await poll(f, 't-1', op, k)).statusCode, 200);
  });
});

test('an abandoned assigning operation: polls see it failed; the next register takes it over and finishes it', async () => {
  await withFixture({ staleOperationMs: 30_000 }, async (f) => {
    const g = await f.addGroup('G1');
    const k = f.derivedKey(g, 'ab-1');
    const old = isoTime(f.clock.now() - 120_000);
    const op = { operationId: '4.deadbeefdeadbeef.abandoned', registrationId: 'ab-1', status: 'assigning' as const, version: 1, createdDateTimeUtc: old, lastUpdatedDateTimeUtc: old, request: { auth: { kind: 'group', enrollmentGroupId: 'G1' } } };
    assert.equal(await f.store.provisioning.createOperation(f.instanceName, op), 'ok');
    const r = await put(f, 'ab-1', k);
    const b = json(r);
    assert.equal(b.operationId, op.operationId, 'the same operation');
    assert.equal(b.status, 'assigned');

    const op2 = { ...op, operationId: '4.deadbeefdeadbeef.abandoned2', registrationId: 'ab-2', request: { auth: { kind: 'group', enrollmentGroupId: 'G1' } } };
    assert.equal(await f.store.provisioning.createOperation(f.instanceName, op2), 'ok');
    const p = json(await poll(f, 'ab-2', op2.operationId, f.derivedKey(g, 'ab-2')));
    assert.equal(p.status, 'failed');
    assert.equal(p.registrationState!.errorCode, 503001);
  });
});

test('the group key itself and a derived key of another id are refused over HTTP', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1');
    assertDpsError(await put(f, 'sn-5', g.attestation.symmetricKey!.primaryKey), 401, 401000);
    assertDpsError(await put(f, 'sn-5', deriveDeviceKey(g.attestation.symmetricKey!.primaryKey, 'sn-6')), 401, 401000);
  });
});

test('the read cache: groups are reused for readCacheMs, a new group is found at once, a changed one after the TTL', async () => {
  await withFixture({ readCacheMs: 1000 }, async (f) => {
    const g = await f.addGroup('G1');
    assert.equal(json(await put(f, 'rc-1', f.derivedKey(g, 'rc-1'))).status, 'assigned');
    // A group created a moment ago: the refusal path re-reads the groups.
    const g2 = await f.addGroup('G2');
    assert.equal(json(await put(f, 'rc-2', f.derivedKey(g2, 'rc-2'))).status, 'assigned');
    // A disabled group keeps working from the cache until the TTL runs out.
    assert.equal(await f.store.provisioning.replaceEnrollmentGroup(f.instanceName, { ...g, provisioningStatus: 'disabled', etag: 'x' }, g.etag), 'ok');
    assert.equal(json(await put(f, 'rc-3', f.derivedKey(g, 'rc-3'))).status, 'assigned');
    (f.clock as ManualClock).advance(1001);
    assert.equal(json(await put(f, 'rc-4', f.derivedKey(g, 'rc-4'))).status, 'disabled');
    // An unknown scope is not cached.
    assertDpsError(await put(f, 'rc-5', f.derivedKey(g2, 'rc-5'), { scope: '0neFFFFFFFF' }), 401, 401000);
  });
});

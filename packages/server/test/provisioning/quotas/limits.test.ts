import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BULK_MAX_ITEMS, DEFAULT_ENROLLMENT_LIMITS } from '../../../src/provisioning/enrollments.ts';
import { MAX_LINKED_HUBS } from '../../../src/provisioning/instances.ts';
import { newKey } from '../runtime/fixture.ts';
import { assertDpsError, body, createQuotaHarness, type QuotaHarness } from './harness.ts';

/**
 * Resource limits of dps-behavior.md §7.1 (scenario 36): each refused with a clear error and nothing created. The
 * registration-record limit is new with the quotas; the others are enforced by the enrollment and instance code and
 * checked here end to end through the APIs.
 */
const V = 'api-version=2021-10-01';
const SYM = { attestation: { type: 'symmetricKey' } };

describe('§7.1 limits', () => {
  let h: QuotaHarness;
  beforeEach(async () => {
    h = await createQuotaHarness();
  });
  afterEach(async () => {
    await h.close();
  });
  const records = () => h.f.store.provisioning.countRegistrations(h.f.instanceName);

  it('registration records per instance: 1,000,000 by default', async () => {
    assert.equal(h.quotas.effective(await h.instance()).maxRegistrations, 1_000_000);
  });

  it('past maxRegistrations a new device gets 403 403002 and nothing is stored; registered devices re-register', async () => {
    await h.setQuotas({ maxRegistrations: 3 });
    const g = await h.group();
    for (let i = 1; i <= 3; i++) assert.equal((await h.register(`r-${i}`, h.f.derivedKey(g, `r-${i}`))).statusCode, 202);
    await h.service.drain();
    assert.equal(await records(), 3);
    const ops = await h.f.counts();

    const r = await h.register('r-4', h.f.derivedKey(g, 'r-4'));
    const b = assertDpsError(r, 403, 403002);
    assert.match(String(b.message), /maximum of 3 registration records/);
    assert.deepEqual(await h.f.counts(), ops, 'no operation, record or hub device for the refused device');

    // A device with a record registers again.
    assert.equal((await h.register('r-2', h.f.derivedKey(g, 'r-2'))).statusCode, 202);
    await h.service.drain();
    assert.equal(await records(), 3);

    // Records of a deleted group still count (scenario 33).
    assert.equal((await h.call('DELETE', `/enrollmentGroups/${g.enrollmentGroupId}?${V}`)).statusCode, 204);
    const g2 = await h.group('G-next');
    assertDpsError(await h.register('r-5', h.f.derivedKey(g2, 'r-5')), 403, 403002);

    // Deleting a record makes room (seen after the short "full" cache).
    assert.equal((await h.call('DELETE', `/registrations/r-1?${V}`)).statusCode, 204);
    h.clock.advance(1_000);
    assert.equal((await h.register('r-5', h.f.derivedKey(g2, 'r-5'))).statusCode, 202);
    await h.service.drain();
    assert.equal(await records(), 3);
  });

  it('maxRegistrations far from the limit: counted once per period, new records added to the count in between', async () => {
    await h.setQuotas({ maxRegistrations: 1000 });
    const g = await h.group();
    let counts = 0;
    const store = h.f.store.provisioning;
    const original = store.countRegistrations.bind(store);
    store.countRegistrations = async (instance: string) => {
      counts++;
      return original(instance);
    };
    for (let i = 0; i < 5; i++) assert.equal((await h.register(`c-${i}`, h.f.derivedKey(g, `c-${i}`))).statusCode, 202);
    assert.equal(counts, 1);
    h.clock.advance(10_000);
    assert.equal((await h.register('c-5', h.f.derivedKey(g, 'c-5'))).statusCode, 202);
    assert.equal(counts, 2);
    await h.service.drain();
  });

  it('linked hubs: the 51st is refused with 400 400004', async () => {
    assert.equal(MAX_LINKED_HUBS, 50);
    const have = (await h.instance()).linkedHubs.length;
    for (let i = have; i < 50; i++) {
      const name = `hub${i}.limits.test`;
      await h.admin.linkHub(h.f.instanceName, name, { connectionString: `HostName=${name};SharedAccessKeyName=iothubowner;SharedAccessKey=${newKey()}` });
    }
    const name = 'hub51.limits.test';
    const r = await h.call('PUT', `/homing/linkedHubs/${name}`, { body: { connectionString: `HostName=${name};SharedAccessKeyName=iothubowner;SharedAccessKey=${newKey()}` } });
    assertDpsError(r, 400, 400004);
    assert.equal((await h.instance()).linkedHubs.length, 50);
  });

  it('symmetric-key enrollment groups: the 101st is refused with 403 403002 (default limits)', async () => {
    assert.equal(DEFAULT_ENROLLMENT_LIMITS.maxSymmetricKeyGroups, 100);
    assert.equal(DEFAULT_ENROLLMENT_LIMITS.maxX509Groups, 100);
    assert.equal(DEFAULT_ENROLLMENT_LIMITS.maxIndividualEnrollments, 1_000_000);
    for (let i = 0; i < 100; i++) assert.equal((await h.call('PUT', `/enrollmentGroups/g-${i}?${V}`, { body: { enrollmentGroupId: `g-${i}`, ...SYM } })).statusCode, 200);
    assertDpsError(await h.call('PUT', `/enrollmentGroups/g-100?${V}`, { body: { enrollmentGroupId: 'g-100', ...SYM } }), 403, 403002);
    assert.deepEqual(await h.f.store.provisioning.countEnrollmentGroups(h.f.instanceName), { symmetricKey: 100, x509: 0 });
    // Bulk creation hits the same limit per item.
    const bulk = body(await h.call('POST', `/enrollmentGroups?${V}`, { body: { mode: 'create', enrollmentGroups: [{ enrollmentGroupId: 'g-101', ...SYM }] } }));
    assert.equal(bulk.isSuccessful, false);
    assert.deepEqual((bulk.errors as { errorCode: number }[]).map((e) => e.errorCode), [403002]);
  });

  it('bulk operations: more than 10 entries is 400 400004 and nothing is created', async () => {
    assert.equal(BULK_MAX_ITEMS, 10);
    const enrollments = Array.from({ length: 11 }, (_, i) => ({ registrationId: `b-${i}`, ...SYM }));
    assertDpsError(await h.call('POST', `/enrollments?${V}`, { body: { mode: 'create', enrollments } }), 400, 400004);
    assert.equal(await h.f.store.provisioning.countIndividualEnrollments(h.f.instanceName), 0);
    assert.equal(body(await h.call('POST', `/enrollments?${V}`, { body: { mode: 'create', enrollments: enrollments.slice(0, 10) } })).isSuccessful, true);
  });

  it('message size: bodies over 96 KB are 413 413001 on the device and the service API, nothing created', async () => {
    const g = await h.group();
    const big = 'x'.repeat(97 * 1024);
    const r = await h.app.inject({
      method: 'PUT',
      url: `/${h.f.idScope}/registrations/m-1/register?${V}`,
      headers: { 'content-type': 'application/json', authorization: h.f.deviceSas('m-1', h.f.derivedKey(g, 'm-1')) },
      payload: JSON.stringify({ registrationId: 'm-1', payload: { big } }),
    });
    assertDpsError(r, 413, 413001);
    assertDpsError(await h.call('PUT', `/enrollments/m-1?${V}`, { body: { registrationId: 'm-1', ...SYM, optionalDeviceInformation: { big } } }), 413, 413001);
    assert.deepEqual(await h.f.counts(), { dps_operations: 0, dps_registrations: 0, hub_devices: 0, hub_twins: 0 });
    assert.equal(await h.f.store.provisioning.countIndividualEnrollments(h.f.instanceName), 0);
  });
});

import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_POLICY_RIGHTS,
  InstanceService,
  StoreInstanceResolver,
  instanceToJson,
  linkedHubToJson,
  maskConnectionString,
} from '../../src/provisioning/instances.ts';
import type { ProvisioningInstance } from '../../src/provisioning/model.ts';
import type { JsonObject } from '../../src/core/json.ts';
import { ManualClock, realIds } from '../helpers/ids.ts';
import { createFixture, HUB1, HUB2, hubConnectionString, rejectsWith, type Fixture } from './fixtures.ts';

describe('InstanceService', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = await createFixture();
  });
  afterEach(async () => {
    await f.close();
  });

  it('creates the instance once: id scope 0ne + 8 hex digits, default policies, hashed', async () => {
    const i = f.instance;
    assert.match(i.idScope, /^0ne[0-9A-F]{8}$/);
    assert.equal(i.allocationPolicy, 'hashed');
    assert.deepEqual(
      i.policies.map((p) => [p.keyName, [...p.rights]]),
      DEFAULT_POLICY_RIGHTS.map(([n, r]) => [n, [...r]]),
    );
    const owner = i.policies.find((p) => p.keyName === 'provisioningserviceowner');
    assert.deepEqual([...(owner?.rights ?? [])].sort(), ['DeviceConnect', 'EnrollmentRead', 'EnrollmentWrite', 'RegistrationStatusRead', 'RegistrationStatusWrite', 'ServiceConfig']);
    assert.deepEqual(i.policies.find((p) => p.keyName === 'enrollmentwrite')?.rights, ['EnrollmentRead', 'EnrollmentWrite']);
    for (const p of i.policies) assert.equal(Buffer.from(p.primaryKey, 'base64').length, 32);
    assert.deepEqual(i.linkedHubs.map((h) => [h.name, h.location, h.allocationWeight, h.applyAllocationPolicy]), [
      [HUB1, 'west', 1, true],
      [HUB2, 'east', 5, true],
    ]);

    const again = await f.instances.ensureInstance({ name: 'homing-test', serviceHostNames: ['dps.homing.test'] });
    assert.equal(again.created, false);
    assert.deepEqual(again.instance, i);
    const moved = await f.instances.ensureInstance({ name: 'homing-test', serviceHostNames: ['127.0.0.9', 'dps.homing.test'] });
    assert.deepEqual(moved.instance.serviceHostNames, ['127.0.0.9', 'dps.homing.test']);
    assert.equal(moved.instance.idScope, i.idScope, 'the id scope and keys stay');
    assert.deepEqual(moved.instance.policies, i.policies);
  });

  it('validates instance names and host names', async () => {
    for (const name of ['ab', '-abc', 'abc-', '12345', 'a_b', 'x'.repeat(51)]) {
      await rejectsWith(f.instances.ensureInstance({ name, serviceHostNames: ['h.test'] }), 'ArgumentInvalid');
    }
    await rejectsWith(f.instances.ensureInstance({ name: 'okname', serviceHostNames: [] }), 'ArgumentInvalid');
    await rejectsWith(f.instances.ensureInstance({ name: 'okname', serviceHostNames: ['bad host'] }), 'ArgumentInvalid');
  });

  it('links, updates and unlinks hubs', async () => {
    const cs = hubConnectionString('hub3.test');
    const hub = await f.instances.linkHub('homing-test', 'hub3.test', { connectionString: cs, location: 'north' });
    assert.deepEqual(hub, { name: 'hub3.test', connectionString: cs, location: 'north', allocationWeight: 1, applyAllocationPolicy: true });
    await rejectsWith(f.instances.linkHub('homing-test', 'HUB3.test', { connectionString: cs }), 'DeviceAlreadyExists');

    const updated = await f.instances.updateLinkedHub('homing-test', 'Hub3.Test', { allocationWeight: 1000, applyAllocationPolicy: false });
    assert.deepEqual([updated.allocationWeight, updated.applyAllocationPolicy, updated.location], [1000, false, 'north']);
    assert.deepEqual(await f.instances.getLinkedHub('homing-test', 'hub3.test'), updated);
    await rejectsWith(f.instances.updateLinkedHub('homing-test', 'hub3.test', { name: 'other.test' }), 'ArgumentInvalid', /renamed/);

    await f.instances.unlinkHub('homing-test', 'HUB3.TEST');
    assert.deepEqual((await f.instances.listLinkedHubs('homing-test')).map((h) => h.name), [HUB1, HUB2]);
    await rejectsWith(f.instances.unlinkHub('homing-test', 'hub3.test'), 'NotFound');
    await rejectsWith(f.instances.updateLinkedHub('homing-test', 'hub3.test', { allocationWeight: 2 }), 'NotFound');
  });

  it('validates linked hubs: weight 1..1000, boolean flag, connection string, at most 50', async () => {
    const cs = hubConnectionString('h.test');
    const bads: JsonObject[] = [
      { connectionString: cs, allocationWeight: 0 },
      { connectionString: cs, allocationWeight: 1001 },
      { connectionString: cs, allocationWeight: 1.5 },
      { connectionString: cs, applyAllocationPolicy: 'yes' },
      { connectionString: 'HostName=h.test;SharedAccessKeyName=x' },
      { connectionString: 'HostName=h.test;SharedAccessKeyName=x;SharedAccessKey=not*base64' },
      { connectionString: cs, location: '' },
    ];
    for (const bad of bads) {
      await rejectsWith(f.instances.linkHub('homing-test', 'h.test', bad), 'ArgumentInvalid');
    }
    await rejectsWith(f.instances.linkHub('homing-test', 'bad host!', { connectionString: cs }), 'ArgumentInvalid');
    await rejectsWith(f.instances.linkHub('homing-test', 'h.test', 'x'), 'InvalidJson');
    for (let n = 3; n <= 50; n++) await f.instances.linkHub('homing-test', `hub${n}.test`, { connectionString: cs });
    await rejectsWith(f.instances.linkHub('homing-test', 'hub51.test', { connectionString: cs }), 'ArgumentInvalid', /at most 50/);
    assert.equal((await f.instances.listLinkedHubs('homing-test')).length, 50);
  });

  it('sets the default allocation policy, never to custom', async () => {
    const e = await rejectsWith(f.instances.setAllocationPolicy('homing-test', 'custom'), 'ArgumentInvalid', /custom/);
    assert.equal(e.code, 400004);
    await rejectsWith(f.instances.setAllocationPolicy('homing-test', 'random'), 'ArgumentInvalid');
    assert.equal((await f.instances.setAllocationPolicy('homing-test', 'geoLatency')).allocationPolicy, 'geoLatency');
    const current = await f.instances.getInstance('homing-test');
    await rejectsWith(f.instances.updateInstance('homing-test', { allocationPolicy: 'static' }, '"stale"'), 'PreconditionFailed');
    const updated = await f.instances.updateInstance('homing-test', { allocationPolicy: 'static' }, `"${current.etag}"`);
    assert.equal(updated.allocationPolicy, 'static');
    assert.notEqual(updated.etag, current.etag);
    await rejectsWith(f.instances.getInstance('nope'), 'NotFound');
  });

  it('shows instances and hubs without secrets', () => {
    const json = instanceToJson(f.instance);
    const text = JSON.stringify(json);
    for (const p of f.instance.policies) assert.ok(!text.includes(p.primaryKey) && !text.includes(p.secondaryKey));
    for (const h of f.instance.linkedHubs) assert.ok(!text.includes(h.connectionString));
    assert.equal(json.idScope, f.instance.idScope);
    assert.equal(maskConnectionString('HostName=h;SharedAccessKeyName=n;SharedAccessKey=abc='), 'HostName=h;SharedAccessKeyName=n;SharedAccessKey=****');
    const hub = f.instance.linkedHubs[0];
    assert.ok(hub);
    assert.match(String(linkedHubToJson(hub).connectionString), /SharedAccessKey=\*\*\*\*$/);
  });
});

describe('StoreInstanceResolver', () => {
  it('finds instances by host name, case-insensitively, and sees changes after invalidate or the TTL', async () => {
    const f = await createFixture({ hostNames: ['DPS.Homing.Test', '127.0.0.7'] });
    try {
      const clock = new ManualClock();
      let lists = 0;
      const store = { listInstances: () => (lists++, f.store.provisioning.listInstances()) };
      const resolver = new StoreInstanceResolver({ store, clock, ttlMs: 1000 });
      assert.equal((await resolver.byHostName('dps.homing.test'))?.name, 'homing-test');
      assert.equal((await resolver.byHostName('127.0.0.7'))?.name, 'homing-test');
      assert.equal(await resolver.byHostName('other.test'), undefined);
      assert.equal(lists, 1, 'cached');

      const service = new InstanceService({ store: f.store.provisioning, ids: realIds, onChange: () => resolver.invalidate() });
      await service.ensureInstance({ name: 'homing-test', serviceHostNames: ['new.homing.test'] });
      assert.equal((await resolver.byHostName('new.homing.test'))?.name, 'homing-test');
      assert.equal(lists, 2);

      await f.instances.ensureInstance({ name: 'homing-test', serviceHostNames: ['third.homing.test'] });
      assert.equal((await resolver.byHostName('third.homing.test')) as ProvisioningInstance | undefined, undefined, 'another process changed it: cached');
      clock.advance(1000);
      assert.equal((await resolver.byHostName('third.homing.test'))?.name, 'homing-test');
    } finally {
      await f.close();
    }
  });
});

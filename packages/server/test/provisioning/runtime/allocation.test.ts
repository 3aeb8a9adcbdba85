import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocate, candidateHubs, hashUnit, rendezvousPick, selectPolicy, type AllocationInstance } from '../../../src/core/allocation.ts';
import { ERROR_CATALOGUE } from '../../../src/core/errors.ts';
import type { LinkedHub } from '../../../src/provisioning/model.ts';

function hub(name: string, o: Partial<LinkedHub> = {}): LinkedHub {
  return { name, connectionString: `HostName=${name};SharedAccessKeyName=x;SharedAccessKey=eA==`, location: 'l', allocationWeight: 1, applyAllocationPolicy: true, ...o };
}

function instance(hubs: LinkedHub[], allocationPolicy: AllocationInstance['allocationPolicy'] = 'hashed'): AllocationInstance {
  return { allocationPolicy, linkedHubs: hubs };
}

const ids = (n: number, prefix = 'device-') => Array.from({ length: n }, (_, i) => `${prefix}${i.toString().padStart(5, '0')}`);

function assignedName(d: ReturnType<typeof allocate>): string {
  assert.equal(d.kind, 'assigned', d.kind === 'failed' ? d.message : '');
  return d.kind === 'assigned' ? d.hub.name : '';
}

test('hashed: weights 1:3 over 4,000 ids give hubB 75 % ± 3 %', () => {
  const inst = instance([hub('hubA', { allocationWeight: 1 }), hub('hubB', { allocationWeight: 3 })]);
  let b = 0;
  for (const id of ids(4000)) if (assignedName(allocate(id, {}, inst)) === 'hubB') b++;
  const share = b / 4000;
  assert.ok(share > 0.72 && share < 0.78, `hubB share ${share}`);
});

test('hashed: equal weights split evenly over three hubs', () => {
  const inst = instance([hub('a'), hub('b'), hub('c')]);
  const n: Record<string, number> = { a: 0, b: 0, c: 0 };
  for (const id of ids(6000)) n[assignedName(allocate(id, {}, inst))]! += 1;
  for (const k of ['a', 'b', 'c']) assert.ok(Math.abs((n[k] ?? 0) / 6000 - 1 / 3) < 0.03, `${k}: ${n[k]}`);
});

test('hashed: stable for a device, whatever the hub order, and case-insensitive in the registration id', () => {
  const hubs = [hub('hubA'), hub('hubB', { allocationWeight: 5 }), hub('hubC', { allocationWeight: 2 })];
  for (const id of ids(300, 'Sensor-')) {
    const first = assignedName(allocate(id, {}, instance(hubs)));
    assert.equal(assignedName(allocate(id, {}, instance(hubs))), first);
    assert.equal(assignedName(allocate(id, {}, instance([...hubs].reverse()))), first);
    assert.equal(assignedName(allocate(id.toLowerCase(), {}, instance(hubs))), first);
    assert.equal(assignedName(allocate(id.toUpperCase(), {}, instance(hubs))), first);
  }
});

test('hashed: adding a hub moves only the devices the new hub wins (about its share)', () => {
  const before = instance([hub('hubA'), hub('hubB')]);
  const after = instance([hub('hubA'), hub('hubB'), hub('hubC')]);
  let moved = 0;
  const all = ids(3000);
  for (const id of all) {
    const a = assignedName(allocate(id, {}, before));
    const b = assignedName(allocate(id, {}, after));
    if (a !== b) {
      moved++;
      assert.equal(b, 'hubC', `${id} moved from ${a} to ${b}, not to the new hub`);
    }
  }
  const share = moved / all.length;
  assert.ok(share > 0.3 && share < 0.37, `moved ${share}`);
});

test('hashed: a hub with applyAllocationPolicy=false gets nothing, whatever its weight', () => {
  const inst = instance([hub('hubA'), hub('hubB', { allocationWeight: 1000, applyAllocationPolicy: false })]);
  for (const id of ids(500)) assert.equal(assignedName(allocate(id, {}, inst)), 'hubA');
  // Named on the enrollment with hashed, the flag still applies.
  for (const id of ids(50)) assert.equal(assignedName(allocate(id, { iotHubs: ['hubA', 'hubB'] }, inst)), 'hubA');
});

test('static: the named hub wins even when its applyAllocationPolicy is false', () => {
  const inst = instance([hub('hubA'), hub('hubB', { applyAllocationPolicy: false })]);
  for (const id of ids(50)) {
    const d = allocate(id, { allocationPolicy: 'static', iotHubs: ['hubB'] }, inst);
    assert.equal(assignedName(d), 'hubB');
    assert.equal(d.policy, 'static');
  }
  // The legacy single-hub field counts as the static target, names compare case-insensitively.
  assert.equal(assignedName(allocate('x1', { allocationPolicy: 'static', iotHubHostName: 'HUBB' }, inst)), 'hubB');
});

test('static: no hub or several hubs fail with 400208', () => {
  const inst = instance([hub('hubA'), hub('hubB')]);
  for (const e of [{ allocationPolicy: 'static' as const }, { allocationPolicy: 'static' as const, iotHubs: ['hubA', 'hubB'] }]) {
    const d = allocate('dev', e, inst);
    assert.equal(d.kind, 'failed');
    if (d.kind === 'failed') {
      assert.equal(ERROR_CATALOGUE[d.errorName].code, 400208);
      assert.match(d.message, /exactly one hub/);
    }
  }
  // Instance default static and an enrollment without a hub: failed.
  assert.equal(allocate('dev', {}, instance([hub('hubA')], 'static')).kind, 'failed');
});

test('no eligible hub: failed 400208, naming listed hubs that are not linked', () => {
  const d = allocate('dev', { iotHubs: ['gone.example'] }, instance([hub('hubA')]));
  assert.equal(d.kind, 'failed');
  if (d.kind === 'failed') {
    assert.equal(ERROR_CATALOGUE[d.errorName].code, 400208);
    assert.match(d.message, /gone\.example/);
  }
  const none = allocate('dev', {}, instance([]));
  assert.equal(none.kind, 'failed');
  const flagged = allocate('dev', {}, instance([hub('hubA', { applyAllocationPolicy: false })]));
  assert.equal(flagged.kind, 'failed');
  if (flagged.kind === 'failed') assert.match(flagged.message, /applyAllocationPolicy=false/);
});

test('policy: the enrollment policy wins, else the instance default (read at registration time)', () => {
  assert.equal(selectPolicy({ allocationPolicy: 'static' }, instance([], 'hashed')), 'static');
  assert.equal(selectPolicy({}, instance([], 'static')), 'static');
  assert.equal(selectPolicy({}, instance([], 'hashed')), 'hashed');
});

test('geoLatency without estimates is the weighted hash; custom without a webhook client answers 400207', () => {
  const inst = instance([hub('hubA', { allocationWeight: 1 }), hub('hubB', { allocationWeight: 3 }), hub('hubC', { applyAllocationPolicy: false })]);
  let b = 0;
  for (const id of ids(2000)) {
    const geo = allocate(id, { allocationPolicy: 'geoLatency' }, inst);
    assert.equal(geo.policy, 'geoLatency');
    const name = assignedName(geo);
    assert.equal(name, assignedName(allocate(id, {}, inst)), 'same hub as hashed');
    if (name === 'hubB') b++;
  }
  assert.ok(Math.abs(b / 2000 - 0.75) < 0.03, `hubB share ${b / 2000}`);
  const none = allocate('dev', { allocationPolicy: 'geoLatency', iotHubs: ['hubC'] }, inst);
  assert.equal(none.kind === 'failed' && ERROR_CATALOGUE[none.errorName].code, 400208);
  // The webhook is I/O: the provisioning layer supplies it (provisioning/allocation/custom-webhook.ts).
  const custom = allocate('dev', { allocationPolicy: 'custom' }, inst);
  assert.equal(custom.kind, 'failed');
  if (custom.kind === 'failed') {
    assert.equal(ERROR_CATALOGUE[custom.errorName].code, 400207);
    assert.match(custom.message, /^Custom allocation failed: no webhook client/);
  }
});

test('candidates: all linked hubs (dynamic) unless the enrollment lists some', () => {
  const two = instance([hub('hubA'), hub('hubB')]);
  const three = instance([hub('hubA'), hub('hubB'), hub('hubC')]);
  assert.deepEqual(candidateHubs({}, two).hubs.map((h) => h.name), ['hubA', 'hubB']);
  assert.deepEqual(candidateHubs({}, three).hubs.map((h) => h.name), ['hubA', 'hubB', 'hubC']);
  let onC = 0;
  for (const id of ids(300)) {
    if (assignedName(allocate(id, {}, three)) === 'hubC') onC++;
    assert.equal(assignedName(allocate(id, { iotHubs: ['hubA'] }, three)), 'hubA');
  }
  assert.ok(onC > 50, `hubC got ${onC} of 300`);
});

test('hashUnit stays strictly inside (0,1) and rendezvousPick is empty-safe', () => {
  for (const id of ids(1000)) {
    const u = hashUnit(id, 'h');
    assert.ok(u > 0 && u < 1);
  }
  assert.equal(rendezvousPick('x', []), undefined);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocate, ALLOCATORS, geoLatencyAllocator, type AllocationContext, type AllocationDevice } from '../../src/core/allocation.ts';
import { ERROR_CATALOGUE } from '../../src/core/errors.ts';
import {
  cidrContains,
  compileNetworkMap,
  firstEstimate,
  latencyTier,
  networkMapLatency,
  parseAddress,
  parseCidr,
  reportedLatency,
  type LatencyEstimator,
} from '../../src/core/geo-latency.ts';
import type { JsonObject } from '../../src/core/json.ts';
import type { LinkedHub } from '../../src/provisioning/model.ts';
import { createGeoLatencyAllocator, validateGeoLatencyConfig } from '../../src/provisioning/allocation/geo-latency.ts';
import { enrollmentGroupFixture } from '../helpers/model-fixtures.ts';

function hub(name: string, o: Partial<LinkedHub> = {}): LinkedHub {
  return { name, connectionString: `HostName=${name};SharedAccessKeyName=x;SharedAccessKey=eA==`, location: 'l', allocationWeight: 1, applyAllocationPolicy: true, ...o };
}

function device(o: { sourceAddress?: string; payload?: JsonObject } = {}): AllocationDevice {
  return {
    ...o,
    attestation: { type: 'symmetricKey' },
    enrollment: {
      kind: 'group',
      value: enrollmentGroupFixture(),
    },
  };
}

function ctx(registrationId: string, hubs: LinkedHub[], dev?: AllocationDevice): AllocationContext {
  return { registrationId, policy: 'geoLatency', hubs, unlinked: [], listed: false, ...(dev ? { device: dev } : {}) };
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `geo-${i.toString().padStart(5, '0')}`);
const hex = (b: Uint8Array | undefined) => (b ? Buffer.from(b).toString('hex') : 'none');

function pickName(d: ReturnType<ReturnType<typeof geoLatencyAllocator>>): string {
  assert.equal(d.kind, 'assigned', d.kind === 'failed' ? d.message : '');
  return d.kind === 'assigned' ? d.hub.name : '';
}

test('addresses: IPv4, IPv6 (compressed, zone, embedded IPv4), IPv4-mapped becomes IPv4; junk is undefined', () => {
  assert.equal(hex(parseAddress('127.0.0.5')), '7f000005');
  assert.equal(hex(parseAddress('::ffff:127.1.2.3')), '7f010203');
  assert.equal(hex(parseAddress('::FFFF:7f01:0203')), '7f010203');
  assert.equal(hex(parseAddress('::1')), '00000000000000000000000000000001');
  assert.equal(hex(parseAddress('2001:db8::1%eth0')), '20010db8000000000000000000000001');
  assert.equal(hex(parseAddress('64:ff9b::192.0.2.1')), '0064ff9b0000000000000000c0000201');
  for (const bad of ['', '127.0.0', '127.0.0.256', '1.2.3.4.5', 'localhost', '::g', '1::2::3', '01.2.3.4x']) assert.equal(parseAddress(bad), undefined, bad);
});

test('CIDR: prefixes mask, families do not mix, IPv4-mapped ranges become IPv4, bad ranges throw', () => {
  const lo = parseCidr('127.0.0.0/8');
  assert.ok(cidrContains(lo, parseAddress('127.200.1.1')!));
  assert.ok(cidrContains(lo, parseAddress('::ffff:127.9.9.9')!));
  assert.ok(!cidrContains(lo, parseAddress('128.0.0.1')!));
  assert.ok(!cidrContains(lo, parseAddress('::1')!));
  const odd = parseCidr('127.0.0.64/27'); // host bits are ignored
  assert.ok(cidrContains(odd, parseAddress('127.0.0.95')!));
  assert.ok(!cidrContains(odd, parseAddress('127.0.0.96')!));
  const mapped = parseCidr('::ffff:127.1.0.0/112');
  assert.equal(mapped.prefix, 16);
  assert.ok(cidrContains(mapped, parseAddress('127.1.44.3')!));
  const v6 = parseCidr('2001:db8::/32');
  assert.ok(cidrContains(v6, parseAddress('2001:db8:ffff::1')!));
  assert.ok(!cidrContains(v6, parseAddress('2001:db9::1')!));
  assert.ok(cidrContains(parseCidr('0.0.0.0/0'), parseAddress('203.0.113.1')!));
  assert.ok(cidrContains(parseCidr('127.0.0.7'), parseAddress('127.0.0.7')!));
  for (const bad of ['127.0.0.0/33', '::/129', '127.0.0.0/x', 'nope/8', '127.0.0.0/-1']) assert.throws(() => parseCidr(bad), /CIDR|prefix/, bad);
});

test('network map: longest prefix wins, case-insensitive locations, unknown address or location gives no estimate', () => {
  const map = compileNetworkMap({
    networks: [
      { cidr: '127.0.0.0/8', location: 'Lab' },
      { cidr: '127.0.2.0/24', location: 'west' },
      { cidr: '::1/128', location: 'west' },
    ],
    latencyMs: { lab: { EU: 30, us: 90 }, West: { eu: 120, US: 15 } },
  });
  assert.equal(map.locate('127.0.2.9'), 'west');
  assert.equal(map.locate('::ffff:127.0.2.9'), 'west');
  assert.equal(map.locate('127.5.0.1'), 'Lab');
  assert.equal(map.locate('10.0.0.1'), undefined);
  assert.equal(map.locate('not-an-ip'), undefined);
  const est = networkMapLatency(map);
  assert.equal(est(device({ sourceAddress: '127.0.2.9' }), hub('h', { location: 'us' })), 15);
  assert.equal(est(device({ sourceAddress: '::1' }), hub('h', { location: 'eu' })), 120);
  assert.equal(est(device({ sourceAddress: '127.9.9.9' }), hub('h', { location: 'Eu' })), 30);
  assert.equal(est(device({ sourceAddress: '127.9.9.9' }), hub('h', { location: 'asia' })), undefined);
  assert.equal(est(device({}), hub('h', { location: 'eu' })), undefined);
  assert.equal(est(undefined, hub('h', { location: 'eu' })), undefined);
});

test('config validation names the bad entry', () => {
  assert.throws(() => validateGeoLatencyConfig({ networks: [{ cidr: '300.0.0.0/8', location: 'x' }], latencyMs: {} }), /networks\[0\]/);
  assert.throws(() => validateGeoLatencyConfig({ networks: [{ cidr: '127.0.0.0/8', location: '' }], latencyMs: {} }), /networks\[0\]/);
  assert.throws(() => validateGeoLatencyConfig({ networks: [], latencyMs: { a: { b: -1 } } }), /latencyMs\.a\.b/);
  assert.throws(() => validateGeoLatencyConfig({ networks: [], latencyMs: { a: { b: 'fast' as unknown as number } } }), /latencyMs\.a\.b/);
  assert.throws(() => validateGeoLatencyConfig({ networks: [], latencyMs: {}, tieEpsilonMs: -2 }), /tieEpsilonMs/);
  validateGeoLatencyConfig({ networks: [{ cidr: '::ffff:127.0.0.0/104', location: 'lab' }], latencyMs: { lab: { local: 1 } }, tieEpsilonMs: 5 });
});

test('device-reported latencies: payload.homing.latencyMs by hub host name (case-insensitive); invalid values ignored', () => {
  const d = device({ payload: { model: 'x', homing: { latencyMs: { 'HUB-A.test': 12, 'hub-b.test': -1, 'hub-c.test': 'fast', 'hub-d.test': 0 } } } });
  assert.equal(reportedLatency(d, hub('hub-a.test')), 12);
  assert.equal(reportedLatency(d, hub('hub-b.test')), undefined);
  assert.equal(reportedLatency(d, hub('hub-c.test')), undefined);
  assert.equal(reportedLatency(d, hub('hub-d.test')), 0);
  for (const payload of [{}, { homing: 1 }, { homing: { latencyMs: [1, 2] } }, { homing: { latencyMs: null } }] as JsonObject[]) {
    assert.equal(reportedLatency(device({ payload }), hub('hub-a.test')), undefined);
  }
});

test('precedence: per hub, the first estimator with an answer wins (reported before the map)', () => {
  const map: LatencyEstimator = (_d, h) => (h.name === 'a' ? 50 : 10);
  const reported: LatencyEstimator = (_d, h) => (h.name === 'b' ? 70 : undefined);
  const est = firstEstimate([reported, map]);
  assert.equal(est(undefined, hub('a')), 50);
  assert.equal(est(undefined, hub('b')), 70);
});

test('ranking: lowest tier within epsilon; hubs without an estimate rank last; none estimated → every hub', () => {
  const table: Record<string, number> = { a: 40, b: 20, c: 23, d: 20 };
  const est: LatencyEstimator = (_d, h) => table[h.name];
  const hubs = [hub('a'), hub('b'), hub('c'), hub('d'), hub('e')];
  assert.deepEqual(latencyTier(hubs, undefined, est).tier.map((h) => h.name), ['b', 'd']);
  assert.deepEqual(latencyTier(hubs, undefined, est, 3).tier.map((h) => h.name), ['b', 'c', 'd']);
  assert.equal(latencyTier(hubs, undefined, est).bestMs, 20);
  // Only the unestimated hub is left out even with a huge epsilon.
  assert.deepEqual(latencyTier(hubs, undefined, est, 1e9).tier.map((h) => h.name), ['a', 'b', 'c', 'd']);
  assert.deepEqual(latencyTier(hubs, undefined, () => undefined).tier.map((h) => h.name), ['a', 'b', 'c', 'd', 'e']);
  assert.deepEqual(latencyTier([], undefined, est).tier, []);
});

test('scenario 19: injected table hubA 80 ms, hubB 20 ms → every device on hubB', () => {
  const est: LatencyEstimator = (_d, h) => (h.name === 'hubA' ? 80 : 20);
  const alloc = geoLatencyAllocator({ estimate: est });
  const hubs = [hub('hubA', { allocationWeight: 1000 }), hub('hubB')];
  for (const id of ids(300)) assert.equal(pickName(alloc(ctx(id, hubs))), 'hubB');
  const d = alloc(ctx('x', hubs));
  assert.equal(d.policy, 'geoLatency');
});

test('scenario 19: equal latencies split by the weights (1:3 over 2,000 ids, hubB 75 % ± 3 %); deterministic', () => {
  const alloc = geoLatencyAllocator({ estimate: () => 25 });
  const hubs = [hub('hubA', { allocationWeight: 1 }), hub('hubB', { allocationWeight: 3 })];
  let b = 0;
  for (const id of ids(2000)) {
    const first = pickName(alloc(ctx(id, hubs)));
    assert.equal(pickName(alloc(ctx(id, [...hubs].reverse()))), first);
    if (first === 'hubB') b++;
  }
  assert.ok(Math.abs(b / 2000 - 0.75) < 0.03, `hubB share ${b / 2000}`);
});

test('ties within epsilon are hashed by weight; the slower hub beyond epsilon gets nothing', () => {
  const lat: Record<string, number> = { hubA: 20, hubB: 22, hubC: 40 };
  const alloc = geoLatencyAllocator({ estimate: (_d, h) => lat[h.name], tieEpsilonMs: 5 });
  const hubs = [hub('hubA'), hub('hubB'), hub('hubC', { allocationWeight: 1000 })];
  const on: Record<string, number> = {};
  for (const id of ids(2000)) {
    const n = pickName(alloc(ctx(id, hubs)));
    on[n] = (on[n] ?? 0) + 1;
  }
  assert.equal(on.hubC, undefined);
  assert.ok(Math.abs((on.hubA ?? 0) / 2000 - 0.5) < 0.03, JSON.stringify(on));
});

test('no estimate at all: the weighted hash over every eligible hub (same hub as hashed)', () => {
  const hubs = [hub('hubA', { allocationWeight: 2 }), hub('hubB', { allocationWeight: 5 }), hub('off', { allocationWeight: 1000, applyAllocationPolicy: false })];
  for (const id of ids(300)) {
    const geo = allocate(id, { allocationPolicy: 'geoLatency' }, { allocationPolicy: 'hashed', linkedHubs: hubs });
    const hashed = allocate(id, {}, { allocationPolicy: 'hashed', linkedHubs: hubs });
    assert.equal(geo.kind === 'assigned' && geo.hub.name, hashed.kind === 'assigned' && hashed.hub.name);
    assert.equal(geo.policy, 'geoLatency');
  }
});

test('applyAllocationPolicy=false hubs never win, even with the lowest latency; none eligible → 400208', () => {
  const lat: Record<string, number> = { hubA: 80, hubB: 1 };
  const alloc = geoLatencyAllocator({ estimate: (_d, h) => lat[h.name] });
  for (const id of ids(100)) assert.equal(pickName(alloc(ctx(id, [hub('hubA'), hub('hubB', { applyAllocationPolicy: false })]))), 'hubA');
  const none = alloc(ctx('x', [hub('hubB', { applyAllocationPolicy: false })]));
  assert.equal(none.kind, 'failed');
  if (none.kind === 'failed') {
    assert.equal(ERROR_CATALOGUE[none.errorName].code, 400208);
    assert.match(none.message, /applyAllocationPolicy=false/);
  }
  const empty = alloc(ctx('x', []));
  assert.equal(empty.kind === 'failed' && ERROR_CATALOGUE[empty.errorName].code, 400208);
});

test('the core geoLatency allocator uses what the device reported', () => {
  const hubs = [hub('hub-a.test'), hub('hub-b.test')];
  const d = device({ payload: { homing: { latencyMs: { 'hub-a.test': 9, 'hub-b.test': 30 } } } });
  for (const id of ids(50)) assert.equal(pickName(ALLOCATORS.geoLatency(ctx(id, hubs, d))), 'hub-a.test');
});

test('server allocator: network map by source address; the device report wins over the map for the hubs it names', () => {
  const alloc = createGeoLatencyAllocator({
    config: {
      networks: [{ cidr: '127.0.1.0/24', location: 'east' }, { cidr: '127.0.2.0/24', location: 'west' }],
      latencyMs: { east: { eu: 10, us: 80 }, west: { eu: 90, us: 12 } },
    },
  });
  const hubs = [hub('hub-eu', { location: 'eu' }), hub('hub-us', { location: 'us' })];
  for (const id of ids(50)) {
    assert.equal(pickName(alloc(ctx(id, hubs, device({ sourceAddress: '127.0.1.7' })))), 'hub-eu');
    assert.equal(pickName(alloc(ctx(id, hubs, device({ sourceAddress: '::ffff:127.0.2.7' })))), 'hub-us');
    // East device that measured hub-us at 5 ms: reported 5 beats the map's 10 for hub-eu.
    assert.equal(pickName(alloc(ctx(id, hubs, device({ sourceAddress: '127.0.1.7', payload: { homing: { latencyMs: { 'hub-us': 5 } } } })))), 'hub-us');
  }
  // Unknown network: weighted hash over both (both hubs get devices).
  const on = new Set(ids(100).map((id) => pickName(alloc(ctx(id, hubs, device({ sourceAddress: '127.0.9.1' }))))));
  assert.deepEqual([...on].sort(), ['hub-eu', 'hub-us']);
});

test('tieEpsilonMs from the config applies', () => {
  const alloc = createGeoLatencyAllocator({ config: { networks: [{ cidr: '127.0.0.0/8', location: 'lab' }], latencyMs: { lab: { eu: 10, us: 14 } }, tieEpsilonMs: 5 } });
  const hubs = [hub('hub-eu', { location: 'eu' }), hub('hub-us', { location: 'us' })];
  const on = new Set(ids(200).map((id) => pickName(alloc(ctx(id, hubs, device({ sourceAddress: '127.0.0.1' }))))));
  assert.equal(on.size, 2);
});

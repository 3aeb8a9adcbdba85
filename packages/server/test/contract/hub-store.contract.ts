import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NEVER } from '../../src/core/clock.ts';
import { applyTwinPatch, newTwin } from '../../src/core/twin.ts';
import type { HubStore } from '../../src/store/ports.ts';
import type { DeviceIdentity, TwinState } from '../../src/hub/model.ts';

/** What a contract run needs from an adapter: a store on an empty, migrated database, and a way to dispose of it. */
export interface HubStoreHarness {
  store: HubStore;
  close(): Promise<void>;
}

const T0 = '2026-01-01T00:00:00.0000000Z';
const T1 = '2026-01-01T00:05:00.0000000Z';
const T2 = '2026-01-01T00:10:00.0000000Z';

export function sampleDevice(deviceId: string, over: Partial<DeviceIdentity> = {}): DeviceIdentity {
  return {
    deviceId,
    generationId: '638400000000000001',
    etag: 'MTIzNDU2Nzg5',
    status: 'enabled',
    statusReason: null,
    statusUpdatedTime: T0,
    authentication: {
      type: 'sas',
      symmetricKey: { primaryKey: 'cHJpbWFyeS1rZXktMzItYnl0ZXMtbG9uZy4uLi4uLg==', secondaryKey: 'c2Vjb25kYXJ5LWtleS0zMi1ieXRlcy1sb25nLi4uLg==' },
      x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
    },
    capabilities: { iotEdge: false },
    connectionState: 'Disconnected',
    connectionStateUpdatedTime: NEVER,
    lastActivityTime: NEVER,
    cloudToDeviceMessageCount: 0,
    ...over,
  };
}

export function sampleTwin(deviceId: string): TwinState {
  return newTwin(deviceId, T0, { tags: { site: 'north', floor: 3 }, desired: { telemetryInterval: 30, mode: { name: 'eco' } } });
}

/** Binary order of the UTF-8 bytes: SQLite BINARY and PostgreSQL COLLATE "C". */
function binaryOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Ids that stress collation and escaping: mixed case, every punctuation mark IoT Hub allows, and look-alikes. */
const MIXED_IDS = [
  'alpha', 'Alpha', 'ALPHA', 'beta', 'Beta', 'b-1', 'b.1', 'b_1', 'b%1', 'b$1', "b'1", 'B-2', 'a-b', 'a.b', 'a_b',
  'a%2Fb', '%24', '$edge', "o'neil", 'Z', 'z', '0', '9lives', 'dev:1', 'dev@x',
];

export function hubStoreContract(name: string, open: () => Promise<HubStoreHarness>): void {
  describe(`HubStore contract: ${name}`, () => {
    let harness: HubStoreHarness | undefined;
    let seq = 0;
    const store = (): HubStore => {
      if (!harness) throw new Error('store not opened');
      return harness.store;
    };
    /** Every test works in hubs of its own, so tests share one database without seeing each other. */
    const newHub = (): string => `hub${++seq}.contract.test`;

    before(async () => {
      harness = await open();
    });
    after(async () => {
      await harness?.close();
    });

    it('creates a device with its twin and reads both back unchanged', async () => {
      const hub = newHub();
      const device = sampleDevice('round-trip', {
        status: 'disabled',
        statusReason: 'maintenance window',
        statusUpdatedTime: T1,
        authentication: {
          type: 'selfSigned',
          symmetricKey: { primaryKey: null, secondaryKey: null },
          x509Thumbprint: { primaryThumbprint: 'A'.repeat(40), secondaryThumbprint: 'B'.repeat(64) },
        },
        capabilities: { iotEdge: true },
        connectionState: 'Connected',
        connectionStateUpdatedTime: T1,
        lastActivityTime: T2,
        cloudToDeviceMessageCount: 7,
      });
      const twin = applyTwinPatch(sampleTwin('round-trip'), { reported: { fw: '1.2.3', battery: { level: 0.75, charging: false }, list: [1, 'two', null] } }, T1);
      assert.equal(await store().createDevice(hub, device, twin), true);
      assert.deepEqual(await store().getDevice(hub, 'round-trip'), device);
      assert.deepEqual(await store().getTwin(hub, 'round-trip'), twin);
      assert.equal(await store().getDevice(hub, 'other'), undefined);
      assert.equal(await store().getTwin(hub, 'other'), undefined);
    });

    it('refuses to create an existing id and leaves the first device and twin intact', async () => {
      const hub = newHub();
      const first = sampleDevice('dup');
      const firstTwin = sampleTwin('dup');
      assert.equal(await store().createDevice(hub, first, firstTwin), true);
      const second = sampleDevice('dup', { etag: 'other', status: 'disabled', generationId: '999' });
      const secondTwin = applyTwinPatch(sampleTwin('dup'), { tags: { site: 'south' } }, T1);
      assert.equal(await store().createDevice(hub, second, secondTwin), false);
      assert.deepEqual(await store().getDevice(hub, 'dup'), first);
      assert.deepEqual(await store().getTwin(hub, 'dup'), firstTwin);
      assert.deepEqual(await store().countDevices(hub), { total: 1, enabled: 1, disabled: 0 });
    });

    it('lets exactly one of concurrent creates of the same id win', async () => {
      const hub = newHub();
      const results = await Promise.all(
        Array.from({ length: 5 }, (_, i) => store().createDevice(hub, sampleDevice('race', { etag: `e${i}` }), sampleTwin('race'))),
      );
      assert.equal(results.filter((r) => r).length, 1);
      const winner = results.indexOf(true);
      assert.equal((await store().getDevice(hub, 'race'))?.etag, `e${winner}`);
    });

    it('keeps two hubs with the same device id independent', async () => {
      const hubA = newHub();
      const hubB = newHub();
      const a = sampleDevice('shared', { etag: 'etag-a' });
      const b = sampleDevice('shared', { etag: 'etag-b', status: 'disabled' });
      assert.equal(await store().createDevice(hubA, a, sampleTwin('shared')), true);
      assert.equal(await store().createDevice(hubB, b, sampleTwin('shared')), true);
      assert.equal((await store().getDevice(hubA, 'shared'))?.etag, 'etag-a');
      assert.equal((await store().getDevice(hubB, 'shared'))?.etag, 'etag-b');

      const twinB = applyTwinPatch(sampleTwin('shared'), { tags: { hub: 'b' } }, T1);
      assert.equal(await store().replaceTwin(hubB, twinB, 1), 'ok');
      assert.deepEqual(await store().getTwin(hubA, 'shared'), sampleTwin('shared'));

      await store().recordConnections(hubA, [{ deviceId: 'shared', connectionState: 'Connected', connectionStateUpdatedTime: T1 }]);
      assert.equal((await store().getDevice(hubB, 'shared'))?.connectionState, 'Disconnected');

      assert.equal(await store().replaceDevice(hubB, { ...b, etag: 'etag-b2' }, 'etag-a'), 'precondition-failed');
      assert.equal(await store().deleteDevice(hubA, 'shared', 'etag-b'), 'precondition-failed');

      assert.deepEqual(await store().countDevices(hubA), { total: 1, enabled: 1, disabled: 0 });
      assert.deepEqual(await store().countDevices(hubB), { total: 1, enabled: 0, disabled: 1 });

      assert.equal(await store().deleteDevice(hubA, 'shared'), 'ok');
      assert.equal(await store().getDevice(hubA, 'shared'), undefined);
      assert.deepEqual(await store().getDevice(hubB, 'shared'), b);
      assert.deepEqual(await store().getTwin(hubB, 'shared'), twinB);
      assert.deepEqual((await store().listDevices(hubB, { limit: 10 })).devices.map((d) => d.deviceId), ['shared']);
      assert.deepEqual((await store().listDevices(hubA, { limit: 10 })).devices, []);
    });

    it('replaces a device by etag: match, wildcard, stale etag, missing device', async () => {
      const hub = newHub();
      const v1 = sampleDevice('d1', { etag: 'v1' });
      await store().createDevice(hub, v1, sampleTwin('d1'));

      const v2 = { ...v1, etag: 'v2', status: 'disabled' as const, statusReason: 'stolen', cloudToDeviceMessageCount: 2 };
      assert.equal(await store().replaceDevice(hub, v2, 'v1'), 'ok');
      assert.deepEqual(await store().getDevice(hub, 'd1'), v2);

      const v3 = { ...v2, etag: 'v3', status: 'enabled' as const, statusReason: null };
      assert.equal(await store().replaceDevice(hub, v3, '*'), 'ok');
      assert.deepEqual(await store().getDevice(hub, 'd1'), v3);

      const stale = { ...v3, etag: 'v4', generationId: 'changed' };
      assert.equal(await store().replaceDevice(hub, stale, 'v1'), 'precondition-failed');
      assert.deepEqual(await store().getDevice(hub, 'd1'), v3);
      assert.deepEqual(await store().countDevices(hub), { total: 1, enabled: 1, disabled: 0 });

      assert.equal(await store().replaceDevice(hub, sampleDevice('missing'), 'v1'), 'not-found');
      assert.equal(await store().replaceDevice(hub, sampleDevice('missing'), '*'), 'not-found');
      assert.equal(await store().getDevice(hub, 'missing'), undefined);
    });

    it('keeps the recorded connection state and last activity when a device is replaced', async () => {
      const hub = newHub();
      const v1 = sampleDevice('conn', { etag: 'v1' });
      await store().createDevice(hub, v1, sampleTwin('conn'));
      await store().recordConnections(hub, [{ deviceId: 'conn', connectionState: 'Connected', connectionStateUpdatedTime: T1, lastActivityTime: T2 }]);

      // The caller's copy still carries the old connection fields; the store keeps what recordConnections wrote.
      const v2 = { ...v1, etag: 'v2', statusReason: 'renamed' };
      assert.equal(await store().replaceDevice(hub, v2, 'v1'), 'ok');
      assert.deepEqual(await store().getDevice(hub, 'conn'), {
        ...v2,
        connectionState: 'Connected',
        connectionStateUpdatedTime: T1,
        lastActivityTime: T2,
      });
    });

    it('deletes a device by etag: match, no etag, wildcard, stale etag, missing device', async () => {
      const hub = newHub();
      for (const id of ['x1', 'x2', 'x3', 'x4']) await store().createDevice(hub, sampleDevice(id, { etag: `etag-${id}` }), sampleTwin(id));

      assert.equal(await store().deleteDevice(hub, 'x1', 'etag-x1'), 'ok');
      assert.equal(await store().deleteDevice(hub, 'x2'), 'ok');
      assert.equal(await store().deleteDevice(hub, 'x3', '*'), 'ok');
      for (const id of ['x1', 'x2', 'x3']) assert.equal(await store().getDevice(hub, id), undefined);

      assert.equal(await store().deleteDevice(hub, 'x4', 'stale'), 'precondition-failed');
      assert.equal((await store().getDevice(hub, 'x4'))?.etag, 'etag-x4');
      assert.deepEqual(await store().getTwin(hub, 'x4'), sampleTwin('x4'));

      assert.equal(await store().deleteDevice(hub, 'x1'), 'not-found');
      assert.equal(await store().deleteDevice(hub, 'x1', 'etag-x1'), 'not-found');
      assert.equal(await store().deleteDevice(hub, 'never', '*'), 'not-found');
    });

    it('deletes the twin with its device, and a re-created device starts with its new twin', async () => {
      const hub = newHub();
      const changed = applyTwinPatch(sampleTwin('gone'), { tags: { old: true } }, T1);
      await store().createDevice(hub, sampleDevice('gone'), sampleTwin('gone'));
      assert.equal(await store().replaceTwin(hub, changed, 1), 'ok');
      assert.equal(await store().deleteDevice(hub, 'gone'), 'ok');
      assert.equal(await store().getTwin(hub, 'gone'), undefined);
      assert.equal(await store().replaceTwin(hub, applyTwinPatch(changed, { tags: { again: true } }, T2), 2), 'not-found');
      assert.deepEqual((await store().listTwins(hub, { limit: 10 })).rows, []);

      assert.equal(await store().createDevice(hub, sampleDevice('gone'), sampleTwin('gone')), true);
      assert.deepEqual(await store().getTwin(hub, 'gone'), sampleTwin('gone'));
    });

    it('pages devices in binary id order with a keyset cursor', async () => {
      const hub = newHub();
      const other = newHub();
      assert.equal(MIXED_IDS.length, 25);
      // Insert in an order unrelated to the expected one.
      for (const id of [...MIXED_IDS].reverse()) await store().createDevice(hub, sampleDevice(id), sampleTwin(id));
      await store().createDevice(other, sampleDevice('alpha0'), sampleTwin('alpha0'));
      const expected = [...MIXED_IDS].sort(binaryOrder);

      const pages: string[][] = [];
      let after: string | undefined;
      for (let i = 0; i < 10; i++) {
        const page = await store().listDevices(hub, { limit: 10, ...(after === undefined ? {} : { after }) });
        pages.push(page.devices.map((d) => d.deviceId));
        if (page.next === undefined) break;
        assert.equal(page.next, page.devices[page.devices.length - 1]?.deviceId);
        after = page.next;
      }
      assert.deepEqual(pages.map((p) => p.length), [10, 10, 5]);
      assert.deepEqual(pages.flat(), expected);

      const first = await store().listDevices(hub, { limit: 10 });
      assert.deepEqual(first.devices[0], sampleDevice(expected[0]!));

      // A full last page still says "more may follow"; the page after it is empty and ends the scan.
      const all = await store().listDevices(hub, { limit: 25 });
      assert.equal(all.devices.length, 25);
      assert.equal(all.next, expected[24]);
      assert.deepEqual(await store().listDevices(hub, { limit: 25, after: expected[24]! }), { devices: [], next: undefined });

      // `after` need not be an existing id.
      const fromB = await store().listDevices(hub, { limit: 100, after: 'B' });
      assert.deepEqual(fromB.devices.map((d) => d.deviceId), expected.filter((id) => binaryOrder(id, 'B') > 0));
      assert.equal(fromB.next, undefined);

      assert.deepEqual(await store().listDevices(newHub(), { limit: 10 }), { devices: [], next: undefined });
    });

    it('counts devices by status', async () => {
      const hub = newHub();
      assert.deepEqual(await store().countDevices(hub), { total: 0, enabled: 0, disabled: 0 });
      for (const id of ['e1', 'e2', 'e3']) await store().createDevice(hub, sampleDevice(id), sampleTwin(id));
      for (const id of ['d1', 'd2']) await store().createDevice(hub, sampleDevice(id, { status: 'disabled' }), sampleTwin(id));
      await store().createDevice(newHub(), sampleDevice('elsewhere'), sampleTwin('elsewhere'));
      assert.deepEqual(await store().countDevices(hub), { total: 5, enabled: 3, disabled: 2 });

      const e1 = await store().getDevice(hub, 'e1');
      assert.ok(e1);
      assert.equal(await store().replaceDevice(hub, { ...e1, status: 'disabled', etag: 'x' }, e1.etag), 'ok');
      assert.equal(await store().deleteDevice(hub, 'd2'), 'ok');
      assert.deepEqual(await store().countDevices(hub), { total: 4, enabled: 2, disabled: 2 });
    });

    it('replaces a twin by version: match, stale version, missing device', async () => {
      const hub = newHub();
      const v1 = sampleTwin('t1');
      await store().createDevice(hub, sampleDevice('t1'), v1);

      const v2 = applyTwinPatch(v1, { desired: { telemetryInterval: 60 } }, T1);
      assert.equal(v2.version, 2);
      assert.equal(await store().replaceTwin(hub, v2, 1), 'ok');
      assert.deepEqual(await store().getTwin(hub, 't1'), v2);

      const lost = applyTwinPatch(v1, { reported: { lost: true } }, T2);
      assert.equal(await store().replaceTwin(hub, lost, 1), 'precondition-failed');
      assert.deepEqual(await store().getTwin(hub, 't1'), v2);

      const v3 = applyTwinPatch(v2, { reported: { fw: '2.0' } }, T2);
      assert.equal(await store().replaceTwin(hub, v3, 2), 'ok');
      assert.deepEqual(await store().getTwin(hub, 't1'), v3);

      assert.equal(await store().replaceTwin(hub, sampleTwin('nobody'), 1), 'not-found');
      assert.equal(await store().getTwin(hub, 'nobody'), undefined);
    });

    it('writes a device with its twin as given (import): insert, exists, replace by etag and version', async () => {
      const hub = newHub();
      const twin = { ...sampleTwin('imp'), version: 5 };
      twin.desired = { ...twin.desired, version: 4 };
      twin.reported = { props: { fw: '1.0' }, version: 2, metadata: { $lastUpdated: T1, fw: { $lastUpdated: T1 } } };
      const v1 = sampleDevice('imp', { etag: 'v1' });
      assert.equal(await store().writeDeviceState(hub, v1, twin), 'ok');
      assert.deepEqual(await store().getDevice(hub, 'imp'), v1);
      assert.deepEqual(await store().getTwin(hub, 'imp'), twin, 'versions kept exactly');
      // An insert on a taken id writes nothing.
      assert.equal(await store().writeDeviceState(hub, sampleDevice('imp', { etag: 'other' }), sampleTwin('imp')), 'exists');
      assert.deepEqual(await store().getDevice(hub, 'imp'), v1);
      assert.deepEqual(await store().getTwin(hub, 'imp'), twin);

      await store().recordConnections(hub, [{ deviceId: 'imp', connectionState: 'Connected', connectionStateUpdatedTime: T1, lastActivityTime: T2 }]);
      const v2 = sampleDevice('imp', { etag: 'v2', capabilities: { iotEdge: true } });
      const twin2: TwinState = { ...twin, version: 6, tags: {}, reported: { props: {}, version: 1, metadata: { $lastUpdated: T2 } } };
      // Stale device etag, then stale twin version: nothing written (the device update is rolled back too).
      assert.equal(await store().writeDeviceState(hub, v2, twin2, { deviceEtag: 'stale', twinVersion: 5 }), 'precondition-failed');
      assert.equal(await store().writeDeviceState(hub, v2, twin2, { deviceEtag: 'v1', twinVersion: 4 }), 'precondition-failed');
      assert.equal((await store().getDevice(hub, 'imp'))?.etag, 'v1');
      assert.deepEqual(await store().getTwin(hub, 'imp'), twin);
      assert.equal(await store().writeDeviceState(hub, v2, twin2, { deviceEtag: 'v1', twinVersion: 5 }), 'ok');
      assert.deepEqual(await store().getDevice(hub, 'imp'), { ...v2, connectionState: 'Connected', connectionStateUpdatedTime: T1, lastActivityTime: T2 });
      assert.deepEqual(await store().getTwin(hub, 'imp'), twin2);
      assert.equal(await store().writeDeviceState(hub, sampleDevice('none'), sampleTwin('none'), { deviceEtag: 'x', twinVersion: 1 }), 'not-found');
      assert.equal(await store().getDevice(hub, 'none'), undefined);
    });

    it('lets exactly one of concurrent state writes on the same etag and version win', async () => {
      const hub = newHub();
      await store().createDevice(hub, sampleDevice('race', { etag: 'v1' }), sampleTwin('race'));
      const writes = Array.from({ length: 5 }, (_, i) => ({
        device: sampleDevice('race', { etag: `w${i}` }),
        twin: { ...sampleTwin('race'), version: 2, tags: { writer: i } },
      }));
      const results = await Promise.all(writes.map((w) => store().writeDeviceState(hub, w.device, w.twin, { deviceEtag: 'v1', twinVersion: 1 })));
      assert.equal(results.filter((r) => r === 'ok').length, 1);
      assert.equal(results.filter((r) => r === 'precondition-failed').length, 4);
      const winner = writes[results.indexOf('ok')];
      assert.equal((await store().getDevice(hub, 'race'))?.etag, winner?.device.etag);
      assert.deepEqual(await store().getTwin(hub, 'race'), winner?.twin);
    });

    it('lets exactly one of concurrent twin replacements on the same version win', async () => {
      const hub = newHub();
      const v1 = sampleTwin('hot');
      await store().createDevice(hub, sampleDevice('hot'), v1);
      const candidates = Array.from({ length: 6 }, (_, i) => applyTwinPatch(v1, { reported: { writer: i } }, T1));
      const results = await Promise.all(candidates.map((t) => store().replaceTwin(hub, t, 1)));
      assert.equal(results.filter((r) => r === 'ok').length, 1);
      assert.equal(results.filter((r) => r === 'precondition-failed').length, 5);
      assert.deepEqual(await store().getTwin(hub, 'hot'), candidates[results.indexOf('ok')]);
    });

    it('pages twins together with their devices in binary id order', async () => {
      const hub = newHub();
      const ids = ['t-b', 'T-a', 't-a', 't_c', 't.c', 'T.b', 'u', 'U', 'a', 'A', '$t', "t'x"];
      for (const id of ids) {
        await store().createDevice(hub, sampleDevice(id, { etag: `etag-${id}` }), sampleTwin(id));
        assert.equal(await store().replaceTwin(hub, applyTwinPatch(sampleTwin(id), { tags: { id } }, T1), 1), 'ok');
      }
      await store().recordConnections(hub, [{ deviceId: 'u', connectionState: 'Connected', connectionStateUpdatedTime: T2 }]);
      const expected = [...ids].sort(binaryOrder);

      const seen: string[] = [];
      const sizes: number[] = [];
      let after: string | undefined;
      for (let i = 0; i < 10; i++) {
        const page = await store().listTwins(hub, { limit: 5, ...(after === undefined ? {} : { after }) });
        sizes.push(page.rows.length);
        for (const row of page.rows) {
          assert.equal(row.device.deviceId, row.twin.deviceId);
          assert.equal(row.device.etag, `etag-${row.device.deviceId}`);
          assert.deepEqual(row.twin.tags, { site: 'north', floor: 3, id: row.device.deviceId });
          assert.equal(row.twin.version, 2);
          seen.push(row.device.deviceId);
        }
        if (page.next === undefined) break;
        assert.equal(page.next, page.rows[page.rows.length - 1]?.device.deviceId);
        after = page.next;
      }
      assert.deepEqual(sizes, [5, 5, 2]);
      assert.deepEqual(seen, expected);
      const u = (await store().listTwins(hub, { limit: 1, after: 't_c' })).rows[0];
      assert.equal(u?.device.deviceId, 'u');
      assert.equal(u?.device.connectionState, 'Connected');
      assert.equal(u?.device.connectionStateUpdatedTime, T2);
    });

    it('records a batch of connection updates: partial fields, duplicates, unknown ids ignored', async () => {
      const hub = newHub();
      for (const id of ['c1', 'c2', 'c3', 'c4']) await store().createDevice(hub, sampleDevice(id), sampleTwin(id));

      await store().recordConnections(hub, []);
      await store().recordConnections(hub, [
        { deviceId: 'c3', connectionState: 'Connected', connectionStateUpdatedTime: T1, lastActivityTime: T1 },
        { deviceId: 'ghost', connectionState: 'Connected', connectionStateUpdatedTime: T1, lastActivityTime: T1 },
        { deviceId: 'c1', lastActivityTime: T2 },
        { deviceId: 'c2', connectionState: 'Connected' },
        { deviceId: 'c3', lastActivityTime: T2 },
        { deviceId: 'c4' },
      ]);

      const get = async (id: string) => {
        const d = await store().getDevice(hub, id);
        return d && { s: d.connectionState, u: d.connectionStateUpdatedTime, a: d.lastActivityTime };
      };
      assert.deepEqual(await get('c1'), { s: 'Disconnected', u: NEVER, a: T2 });
      assert.deepEqual(await get('c2'), { s: 'Connected', u: NEVER, a: NEVER });
      assert.deepEqual(await get('c3'), { s: 'Connected', u: T1, a: T2 });
      assert.deepEqual(await get('c4'), { s: 'Disconnected', u: NEVER, a: NEVER });
      assert.equal(await store().getDevice(hub, 'ghost'), undefined);
      assert.deepEqual(await store().countDevices(hub), { total: 4, enabled: 4, disabled: 0 });

      await store().recordConnections(hub, [{ deviceId: 'c3', connectionState: 'Disconnected', connectionStateUpdatedTime: T2 }]);
      assert.deepEqual(await get('c3'), { s: 'Disconnected', u: T2, a: T2 });
      // Only the connection fields changed.
      const c3 = await store().getDevice(hub, 'c3');
      assert.deepEqual(c3, { ...sampleDevice('c3'), connectionState: 'Disconnected', connectionStateUpdatedTime: T2, lastActivityTime: T2 });
    });

    it('records large and overlapping batches concurrently', async () => {
      const hub = newHub();
      const ids = Array.from({ length: 300 }, (_, i) => `bulk-${i.toString().padStart(3, '0')}`);
      for (const id of ids) await store().createDevice(hub, sampleDevice(id), sampleTwin(id));
      // Batches in opposite orders over the same devices: the store orders its writes, so none deadlocks.
      const forward = ids.map((deviceId) => ({ deviceId, lastActivityTime: T1 }));
      const backward = [...ids].reverse().map((deviceId) => ({ deviceId, lastActivityTime: T1 }));
      await Promise.all([
        store().recordConnections(hub, forward),
        store().recordConnections(hub, backward),
        store().recordConnections(hub, forward),
        store().recordConnections(hub, backward),
      ]);
      const page = await store().listDevices(hub, { limit: 300 });
      assert.equal(page.devices.length, 300);
      assert.ok(page.devices.every((d) => d.lastActivityTime === T1 && d.connectionState === 'Disconnected'));
    });

    it('round-trips unusual device ids', async () => {
      const hub = newHub();
      const ids = [
        'x'.repeat(128),
        `${'A1-._%$'.repeat(18)}zz`,
        '%2F',
        'a%2Fb%2Fc',
        '%25',
        '$',
        '$edgeAgent',
        "'",
        "it's'; drop table hub_devices; --",
        '*?!(),:=@+#',
        'UPPER',
        'upper',
      ];
      assert.equal(ids[1]!.length, 128);
      for (const id of ids) {
        assert.equal(await store().createDevice(hub, sampleDevice(id, { etag: `e:${id}` }), sampleTwin(id)), true, id);
      }
      for (const id of ids) {
        assert.deepEqual(await store().getDevice(hub, id), sampleDevice(id, { etag: `e:${id}` }), id);
        assert.deepEqual(await store().getTwin(hub, id), sampleTwin(id), id);
      }
      assert.equal(await store().getDevice(hub, 'Upper'), undefined);
      assert.equal(await store().getDevice(hub, '/'), undefined);
      assert.deepEqual(
        (await store().listDevices(hub, { limit: 100 })).devices.map((d) => d.deviceId),
        [...ids].sort(binaryOrder),
      );
      for (const id of ids) {
        const twin = applyTwinPatch(sampleTwin(id), { reported: { id } }, T1);
        assert.equal(await store().replaceTwin(hub, twin, 1), 'ok', id);
        assert.equal(await store().replaceDevice(hub, sampleDevice(id, { etag: 'next' }), `e:${id}`), 'ok', id);
        assert.equal(await store().deleteDevice(hub, id, 'next'), 'ok', id);
      }
      assert.deepEqual(await store().countDevices(hub), { total: 0, enabled: 0, disabled: 0 });
    });

    it('keeps JSON documents with unicode and escapes intact', async () => {
      const hub = newHub();
      const text = 'Grüße, 東京, ☃, 🚀🛰️, e\u0301, RTL \u05e9\u05dc\u05d5\u05dd, nul \u0000, quote " and \\ backslash, lone \ud83d';
      const device = sampleDevice('unicode', { statusReason: text });
      const twin = applyTwinPatch(
        newTwin('unicode', T0, { tags: { name: text, '東京': { 'ключ': '🙂' } } }),
        { reported: { note: text, nested: { emoji: ['👩‍👩‍👧‍👦', '🏳️‍🌈'], big: 2 ** 52, neg: -0.5, exp: 1e-7 } } },
        T1,
      );
      assert.equal(await store().createDevice(hub, device, twin), true);
      assert.deepEqual(await store().getDevice(hub, 'unicode'), device);
      assert.deepEqual(await store().getTwin(hub, 'unicode'), twin);
      const [row] = (await store().listTwins(hub, { limit: 1 })).rows;
      assert.deepEqual(row, { device, twin });
    });
  });
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import type { AllocationContext } from '../../../src/core/allocation.ts';
import type { JsonObject } from '../../../src/core/json.ts';
import type { HubClientFactory, HubFailure } from '../../../src/provisioning/hub-client.ts';
import type { EnrollmentGroup, HubMove } from '../../../src/provisioning/model.ts';
import { RegistrationService } from '../../../src/provisioning/registration.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { realIds } from '../../helpers/ids.ts';
import { dropPgSchema } from '../../helpers/store-harness.ts';
import { wrapHubClients } from '../../helpers/wrapped-hub-clients.ts';
import { createRuntimeFixture, type FixtureOptions, type RuntimeFixture } from '../runtime/fixture.ts';

/**
 * Reprovisioning (dps-behavior.md §4, scenarios 23–28): never / reset / migrate, the `assigning` state during a
 * move, concurrent registrations, hub failures and resuming interrupted moves. In-process hubs on a real SQLite
 * store; the HTTP device API through inject().
 */

const API = 'api-version=2021-10-01';
const HUBS = ['hub-a.test', 'hub-b.test', 'hub-c.test'];

interface OpBody {
  operationId: string;
  status: string;
  registrationState?: JsonObject & { status: string; assignedHub?: string; deviceId?: string; substatus?: string; errorCode?: number; errorMessage?: string; payload?: JsonObject };
}

function put(f: RuntimeFixture, id: string, key: string, body: JsonObject = { registrationId: id }) {
  return f.app.inject({
    method: 'PUT',
    url: `/${f.idScope}/registrations/${id}/register?${API}`,
    headers: { 'content-type': 'application/json', authorization: f.deviceSas(id, key) },
    payload: JSON.stringify(body),
  });
}

function poll(f: RuntimeFixture, id: string, operationId: string, key: string) {
  return f.app.inject({
    method: 'GET',
    url: `/${f.idScope}/registrations/${id}/operations/${operationId}?${API}`,
    headers: { authorization: f.deviceSas(id, key) },
  });
}

function lookup(f: RuntimeFixture, id: string, key: string) {
  return f.app.inject({
    method: 'POST',
    url: `/${f.idScope}/registrations/${id}?${API}`,
    headers: { 'content-type': 'application/json', authorization: f.deviceSas(id, key) },
    payload: JSON.stringify({ registrationId: id }),
  });
}

/**
 * Lets the event loop run one turn. `inject()` polls run on promises alone; a loop of them would never let the store
 * reach its next event-loop turn, where the SQLite group commit stores what the polls wait for.
 */
const nextTurn = () => new Promise<void>((r) => setImmediate(r));

function body(r: LightMyRequestResponse): OpBody {
  return r.json<OpBody>();
}

async function withFixture(o: FixtureOptions, fn: (f: RuntimeFixture) => Promise<void>): Promise<void> {
  const f = await createRuntimeFixture({ hubNames: HUBS, ...o });
  try {
    await fn(f);
  } finally {
    await f.close();
  }
}

/** Registers and expects 200 assigned (the fixture's budget is long). */
async function register(f: RuntimeFixture, id: string, key: string, extra: JsonObject = {}): Promise<NonNullable<OpBody['registrationState']>> {
  const r = await put(f, id, key, { registrationId: id, ...extra });
  assert.equal(r.statusCode, 200, r.body);
  const b = body(r);
  assert.ok(b.registrationState, r.body);
  return b.registrationState;
}

async function changeGroup(f: RuntimeFixture, id: string, change: (g: EnrollmentGroup) => EnrollmentGroup): Promise<void> {
  const g = await f.store.provisioning.getEnrollmentGroup(f.instanceName, id);
  assert.ok(g);
  const next = { ...change(g), etag: realIds.uuid() };
  assert.equal(await f.store.provisioning.replaceEnrollmentGroup(f.instanceName, next, g.etag), 'ok');
}

/** Hubs (of the fixture) holding the device. */
async function hubsHolding(f: RuntimeFixture, deviceId: string): Promise<string[]> {
  const out: string[] = [];
  for (const [name, hub] of f.hubs) if (await hub.findDevice(deviceId)) out.push(name);
  return out;
}

/** Places a device on hub-a or hub-b (hashed over the two), with tag t=1 and reported r=1 (reported $version 2). */
async function provisionWithState(f: RuntimeFixture, g: EnrollmentGroup, id: string): Promise<string> {
  const s = await register(f, id, f.derivedKey(g, id));
  assert.equal(s.substatus, 'initialAssignment');
  const hub = f.hubs.get(s.assignedHub!)!;
  await hub.updateTwin(id, { tags: { t: 1 } }, '*');
  await hub.patchReported(id, { r: 1 });
  return s.assignedHub!;
}

test('scenario 24 migrate: the twin (tags, desired, reported with versions) and capabilities move; the old hub loses the device', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G', { iotHubs: ['hub-a.test', 'hub-b.test'], initialTwin: { properties: { desired: { mode: 'eco' } } }, iotEdge: true });
    const from = await provisionWithState(f, g, 'm-1');
    const before = await f.hubs.get(from)!.getTwinState('m-1');
    assert.equal(before.twin.reported.version, 2);

    await changeGroup(f, 'G', (x) => ({ ...x, iotHubs: ['hub-c.test'], capabilities: { iotEdge: false } }));
    const s = await register(f, 'm-1', f.derivedKey(g, 'm-1'));
    assert.equal(s.status, 'assigned');
    assert.equal(s.assignedHub, 'hub-c.test');
    assert.equal(s.substatus, 'deviceDataMigrated');
    assert.deepEqual(await hubsHolding(f, 'm-1'), ['hub-c.test']);

    const after = await f.hubs.get('hub-c.test')!.getTwinState('m-1');
    assert.deepEqual(after.twin.tags, { t: 1 });
    assert.deepEqual(after.twin.desired.props, { mode: 'eco' });
    assert.deepEqual(after.twin.reported.props, { r: 1 });
    assert.ok(after.twin.reported.version >= 2);
    assert.equal(after.twin.reported.version, before.twin.reported.version);
    assert.equal(after.twin.desired.version, before.twin.desired.version);
    // Capabilities are carried from the old hub (migrated state), credentials derived from this registration.
    assert.equal(after.device.capabilities.iotEdge, true);
    assert.equal(after.device.authentication.symmetricKey.primaryKey, f.derivedKey(g, 'm-1'));

    const rec = await f.store.provisioning.getRegistration(f.instanceName, 'm-1');
    assert.equal(rec?.status, 'assigned');
    assert.equal(rec?.assignedHub, 'hub-c.test');
    assert.equal(await f.store.provisioning.countHubMoves(f.instanceName), 0);

    // Registering again with the same hubs: nothing moves, substatus kept.
    const again = await register(f, 'm-1', f.derivedKey(g, 'm-1'));
    assert.equal(again.assignedHub, 'hub-c.test');
    assert.equal(again.substatus, 'deviceDataMigrated');
    assert.deepEqual((await f.hubs.get('hub-c.test')!.getTwinState('m-1')).twin.reported.props, { r: 1 });
  });
});

test('scenario 25 reset: the new hub gets the initial twin and an empty reported ($version 1); the old hub loses the device', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('R', { iotHubs: ['hub-a.test', 'hub-b.test'], migrateDeviceData: false, initialTwin: { tags: { site: 'A' }, properties: { desired: { mode: 'eco' } } } });
    await provisionWithState(f, g, 'r-1');
    await changeGroup(f, 'R', (x) => ({ ...x, iotHubs: ['hub-c.test'] }));
    const s = await register(f, 'r-1', f.derivedKey(g, 'r-1'));
    assert.equal(s.assignedHub, 'hub-c.test');
    assert.equal(s.substatus, 'deviceDataReset');
    assert.deepEqual(await hubsHolding(f, 'r-1'), ['hub-c.test']);
    const t = (await f.hubs.get('hub-c.test')!.getTwinState('r-1')).twin;
    assert.deepEqual(t.tags, { site: 'A' });
    assert.deepEqual(t.desired.props, { mode: 'eco' });
    assert.deepEqual(t.reported.props, {});
    assert.equal(t.reported.version, 1);
  });
});

test('scenario 27 never: the device stays on its hub with its twin; substatus stays initialAssignment', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('N', { iotHubs: ['hub-a.test'], updateHubAssignment: false });
    await provisionWithState(f, g, 'n-1');
    await changeGroup(f, 'N', (x) => ({ ...x, iotHubs: ['hub-b.test'] }));
    const s = await register(f, 'n-1', f.derivedKey(g, 'n-1'));
    assert.equal(s.assignedHub, 'hub-a.test');
    assert.equal(s.substatus, 'initialAssignment');
    assert.deepEqual(await hubsHolding(f, 'n-1'), ['hub-a.test']);
    const t = (await f.hubs.get('hub-a.test')!.getTwinState('n-1')).twin;
    assert.deepEqual(t.tags, { t: 1 });
    assert.deepEqual(t.reported.props, { r: 1 });
  });
});

test('scenarios 23 and 26: custom allocation under never gets only the current hub; the webhook initialTwin applies only on a hub change under reset', async () => {
  const seen: AllocationContext[] = [];
  const custom = (ctx: AllocationContext) => {
    seen.push(ctx);
    const want = (ctx.device?.payload?.want as string | undefined) ?? 'hub-a.test';
    const hub = ctx.hubs.find((h) => h.name === want);
    if (!hub) return { kind: 'failed' as const, errorName: 'CustomAllocationFailed' as const, message: `Custom allocation failed: ${want} is not a linked hub`, policy: 'custom' as const };
    return { kind: 'assigned' as const, hub, policy: 'custom' as const, initialTwin: { properties: { desired: { x: 9 } } }, payload: { from: 'webhook', want } };
  };
  await withFixture({ allocators: { custom } }, async (f) => {
    const def = { webhookUrl: 'https://webhook.test/api/alloc', apiVersion: '2021-10-01' };
    // never: the webhook is called with linkedHubs = [current] and its payload is still delivered.
    const gn = await f.addGroup('CN', { allocationPolicy: 'custom', updateHubAssignment: false });
    await changeGroup(f, 'CN', (x) => ({ ...x, customAllocationDefinition: def }));
    const first = await register(f, 'c-1', f.derivedKey(gn, 'c-1'), { payload: { want: 'hub-a.test' } });
    assert.equal(first.assignedHub, 'hub-a.test');
    assert.deepEqual(first.payload, { from: 'webhook', want: 'hub-a.test' });
    assert.equal(seen.at(-1)?.device?.currentHub, undefined);
    assert.deepEqual(seen.at(-1)?.hubs.map((h) => h.name), HUBS);
    const second = await register(f, 'c-1', f.derivedKey(gn, 'c-1'), { payload: { want: 'hub-a.test' } });
    assert.equal(second.assignedHub, 'hub-a.test');
    assert.deepEqual(seen.at(-1)?.hubs.map((h) => h.name), ['hub-a.test']);
    assert.equal(seen.at(-1)?.device?.currentHub, 'hub-a.test');
    assert.equal(seen.at(-1)?.device?.currentDeviceId, 'c-1');
    assert.deepEqual(second.payload, { from: 'webhook', want: 'hub-a.test' });
    // Choosing another hub under never: not in linkedHubs → failed 400207, nothing moves.
    const r = await put(f, 'c-1', f.derivedKey(gn, 'c-1'), { registrationId: 'c-1', payload: { want: 'hub-b.test' } });
    assert.equal(body(r).status, 'failed');
    assert.equal(body(r).registrationState?.errorCode, 400207);
    assert.deepEqual(await hubsHolding(f, 'c-1'), ['hub-a.test']);

    // reset: the webhook's initialTwin wins over the enrollment's when the hub changes; ignored when it does not.
    const gr = await f.addGroup('CR', { allocationPolicy: 'custom', migrateDeviceData: false, initialTwin: { properties: { desired: { x: 1, y: 1 } } } });
    await changeGroup(f, 'CR', (x) => ({ ...x, customAllocationDefinition: def }));
    const a = await register(f, 'c-2', f.derivedKey(gr, 'c-2'), { payload: { want: 'hub-a.test' } });
    assert.equal(a.substatus, 'initialAssignment');
    assert.deepEqual((await f.hubs.get('hub-a.test')!.getTwinState('c-2')).twin.desired.props, { x: 9 });
    await f.hubs.get('hub-a.test')!.updateTwin('c-2', { properties: { desired: { x: 5 } } }, '*');
    const same = await register(f, 'c-2', f.derivedKey(gr, 'c-2'), { payload: { want: 'hub-a.test' } });
    assert.equal(same.assignedHub, 'hub-a.test');
    assert.deepEqual((await f.hubs.get('hub-a.test')!.getTwinState('c-2')).twin.desired.props, { x: 5 });
    const moved = await register(f, 'c-2', f.derivedKey(gr, 'c-2'), { payload: { want: 'hub-b.test' } });
    assert.equal(moved.assignedHub, 'hub-b.test');
    assert.equal(moved.substatus, 'deviceDataReset');
    assert.deepEqual(moved.payload, { from: 'webhook', want: 'hub-b.test' });
    assert.deepEqual((await f.hubs.get('hub-b.test')!.getTwinState('c-2')).twin.desired.props, { x: 9 });
    assert.deepEqual(await hubsHolding(f, 'c-2'), ['hub-b.test']);
  });
});

/** Hub clients whose importDeviceState waits for a gate, or fails with the given failures first. */
function scripted(o: { gate?: Promise<void>; failImports?: HubFailure[] }): (inner: HubClientFactory) => HubClientFactory {
  const failures = [...(o.failImports ?? [])];
  return (inner) =>
    wrapHubClients(inner, {
      importDeviceState: async (c, req) => {
        await o.gate;
        const f = failures.shift();
        if (f) return { ok: false, failure: f };
        return c.importDeviceState(req);
      },
    });
}

test('during a move the registration and the operation read assigning; two registrations of the device make one move', async () => {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  await withFixture({ hubClients: scripted({ gate }), responseBudgetMs: 0 }, async (f) => {
    const g = await f.addGroup('A', { iotHubs: ['hub-a.test'] });
    const key = f.derivedKey(g, 'a-1');
    const first = await put(f, 'a-1', key);
    const firstOp = body(first).operationId;
    for (;;) {
      const p = await poll(f, 'a-1', firstOp, key);
      if (p.statusCode === 200) break;
      await nextTurn();
    }
    await f.hubs.get('hub-a.test')!.patchReported('a-1', { r: 7 });
    await changeGroup(f, 'A', (x) => ({ ...x, iotHubs: ['hub-b.test'] }));

    const [r1, r2] = await Promise.all([put(f, 'a-1', key), put(f, 'a-1', key)]);
    assert.equal(r1.statusCode, 202, r1.body);
    assert.equal(r2.statusCode, 202, r2.body);
    assert.equal(body(r1).operationId, body(r2).operationId);
    const op = body(r1).operationId;
    // Wait until the move is stored (the planned step ran; the import is held by the gate).
    while ((await f.store.provisioning.getHubMove(f.instanceName, 'a-1')) === undefined) await nextTurn();
    const p = await poll(f, 'a-1', op, key);
    assert.equal(p.statusCode, 202);
    assert.equal(body(p).status, 'assigning');
    const l = await lookup(f, 'a-1', key);
    assert.equal(l.statusCode, 200);
    assert.equal(l.json<{ status: string }>().status, 'assigning');
    // A third register joins the same operation.
    assert.equal(body(await put(f, 'a-1', key)).operationId, op);
    assert.equal(await f.store.provisioning.countHubMoves(f.instanceName), 1);

    open();
    let final: OpBody;
    for (;;) {
      const q = await poll(f, 'a-1', op, key);
      if (q.statusCode === 200) {
        final = body(q);
        break;
      }
      await nextTurn();
    }
    assert.equal(final.status, 'assigned');
    assert.equal(final.registrationState?.assignedHub, 'hub-b.test');
    assert.equal(final.registrationState?.substatus, 'deviceDataMigrated');
    assert.deepEqual(await hubsHolding(f, 'a-1'), ['hub-b.test']);
    assert.deepEqual((await f.hubs.get('hub-b.test')!.getTwinState('a-1')).twin.reported.props, { r: 7 });
  });
});

test('a new hub that refuses the device: the move is undone, the operation fails, the device stays on its old hub', async () => {
  await withFixture({ hubClients: scripted({ failImports: [{ kind: 'rejected', status: 400, message: 'IoT hub hub-b.test refused the device' }] }) }, async (f) => {
    const g = await f.addGroup('F', { iotHubs: ['hub-a.test'] });
    await provisionWithState(f, g, 'f-1');
    await changeGroup(f, 'F', (x) => ({ ...x, iotHubs: ['hub-b.test'] }));
    const r = await put(f, 'f-1', f.derivedKey(g, 'f-1'));
    assert.equal(r.statusCode, 200, r.body);
    const b = body(r);
    assert.equal(b.status, 'failed');
    assert.equal(b.registrationState?.errorCode, 400209);
    assert.match(String(b.registrationState?.errorMessage), /hub-b\.test/);
    assert.deepEqual(await hubsHolding(f, 'f-1'), ['hub-a.test']);
    const rec = await f.store.provisioning.getRegistration(f.instanceName, 'f-1');
    assert.equal(rec?.status, 'assigned');
    assert.equal(rec?.assignedHub, 'hub-a.test');
    assert.deepEqual((await f.hubs.get('hub-a.test')!.getTwinState('f-1')).twin.reported.props, { r: 1 });
    assert.equal(await f.store.provisioning.countHubMoves(f.instanceName), 0);
    // The next registration moves it (the hub accepts now).
    const s = await register(f, 'f-1', f.derivedKey(g, 'f-1'));
    assert.equal(s.assignedHub, 'hub-b.test');
    assert.deepEqual(await hubsHolding(f, 'f-1'), ['hub-b.test']);
  });
});

test('an unreachable new hub is retried with back-off and the move completes', async () => {
  const down: HubFailure = { kind: 'unavailable', status: 503, message: 'IoT hub hub-b.test is unavailable' };
  await withFixture({ hubClients: scripted({ failImports: [down, down] }) }, async (f) => {
    const g = await f.addGroup('U', { iotHubs: ['hub-a.test'] });
    await provisionWithState(f, g, 'u-1');
    await changeGroup(f, 'U', (x) => ({ ...x, iotHubs: ['hub-b.test'] }));
    const s = await register(f, 'u-1', f.derivedKey(g, 'u-1'));
    assert.equal(s.assignedHub, 'hub-b.test');
    assert.equal(s.substatus, 'deviceDataMigrated');
    assert.deepEqual(await hubsHolding(f, 'u-1'), ['hub-b.test']);
  });
});

for (const stopAfter of ['copied', 'written', 'removed'] as const) {
  test(`a move interrupted after step ${stopAfter} is resumed by the next node (or a restart) and ends on exactly one hub`, async () => {
    const crash = new Error('simulated crash');
    await withFixture(
      {
        moves: {
          nodeId: 'node-1',
          afterStep: (m: HubMove) => {
            if (m.step === stopAfter) throw crash;
          },
        },
      },
      async (f) => {
        const g = await f.addGroup('K', { iotHubs: ['hub-a.test'] });
        await provisionWithState(f, g, 'k-1');
        await changeGroup(f, 'K', (x) => ({ ...x, iotHubs: ['hub-b.test'] }));
        const r = await put(f, 'k-1', f.derivedKey(g, 'k-1'));
        assert.equal(r.statusCode, 202, r.body);
        const move = await f.store.provisioning.getHubMove(f.instanceName, 'k-1');
        // `removed` is never stored: the move resumes from `written` and deletes again (a no-op).
        assert.equal(move?.step, stopAfter === 'removed' ? 'written' : stopAfter);
        assert.equal((await f.store.provisioning.getRegistration(f.instanceName, 'k-1'))?.status, 'assigning');

        // Another node may take it over only after the lease.
        const other = new RegistrationService({ store: f.store.provisioning, hubs: (f.service as unknown as { d: { hubs: HubClientFactory } }).d.hubs, clock: f.clock, ids: realIds, logger: silentLogger(), moves: { nodeId: 'node-2' } });
        assert.equal(await other.mover.resumeAll(await f.store.provisioning.listInstances()), 0);
        // The same node after a restart resumes it at once.
        const restarted = new RegistrationService({ store: f.store.provisioning, hubs: (f.service as unknown as { d: { hubs: HubClientFactory } }).d.hubs, clock: f.clock, ids: realIds, logger: silentLogger(), moves: { nodeId: 'node-1' } });
        assert.equal(await restarted.mover.resumeAll(await f.store.provisioning.listInstances()), 1);
        await restarted.stop();
        await other.stop();

        assert.equal(await f.store.provisioning.countHubMoves(f.instanceName), 0);
        assert.deepEqual(await hubsHolding(f, 'k-1'), ['hub-b.test']);
        assert.deepEqual((await f.hubs.get('hub-b.test')!.getTwinState('k-1')).twin.reported.props, { r: 1 });
        const p = await poll(f, 'k-1', body(r).operationId, f.derivedKey(g, 'k-1'));
        assert.equal(p.statusCode, 200);
        assert.equal(body(p).registrationState?.substatus, 'deviceDataMigrated');
        assert.equal(body(p).registrationState?.assignedHub, 'hub-b.test');
      },
    );
  });
}

const PG_URL = process.env.HOMING_TEST_DATABASE_URL;

test('two nodes on one PostgreSQL store: concurrent registrations of one device make one move', { skip: PG_URL ? false : 'HOMING_TEST_DATABASE_URL is not set' }, async () => {
  const schema = `moves_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
  // The move's import waits for `held.gate` once it is set, so the four registrations overlap the move for sure (on
  // a busy machine the move could otherwise end before a late one looks, which then rightly starts anew).
  const held: { gate?: Promise<void> } = {};
  const f = await createRuntimeFixture({ hubNames: HUBS, hubClients: scripted(held), store: { dialect: 'postgres', postgresUrl: PG_URL!, postgresSchema: schema, poolSize: 4 }, moves: { nodeId: 'node-1' } });
  const hubs = (f.service as unknown as { d: { hubs: HubClientFactory } }).d.hubs;
  const other = new RegistrationService({ store: f.store.provisioning, hubs, clock: f.clock, ids: realIds, logger: silentLogger(), readCacheMs: 0, moves: { nodeId: 'node-2' } });
  try {
    const g = await f.addGroup('P', { iotHubs: ['hub-a.test'] });
    await provisionWithState(f, g, 'p-1');
    await changeGroup(f, 'P', (x) => ({ ...x, iotHubs: ['hub-b.test'] }));
    const cred = { kind: 'sas' as const, authorization: f.deviceSas('p-1', f.derivedKey(g, 'p-1')) };
    let open!: () => void;
    held.gate = new Promise<void>((r) => (open = r));
    const replies = await Promise.all([
      f.service.register(f.idScope, 'p-1', { registrationId: 'p-1' }, cred, { budgetMs: 0 }),
      other.register(f.idScope, 'p-1', { registrationId: 'p-1' }, cred, { budgetMs: 0 }),
      f.service.register(f.idScope, 'p-1', { registrationId: 'p-1' }, cred, { budgetMs: 0 }),
      other.register(f.idScope, 'p-1', { registrationId: 'p-1' }, cred, { budgetMs: 0 }),
    ]);
    const ops = new Set(replies.map((r) => r.reply.body.operationId));
    assert.equal(ops.size, 1, `one operation: ${[...ops].join(', ')}`);
    open();
    await Promise.all(replies.map((r) => r.completion));
    await f.service.drain();
    await other.drain();
    const [op] = [...ops];
    const stored = await f.store.provisioning.getOperation(f.instanceName, op!);
    assert.equal(stored?.status, 'assigned');
    assert.equal(await f.store.provisioning.countHubMoves(f.instanceName), 0);
    assert.deepEqual(await hubsHolding(f, 'p-1'), ['hub-b.test']);
    assert.deepEqual((await f.hubs.get('hub-b.test')!.getTwinState('p-1')).twin.reported.props, { r: 1 });
    const rec = await f.store.provisioning.getRegistration(f.instanceName, 'p-1');
    assert.equal(rec?.substatus, 'deviceDataMigrated');
  } finally {
    await other.stop();
    await f.close();
    await dropPgSchema(PG_URL!, schema);
  }
});

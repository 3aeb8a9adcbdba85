import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { silentLogger } from '../../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../../src/provisioning/hub-client-inprocess.ts';
import { RegistrationService } from '../../../src/provisioning/registration.ts';
import { realIds } from '../../helpers/ids.ts';
import { gatedHubClients } from '../../helpers/wrapped-hub-clients.ts';
import { createRuntimeFixture, TEST_RESPONSE_BUDGET_MS, type FixtureOptions, type RuntimeFixture } from './fixture.ts';

/**
 * A register with a response budget runs its assignment before storing the operation: one write transaction (the
 * finished operation and the record) when it ends in time; the `assigning` operation is stored only when a 202 has to
 * name it. These tests pin the concurrency rules of that path.
 */
const API = 'api-version=2019-03-31';

function put(f: RuntimeFixture, id: string, key: string) {
  return f.app.inject({
    method: 'PUT',
    url: `/${f.idScope}/registrations/${id}/register?${API}`,
    headers: { 'content-type': 'application/json; charset=utf-8', authorization: f.deviceSas(id, key) },
    payload: JSON.stringify({ registrationId: id }),
  });
}

function poll(f: RuntimeFixture, id: string, operationId: string, key: string) {
  return f.app.inject({
    method: 'GET',
    url: `/${f.idScope}/registrations/${id}/operations/${operationId}?${API}`,
    headers: { 'content-type': 'application/json; charset=utf-8', authorization: f.deviceSas(id, key) },
  });
}

interface OpBody {
  operationId: string;
  status: string;
  registrationState?: { status: string; assignedHub?: string; deviceId?: string; substatus?: string };
}

function json(r: LightMyRequestResponse): OpBody {
  return r.json<OpBody>();
}

async function withFixture(o: FixtureOptions, fn: (f: RuntimeFixture) => Promise<void>): Promise<void> {
  const f = await createRuntimeFixture(o);
  try {
    await fn(f);
  } finally {
    await f.close();
  }
}

/** Waits until `cond` holds (checked every few ms, at most 10 s): no fixed sleeps. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((r) => setTimeout(r, 2));
  }
}

test('an assignment that ends within the budget is one stored operation (finished) and its record', async () => {
  await withFixture({}, async (f) => {
    const g = await f.addGroup('G1');
    const r = await put(f, 'once-1', f.derivedKey(g, 'once-1'));
    assert.equal(r.statusCode, 200, r.body);
    const b = json(r);
    assert.equal(b.status, 'assigned');
    const op = await f.store.provisioning.getOperation(f.instanceName, b.operationId);
    assert.equal(op?.status, 'assigned');
    assert.equal((await f.store.provisioning.getRegistration(f.instanceName, 'once-1'))?.operationId, b.operationId);
    assert.deepEqual(await f.counts(), { dps_operations: 1, dps_registrations: 1, hub_devices: 1, hub_twins: 1 });
  });
});

test('two registers of one device at once join one assignment: one operation, one hub write', async () => {
  let gate!: ReturnType<typeof gatedHubClients>;
  await withFixture({ hubClients: (inner) => (gate = gatedHubClients(inner)).factory }, async (f) => {
    const g = await f.addGroup('G1');
    // Count the register reads, to know when the second request is past its (only) store read.
    const store = f.store.provisioning;
    const read = store.getRegistrationContext.bind(store);
    let reads = 0;
    store.getRegistrationContext = async (i, id) => {
      const r = await read(i, id);
      reads++;
      return r;
    };
    const first = put(f, 'join-1', f.derivedKey(g, 'join-1'));
    await until(() => gate.writes() === 1, 'the first hub write');
    const second = put(f, 'JOIN-1', f.derivedKey(g, 'JOIN-1'));
    // Past its read, the rest of the second request up to joining is in-memory work: let it run, then open the gate.
    await until(() => reads === 2, 'the second register read');
    await new Promise<void>((r) => setImmediate(r));
    gate.open();
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.statusCode, 200, a.body);
    assert.equal(b.statusCode, 200, b.body);
    assert.equal(json(a).operationId, json(b).operationId);
    assert.equal(gate.writes(), 1, 'one hub write for both requests');
    assert.equal((await f.counts()).dps_operations, 1);
  });
});

test('a budget that runs out stores the assigning operation before the 202 names it; polls see it, then its end', async () => {
  let gate!: ReturnType<typeof gatedHubClients>;
  await withFixture({ responseBudgetMs: 20, hubClients: (inner) => (gate = gatedHubClients(inner)).factory }, async (f) => {
    const g = await f.addGroup('G1');
    const key = f.derivedKey(g, 'late-1');
    const r = await put(f, 'late-1', key);
    assert.equal(r.statusCode, 202, r.body);
    const { operationId } = json(r);
    assert.equal((await f.store.provisioning.getOperation(f.instanceName, operationId))?.status, 'assigning', 'stored before the 202');
    const p = await poll(f, 'late-1', operationId, key);
    assert.equal(p.statusCode, 202, p.body);
    // A second register meanwhile answers with the same operation.
    const again = await put(f, 'late-1', key);
    assert.equal(again.statusCode, 202);
    assert.equal(json(again).operationId, operationId);
    gate.open();
    await f.service.drain();
    const done = json(await poll(f, 'late-1', operationId, key));
    assert.equal(done.status, 'assigned');
    assert.equal(gate.writes(), 1);
    assert.deepEqual(await f.counts(), { dps_operations: 1, dps_registrations: 1, hub_devices: 1, hub_twins: 1 });
  });
});

test('two nodes registering one device at once end with one record, and both answer with the operation that wrote it', async () => {
  let gate!: ReturnType<typeof gatedHubClients>;
  await withFixture({ hubClients: (inner) => (gate = gatedHubClients(inner)).factory }, async (f) => {
    const g = await f.addGroup('G1');
    // Node 2: another service on the same store and hubs (its own in-process state), hub writes not gated.
    const node2 = new RegistrationService({
      store: f.store.provisioning,
      hubs: new InProcessHubClientFactory(f.hubs.values(), f.clock),
      clock: f.clock,
      ids: realIds,
      logger: silentLogger(),
      readCacheMs: 0,
    });
    const key = f.derivedKey(g, 'race-1');
    const onNode1 = put(f, 'race-1', key);
    await until(() => gate.writes() === 1, 'node 1 at its hub write');
    const onNode2 = await node2.register(f.idScope, 'race-1', { registrationId: 'race-1' }, { kind: 'sas', authorization: f.deviceSas('race-1', key) }, { budgetMs: TEST_RESPONSE_BUDGET_MS });
    assert.equal(onNode2.reply.httpStatus, 200);
    assert.equal(onNode2.reply.body.status, 'assigned');
    gate.open();
    const r1 = await onNode1;
    assert.equal(r1.statusCode, 200, r1.body);
    const b1 = json(r1);
    assert.equal(b1.operationId, onNode2.reply.body.operationId, 'the node that lost the race answers with the winner');
    assert.equal(b1.registrationState?.assignedHub, onNode2.reply.body.registrationState?.assignedHub);
    const rec = await f.store.provisioning.getRegistration(f.instanceName, 'race-1');
    assert.equal(rec?.operationId, b1.operationId);
    assert.deepEqual(await f.counts(), { dps_operations: 1, dps_registrations: 1, hub_devices: 1, hub_twins: 1 });
    await node2.drain();
  });
});

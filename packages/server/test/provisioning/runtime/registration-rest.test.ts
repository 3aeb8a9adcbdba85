import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { systemClock } from '../../../src/core/clock.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { RestHubClientFactory } from '../../../src/provisioning/hub-client-rest.ts';
import { createHttpsApp } from '../../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../../src/transport/http/dps-device-api.ts';
import { createRuntimeFixture, newKey, TEST_RESPONSE_BUDGET_MS, type RuntimeFixture } from './fixture.ts';
import { spawnHub, type HubProcess } from './support/spawn-hub.ts';

/** Registrations whose hub is a Homing hub in another process, written through the IoT Hub service REST API. */
let hub: HubProcess;
let rest: RestHubClientFactory;
let f: RuntimeFixture;

before(async () => {
  hub = await spawnHub('hub-remote.test');
  rest = new RestHubClientFactory({ clock: systemClock, port: hub.port, ca: hub.caPem, resolveAddress: () => '127.0.0.1', timeoutMs: 10_000 });
  // A budget no loaded machine exhausts: the answers below are asserted final (200), whatever the remote hub's speed.
  f = await createRuntimeFixture({ hubNames: [], clock: systemClock, hubClients: () => rest, responseBudgetMs: TEST_RESPONSE_BUDGET_MS });
});

after(async () => {
  await f?.close();
  rest?.close();
  await hub?.stop();
});

function put(id: string, key: string, app = f.app) {
  return app.inject({
    method: 'PUT',
    url: `/${f.idScope}/registrations/${id}/register?api-version=2019-03-31`,
    headers: { 'content-type': 'application/json; charset=utf-8', authorization: f.deviceSas(id, key) },
    payload: JSON.stringify({ registrationId: id }),
  });
}

test('a group device is written to the remote hub with its derived keys and the initial twin', async () => {
  await f.setLinkedHubs([f.linkedHub('hub-remote.test', { connectionString: hub.connectionString })]);
  const g = await f.addGroup('G-remote', { initialTwin: { tags: { site: 'R' }, properties: { desired: { mode: 'eco' } } }, iotEdge: true });
  const r = await put('rm-1', f.derivedKey(g, 'rm-1'));
  assert.equal(r.statusCode, 200, r.body);
  const s = r.json<{ status: string; registrationState: { assignedHub: string; deviceId: string; substatus: string } }>();
  assert.equal(s.status, 'assigned');
  assert.equal(s.registrationState.assignedHub, 'hub-remote.test');
  assert.equal(s.registrationState.substatus, 'initialAssignment');
  const st = await rest.forHub(f.linkedHub('hub-remote.test', { connectionString: hub.connectionString })).getDeviceState('rm-1');
  assert.ok(st.ok && st.value);
  assert.equal(st.value.device.capabilities.iotEdge, true);
  assert.deepEqual(st.value.twin.tags, { site: 'R' });
  assert.deepEqual(st.value.twin.desired, { mode: 'eco' });
  // Again: same hub, substatus kept.
  const again = (await put('rm-1', f.derivedKey(g, 'rm-1'))).json<{ registrationState: { assignedHub: string; substatus: string } }>();
  assert.equal(again.registrationState.assignedHub, 'hub-remote.test');
  assert.equal(again.registrationState.substatus, 'initialAssignment');
});

test('a stale linked-hub key on the remote hub fails the registration with IotHubUnauthorizedAccess (scenario 41)', async () => {
  await f.setLinkedHubs([f.linkedHub('hub-remote.test', { connectionString: `HostName=hub-remote.test;SharedAccessKeyName=iothubowner;SharedAccessKey=${newKey()}` })]);
  const g = await f.addGroup('G-stale');
  const r = await put('rm-2', f.derivedKey(g, 'rm-2'));
  assert.equal(r.statusCode, 200);
  const b = r.json<{ status: string; registrationState: { errorCode: number; errorMessage: string; assignedHub?: string } }>();
  assert.equal(b.status, 'failed');
  assert.equal(b.registrationState.errorCode, 400209);
  assert.match(b.registrationState.errorMessage, /hub-remote\.test refused the linked hub credential \(HTTP 401 ErrorCode:IotHubUnauthorizedAccess/);
  assert.equal(b.registrationState.assignedHub, undefined);
  const rec = await f.store.provisioning.getRegistration(f.instanceName, 'rm-2');
  assert.equal(rec?.status, 'failed');
});

test('budget 0 with the remote hub: 202 assigning, then the poll answers the final result', async () => {
  await f.setLinkedHubs([f.linkedHub('hub-remote.test', { connectionString: hub.connectionString })]);
  const g = await f.addGroup('G-poll');
  const key = f.derivedKey(g, 'rm-3');
  const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps-device' });
  registerDpsDeviceApi(app, { registration: f.service, responseBudgetMs: 0 });
  try {
    const r = await put('rm-3', key, app);
    assert.equal(r.statusCode, 202, r.body);
    const { operationId, status } = r.json<{ operationId: string; status: string }>();
    assert.equal(status, 'assigning');
    await f.service.drain();
    const p = await app.inject({
      method: 'GET',
      url: `/${f.idScope}/registrations/rm-3/operations/${operationId}?api-version=2019-03-31`,
      headers: { 'content-type': 'application/json; charset=utf-8', authorization: f.deviceSas('rm-3', key) },
    });
    assert.equal(p.statusCode, 200, p.body);
    const b = p.json<{ operationId: string; status: string; registrationState: { assignedHub: string; deviceId: string } }>();
    assert.equal(b.operationId, operationId);
    assert.equal(b.status, 'assigned');
    assert.equal(b.registrationState.assignedHub, 'hub-remote.test');
    assert.equal(b.registrationState.deviceId, 'rm-3');
  } finally {
    await app.close();
  }
});

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { JsonObject } from '../../../src/core/json.ts';
import type { DeviceConnection } from '../../../src/hub/sessions.ts';
import { createHubFixture, hubErrorCode, jsonObject, JSON_CT, type HubFixture } from './hub-fixture.ts';

/**
 * Direct methods through POST /twins/{id}/methods against a fake DeviceConnection (a transport test double; the
 * store and the hub service are real).
 */
let f: HubFixture;

before(async () => {
  f = await createHubFixture();
  for (const id of ['m-echo', 'm-offline', 'm-nomethods', 'm-slow', 'm-late', 'm-text']) {
    const r = await f.request({ method: 'PUT', url: `/devices/${id}`, payload: { deviceId: id } });
    assert.equal(r.statusCode, 200);
  }
});

after(async () => {
  await f.close();
});

interface MethodRequest {
  methodName: string;
  rid: string;
  payload: Buffer;
}

/** A device connection that hands every method request to `onRequest`. */
function fakeDevice(deviceId: string, onRequest: (req: MethodRequest) => void, acceptsMethods = true): DeviceConnection & { closed: string[] } {
  const closed: string[] = [];
  return {
    deviceId,
    connectedAt: Date.now(),
    acceptsMethods,
    closed,
    deliverDesiredPatch: () => undefined,
    sendMethodRequest: (methodName, rid, payload) => onRequest({ methodName, rid, payload }),
    close: (reason) => closed.push(reason),
  };
}

function invoke(deviceId: string, body: JsonObject) {
  return f.request({ method: 'POST', url: `/twins/${deviceId}/methods?api-version=2021-04-12`, auth: 'service', payload: body });
}

describe('hub API: direct methods', () => {
  it('forwards the call and answers 200 with the status and payload the device returned', async () => {
    const seen: MethodRequest[] = [];
    f.hub.connected(fakeDevice('m-echo', (req) => {
      seen.push(req);
      // Answer asynchronously, as a transport would.
      setImmediate(() => f.hub.methodResponse('m-echo', req.rid, 201, Buffer.from(JSON.stringify({ echo: JSON.parse(req.payload.toString('utf8')) as JsonObject }))));
    }));
    const r = await invoke('m-echo', { methodName: 'reboot', payload: { delay: 3 }, responseTimeoutInSeconds: 30, connectTimeoutInSeconds: 0 });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.headers['content-type'], JSON_CT);
    assert.deepEqual(jsonObject(r), { status: 201, payload: { echo: { delay: 3 } } });
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.methodName, 'reboot');
    // Defaults: payload null, timeouts 30/0.
    const r2 = await invoke('m-echo', { methodName: 'ping' });
    assert.deepEqual(jsonObject(r2), { status: 201, payload: { echo: null } });
    const metrics = await f.metrics.registry.getSingleMetricAsString('homing_method_invocations_total');
    assert.match(metrics, /result="ok"\} 2/);
  });

  it('passes a non-JSON or empty device payload through as a string or null', async () => {
    const answers = [Buffer.from('plain text'), Buffer.alloc(0)];
    f.hub.connected(fakeDevice('m-text', (req) => setImmediate(() => f.hub.methodResponse('m-text', req.rid, 200, answers.shift() ?? Buffer.alloc(0)))));
    assert.deepEqual(jsonObject(await invoke('m-text', { methodName: 'a' })), { status: 200, payload: 'plain text' });
    assert.deepEqual(jsonObject(await invoke('m-text', { methodName: 'b' })), { status: 200, payload: null });
  });

  it('answers 404 DeviceNotOnline at once for a device that is not connected or does not take methods', async () => {
    const r = await invoke('m-offline', { methodName: 'reboot', responseTimeoutInSeconds: 30 });
    assert.equal(r.statusCode, 404, r.body);
    assert.equal(hubErrorCode(r), 'DeviceNotOnline');
    assert.equal(r.headers['iothub-errorcode'], 'DeviceNotOnline');
    f.hub.connected(fakeDevice('m-nomethods', () => assert.fail('no method may reach a device that did not subscribe'), false));
    const r2 = await invoke('m-nomethods', { methodName: 'reboot' });
    assert.equal(r2.statusCode, 404);
    assert.equal(hubErrorCode(r2), 'DeviceNotOnline');
  });

  it('answers 404 DeviceNotFound with the classic body for an unknown device', async () => {
    const r = await invoke('m-ghost', { methodName: 'reboot' });
    assert.equal(r.statusCode, 404);
    assert.equal(jsonObject(r).Message, 'ErrorCode:DeviceNotFound;Device m-ghost not found.');
  });

  it('waits up to connectTimeoutInSeconds for the device to come online', async () => {
    const pending = invoke('m-late', { methodName: 'hello', connectTimeoutInSeconds: 30, responseTimeoutInSeconds: 30 });
    f.hub.connected(fakeDevice('m-late', (req) => setImmediate(() => f.hub.methodResponse('m-late', req.rid, 200, Buffer.from('{"hi":true}')))));
    const r = await pending;
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(jsonObject(r), { status: 200, payload: { hi: true } });
  });

  it('answers 504 GatewayTimeout when the device does not answer within responseTimeoutInSeconds', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let requested!: () => void;
    const sent = new Promise<void>((resolve) => {
      requested = resolve;
    });
    f.hub.connected(fakeDevice('m-slow', () => requested()));
    const pending = invoke('m-slow', { methodName: 'slow', responseTimeoutInSeconds: 5 });
    await sent;
    t.mock.timers.tick(5000);
    const r = await pending;
    t.mock.timers.reset();
    assert.equal(r.statusCode, 504, r.body);
    assert.equal(hubErrorCode(r), 'GatewayTimeout');
    // A late answer after the timeout is ignored.
    f.hub.methodResponse('m-slow', '1', 200, Buffer.from('{}'));
  });

  it('never answers direct methods with 429, 500 or 503 (the SDK would retry for minutes)', async () => {
    const statuses = new Set<number>();
    for (const [id, body] of [['m-offline', { methodName: 'x' }], ['m-ghost', { methodName: 'x' }], ['m-echo', {}], ['bad%2Fid', { methodName: 'x' }]] as const) {
      statuses.add((await invoke(id, body)).statusCode);
    }
    assert.deepEqual([...statuses].sort(), [400, 404]);
  });
});

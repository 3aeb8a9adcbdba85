import { after, afterEach, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AbortedError,
  ConnectionRefusedError,
  DpsError,
  FileAssignmentStore,
  HomingDevice,
  MemoryAssignmentStore,
  NetworkError,
  type Assignment,
  type HomingDeviceEvents,
  type HomingDeviceOptions,
} from '../src/index.ts';
import { EventRecorder, FakeRuntime, within, type FakeTimer } from './helpers/fake-runtime.ts';
import { FakeDps, assignedBody, dpsError, lookupBody } from './helpers/fake-dps.ts';
import { FakeMqttServer, ridOf, type FakeMqttConnection } from './helpers/fake-mqtt.ts';
import { issueDeviceCert, serverTls, testPki } from './helpers/pki.ts';

/**
 * The lifecycle rules against a scripted DPS (real HTTPS) and scripted hubs (real MQTT over TLS), with the clock,
 * timers and randomness faked: every wait the device takes is asserted exactly, and time only moves when the test
 * moves it.
 */

const SCOPE = '0ne0000LIFE';
const KEY = Buffer.alloc(32, 5).toString('base64');
const REQ_TIMEOUT = 29_000;
const OP_TIMEOUT = 19_000;
const RENEWAL = 2_700_000;

let tls: { cert: string; key: string; ca: string };
let dps: FakeDps;
let hubA: FakeMqttServer;
let hubB: FakeMqttServer;
let rt: FakeRuntime;
let tmp: string;
const devices: HomingDevice[] = [];

before(async () => {
  tls = await serverTls();
  tmp = await mkdtemp(join(tmpdir(), 'homing-device-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});
beforeEach(async () => {
  rt = new FakeRuntime();
  dps = await FakeDps.start(tls, () => rt.ms);
  hubA = await FakeMqttServer.start(tls);
  hubB = await FakeMqttServer.start(tls);
});
afterEach(async () => {
  for (const d of devices.splice(0)) await d.stop();
  await Promise.all([dps.close(), hubA.close(), hubB.close()]);
});

function ports(): Record<string, number> {
  return { 'hub-a.test': hubA.port, 'hub-b.test': hubB.port };
}

function device(o: Partial<HomingDeviceOptions> = {}): { d: HomingDevice; ev: EventRecorder<HomingDeviceEvents> } {
  const d = new HomingDevice({
    registrationId: 'dev-1',
    credential: { type: 'symmetricKey', key: KEY },
    provisioning: { host: '127.0.0.1', port: dps.port, idScope: SCOPE, tls: { ca: tls.ca }, requestTimeoutMs: REQ_TIMEOUT },
    hub: {
      resolve: (name) => ({ host: '127.0.0.1', port: ports()[name] ?? 1 }),
      tls: { ca: tls.ca },
      operationTimeoutMs: OP_TIMEOUT,
    },
    store: new MemoryAssignmentStore(),
    runtime: rt,
    ...o,
  });
  devices.push(d);
  const ev = new EventRecorder<HomingDeviceEvents>(d, ['provisioned', 'reprovisioned', 'connected', 'disconnected', 'retry', 'error', 'desired']);
  return { d, ev };
}

function cached(assignedHub: string, deviceId = 'dev-1'): MemoryAssignmentStore {
  return new MemoryAssignmentStore({ idScope: SCOPE, registrationId: 'dev-1', assignedHub, deviceId, assignedAt: '2025-12-31T00:00:00.000Z' });
}

/** The pending back-off timer of `ms`: proves nothing happens 1 ms early, then lets it fire. */
async function elapse(ms: number): Promise<FakeTimer> {
  const t = await rt.waitForTimer((x) => x.ms === ms && x.ms !== REQ_TIMEOUT && x.ms !== OP_TIMEOUT && x.ms !== RENEWAL);
  rt.advance(ms - 1);
  assert.equal(t.state, 'pending', `${ms} ms wait ended early`);
  rt.advance(1);
  assert.equal(t.state, 'fired');
  return t;
}

test('first boot registers and persists (atomic JSON file); the next boot connects to the cached hub without contacting DPS', async () => {
  const path = join(tmp, 'a', 'assignment.json');
  dps.script({ status: 200, body: assignedBody('dev-1', 'hub-a.test', 'dev-1', { payload: { zone: 7 } }) });
  const first = device({ store: path });
  await within(first.d.start(), 10_000, 'first start');
  const prov = await first.ev.next('provisioned');
  assert.equal(prov.reason, 'initial');
  assert.deepEqual(prov.assignment.payload, { zone: 7 });
  assert.equal((await first.ev.next('connected')).assignment.assignedHub, 'hub-a.test');
  assert.equal(dps.requests.length, 1);
  const onDisk = JSON.parse(await readFile(path, 'utf8')) as { version: number; assignment: Assignment };
  assert.equal(onDisk.version, 1);
  assert.equal(onDisk.assignment.assignedHub, 'hub-a.test');
  assert.ok(!JSON.stringify(onDisk).includes(KEY), 'no secret persisted');
  await first.d.stop();
  assert.equal(first.ev.all('disconnected').at(-1)?.reason, 'stopped');

  const second = device({ store: new FileAssignmentStore(path) });
  await within(second.d.start(), 10_000, 'second start');
  assert.equal(dps.requests.length, 1, 'no DPS contact on a cached boot');
  assert.equal(second.ev.all('provisioned').length, 0);
  assert.equal(hubA.connections.length, 2);
  assert.equal(second.d.assignment?.assignedHub, 'hub-a.test');
  assert.ok(second.d.connected);
});

test('a cache written for another registration id or scope is ignored', async () => {
  dps.script({ status: 200, body: assignedBody('dev-1', 'hub-b.test') });
  const store = new MemoryAssignmentStore({ idScope: 'OTHER', registrationId: 'dev-1', assignedHub: 'hub-a.test', deviceId: 'dev-1', assignedAt: 'x' });
  const { d } = device({ store });
  await within(d.start(), 10_000, 'start');
  assert.equal(dps.requests.length, 1);
  assert.equal(d.assignment?.assignedHub, 'hub-b.test');
});

test('DPS answers 429 (Retry-After, jitter), 5xx, 401, 404, 429 again, then assigns: each wait is exact', async () => {
  dps.script(
    { status: 429, body: dpsError(429, 429001), headers: { 'retry-after': '7' } },
    { status: 503, body: dpsError(503, 503001) },
    { status: 401, body: dpsError(401, 401002) },
    { status: 404, body: dpsError(404, 404201) },
    { status: 429, body: dpsError(429, 429001) },
    { status: 200, body: assignedBody('dev-1', 'hub-a.test') },
  );
  const { d, ev } = device();
  rt.queueRandom(0.5); // first wait: jittered
  const started = d.start();
  const errors: Error[] = [];
  d.on('error', (e) => errors.push(e));

  let last = (await dps.nextRequest()).at;
  const steps: [kind: string, attempt: number, delay: number, status: number][] = [
    ['throttled', 1, 8750, 429], // max(Retry-After 7 s, 1 s) · (1 + 0.5 · 0.5)
    ['transient', 1, 5000, 503], // first 5xx retry ≥ 5 s
    ['rejected', 1, 60_000, 401],
    ['rejected', 2, 120_000, 404],
    ['throttled', 2, 2000, 429], // no Retry-After: the throttle back-off (2nd in a row)
  ];
  for (const [kind, attempt, delay, status] of steps) {
    const r = await ev.next('retry');
    assert.equal(r.operation, 'register');
    assert.equal(r.kind, kind);
    assert.equal(r.attempt, attempt);
    assert.equal(r.delayMs, delay);
    assert.ok(r.error instanceof DpsError && r.error.status === status);
    await elapse(delay);
    const next = await dps.nextRequest();
    assert.equal(next.at - last, delay, `the retry after ${status} came ${delay} ms after the answer`);
    assert.equal(next.method, 'PUT');
    last = next.at;
  }
  await within(started, 10_000, 'start');
  assert.deepEqual(
    errors.map((e) => (e as DpsError).status),
    [401, 404],
    'refusals are reported as errors; throttling and 5xx are not',
  );
  assert.equal((await ev.next('connected')).assignment.assignedHub, 'hub-a.test');
});

test('jitter stays within [base, base · 1.5) for the registration quota (429 without Retry-After)', async () => {
  const { d, ev } = device({ retry: { throttled: { initialDelayMs: 4000 } } });
  dps.script({ status: 429, body: dpsError(429, 429001) }, { status: 429, body: dpsError(429, 429001) }, { status: 200, body: assignedBody('dev-1', 'hub-a.test') });
  rt.queueRandom(0, 0.999999);
  const started = d.start();
  const r1 = await ev.next('retry');
  assert.equal(r1.delayMs, 4000);
  await elapse(4000);
  const r2 = await ev.next('retry');
  assert.equal(r2.delayMs, 11_999); // 8000 · (1 + 0.5 · 0.999999), floored
  await elapse(11_999);
  await within(started, 10_000, 'start');
});

test('unreachable hub: back-off from 5 s with jitter, then after the dead-hub bound a status lookup and a re-registration', async () => {
  hubA.onConnect = () => 3; // server unavailable
  dps.script({ status: 200, body: lookupBody('dev-1', 'hub-a.test') }, { status: 200, body: assignedBody('dev-1', 'hub-b.test') });
  const { d, ev } = device({ store: cached('hub-a.test'), retry: { deadHubTimeoutMs: 15 * 60_000 } });
  const started = d.start();
  const t0 = rt.ms;
  const expected = [5000, 10_000, 20_000, 40_000, 60_000]; // then 60 s (cap) until 15 min have passed
  let attempts = 0;
  for (;;) {
    await hubA.nextConnection();
    attempts++;
    const elapsed = rt.ms - t0;
    if (elapsed >= 15 * 60_000) break;
    const r = await ev.next('retry');
    assert.equal(r.operation, 'connect');
    assert.equal(r.kind, 'transient');
    assert.ok(r.error instanceof ConnectionRefusedError && r.error.returnCode === 3);
    assert.equal(r.delayMs, expected[attempts - 1] ?? 60_000);
    assert.equal(dps.requests.length, 0, 'DPS is left alone while the hub bound lasts');
    await elapse(r.delayMs);
  }
  assert.equal(rt.ms - t0, 915_000); // 5+10+20+40+60·14 s
  assert.equal(attempts, 19);
  const lookup = await dps.nextRequest();
  assert.equal(lookup.method, 'POST');
  assert.equal(lookup.at - t0, 915_000);
  const put = await dps.nextRequest();
  assert.equal(put.method, 'PUT', 'the lookup named the same hub: re-register');
  await within(started, 10_000, 'start');
  const re = await ev.next('reprovisioned');
  assert.equal(re.reason, 'hub-unreachable');
  assert.equal(re.via, 'register');
  assert.equal(re.hubChanged, true);
  assert.equal((await ev.next('connected')).assignment.assignedHub, 'hub-b.test');
  assert.equal(hubB.connections.length, 1);
});

test('network errors count as unreachable too, and the first retry is ≥ 5 s after the failure', async () => {
  const { d, ev } = device({ store: cached('hub-dead.test'), retry: { deadHubTimeoutMs: 20_000 } });
  rt.queueRandom(0.25);
  dps.script({ status: 404, body: dpsError(404, 404202) }, { status: 200, body: assignedBody('dev-1', 'hub-a.test') });
  const started = d.start();
  const r1 = await ev.next('retry');
  assert.ok(r1.error instanceof NetworkError);
  assert.equal(r1.error.errno, 'ECONNREFUSED');
  assert.equal(r1.delayMs, 5625); // 5000 · (1 + 0.5 · 0.25)
  await elapse(5625);
  const r2 = await ev.next('retry');
  assert.equal(r2.delayMs, 10_000);
  await elapse(10_000);
  const r3 = await ev.next('retry');
  assert.equal(r3.delayMs, 20_000);
  await elapse(20_000);
  // 35.6 s ≥ 20 s: lookup (404: no record) → register.
  assert.equal((await dps.nextRequest()).method, 'POST');
  assert.equal((await dps.nextRequest()).method, 'PUT');
  await within(started, 10_000, 'start');
});

test('hub refuses (CONNACK 5): the status lookup shows the device moved, so it connects to the new hub without re-registering', async () => {
  hubA.onConnect = () => 5;
  dps.script({ status: 200, body: lookupBody('dev-1', 'hub-b.test') });
  const { d, ev } = device({ store: cached('hub-a.test') });
  await within(d.start(), 10_000, 'start');
  assert.deepEqual(
    dps.requests.map((r) => r.method),
    ['POST'],
  );
  const re = await ev.next('reprovisioned');
  assert.equal(re.via, 'lookup');
  assert.equal(re.reason, 'hub-rejected');
  assert.equal(re.previous.assignedHub, 'hub-a.test');
  assert.equal(re.assignment.assignedHub, 'hub-b.test');
  assert.equal(ev.unread('retry'), 0, 'no back-off on a refusal: straight to DPS');
  assert.equal(d.assignment?.assignedHub, 'hub-b.test');
});

test('hub refuses and the lookup names the same hub (or fails): re-register, then connect', async () => {
  hubA.onConnect = (p) => (p.clientId === 'dev-1-new' ? 0 : 4);
  dps.script({ status: 200, body: lookupBody('dev-1', 'hub-a.test') }, { status: 200, body: assignedBody('dev-1', 'hub-a.test', 'dev-1-new') });
  const { d, ev } = device({ store: cached('hub-a.test') });
  await within(d.start(), 10_000, 'start');
  assert.deepEqual(
    dps.requests.map((r) => r.method),
    ['POST', 'PUT'],
  );
  const prov = await ev.next('provisioned');
  assert.equal(prov.reason, 'hub-rejected');
  assert.equal((await ev.next('connected')).assignment.deviceId, 'dev-1-new');
});

test('a 429 on the lookup waits Retry-After before re-registering', async () => {
  hubA.onConnect = () => 5;
  dps.script({ status: 429, body: dpsError(429, 429001), headers: { 'retry-after': '30' } }, { status: 200, body: assignedBody('dev-1', 'hub-b.test') });
  const { d, ev } = device({ store: cached('hub-a.test') });
  const started = d.start();
  const lookup = await dps.nextRequest();
  const r = await ev.next('retry');
  assert.equal(r.operation, 'lookup');
  assert.equal(r.delayMs, 30_000);
  await elapse(30_000);
  const put = await dps.nextRequest();
  assert.equal(put.at - lookup.at, 30_000);
  await within(started, 10_000, 'start');
});

test('online: a dropped connection reconnects after ≥ 5 s; a device deleted from the hub re-registers and follows the move', async () => {
  const { d, ev } = device({ store: cached('hub-a.test') });
  await within(d.start(), 10_000, 'start');
  const conn1 = await hubA.nextConnection();
  await ev.next('connected');
  conn1.destroy();
  const dis = await ev.next('disconnected');
  assert.equal(dis.reason, 'lost');
  assert.ok(dis.error instanceof NetworkError);
  const r = await ev.next('retry');
  assert.equal(r.operation, 'reconnect');
  assert.equal(r.delayMs, 5000);
  await elapse(5000);
  const conn2 = await hubA.nextConnection();
  assert.equal(conn2.connect?.clean, false);
  await ev.next('connected');

  // The operator deletes the device from hub A and DPS moves it: hub A now refuses it.
  hubA.onConnect = () => 5;
  dps.script({ status: 500, body: dpsError(500, 500001) }, { status: 200, body: assignedBody('dev-1', 'hub-b.test') });
  conn2.destroy();
  await ev.next('disconnected');
  await elapse((await ev.next('retry')).delayMs);
  await hubA.nextConnection(); // refused
  assert.equal((await dps.nextRequest()).method, 'POST'); // lookup fails (500) → register
  assert.equal((await dps.nextRequest()).method, 'PUT');
  const c = await ev.next('connected');
  assert.equal(c.assignment.assignedHub, 'hub-b.test');
  assert.equal(ev.all('reprovisioned').at(-1)?.reason, 'hub-rejected');
});

test('the built-in direct method answers, re-registers and moves the device to its new hub', async () => {
  const { d, ev } = device({ store: cached('hub-a.test') });
  await within(d.start(), 10_000, 'start');
  const conn = await hubA.nextConnection();
  await ev.next('connected');
  dps.script({ status: 202, body: { operationId: 'op-r', status: 'assigning' }, headers: { 'retry-after': '2' } }, { status: 200, body: assignedBody('dev-1', 'hub-b.test', 'dev-1', { substatus: 'deviceDataMigrated' }) });
  conn.publish('$iothub/methods/POST/homing.reprovision/?$rid=m1', '{}');
  const res = await conn.nextPublish((p) => p.topic.startsWith('$iothub/methods/res/'));
  assert.equal(res.topic, '$iothub/methods/res/202/?$rid=m1');
  assert.deepEqual(JSON.parse(res.payload.toString()), { status: 'reprovisioning' });
  assert.equal((await dps.nextRequest()).method, 'PUT');
  await elapse(2000); // the poll honours Retry-After
  await dps.nextRequest();
  const re = await ev.next('reprovisioned');
  assert.equal(re.reason, 'method');
  assert.equal(re.hubChanged, true);
  assert.equal(re.assignment.substatus, 'deviceDataMigrated');
  const dis = await ev.next('disconnected');
  assert.equal(dis.reason, 'moving');
  await within(conn.closed, 5000, 'old hub connection closed');
  assert.equal((await ev.next('connected')).assignment.assignedHub, 'hub-b.test');
  await hubB.nextConnection();
});

test('reprovision(): same hub keeps the connection; DPS refusing leaves the device online and rejects the call', async () => {
  const { d, ev } = device({ store: cached('hub-a.test'), reprovisionMethod: 'custom.move' });
  await within(d.start(), 10_000, 'start');
  const conn = await hubA.nextConnection();
  dps.script({ status: 200, body: assignedBody('dev-1', 'hub-a.test') });
  const a = await within(d.reprovision(), 10_000, 'reprovision');
  assert.equal(a.assignedHub, 'hub-a.test');
  assert.equal((await ev.next('reprovisioned')).hubChanged, false);
  assert.equal(hubA.connections.length, 1, 'no reconnection for the same hub');
  assert.ok(conn.open);

  dps.script({ status: 401, body: dpsError(401, 401000) });
  const e = await within(d.reprovision().catch((x: unknown) => x), 10_000, 'refused reprovision');
  assert.ok(e instanceof DpsError && e.status === 401);
  assert.ok(d.connected);
  assert.equal(d.assignment?.assignedHub, 'hub-a.test');

  // The configured method name is used; the default one is not installed.
  dps.script({ status: 200, body: assignedBody('dev-1', 'hub-a.test') });
  conn.publish('$iothub/methods/POST/homing.reprovision/?$rid=x', '{}');
  assert.equal((await conn.nextPublish((p) => p.topic.startsWith('$iothub/methods/res/'))).topic, '$iothub/methods/res/501/?$rid=x');
  conn.publish('$iothub/methods/POST/custom.move/?$rid=y', '{}');
  assert.equal((await conn.nextPublish((p) => p.topic.startsWith('$iothub/methods/res/'))).topic, '$iothub/methods/res/202/?$rid=y');
  await ev.next('reprovisioned');
});

test('reprovision() interrupts a back-off wait and registers at once', async () => {
  hubA.onConnect = () => 3;
  const { d, ev } = device({ store: cached('hub-a.test') });
  void d.start().catch(() => undefined);
  await ev.next('retry');
  dps.script({ status: 200, body: assignedBody('dev-1', 'hub-b.test') });
  const t = rt.ms;
  const a = await within(d.reprovision(), 10_000, 'reprovision');
  assert.equal(a.assignedHub, 'hub-b.test');
  assert.equal((await dps.nextRequest()).at, t, 'no waiting');
  assert.equal((await ev.next('connected')).assignment.assignedHub, 'hub-b.test');
});

test('hub operations, user methods and desired patches go through the device and survive a move', async () => {
  hubA.onPublish = (p, c) => {
    if (p.topic.startsWith('$iothub/twin/GET/')) c.publish(`$iothub/twin/res/200/?$rid=${ridOf(p.topic)}`, '{"desired":{"a":1},"reported":{}}');
  };
  const { d, ev } = device({ store: cached('hub-a.test') });
  d.onMethod('ping', () => ({ status: 200, payload: 'pong' }));
  await within(d.start(), 10_000, 'start');
  const connA: FakeMqttConnection = await hubA.nextConnection();
  assert.deepEqual((await d.getTwin()).desired, { a: 1 });
  await d.sendTelemetry('t1', { properties: { k: 'v' } });
  assert.equal((await connA.nextPublish((p) => p.topic.startsWith('devices/'))).topic, 'devices/dev-1/messages/events/k=v');

  dps.script({ status: 200, body: assignedBody('dev-1', 'hub-b.test') });
  await d.reprovision();
  await ev.next('connected');
  await ev.next('connected');
  const connB = await hubB.nextConnection();
  connB.publish('$iothub/methods/POST/ping/?$rid=p1', 'null');
  assert.equal((await connB.nextPublish((p) => p.topic.startsWith('$iothub/methods/res/'))).topic, '$iothub/methods/res/200/?$rid=p1');
  connB.publish('$iothub/twin/PATCH/properties/desired/?$version=2', '{"b":2,"$version":2}');
  assert.deepEqual(await ev.next('desired'), { b: 2, $version: 2 });
});

test('stop() during a back-off ends promptly; start() rejects with AbortedError', async () => {
  hubA.onConnect = () => 3;
  const { d, ev } = device({ store: cached('hub-a.test') });
  const started = d.start();
  await ev.next('retry');
  await within(d.stop(), 5000, 'stop');
  assert.ok((await started.catch((e: unknown) => e)) instanceof AbortedError);
  assert.equal(rt.pending().length, 0, 'no timer left behind');
  await assert.rejects(d.reprovision());
});

test('DPS over MQTT: registers over MQTT, and looks the registration up over HTTPS (lookupPort) when the hub refuses', async () => {
  const dpsMqtt = await FakeMqttServer.start(tls);
  try {
    dpsMqtt.onPublish = (p, conn) => {
      if (p.topic.startsWith('$dps/registrations/PUT/')) {
        conn.publish(`$dps/registrations/res/200/?$rid=${ridOf(p.topic)}`, JSON.stringify(assignedBody('dev-1', 'hub-b.test')));
      }
    };
    hubA.onConnect = () => 5;
    dps.script({ status: 200, body: lookupBody('dev-1', 'hub-a.test') });
    const { d, ev } = device({
      store: cached('hub-a.test'),
      provisioning: { protocol: 'mqtt', host: '127.0.0.1', port: dpsMqtt.port, lookupPort: dps.port, idScope: SCOPE, tls: { ca: tls.ca }, requestTimeoutMs: REQ_TIMEOUT },
    });
    await within(d.start(), 10_000, 'start');
    assert.deepEqual(
      dps.requests.map((r) => `${r.method} ${r.path}`),
      [`POST /${SCOPE}/registrations/dev-1`],
    );
    const conn = await dpsMqtt.nextConnection();
    assert.equal(conn.connect?.clientId, 'dev-1');
    await within(conn.closed, 5000, 'DPS MQTT connection closed after registering');
    assert.equal((await ev.next('reprovisioned')).assignment.assignedHub, 'hub-b.test');
  } finally {
    await dpsMqtt.close();
  }
});

test('a hub found by lookup that refuses too leads straight to re-registration (no lookup loop)', async () => {
  hubB.onConnect = () => 5;
  dps.script({ status: 200, body: lookupBody('dev-1', 'hub-b.test') }, { status: 200, body: assignedBody('dev-1', 'hub-a.test', 'dev-1-fresh') });
  hubA.onConnect = (p) => (p.clientId === 'dev-1-fresh' ? 0 : 5);
  const { d, ev } = device({ store: cached('hub-a.test') });
  await within(d.start(), 10_000, 'start');
  assert.deepEqual(
    dps.requests.map((r) => r.method),
    ['POST', 'PUT'],
  );
  assert.equal(hubB.connections.length, 1);
  assert.deepEqual(
    ev.all('reprovisioned').map((r) => `${r.via}:${r.assignment.assignedHub}`),
    ['lookup:hub-b.test', 'register:hub-a.test'],
  );
});

test('hub operations reject (never throw synchronously) with NotConnectedError while offline', async () => {
  const { d } = device({ store: cached('hub-a.test') });
  const p = d.sendTelemetry('x');
  assert.ok(p instanceof Promise);
  await assert.rejects(p, (e: unknown) => e instanceof Error && (e as { code?: string }).code === 'NOT_CONNECTED');
  await assert.rejects(d.getTwin(), { code: 'NOT_CONNECTED' });
  await assert.rejects(d.updateReported({ a: 1 }), { code: 'NOT_CONNECTED' });
});

test('X.509: the certificate authenticates on DPS and on the hub (no Authorization, no password)', async () => {
  const pki = await testPki();
  const cert = await issueDeviceCert(pki.ca, 'dev-1');
  dps.script({ status: 200, body: assignedBody('dev-1', 'hub-a.test') });
  const { d } = device({ credential: { type: 'x509', cert: cert.certPem, key: cert.keyPem } });
  await within(d.start(), 10_000, 'start');
  const put = dps.requests[0];
  assert.ok(put);
  assert.equal(put.headers.authorization, undefined);
  assert.equal(put.clientCertCN, 'dev-1');
  const conn = await hubA.nextConnection();
  assert.equal(conn.connect?.password, undefined);
  assert.equal(conn.clientCertCN, 'dev-1');
  assert.equal(rt.pending().filter((t) => t.ms === RENEWAL).length, 0, 'no SAS to renew');
});

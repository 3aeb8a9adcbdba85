import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  ConnectionRefusedError,
  HubClient,
  HubRequestError,
  MessageTooLargeError,
  NetworkError,
  NotConnectedError,
  TimeoutError,
  type HubClientEvents,
  type HubClientOptions,
} from '../src/index.ts';
import { EventRecorder, FakeRuntime, within } from './helpers/fake-runtime.ts';
import { FakeMqttServer, ridOf, type FakeMqttConnection } from './helpers/fake-mqtt.ts';
import { issueDeviceCert, serverTls, testPki } from './helpers/pki.ts';

const HOST = 'hub.test.local';
const KEY = Buffer.alloc(32, 3).toString('base64');

let tls: { cert: string; key: string; ca: string };
let hub: FakeMqttServer;
let rt: FakeRuntime;
const clients: HubClient[] = [];

before(async () => {
  tls = await serverTls();
  hub = await FakeMqttServer.start(tls);
});
after(async () => {
  for (const c of clients) await c.close();
  await hub.close();
});
beforeEach(() => {
  rt = new FakeRuntime();
  hub.onConnect = () => 0;
  hub.onPublish = () => undefined;
});

function client(o: Partial<HubClientOptions> = {}): HubClient {
  const c = new HubClient({
    hostName: HOST,
    deviceId: 'dev-h',
    credential: { type: 'symmetricKey', key: KEY },
    address: { host: '127.0.0.1', port: hub.port },
    tls: { ca: tls.ca },
    operationTimeoutMs: 20_000,
    runtime: rt,
    ...o,
  });
  clients.push(c);
  return c;
}

async function connected(o: Partial<HubClientOptions> = {}): Promise<{ c: HubClient; conn: FakeMqttConnection }> {
  const c = client(o);
  const p = c.connect();
  const conn = await hub.nextConnection();
  await within(p, 5000, 'connect');
  return { c, conn };
}

function verifyHubSas(password: string | undefined, deviceId: string, key: string, host = HOST): number {
  assert.ok(password);
  const m = /^SharedAccessSignature sr=([^&]+)&sig=([^&]+)&se=(\d+)$/.exec(password);
  assert.ok(m, password);
  const [, sr, sig, se] = m;
  assert.equal(sr, encodeURIComponent(`${host}/devices/${deviceId}`));
  assert.equal(decodeURIComponent(sig ?? ''), createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64'));
  return Number(se);
}

test('CONNECT: clientId, username, SAS password, clean=false, keepalive; twin, desired and method subscriptions', async () => {
  const { c, conn } = await connected();
  const cp = conn.connect;
  assert.ok(cp);
  assert.equal(cp.clientId, 'dev-h');
  assert.equal(cp.username, `${HOST}/dev-h/?api-version=2021-04-12&DeviceClientType=homing-device%2F0.1.0`);
  assert.equal(cp.clean, false);
  assert.equal(cp.keepalive, 180);
  assert.equal(cp.protocolVersion, 4);
  const se = verifyHubSas(cp.password?.toString(), 'dev-h', KEY);
  assert.equal(se, Math.floor(rt.ms / 1000) + 3600);
  assert.deepEqual(
    conn.subscriptions.map((s) => `${s.topic}@${s.qos}`).sort(),
    ['$iothub/methods/POST/#@0', '$iothub/twin/PATCH/properties/desired/#@0', '$iothub/twin/res/#@0'],
  );
  assert.equal(c.connected, true);
  await c.close();
  await within(conn.closed, 5000, 'closed');
});

test('telemetry: QoS 1 on devices/{id}/messages/events/{bag}, resolved on PUBACK; size limit', async () => {
  const { c, conn } = await connected();
  await c.sendTelemetry('{"t":21}', { messageId: 'm-1', contentType: 'application/json', contentEncoding: 'utf-8', properties: { alert: 'high temp' } });
  const p = await conn.nextPublish();
  assert.equal(p.topic, 'devices/dev-h/messages/events/%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp');
  assert.equal(p.qos, 1);
  assert.equal(p.payload.toString(), '{"t":21}');
  await c.sendJson({ n: 1 });
  const j = await conn.nextPublish();
  assert.equal(j.topic, 'devices/dev-h/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8');
  await c.sendTelemetry(new Uint8Array([1, 2, 3]));
  assert.equal((await conn.nextPublish()).topic, 'devices/dev-h/messages/events/');
  await assert.rejects(c.sendTelemetry(Buffer.alloc(256 * 1024 + 1)), MessageTooLargeError);
  await c.close();
});

test('twin: GET and reported PATCH with $rid, version from the topic, error bodies become HubRequestError', async () => {
  hub.onPublish = (p, conn) => {
    const rid = ridOf(p.topic);
    if (p.topic.startsWith('$iothub/twin/GET/')) {
      conn.publish(`$iothub/twin/res/200/?$rid=${rid}`, JSON.stringify({ desired: { mode: 'eco', $version: 4 }, reported: { fw: '1.0', $version: 2 } }));
    } else if (p.topic.startsWith('$iothub/twin/PATCH/properties/reported/')) {
      const patch = JSON.parse(p.payload.toString()) as Record<string, unknown>;
      if ('bad' in patch) conn.publish(`$iothub/twin/res/400/?$rid=${rid}`, JSON.stringify({ errorCode: 400027, message: 'bad patch' }));
      else conn.publish(`$iothub/twin/res/204/?$rid=${rid}&$version=3`, '');
    }
  };
  const { c, conn } = await connected();
  const twin = await c.getTwin();
  assert.deepEqual(twin, { desired: { mode: 'eco', $version: 4 }, reported: { fw: '1.0', $version: 2 } });
  const get = await conn.nextPublish();
  assert.match(get.topic, /^\$iothub\/twin\/GET\/\?\$rid=\d+$/);
  assert.equal(get.qos, 0);
  assert.equal(await c.updateReported({ fw: '1.1', gone: null }), 3);
  const patch = await conn.nextPublish();
  assert.match(patch.topic, /^\$iothub\/twin\/PATCH\/properties\/reported\/\?\$rid=\d+$/);
  assert.deepEqual(JSON.parse(patch.payload.toString()), { fw: '1.1', gone: null });
  assert.notEqual(ridOf(get.topic), ridOf(patch.topic));
  const e = await c.updateReported({ bad: true }).catch((x: unknown) => x);
  assert.ok(e instanceof HubRequestError);
  assert.equal(e.status, 400);
  assert.equal(e.errorCode, 400027);
  assert.equal(e.operation, 'twin.reported');
  await c.close();
});

test('a twin request without an answer times out (never hangs); a late answer is ignored', async () => {
  const { c, conn } = await connected();
  const p = c.getTwin().catch((x: unknown) => x);
  const get = await conn.nextPublish();
  const t = await rt.waitForTimer((x) => x.ms === 20_000);
  rt.advance(t.ms);
  const e = await within(p, 5000, 'timeout');
  assert.ok(e instanceof TimeoutError);
  assert.equal(e.operation, 'hub twin.get');
  conn.publish(`$iothub/twin/res/200/?$rid=${ridOf(get.topic)}`, '{"desired":{},"reported":{}}');
  await c.close();
});

test('desired patches, direct methods (200, 501 unknown, 500 on throw, 400 on bad JSON) and C2D messages', async () => {
  const { c, conn } = await connected();
  const events = new EventRecorder<HubClientEvents>(c, ['desired', 'message', 'handlerError']);
  conn.publish('$iothub/twin/PATCH/properties/desired/?$version=7', JSON.stringify({ mode: 'off', $version: 7 }));
  assert.deepEqual(await events.next('desired'), { mode: 'off', $version: 7 });

  c.onMethod('reboot', (req) => ({ status: 200, payload: { got: req.payload ?? null, name: req.name, rid: req.requestId } }));
  c.onMethod('boom', () => {
    throw new Error('handler bug');
  });
  conn.publish('$iothub/methods/POST/reboot/?$rid=r9', JSON.stringify({ delay: 1 }));
  const ok = await conn.nextPublish();
  assert.equal(ok.topic, '$iothub/methods/res/200/?$rid=r9');
  assert.deepEqual(JSON.parse(ok.payload.toString()), { got: { delay: 1 }, name: 'reboot', rid: 'r9' });
  conn.publish('$iothub/methods/POST/nope/?$rid=r10', '{}');
  assert.equal((await conn.nextPublish()).topic, '$iothub/methods/res/501/?$rid=r10');
  conn.publish('$iothub/methods/POST/boom/?$rid=r11', 'null');
  const boom = await conn.nextPublish();
  assert.equal(boom.topic, '$iothub/methods/res/500/?$rid=r11');
  assert.ok(!boom.payload.toString().includes('handler bug'), 'internal messages stay on the device');
  assert.match(String(await events.next('handlerError')), /handler bug/);
  conn.publish('$iothub/methods/POST/reboot/?$rid=r12', '{not json');
  assert.equal((await conn.nextPublish()).topic, '$iothub/methods/res/400/?$rid=r12');

  await c.enableMessages();
  assert.ok(conn.subscriptions.some((s) => s.topic === 'devices/dev-h/messages/devicebound/#' && s.qos === 1));
  conn.publish('devices/dev-h/messages/devicebound/%24.mid=c2d-1&%24.to=%2Fdevices%2Fdev-h%2Fmessages%2FdeviceBound&color=red', 'hello', 1);
  const m = await events.next('message');
  assert.equal(m.body.toString(), 'hello');
  assert.equal(m.messageId, 'c2d-1');
  assert.equal(m.to, '/devices/dev-h/messages/deviceBound');
  assert.deepEqual(m.properties, { color: 'red' });
  await c.close();
});

test('SAS renewal: reconnects with a fresh token before expiry, re-subscribes, no disconnect event', async () => {
  const { c, conn } = await connected({ tokenTtlSeconds: 3600, tokenRenewalMarginSeconds: 900, receiveMessages: true });
  const events = new EventRecorder<HubClientEvents>(c, ['renewed', 'disconnect']);
  const se1 = verifyHubSas(conn.connect?.password?.toString(), 'dev-h', KEY);
  const renewal = await rt.waitForTimer((t) => t.ms === 2_700_000);
  rt.advance(renewal.ms);
  const conn2 = await hub.nextConnection();
  await events.next('renewed');
  await within(conn.closed, 5000, 'old connection closed');
  const se2 = verifyHubSas(conn2.connect?.password?.toString(), 'dev-h', KEY);
  assert.equal(se2 - se1, 2700);
  assert.equal(conn2.connect?.clean, false);
  assert.equal(conn2.subscriptions.length, 4);
  assert.equal(events.unread('disconnect'), 0);
  await c.sendTelemetry('after renewal');
  assert.equal((await conn2.nextPublish()).payload.toString(), 'after renewal');
  await c.close();
});

test('CONNACK refusal is a ConnectionRefusedError; a dropped connection emits disconnect and fails pending requests', async () => {
  hub.onConnect = () => 5;
  const refused = client();
  const e = await refused.connect().catch((x: unknown) => x);
  assert.ok(e instanceof ConnectionRefusedError);
  assert.equal(e.returnCode, 5);
  assert.equal(e.endpoint, 'hub');
  assert.ok(e.unauthorized);
  await hub.nextConnection();
  hub.onConnect = () => 3;
  const e3 = await client().connect().catch((x: unknown) => x);
  assert.ok(e3 instanceof ConnectionRefusedError && e3.returnCode === 3 && !e3.unauthorized);
  await hub.nextConnection();

  hub.onConnect = () => 0;
  const { c, conn } = await connected();
  const events = new EventRecorder<HubClientEvents>(c, ['disconnect']);
  const pending = c.getTwin().catch((x: unknown) => x);
  await conn.nextPublish();
  conn.destroy();
  assert.ok((await events.next('disconnect')) instanceof NetworkError);
  assert.ok((await within(pending, 5000, 'pending')) instanceof NetworkError);
  assert.equal(c.connected, false);
  await assert.rejects(c.sendTelemetry('x'), NotConnectedError);
  await c.close();
});

test('X.509: client certificate in TLS, no password, no renewal timer', async () => {
  const pki = await testPki();
  const dev = await issueDeviceCert(pki.ca, 'dev-x');
  const { c, conn } = await connected({ deviceId: 'dev-x', credential: { type: 'x509', cert: dev.certPem, key: dev.keyPem } });
  assert.equal(conn.connect?.password, undefined);
  assert.equal(conn.connect?.username, `${HOST}/dev-x/?api-version=2021-04-12&DeviceClientType=homing-device%2F0.1.0`);
  assert.equal(conn.clientCertCN, 'dev-x');
  assert.equal(rt.pending().length, 0);
  await c.close();
});

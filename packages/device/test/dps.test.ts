import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  AbortedError,
  ConnectionRefusedError,
  DpsError,
  NetworkError,
  ProvisioningClient,
  RegistrationFailedError,
  TimeoutError,
  deriveDeviceKey,
  type ProvisioningClientOptions,
} from '../src/index.ts';
import { FakeRuntime, within } from './helpers/fake-runtime.ts';
import { FakeDps, assignedBody, dpsError, lookupBody } from './helpers/fake-dps.ts';
import { FakeMqttServer, ridOf } from './helpers/fake-mqtt.ts';
import { issueDeviceCert, serverTls, testPki } from './helpers/pki.ts';

const SCOPE = '0ne0000TEST';
const KEY = Buffer.alloc(32, 7).toString('base64');

let tls: { cert: string; key: string; ca: string };
let dps: FakeDps;
let rt: FakeRuntime;

before(async () => {
  tls = await serverTls();
});

function httpsClient(o: Partial<ProvisioningClientOptions> = {}): ProvisioningClient {
  return new ProvisioningClient({
    host: '127.0.0.1',
    port: dps.port,
    idScope: SCOPE,
    registrationId: 'dev-1',
    credential: { type: 'symmetricKey', key: KEY },
    tls: { ca: tls.ca },
    runtime: rt,
    requestTimeoutMs: 29_000,
    ...o,
  });
}

/** Verifies a DPS SAS independently: sr as sent, HMAC over `sr\nse` with the key. */
function verifyDpsSas(authorization: string | undefined, regId: string, key: string): void {
  assert.ok(authorization, 'Authorization header present');
  const m = /^SharedAccessSignature sr=([^&]+)&sig=([^&]+)&skn=registration&se=(\d+)$/.exec(authorization);
  assert.ok(m, authorization);
  const [, sr, sig, se] = m;
  assert.equal(sr, `${SCOPE}/registrations/${regId}`);
  const expected = createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64');
  assert.equal(decodeURIComponent(sig ?? ''), expected);
  assert.equal(Number(se), Math.ceil(rt.ms / 1000) + 3600);
}

describe('DPS over HTTPS', () => {
  before(async () => {
    rt = new FakeRuntime();
    dps = await FakeDps.start(tls, () => rt.ms);
  });
  after(async () => {
    await dps.close();
  });

  test('register: PUT with SAS and payload, polls honouring Retry-After (else 2 s), surfaces the returned payload', async () => {
    const c = httpsClient({ payload: { modelId: 'dtmi:x;1' } });
    dps.script(
      { status: 202, body: { operationId: 'op-1', status: 'assigning' }, headers: { 'retry-after': '3' } },
      { status: 202, body: { operationId: 'op-1', status: 'assigning' } },
      { status: 200, body: assignedBody('dev-1', 'hub-a.test', 'dev-1', { payload: { site: 'north', n: 1 } }) },
    );
    const t0 = rt.ms;
    const done = c.register();
    const put = await dps.nextRequest();
    assert.equal(put.method, 'PUT');
    assert.equal(put.path, `/${SCOPE}/registrations/dev-1/register`);
    assert.equal(put.query.get('api-version'), '2021-10-01');
    assert.equal(put.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(put.headers['user-agent'], 'homing-device/0.1.0');
    assert.deepEqual(put.body, { registrationId: 'dev-1', payload: { modelId: 'dtmi:x;1' } });
    verifyDpsSas(put.headers.authorization, 'dev-1', KEY);

    const wait1 = await rt.waitForTimer((t) => t.ms !== 29_000);
    assert.equal(wait1.ms, 3000, 'Retry-After: 3 honoured');
    rt.advance(3000);
    const poll1 = await dps.nextRequest();
    assert.equal(poll1.method, 'GET');
    assert.equal(poll1.path, `/${SCOPE}/registrations/dev-1/operations/op-1`);
    assert.equal(poll1.at - t0, 3000);
    verifyDpsSas(poll1.headers.authorization, 'dev-1', KEY);

    const wait2 = await rt.waitForTimer((t) => t.ms !== 29_000 && t.id > wait1.id);
    assert.equal(wait2.ms, 2000, 'no Retry-After: the default poll interval');
    rt.advance(2000);
    await dps.nextRequest();
    const r = await within(done, 5000, 'register');
    assert.equal(r.status, 'assigned');
    assert.equal(r.assignedHub, 'hub-a.test');
    assert.equal(r.deviceId, 'dev-1');
    assert.deepEqual(r.payload, { site: 'north', n: 1 });
    assert.equal(r.substatus, 'initialAssignment');
    await c.close();
  });

  test('a group key is derived on the device; `registering` re-sends the PUT; a 200 on the PUT needs no poll', async () => {
    const groupKey = Buffer.alloc(32, 9).toString('base64');
    const c = httpsClient({ registrationId: 'grp-dev-7', credential: { type: 'groupKey', groupKey } });
    dps.script({ status: 202, body: { status: 'registering' }, headers: { 'retry-after': '1' } }, { status: 200, body: assignedBody('grp-dev-7', 'hub-b.test') });
    const done = c.register();
    const put1 = await dps.nextRequest();
    verifyDpsSas(put1.headers.authorization, 'grp-dev-7', deriveDeviceKey(groupKey, 'grp-dev-7'));
    const w = await rt.waitForTimer((t) => t.ms !== 29_000);
    assert.equal(w.ms, 1000);
    rt.advance(1000);
    const put2 = await dps.nextRequest();
    assert.equal(put2.method, 'PUT');
    assert.equal((await within(done, 5000, 'register')).assignedHub, 'hub-b.test');
    await c.close();
  });

  test('X.509: the client certificate authenticates, no Authorization header', async () => {
    const pki = await testPki();
    const dev = await issueDeviceCert(pki.ca, 'x509-dev-1');
    const c = httpsClient({ registrationId: 'x509-dev-1', credential: { type: 'x509', cert: dev.certPem, key: dev.keyPem } });
    dps.script({ status: 200, body: assignedBody('x509-dev-1', 'hub-a.test') });
    const done = c.register();
    const put = await dps.nextRequest();
    assert.equal(put.headers.authorization, undefined);
    assert.equal(put.clientCertCN, 'x509-dev-1');
    assert.equal((await within(done, 5000, 'register')).deviceId, 'x509-dev-1');
    await c.close();
  });

  test('typed errors: 429 with Retry-After and errorCode, 401, 5xx on a poll, failed and disabled results', async () => {
    const c = httpsClient({ apiVersion: '2019-03-31' });
    dps.script({ status: 429, body: dpsError(429, 429001, 'throttled'), headers: { 'retry-after': '7' } });
    const e1 = await c.register().catch((e: unknown) => e);
    assert.ok(e1 instanceof DpsError);
    assert.equal(e1.status, 429);
    assert.equal(e1.errorCode, 429001);
    assert.equal(e1.retryAfterMs, 7000);
    assert.equal(e1.trackingId, 't-429');
    assert.equal(e1.operation, 'register');
    assert.equal(e1.code, 'DPS_REQUEST_FAILED');
    assert.equal((await dps.nextRequest()).query.get('api-version'), '2019-03-31');

    dps.script({ status: 401, body: dpsError(401, 401002, 'Invalid certificate') });
    const e2 = await c.register().catch((e: unknown) => e);
    assert.ok(e2 instanceof DpsError && e2.status === 401 && e2.errorCode === 401002 && e2.retryAfterMs === undefined);
    await dps.nextRequest();

    dps.script({ status: 202, body: { operationId: 'op-5', status: 'assigning' }, headers: { 'retry-after': '1' } }, { status: 503, body: dpsError(503, 503001) });
    const p3 = c.register().catch((e: unknown) => e);
    await dps.nextRequest();
    rt.advance((await rt.waitForTimer((t) => t.ms === 1000)).ms);
    const e3 = await within(p3, 5000, 'register');
    assert.ok(e3 instanceof DpsError && e3.status === 503 && e3.operation === 'operationStatus');
    await dps.nextRequest();

    dps.script({
      status: 200,
      body: { operationId: 'op-6', status: 'failed', registrationState: { registrationId: 'dev-1', status: 'failed', errorCode: 400209, errorMessage: 'hub refused' } },
    });
    const e4 = await c.register().catch((e: unknown) => e);
    assert.ok(e4 instanceof RegistrationFailedError);
    assert.equal(e4.status, 'failed');
    assert.equal(e4.errorCode, 400209);
    assert.equal(e4.errorMessage, 'hub refused');
    await dps.nextRequest();

    dps.script({ status: 200, body: { operationId: 'op-7', status: 'disabled', registrationState: { registrationId: 'dev-1', status: 'disabled' } } });
    const e5 = await c.register().catch((e: unknown) => e);
    assert.ok(e5 instanceof RegistrationFailedError && e5.status === 'disabled');
    await dps.nextRequest();
    await c.close();
  });

  test('a 429 on a poll waits Retry-After and polls the same operation again', async () => {
    const c = httpsClient();
    dps.script(
      { status: 202, body: { operationId: 'op-8', status: 'assigning' }, headers: { 'retry-after': '1' } },
      { status: 429, body: dpsError(429, 429001), headers: { 'retry-after': '4' } },
      { status: 200, body: assignedBody('dev-1', 'hub-a.test') },
    );
    const done = c.register();
    await dps.nextRequest();
    const w1 = await rt.waitForTimer((t) => t.ms === 1000);
    rt.advance(1000);
    await dps.nextRequest();
    const w2 = await rt.waitForTimer((t) => t.ms !== 29_000 && t.id > w1.id);
    assert.equal(w2.ms, 4000);
    rt.advance(4000);
    const again = await dps.nextRequest();
    assert.equal(again.path, `/${SCOPE}/registrations/dev-1/operations/op-8`);
    assert.equal((await within(done, 5000, 'register')).assignedHub, 'hub-a.test');
    await c.close();
  });

  test('registration status lookup: POST /{idScope}/registrations/{id}', async () => {
    const c = httpsClient();
    dps.script({ status: 200, body: lookupBody('dev-1', 'hub-b.test') });
    const r = await c.lookup();
    const req = await dps.nextRequest();
    assert.equal(req.method, 'POST');
    assert.equal(req.path, `/${SCOPE}/registrations/dev-1`);
    assert.deepEqual(req.body, { registrationId: 'dev-1' });
    verifyDpsSas(req.headers.authorization, 'dev-1', KEY);
    assert.equal(r.assignedHub, 'hub-b.test');
    assert.equal(r.substatus, 'deviceDataMigrated');
    dps.script({ status: 404, body: dpsError(404, 404202) });
    const e = await c.lookup().catch((x: unknown) => x);
    assert.ok(e instanceof DpsError && e.operation === 'lookup' && e.errorCode === 404202);
    await dps.nextRequest();
    await c.close();
  });

  test('a request that gets no answer times out on the injected timers; abort cancels', async () => {
    const c = httpsClient();
    dps.script({ status: 0, hang: true });
    const p = c.register().catch((e: unknown) => e);
    await dps.nextRequest();
    const t = await rt.waitForTimer((x) => x.ms === 29_000);
    rt.advance(t.ms);
    const e = await within(p, 5000, 'timeout');
    assert.ok(e instanceof TimeoutError && e.timeoutMs === 29_000);

    const ac = new AbortController();
    dps.script({ status: 0, hang: true });
    const p2 = c.register({ signal: ac.signal }).catch((x: unknown) => x);
    await dps.nextRequest();
    ac.abort();
    assert.ok((await within(p2, 5000, 'abort')) instanceof AbortedError);
    await c.close();
  });

  test('network and TLS failures are NetworkErrors', async () => {
    const closed = httpsClient({ port: 1 });
    const e1 = await closed.register().catch((e: unknown) => e);
    assert.ok(e1 instanceof NetworkError);
    assert.equal(e1.errno, 'ECONNREFUSED');
    const untrusted = httpsClient({ tls: {} });
    const e2 = await untrusted.register().catch((e: unknown) => e);
    assert.ok(e2 instanceof NetworkError, String(e2));
    assert.match(e2.errno ?? '', /CERT|SIGNATURE|ISSUER/);
    // The secret never shows up in errors.
    assert.ok(!String(e2.message).includes(KEY));
  });
});

describe('DPS over MQTT', () => {
  let mq: FakeMqttServer;
  before(async () => {
    rt = new FakeRuntime();
    mq = await FakeMqttServer.start(tls);
  });
  after(async () => {
    await mq.close();
  });

  function mqttClient(o: Partial<ProvisioningClientOptions> = {}): ProvisioningClient {
    return new ProvisioningClient({
      protocol: 'mqtt',
      host: `127.0.0.1:${mq.port}`,
      idScope: SCOPE,
      registrationId: 'dev-m',
      credential: { type: 'symmetricKey', key: KEY },
      tls: { ca: tls.ca },
      runtime: rt,
      requestTimeoutMs: 29_000,
      ...o,
    });
  }

  test('CONNECT, SUBSCRIBE, register, retry-after from the topic, poll, then UNSUBSCRIBE and DISCONNECT', async () => {
    mq.onPublish = (p, conn) => {
      const rid = ridOf(p.topic);
      if (p.topic.startsWith('$dps/registrations/PUT/iotdps-register/')) {
        conn.publish(`$dps/registrations/res/202/?$rid=${rid}&retry-after=3`, JSON.stringify({ operationId: 'op-m', status: 'assigning' }), 1);
      } else if (p.topic.startsWith('$dps/registrations/GET/iotdps-get-operationstatus/')) {
        conn.publish(`$dps/registrations/res/200/?$rid=${rid}`, JSON.stringify(assignedBody('dev-m', '127.0.0.1:9999', 'dev-m', { payload: { ok: true } })));
      }
    };
    const c = mqttClient({ payload: { a: 1 } });
    const done = c.register();
    const conn = await mq.nextConnection();
    const cp = conn.connect;
    assert.ok(cp);
    assert.equal(cp.clientId, 'dev-m');
    assert.equal(cp.username, `${SCOPE}/registrations/dev-m/api-version=2021-10-01&ClientVersion=homing-device%2F0.1.0`);
    assert.equal(cp.clean, true);
    assert.equal(cp.protocolVersion, 4);
    verifyDpsSas(cp.password?.toString(), 'dev-m', KEY);
    const put = await conn.nextPublish();
    assert.match(put.topic, /^\$dps\/registrations\/PUT\/iotdps-register\/\?\$rid=[^&]+$/);
    assert.equal(put.qos, 1);
    assert.deepEqual(JSON.parse(put.payload.toString()), { registrationId: 'dev-m', payload: { a: 1 } });
    assert.deepEqual(conn.subscriptions, [{ topic: '$dps/registrations/res/#', qos: 1 }]);
    const w = await rt.waitForTimer((t) => t.ms !== 29_000);
    assert.equal(w.ms, 3000);
    rt.advance(3000);
    const poll = await conn.nextPublish();
    assert.match(poll.topic, /^\$dps\/registrations\/GET\/iotdps-get-operationstatus\/\?\$rid=[^&]+&operationId=op-m$/);
    assert.notEqual(ridOf(poll.topic), ridOf(put.topic));
    const r = await within(done, 5000, 'register');
    assert.equal(r.assignedHub, '127.0.0.1:9999');
    assert.deepEqual(r.payload, { ok: true });
    await within(conn.closed, 5000, 'disconnect');
    assert.deepEqual(conn.unsubscriptions, ['$dps/registrations/res/#']);
    await c.close();
  });

  test('a 429 answer carries retry-after from the topic; X.509 sends no password', async () => {
    const pki = await testPki();
    const dev = await issueDeviceCert(pki.ca, 'x509-m');
    mq.onPublish = (p, conn) => {
      conn.publish(`$dps/registrations/res/429/?$rid=${ridOf(p.topic)}&retry-after=9`, JSON.stringify(dpsError(429, 429001)));
    };
    const c = mqttClient({ registrationId: 'x509-m', credential: { type: 'x509', cert: dev.certPem, key: dev.keyPem } });
    const p = c.register().catch((e: unknown) => e);
    const conn = await mq.nextConnection();
    assert.equal(conn.connect?.password, undefined);
    assert.equal(conn.clientCertCN, 'x509-m');
    const e = await within(p, 5000, 'register');
    assert.ok(e instanceof DpsError);
    assert.equal(e.status, 429);
    assert.equal(e.retryAfterMs, 9000);
    assert.equal(e.errorCode, 429001);
    await c.close();
  });

  test('CONNACK 5 is a ConnectionRefusedError from DPS', async () => {
    mq.onConnect = () => 5;
    const c = mqttClient();
    const e = await c.register().catch((x: unknown) => x);
    assert.ok(e instanceof ConnectionRefusedError);
    assert.equal(e.returnCode, 5);
    assert.equal(e.endpoint, 'dps');
    assert.equal(e.unauthorized, true);
    mq.onConnect = () => 0;
    await mq.nextConnection();
    await c.close();
  });
});

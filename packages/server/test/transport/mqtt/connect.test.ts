import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { generate } from 'mqtt-packet';
import mqtt from 'mqtt';
import { createLogger } from '../../../src/observability/logger.ts';
import { issueDeviceCert } from '../../helpers/pki.ts';
import { thumbprints } from '../../../src/hub/hub-service.ts';
import { RawClient, deviceSas, deviceUsername, startTestHub, within, HUB_HOST, type TestHub } from './helpers.ts';

/** CONNECT handling of the hub realm and the transport: credentials, identities, protocol rules, deadlines. */
describe('mqtt listener: CONNECT', () => {
  let t: TestHub;
  let key1: string;
  let key2: string;
  const logLines: string[] = [];

  before(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString());
        cb();
      },
    });
    t = await startTestHub({ logger: createLogger({ level: 'debug', destination: sink }), listener: { connectTimeoutMs: 500, sweepIntervalMs: 100 } });
    key1 = await t.addSasDevice('d1');
    key2 = await t.addSasDevice('d2');
    await t.addSasDevice('off', 'disabled');
  });
  after(() => t.close());

  async function connack(o: Parameters<RawClient['connect']>[0]): Promise<{ rc: number | undefined; client: RawClient }> {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    const p = await c.connect(o);
    return { rc: p.returnCode, client: c };
  }

  async function refused(o: Parameters<RawClient['connect']>[0], rc: number): Promise<void> {
    const { rc: got, client } = await connack(o);
    assert.equal(got, rc);
    await client.waitClosed();
  }

  it('accepts a valid SAS (CONNACK 0) and the hub sees the device connected', async () => {
    const { rc, client } = await connack({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1) });
    assert.equal(rc, 0);
    assert.ok(t.hub.sessions.get('d1'));
    assert.equal((await t.hub.getDevice('d1')).connectionState, 'Connected');
    client.send({ cmd: 'disconnect' });
    await client.waitClosed();
    assert.equal(t.hub.sessions.get('d1'), undefined);
  });

  it('accepts host:port in the username and in the sr (HostName=127.0.0.1:<port>)', async () => {
    const host = `127.0.0.1:${t.port}`;
    const { rc, client } = await connack({ clientId: 'd1', username: deviceUsername('d1', host), password: deviceSas('d1', key1, { host }) });
    assert.equal(rc, 0);
    client.end();
    await client.closed;
  });

  it('accepts any trailing username parameters (model-id, DeviceClientType)', async () => {
    const username = `${HUB_HOST}/d1/?api-version=2021-04-12&model-id=dtmi:x:y;1&DeviceClientType=azure-iot-device%2F1.18.4`;
    const { rc, client } = await connack({ clientId: 'd1', username, password: deviceSas('d1', key1) });
    assert.equal(rc, 0);
    client.end();
  });

  it('refuses a wrong SAS with CONNACK 5 and closes', () => {
    return refused({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key2) }, 5);
  });

  it('refuses an expired SAS with CONNACK 5', () => {
    return refused({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1, { expiry: Math.floor(Date.now() / 1000) - 3600 }) }, 5);
  });

  it("refuses a SAS signed for another device (d2's token on d1) with CONNACK 5", () => {
    return refused({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d2', key2) }, 5);
  });

  it('refuses an unknown device with CONNACK 5', () => {
    return refused({ clientId: 'ghost', username: deviceUsername('ghost'), password: deviceSas('ghost', key1) }, 5);
  });

  it('refuses a disabled device with CONNACK 5', async () => {
    const d = await t.hub.getDevice('off');
    const key = d.authentication.symmetricKey.primaryKey ?? '';
    await refused({ clientId: 'off', username: deviceUsername('off'), password: deviceSas('off', key) }, 5);
  });

  it('refuses a CONNECT without credentials with CONNACK 5', () => {
    return refused({ clientId: 'd1', username: deviceUsername('d1') }, 5);
  });

  it('refuses a garbage password with CONNACK 5', () => {
    return refused({ clientId: 'd1', username: deviceUsername('d1'), password: 'not a sas at all' }, 5);
  });

  it('refuses a malformed username with CONNACK 4', async () => {
    await refused({ clientId: 'd1', username: 'just-a-name', password: deviceSas('d1', key1) }, 4);
    await refused({ clientId: 'd1', username: `${HUB_HOST}/d1`, password: deviceSas('d1', key1) }, 4);
    await refused({ clientId: 'd1', username: `${HUB_HOST}/d1/?foo=bar`, password: deviceSas('d1', key1) }, 4);
    await refused({ clientId: 'd1', username: `${HUB_HOST}/d1/m1/?api-version=2021-04-12`, password: deviceSas('d1', key1) }, 4);
    await refused({ clientId: 'd1' }, 4);
  });

  it('refuses a username for another hub host with CONNACK 4', () => {
    return refused({ clientId: 'd1', username: deviceUsername('d1', 'other-hub.example'), password: deviceSas('d1', key1, { host: 'other-hub.example' }) }, 4);
  });

  it('refuses a clientId that differs from the device id with CONNACK 2', () => {
    return refused({ clientId: 'd2', username: deviceUsername('d1'), password: deviceSas('d1', key1) }, 2);
  });

  it('refuses protocol levels other than 4 (MQTT 3.1, MQTT 5) with CONNACK 1', async () => {
    await refused({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1), protocolVersion: 3 }, 1);
    await refused({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1), protocolVersion: 5 }, 1);
  });

  it('MQTT.js sees "Not authorized" for a bad SAS and the listener survives', async () => {
    const client = mqtt.connect(`mqtts://127.0.0.1:${t.port}`, {
      ca: t.pki.ca.certPem,
      servername: 'localhost',
      clientId: 'd1',
      username: deviceUsername('d1'),
      password: 'SharedAccessSignature sr=x&sig=y&se=1',
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    const err = await within(once<Error & { code?: number }>(client, 'error'), 5000, 'MQTT.js error');
    assert.equal(err.code, 5);
    client.end(true);
  });

  it('a second connection for the same device takes over and the first one is closed', async () => {
    const first = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await first.connect({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1) })).returnCode, 0);
    const firstConn = t.hub.sessions.get('d1');
    const second = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await second.connect({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1) })).returnCode, 0);
    await first.waitClosed(5000, 'first connection closed on takeover');
    const live = t.hub.sessions.get('d1');
    assert.ok(live);
    assert.notEqual(live, firstConn);
    // The old socket's close must not detach the new connection.
    assert.equal(second.isOpen, true);
    second.send({ cmd: 'pingreq' });
    assert.equal((await second.next()).cmd, 'pingresp');
    second.end();
    await second.closed;
  });

  it('closes on garbage bytes before CONNECT, and keeps serving others', async () => {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    c.sendBytes(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await c.waitClosed();
    const c2 = await RawClient.connect(t.port, t.pki.ca.certPem);
    c2.sendBytes(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01]));
    await c2.waitClosed();
    const ok = await connack({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1) });
    assert.equal(ok.rc, 0);
    ok.client.end();
  });

  it('closes when the first packet is not CONNECT', async () => {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$iothub/twin/res/#', qos: 0 }] });
    await c.waitClosed();
  });

  it('closes on a second CONNECT', async () => {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await c.connect({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1) })).returnCode, 0);
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'd1', clean: true, keepalive: 0 });
    await c.waitClosed();
  });

  it('closes garbage after a valid CONNECT and calls hub.disconnected', async () => {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await c.connect({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1) })).returnCode, 0);
    c.sendBytes(Buffer.from([0x00, 0x05, 1, 2, 3, 4, 5]));
    await c.waitClosed();
    assert.equal(t.hub.sessions.get('d1'), undefined);
  });

  it('closes a connection that sends no CONNECT within connectTimeoutMs', async () => {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    await c.waitClosed(5000, 'idle connection without CONNECT is closed');
  });

  it('closes a connection silent for 1.5 x keepalive, and answers PINGREQ', async () => {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await c.connect({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1), keepalive: 1 })).returnCode, 0);
    c.send({ cmd: 'pingreq' });
    assert.equal((await c.next()).cmd, 'pingresp');
    const start = Date.now();
    await c.waitClosed(5000, 'keepalive timeout closes the connection');
    const elapsed = Date.now() - start;
    assert.ok(elapsed >= 1400, `closed after ${elapsed} ms, before 1.5 x keepalive`);
    assert.equal(t.hub.sessions.get('d1'), undefined);
  });

  it('refuses a packet whose announced length exceeds the limit before it is buffered', async () => {
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await c.connect({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key1) })).returnCode, 0);
    // A PUBLISH header announcing 100 MiB, followed by a few bytes only: the server must not wait for the rest.
    const full = generate({ cmd: 'publish', topic: 'devices/d1/messages/events/', payload: Buffer.alloc(10), qos: 0, dup: false, retain: false });
    const header = Buffer.from([0x30, 0x80, 0x80, 0x80, 0x32]);
    c.sendBytes(Buffer.concat([header, full.subarray(2)]));
    await c.waitClosed(5000, 'oversized packet closes the connection');
  });

  it('never logs passwords or SAS signatures', () => {
    const all = logLines.join('\n');
    assert.ok(logLines.length > 0, 'debug logs were written');
    assert.equal(all.includes(key1), false);
    assert.equal(all.includes('SharedAccessSignature'), false);
    assert.equal(/sig=/.test(all), false);
  });
});

describe('mqtt listener: X.509 devices', () => {
  let t: TestHub;
  before(async () => {
    t = await startTestHub();
  });
  after(() => t.close());

  it('authenticates a selfSigned device by the thumbprint of its TLS client certificate', async () => {
    const cert = await issueDeviceCert(t.pki.ca, 'x509-dev');
    const other = await issueDeviceCert(t.pki.ca, 'x509-dev');
    const der = Buffer.from(cert.cert.rawData);
    await t.hub.createDevice({ deviceId: 'x509-dev', authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: thumbprints(der).sha1 } } }, 'x509-dev');
    const ok = await RawClient.connect(t.port, t.pki.ca.certPem, { cert: cert.certPem, key: cert.keyPem });
    assert.equal((await ok.connect({ clientId: 'x509-dev', username: deviceUsername('x509-dev') })).returnCode, 0);
    ok.end();
    // Another certificate with the same subject is refused, as is a connection without a certificate.
    const bad = await RawClient.connect(t.port, t.pki.ca.certPem, { cert: other.certPem, key: other.keyPem });
    assert.equal((await bad.connect({ clientId: 'x509-dev', username: deviceUsername('x509-dev') })).returnCode, 5);
    await bad.waitClosed();
    const none = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await none.connect({ clientId: 'x509-dev', username: deviceUsername('x509-dev') })).returnCode, 5);
    await none.waitClosed();
  });
});

describe('mqtt listener: lifecycle', () => {
  it('close() ends every connection (also mid-handshake) and resolves; port 0 works', async () => {
    const t = await startTestHub();
    const key = await t.addSasDevice('d1');
    assert.ok(t.port > 0);
    const c = await RawClient.connect(t.port, t.pki.ca.certPem);
    assert.equal((await c.connect({ clientId: 'd1', username: deviceUsername('d1'), password: deviceSas('d1', key) })).returnCode, 0);
    const idle = await RawClient.connect(t.port, t.pki.ca.certPem);
    // A TCP connection that never starts TLS.
    const net = await import('node:net');
    const raw = net.connect(t.port, '127.0.0.1');
    raw.on('error', () => undefined);
    const rawClosed = once(raw, 'close');
    await within(once(raw, 'connect'), 2000, 'raw tcp connect');
    assert.ok(t.listener.connectionCount() >= 1);
    await within(t.close(), 5000, 'listener close resolves');
    await c.waitClosed();
    await idle.waitClosed();
    await within(rawClosed, 2000, 'handshaking socket closed');
    assert.equal(t.listener.connectionCount(), 0);
    assert.equal(t.hub.sessions.size, 0);
  });
});

function once<T = unknown>(emitter: { once(event: string, fn: (arg: T) => void): unknown }, event: string): Promise<T> {
  return new Promise<T>((resolve) => emitter.once(event, resolve));
}

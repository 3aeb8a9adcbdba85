import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IPublishPacket } from 'mqtt-packet';
import mqtt from 'mqtt';
import { silentLogger } from '../../../../src/observability/logger.ts';
import type { MqttListener } from '../../../../src/transport/mqtt/listener.ts';
import { createDpsRealm } from '../../../../src/transport/mqtt/dps/realm.ts';
import { issueDeviceCert } from '../../../helpers/pki.ts';
import { createRuntimeFixture, type RuntimeFixture } from '../../../provisioning/runtime/fixture.ts';
import { RawClient, testPki, within } from '../helpers.ts';
import type { TestPki } from '../../../helpers/pki.ts';
import { REGISTER, RES_FILTER, SDK_QUERY, STATUS, assertError, dpsUsername, nextMessageId, registerBody, request, startDpsListener } from './helpers.ts';

/**
 * The DPS realm's CONNECT rules and the protocol violations that close a connection, with raw MQTT clients.
 * Refusals and violations never crash the listener, never leave anything stored, and the next device is served.
 */
describe('DPS over MQTT: CONNECT and protocol violations', () => {
  let pki: TestPki;
  let f: RuntimeFixture;
  let listener: MqttListener;
  let port: number;
  let key: string;

  before(async () => {
    pki = await testPki();
    f = await createRuntimeFixture();
    const g = await f.addGroup('G1');
    key = f.derivedKey(g, 'dev-1');
    listener = await startDpsListener(createDpsRealm(f.service, { logger: silentLogger(), responseBudgetMs: 30_000 }), { cert: pki.server.certPem, key: pki.server.keyPem });
    port = listener.address().port;
  });

  after(async () => {
    await listener?.close();
    await f?.close();
  });

  const open = (creds: { cert?: string; key?: string } = {}) => RawClient.connect(port, pki.ca.certPem, creds);
  const sas = (id = 'dev-1', k = key) => f.deviceSas(id, k);

  async function connack(o: Parameters<RawClient['connect']>[0], creds: { cert?: string; key?: string } = {}): Promise<{ rc: number | undefined; c: RawClient }> {
    const c = await open(creds);
    const ack = await c.connect(o);
    return { rc: ack.returnCode, c };
  }

  async function refused(o: Parameters<RawClient['connect']>[0], rc: number, what: string): Promise<void> {
    const { rc: got, c } = await connack(o);
    assert.equal(got, rc, what);
    await c.waitClosed(5000, `closed after CONNACK ${rc} (${what})`);
  }

  /** A device that registers and is answered: the listener is still healthy. */
  async function stillServes(): Promise<void> {
    const { rc, c } = await connack({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() });
    assert.equal(rc, 0);
    const a = await request(c, `${REGISTER}?$rid=alive`, registerBody('dev-1'));
    assert.equal(a.status, 200, JSON.stringify(a.body));
    c.end();
  }

  it('accepts the SDK CONNECT, a `?` before the query, extra parameters, a differently cased clientId and clean=false', async () => {
    const forms: [string, Parameters<RawClient['connect']>[0]][] = [
      ['SDK form', { clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() }],
      ['with ?', { clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1', `?${SDK_QUERY}`), password: sas() }],
      ['extra parameters', { clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1', 'ClientVersion=c/1.0 (x; y)&api-version=2021-06-01&model-id=dtmi:a:b;1'), password: sas() }],
      ['clientId case', { clientId: 'DEV-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() }],
      ['clean=false', { clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas(), clean: false }],
    ];
    for (const [what, o] of forms) {
      const { rc, c } = await connack(o);
      assert.equal(rc, 0, what);
      c.send({ cmd: 'disconnect' });
      await c.waitClosed(5000, what);
    }
  });

  it('refuses malformed usernames with CONNACK 4 and a clientId other than the registration id with CONNACK 2', async () => {
    const u = (rest: string) => `${f.idScope}/registrations/${rest}`;
    await refused({ clientId: 'dev-1', username: u('dev-1'), password: sas() }, 4, 'no query part');
    await refused({ clientId: 'dev-1', username: u('dev-1/'), password: sas() }, 4, 'empty query');
    await refused({ clientId: 'dev-1', username: u('dev-1/ClientVersion=x'), password: sas() }, 4, 'no api-version');
    await refused({ clientId: 'dev-1', username: u('dev-1/?api-version'), password: sas() }, 4, 'api-version without =');
    await refused({ clientId: 'dev-1', username: u(`/${SDK_QUERY}`), password: sas() }, 4, 'empty registration id');
    await refused({ clientId: 'dev-1', username: `/registrations/dev-1/${SDK_QUERY}`, password: sas() }, 4, 'empty id scope (not claimed)');
    await refused({ clientId: 'dev-1', username: 'dev-1', password: sas() }, 4, 'not a DPS username');
    await refused({ clientId: 'dev-1', username: `hub.local/dev-1/?api-version=2021-04-12`, password: sas() }, 4, 'a hub username');
    await refused({ clientId: 'dev-1' }, 4, 'no username');
    await refused({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: 'x'.repeat(5000) }, 4, 'password over 4 KiB');
    await refused({ clientId: 'dev-2', username: dpsUsername(f.idScope, 'dev-1'), password: sas() }, 2, 'clientId differs');
    await refused({ clientId: '', username: dpsUsername(f.idScope, 'dev-1'), password: sas() }, 2, 'empty clientId');
    await stillServes();
  });

  it('refuses a CONNECT without password and without client certificate with CONNACK 5', async () => {
    await refused({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1') }, 5, 'no credentials');
  });

  it('X.509 (client certificate, no password) is accepted at CONNECT; a certificate no enrollment holds is answered 401002', async () => {
    const cert = await issueDeviceCert(pki.ca, 'x509-dev');
    const { rc, c } = await connack({ clientId: 'x509-dev', username: dpsUsername(f.idScope, 'x509-dev') }, { cert: cert.certPem, key: cert.keyPem });
    assert.equal(rc, 0);
    c.send({ cmd: 'subscribe', messageId: nextMessageId(), subscriptions: [{ topic: RES_FILTER, qos: 1 }] });
    await c.next('suback');
    assertError(await request(c, `${REGISTER}?$rid=x1`, registerBody('x509-dev')), 401, 401002, 'x1');
    c.end();
  });

  it('closes the connection on protocol violations, answers nothing, stores nothing, and keeps serving', async () => {
    const before = await f.counts();
    const violations: [string, (c: RawClient) => void][] = [
      ['unknown topic', (c) => c.send({ cmd: 'publish', topic: '$dps/registrations/POST/iotdps-other/?$rid=1', payload: '{}', qos: 1, messageId: 1, dup: false, retain: false })],
      ['hub topic', (c) => c.send({ cmd: 'publish', topic: 'devices/dev-1/messages/events/', payload: '{}', qos: 0, dup: false, retain: false })],
      ['register prefix without the slash', (c) => c.send({ cmd: 'publish', topic: '$dps/registrations/PUT/iotdps-register?$rid=1', payload: registerBody('dev-1'), qos: 1, messageId: 2, dup: false, retain: false })],
      ['missing $rid', (c) => c.send({ cmd: 'publish', topic: REGISTER, payload: registerBody('dev-1'), qos: 1, messageId: 3, dup: false, retain: false })],
      ['missing $rid (other parameters)', (c) => c.send({ cmd: 'publish', topic: `${STATUS}?operationId=4.x.y`, payload: ' ', qos: 1, messageId: 4, dup: false, retain: false })],
      ['empty $rid', (c) => c.send({ cmd: 'publish', topic: `${REGISTER}?$rid=`, payload: registerBody('dev-1'), qos: 1, messageId: 5, dup: false, retain: false })],
      ['$rid with a space', (c) => c.send({ cmd: 'publish', topic: `${REGISTER}?$rid=a b`, payload: registerBody('dev-1'), qos: 1, messageId: 6, dup: false, retain: false })],
      ['$rid over 128 characters', (c) => c.send({ cmd: 'publish', topic: `${REGISTER}?$rid=${'r'.repeat(129)}`, payload: registerBody('dev-1'), qos: 1, messageId: 7, dup: false, retain: false })],
      ['QoS 2 publish', (c) => c.send({ cmd: 'publish', topic: `${REGISTER}?$rid=q2`, payload: registerBody('dev-1'), qos: 2, messageId: 8, dup: false, retain: false })],
      ['garbage bytes after CONNECT', (c) => c.sendBytes(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02]))],
      ['a second CONNECT', (c) => c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'dev-1', clean: true, keepalive: 0 })],
    ];
    for (const [what, act] of violations) {
      const { rc, c } = await connack({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() });
      assert.equal(rc, 0, what);
      c.send({ cmd: 'subscribe', messageId: nextMessageId(), subscriptions: [{ topic: RES_FILTER, qos: 1 }] });
      await c.next('suback');
      act(c);
      await c.waitClosed(5000, what);
      assert.equal(c.packets.filter((p) => p.cmd === 'publish').length, 0, `${what}: no answer`);
    }
    assert.deepEqual(await f.counts(), before);
    await stillServes();
  });

  it('closes on garbage before CONNECT and on a packet larger than the listener limit', async () => {
    const c1 = await open();
    c1.sendBytes(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await c1.waitClosed(5000, 'garbage before CONNECT');
    const c2 = await open();
    c2.sendBytes(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]));
    await c2.waitClosed(5000, 'malformed length before CONNECT');

    const { rc, c } = await connack({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() });
    assert.equal(rc, 0);
    // The listener's maxPacketBytes is 128 KiB here: refused from the length header, before it is buffered.
    c.send({ cmd: 'publish', topic: `${REGISTER}?$rid=huge`, payload: Buffer.alloc(200 * 1024, 0x20), qos: 1, messageId: 9, dup: false, retain: false });
    await c.waitClosed(5000, 'packet over the limit');
    assert.equal(c.packets.filter((p) => p.cmd === 'publish').length, 0);
    await stillServes();
  });

  it('SUBACK: min(QoS, 1) for $dps/registrations/res/#, 128 for anything else; UNSUBACK always, subscribed or not', async () => {
    const { rc, c } = await connack({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() });
    assert.equal(rc, 0);
    const messageId = nextMessageId();
    c.send({
      cmd: 'subscribe',
      messageId,
      subscriptions: [
        { topic: RES_FILTER, qos: 1 },
        { topic: RES_FILTER, qos: 0 },
        { topic: RES_FILTER, qos: 2 },
        { topic: '$dps/registrations/res/+/#', qos: 1 },
        { topic: '$dps/#', qos: 1 },
        { topic: '#', qos: 0 },
        { topic: 'devices/dev-1/messages/devicebound/#', qos: 1 },
      ],
    });
    const suback = await c.next('suback');
    assert.ok(suback.cmd === 'suback');
    assert.equal(suback.messageId, messageId);
    assert.deepEqual(suback.granted, [1, 0, 1, 128, 128, 128, 128]);
    for (const unsubscriptions of [[RES_FILTER], [RES_FILTER], ['never/subscribed', '#'], ['$dps/registrations/res/+/#']]) {
      const id = nextMessageId();
      c.send({ cmd: 'unsubscribe', messageId: id, unsubscriptions });
      const ack = await c.next('unsuback');
      assert.ok(ack.cmd === 'unsuback');
      assert.equal(ack.messageId, id);
    }
    c.send({ cmd: 'disconnect' });
    await c.waitClosed();
  });

  it('MQTT.js sees "Not authorized" for a CONNECT without credentials and "Identifier rejected" for a wrong clientId; no crash', async () => {
    const attempt = (o: { clientId: string; password?: string }) =>
      within(
        new Promise<string>((resolve) => {
          const client = mqtt.connect(`mqtts://127.0.0.1:${port}`, {
            ca: pki.ca.certPem,
            servername: 'localhost',
            clientId: o.clientId,
            username: dpsUsername(f.idScope, 'dev-1'),
            ...(o.password === undefined ? {} : { password: o.password }),
            protocolVersion: 4,
            clean: true,
            reconnectPeriod: 0,
          });
          client.on('error', (e) => {
            client.end(true);
            resolve(e.message);
          });
        }),
        5000,
        'MQTT.js error',
      );
    assert.match(await attempt({ clientId: 'dev-1' }), /Not authorized/i);
    assert.match(await attempt({ clientId: 'someone-else', password: sas() }), /Identifier rejected/i);
    await stillServes();
  });

  it('a publish before any SUBSCRIBE is still answered (answers go to the requesting connection)', async () => {
    const { rc, c } = await connack({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() });
    assert.equal(rc, 0);
    const a = await request(c, `${REGISTER}?$rid=early`, registerBody('dev-1'));
    assert.equal(a.status, 200);
    assert.equal(a.params.get('$rid'), 'early');
    assert.equal(a.qos, 0);
    c.end();
  });

  it('several requests in flight on one connection are each answered under their own $rid', async () => {
    const { rc, c } = await connack({ clientId: 'dev-1', username: dpsUsername(f.idScope, 'dev-1'), password: sas() });
    assert.equal(rc, 0);
    const rids = ['p1', 'p2', 'p3'];
    for (const rid of rids) c.send({ cmd: 'publish', topic: `${REGISTER}?$rid=${rid}`, payload: registerBody('dev-1'), qos: 0, dup: false, retain: false });
    const got: string[] = [];
    for (let i = 0; i < rids.length; i++) {
      const p = (await c.next('publish')) as IPublishPacket;
      const rid = new URLSearchParams(p.topic.slice(p.topic.indexOf('?') + 1)).get('$rid');
      got.push(rid ?? '');
    }
    assert.deepEqual(got.sort(), rids);
    c.end();
  });
});

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../../../src/observability/logger.ts';
import { startMqttListener, type MqttListener, type MqttRealm, type RealmSession, type MqttLink } from '../../../src/transport/mqtt/listener.ts';
import { RawClient, testPki, within } from './helpers.ts';
import type { TestPki } from '../../helpers/pki.ts';

/**
 * The transport with a toy realm (not the hub): the realm extension point, and that failures inside a realm
 * (throws, rejections, slow authentication) never escape, never leave a rejection unhandled, and end sessions once.
 */
describe('mqtt listener with a custom realm', () => {
  let pki: TestPki;
  let listener: MqttListener;
  const closedReasons: string[] = [];
  let releaseSlow: (() => void) | undefined;
  let slowStarted: (() => void) | undefined;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);

  function session(link: MqttLink, name: string): RealmSession {
    return {
      subscribe: (subs) => subs.map(() => 1),
      unsubscribe: () => undefined,
      publish(msg) {
        if (msg.topic === 'boom') throw new Error('sync failure');
        if (msg.topic === 'async-boom') return Promise.reject(new Error('async failure'));
        if (msg.topic === 'echo') {
          link.publish(`echo/${name}`, msg.payload, 0);
          return undefined;
        }
        if (msg.topic === 'slow-echo') {
          return Promise.resolve().then(() => {
            link.publish('slow-echo', msg.payload, 1);
            return undefined;
          });
        }
        return { close: 'unknown topic' };
      },
      puback: () => undefined,
      closed: (reason) => {
        closedReasons.push(`${name}:${reason}`);
      },
    };
  }

  const toy: MqttRealm = {
    name: 'toy',
    claims: (req) => req.username?.startsWith('toy/') === true,
    async connect(req, link) {
      const what = req.username?.slice(4);
      if (what === 'reject') throw new Error('realm blew up');
      if (what === 'deny') return { ok: false, returnCode: 5, reason: 'denied' };
      if (what === 'slow') {
        slowStarted?.();
        await new Promise<void>((resolve) => (releaseSlow = resolve));
      }
      return { ok: true, session: session(link, req.clientId), sessionPresent: false };
    },
  };

  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    pki = await testPki();
    listener = await startMqttListener({ host: '127.0.0.1', port: 0, tls: { cert: pki.server.certPem, key: pki.server.keyPem }, realms: [toy], logger: silentLogger() });
  });
  after(async () => {
    await listener.close();
    process.off('unhandledRejection', onUnhandled);
    assert.deepEqual(unhandled, []);
  });

  const open = () => RawClient.connect(listener.address().port, pki.ca.certPem);

  it('answers CONNACK 3 when the realm rejects, and the realm decides other codes', async () => {
    const a = await open();
    assert.equal((await a.connect({ clientId: 'a', username: 'toy/reject' })).returnCode, 3);
    await a.waitClosed();
    const b = await open();
    assert.equal((await b.connect({ clientId: 'b', username: 'toy/deny' })).returnCode, 5);
    await b.waitClosed();
  });

  it('routes publishes to the session and lets it publish back (QoS 0 and 1)', async () => {
    const c = await open();
    assert.equal((await c.connect({ clientId: 'c', username: 'toy/ok' })).returnCode, 0);
    c.send({ cmd: 'publish', topic: 'echo', payload: 'hi', qos: 1, messageId: 3, dup: false, retain: false });
    const echoed = await c.next('publish');
    assert.equal(echoed.cmd === 'publish' && echoed.topic, 'echo/c');
    assert.equal((await c.next('puback')).messageId, 3);
    c.send({ cmd: 'publish', topic: 'slow-echo', payload: 'x', qos: 0, dup: false, retain: false });
    const q1 = await c.next('publish');
    assert.equal(q1.cmd === 'publish' && q1.qos, 1);
    assert.ok(q1.messageId !== undefined && q1.messageId > 0);
    c.send({ cmd: 'disconnect' });
    await c.waitClosed();
    assert.ok(closedReasons.includes('c:client DISCONNECT'));
  });

  it('closes the connection when a session throws or rejects, without unhandled rejections', async () => {
    const d = await open();
    assert.equal((await d.connect({ clientId: 'd', username: 'toy/ok' })).returnCode, 0);
    d.send({ cmd: 'publish', topic: 'boom', payload: '', qos: 0, dup: false, retain: false });
    await d.waitClosed();
    const e = await open();
    assert.equal((await e.connect({ clientId: 'e', username: 'toy/ok' })).returnCode, 0);
    e.send({ cmd: 'publish', topic: 'async-boom', payload: '', qos: 1, messageId: 1, dup: false, retain: false });
    await e.waitClosed();
    assert.equal(closedReasons.filter((r) => r.startsWith('d:')).length, 1);
    assert.equal(closedReasons.filter((r) => r.startsWith('e:')).length, 1);
  });

  it('queues packets sent before CONNACK and handles them after it', async () => {
    const started = new Promise<void>((resolve) => (slowStarted = resolve));
    const f = await open();
    f.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'f', clean: true, keepalive: 0, username: 'toy/slow' });
    f.send({ cmd: 'subscribe', messageId: 5, subscriptions: [{ topic: 'x', qos: 1 }] });
    f.send({ cmd: 'pingreq' });
    await within(started, 5000, 'realm connect started');
    releaseSlow?.();
    assert.equal((await f.next()).cmd, 'connack');
    const sub = await f.next();
    assert.equal(sub.cmd === 'suback' && sub.messageId, 5);
    assert.equal((await f.next()).cmd, 'pingresp');
    f.end();
  });

  it('ends the session exactly once when the socket closes during a slow CONNECT', async () => {
    const started = new Promise<void>((resolve) => (slowStarted = resolve));
    const g = await open();
    g.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'g', clean: true, keepalive: 0, username: 'toy/slow' });
    await within(started, 5000, 'realm connect started');
    g.end();
    await g.closed;
    // The listener notices the close; then authentication completes.
    await within(waitFor(() => listener.connectionCount() === 0), 5000, 'server saw the close');
    releaseSlow?.();
    await within(waitFor(() => closedReasons.some((r) => r.startsWith('g:'))), 5000, 'session closed');
    assert.deepEqual(closedReasons.filter((r) => r.startsWith('g:')), ['g:closed during CONNECT']);
  });

  it('refuses a CONNECT no realm claims with CONNACK 4', async () => {
    const h = await open();
    assert.equal((await h.connect({ clientId: 'h', username: 'nobody/here' })).returnCode, 4);
    await h.waitClosed();
  });
});

/** Resolves when `cond` holds, checking after each turn of the event loop (bounded by the caller's `within`). */
function waitFor(cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = () => (cond() ? resolve() : setImmediate(check));
    check();
  });
}

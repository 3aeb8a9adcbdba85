import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generate, type IPublishPacket, type Packet } from 'mqtt-packet';
import { RawClient, connectDevice, deviceSas, deviceUsername, nextRid, startTestHub, within, type TestHub } from './helpers.ts';

function asPublish(p: Packet): IPublishPacket {
  assert.equal(p.cmd, 'publish');
  return p as IPublishPacket;
}

function json(p: IPublishPacket): unknown {
  return JSON.parse(p.payload.toString());
}

async function subscribe(c: RawClient, ...filters: [string, 0 | 1 | 2][]): Promise<number[]> {
  const messageId = Math.floor(Math.random() * 60000) + 1;
  c.send({ cmd: 'subscribe', messageId, subscriptions: filters.map(([topic, qos]) => ({ topic, qos })) });
  const ack = await c.next('suback');
  assert.equal(ack.cmd === 'suback' && ack.messageId, messageId);
  return ack.cmd === 'suback' ? (ack.granted as number[]) : [];
}

function publish(c: RawClient, topic: string, payload: string | Buffer, qos: 0 | 1 = 0, messageId = 7): void {
  c.send({ cmd: 'publish', topic, payload, qos, dup: false, retain: false, ...(qos === 1 ? { messageId } : {}) });
}

async function twinRequest(c: RawClient, topic: string, payload: string | Buffer): Promise<{ status: number; query: string; packet: IPublishPacket }> {
  const rid = nextRid();
  publish(c, `${topic}?$rid=${rid}`, payload);
  const p = asPublish(await c.next('publish'));
  const m = /^\$iothub\/twin\/res\/(\d+)\/\?(.*)$/.exec(p.topic);
  assert.ok(m, `twin response topic: ${p.topic}`);
  const query = m[2] ?? '';
  assert.equal(new URLSearchParams(query).get('$rid'), rid);
  return { status: Number(m[1]), query, packet: p };
}

describe('hub MQTT topics', () => {
  let t: TestHub;
  const keys = new Map<string, string>();
  const ids = ['d1', 'd2', 'dev%2F1', "a$b'c", 'x.y:z=1@w+#(!)'];

  before(async () => {
    t = await startTestHub();
    for (const id of ids) keys.set(id, await t.addSasDevice(id));
  });
  after(() => t.close());

  const dev = (id: string, o: { clean?: boolean } = {}) => connectDevice(t, id, keys.get(id) ?? '', o);

  describe('subscriptions', () => {
    it('always answers SUBSCRIBE with SUBACK: min(requested, 1) for allowed filters, 128 for the rest', async () => {
      const c = await dev('d1');
      const granted = await subscribe(
        c,
        ['$iothub/twin/res/#', 0],
        ['$iothub/twin/PATCH/properties/desired/#', 1],
        ['$iothub/methods/POST/#', 2],
        ['devices/d1/messages/devicebound/#', 1],
        ['devices/d2/messages/devicebound/#', 1],
        ['#', 0],
        ['$iothub/twin/res/+', 0],
      );
      assert.deepEqual(granted, [0, 1, 1, 1, 128, 128, 128]);
      // Duplicates are idempotent.
      assert.deepEqual(await subscribe(c, ['$iothub/methods/POST/#', 0]), [0]);
      c.end();
      await c.closed;
    });

    it('always answers UNSUBSCRIBE with UNSUBACK, also for filters never subscribed', async () => {
      const c = await dev('d1');
      c.send({ cmd: 'unsubscribe', messageId: 42, unsubscriptions: ['$iothub/methods/POST/#', 'no/such/topic'] });
      const ack = await c.next('unsuback');
      assert.equal(ack.cmd === 'unsuback' && ack.messageId, 42);
      c.end();
    });
  });

  describe('telemetry', () => {
    it('accepts QoS 0 and QoS 1 (PUBACK) and parses the property bag', async () => {
      const c = await dev('d1');
      const before = t.hub.telemetry.countFor('d1');
      const seq = t.hub.telemetry.recent().at(-1)?.seq ?? 0;
      publish(c, 'devices/d1/messages/events/%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp&k%26%3D=v%2F%3F&bad=%E0%A4%A&flag', '{"t":21}', 1, 11);
      const ack = await c.next('puback');
      assert.equal(ack.cmd === 'puback' && ack.messageId, 11);
      publish(c, 'devices/d1/messages/events/', 'qos0');
      publish(c, 'devices/d1/messages/events', 'no slash', 1, 12);
      await c.next('puback');
      assert.equal(t.hub.telemetry.countFor('d1'), before + 3);
      const events = t.hub.telemetry.recent({ afterSeq: seq, deviceId: 'd1' });
      assert.equal(events.length, 3);
      const [first, second] = events;
      assert.deepEqual(first?.systemProperties, { 'message-id': 'm-1', 'correlation-id': 'c-1', 'content-type': 'application/json', 'content-encoding': 'utf-8' });
      assert.deepEqual(first?.properties, { alert: 'high temp', 'k&=': 'v/?', bad: '%E0%A4%A', flag: '' });
      assert.equal(first?.body, '{"t":21}');
      assert.equal(second?.body, 'qos0');
      c.end();
    });

    it("closes the connection on a publish to another device's topic", async () => {
      const c = await dev('d1');
      const before = t.hub.telemetry.countFor('d2');
      publish(c, 'devices/d2/messages/events/', 'spoof', 1);
      await c.waitClosed();
      assert.equal(t.hub.telemetry.countFor('d2'), before);
      assert.equal(t.hub.sessions.get('d1'), undefined);
    });

    it('accepts exactly 256 KiB and closes on 256 KiB + 1 without crashing', async () => {
      const c = await dev('d1');
      publish(c, 'devices/d1/messages/events/', Buffer.alloc(256 * 1024, 0x61), 1, 1);
      await c.next('puback');
      const before = t.hub.telemetry.countFor('d1');
      publish(c, 'devices/d1/messages/events/', Buffer.alloc(256 * 1024 + 1, 0x61), 1, 2);
      await c.waitClosed(5000, 'oversized telemetry closes the connection');
      assert.equal(t.hub.telemetry.countFor('d1'), before);
      // The listener still serves.
      const c2 = await dev('d1');
      c2.end();
    });

    it('closes the connection on a packet far over the limit (1 MiB)', async () => {
      const c = await dev('d1');
      publish(c, 'devices/d1/messages/events/', Buffer.alloc(1024 * 1024), 1, 3);
      await c.waitClosed();
    });
  });

  describe('unknown and forbidden publishes', () => {
    for (const topic of ['foo/bar', 'devices/d1/modules/m1/messages/events/', 'devices/d1/messages/devicebound/x', '$iothub/twin/GETX/?$rid=1', '$iothub/methods/res/abc/?$rid=1', '$iothub/methods/res/200']) {
      it(`closes the connection cleanly on ${topic}`, async () => {
        const c = await dev('d1');
        publish(c, topic, '{}');
        await c.waitClosed();
        assert.equal(t.hub.sessions.get('d1'), undefined);
      });
    }

    it('closes the connection on a QoS 2 publish', async () => {
      const c = await dev('d1');
      c.send({ cmd: 'publish', topic: 'devices/d1/messages/events/', payload: 'x', qos: 2, messageId: 5, dup: false, retain: false });
      await c.waitClosed();
    });
  });

  describe('twin', () => {
    it('answers GET with 200 and the desired/reported documents with versions', async () => {
      const c = await dev('d1');
      assert.deepEqual(await subscribe(c, ['$iothub/twin/res/#', 0]), [0]);
      const r = await twinRequest(c, '$iothub/twin/GET/', ' ');
      assert.equal(r.status, 200);
      const body = json(r.packet) as { desired: { $version: number }; reported: { $version: number } };
      assert.equal(typeof body.desired.$version, 'number');
      assert.equal(typeof body.reported.$version, 'number');
      c.end();
    });

    it('answers a reported PATCH with 204, the new version and an empty payload; GET shows it', async () => {
      const c = await dev('d2');
      const before = (await t.hub.getTwinState('d2')).twin.reported.version;
      const r = await twinRequest(c, '$iothub/twin/PATCH/properties/reported/', JSON.stringify({ fw: '1.0', nested: { a: 1 } }));
      assert.equal(r.status, 204);
      assert.equal(new URLSearchParams(r.query).get('$version'), String(before + 1));
      assert.equal(r.packet.payload.length, 0);
      const g = await twinRequest(c, '$iothub/twin/GET/', '');
      assert.deepEqual(json(g.packet), { desired: { $version: 1 }, reported: { fw: '1.0', nested: { a: 1 }, $version: before + 1 } });
      c.end();
    });

    it('answers malformed JSON with 400 and an error body; the connection stays usable', async () => {
      const c = await dev('d1');
      const r = await twinRequest(c, '$iothub/twin/PATCH/properties/reported/', '{"oops":');
      assert.equal(r.status, 400);
      const body = json(r.packet) as Record<string, unknown>;
      assert.equal(body.errorCode, 400006);
      assert.equal(typeof body.trackingId, 'string');
      assert.equal(typeof body.message, 'string');
      assert.match(String(body.timestampUtc), /^\d{4}-\d\d-\d\dT/);
      const ok = await twinRequest(c, '$iothub/twin/PATCH/properties/reported/', '{"ok":true}');
      assert.equal(ok.status, 204);
      c.end();
    });

    it('answers a patch over 32 KiB with 400 (TwinTooLarge)', async () => {
      const c = await dev('d1');
      const r = await twinRequest(c, '$iothub/twin/PATCH/properties/reported/', JSON.stringify({ big: 'x'.repeat(33 * 1024) }));
      assert.equal(r.status, 400);
      assert.equal((json(r.packet) as { errorCode: number }).errorCode, 400027);
      assert.equal(c.isOpen, true);
      c.end();
    });

    it('answers invalid patches (not an object, bad names) with 400', async () => {
      const c = await dev('d1');
      const notObject = await twinRequest(c, '$iothub/twin/PATCH/properties/reported/', '[1,2]');
      assert.equal(notObject.status, 400);
      const badName = await twinRequest(c, '$iothub/twin/PATCH/properties/reported/', '{"a.b":1}');
      assert.equal(badName.status, 400);
      assert.equal((json(badName.packet) as { errorCode: number }).errorCode, 400029);
      c.end();
    });

    it('delivers desired patches only to a subscribed session', async () => {
      const plain = await dev('d1');
      await t.hub.updateTwin('d1', { properties: { desired: { unseen: 1 } } }, '*');
      // The next thing this connection receives is the GET answer, not the desired patch.
      const g = await twinRequest(plain, '$iothub/twin/GET/', '');
      assert.equal(g.status, 200);
      assert.equal(plain.packets.length, 0);
      assert.deepEqual(await subscribe(plain, ['$iothub/twin/PATCH/properties/desired/#', 0]), [0]);
      const twin = await t.hub.updateTwin('d1', { properties: { desired: { targetTemp: 22, gone: null } } }, '*');
      const p = asPublish(await plain.next('publish'));
      const version = twin.twin.desired.version;
      assert.equal(p.topic, `$iothub/twin/PATCH/properties/desired/?$version=${version}`);
      assert.deepEqual(json(p), { targetTemp: 22, gone: null, $version: version });
      plain.end();
    });
  });

  describe('direct methods', () => {
    it('SUBSCRIBE makes the device accept methods; request and response round trip', async () => {
      const c = await dev('d2');
      // An invocation waiting for the device (connectTimeout) proceeds once it subscribes.
      const result = t.hub.invokeMethod('d2', { methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10 });
      assert.deepEqual(await subscribe(c, ['$iothub/methods/POST/#', 0]), [0]);
      const req = asPublish(await c.next('publish'));
      const m = /^\$iothub\/methods\/POST\/reboot\/\?\$rid=(.+)$/.exec(req.topic);
      assert.ok(m, req.topic);
      assert.deepEqual(json(req), { delay: 5 });
      publish(c, `$iothub/methods/res/200/?$rid=${m[1]}`, JSON.stringify({ rebooted: true }));
      assert.deepEqual(await within(result, 5000, 'method result'), { status: 200, payload: { rebooted: true } });
      // Null payloads still go out as JSON.
      const r2 = t.hub.invokeMethod('d2', { methodName: 'ping', responseTimeoutInSeconds: 10 });
      const req2 = asPublish(await c.next('publish'));
      assert.equal(req2.payload.toString(), 'null');
      const rid2 = /\$rid=(.+)$/.exec(req2.topic)?.[1];
      publish(c, `$iothub/methods/res/404/?$rid=${rid2}`, '');
      assert.deepEqual(await within(r2, 5000, 'second method result'), { status: 404, payload: null });
      // Unsubscribing stops accepting methods.
      c.send({ cmd: 'unsubscribe', messageId: 9, unsubscriptions: ['$iothub/methods/POST/#'] });
      await c.next('unsuback');
      assert.equal(t.hub.sessions.get('d2')?.acceptsMethods, false);
      c.end();
    });
  });

  describe('persistent sessions', () => {
    it('clean=false keeps subscriptions across reconnects (sessionPresent); clean=true drops them', async () => {
      const a = await dev('d2', { clean: false });
      await subscribe(a, ['$iothub/twin/PATCH/properties/desired/#', 0], ['$iothub/methods/POST/#', 0]);
      a.send({ cmd: 'disconnect' });
      await a.waitClosed();

      const b = await connectResume('d2', false);
      assert.equal(b.sessionPresent, true);
      assert.equal(t.hub.sessions.get('d2')?.acceptsMethods, true);
      const twin = await t.hub.updateTwin('d2', { properties: { desired: { after: 'reconnect' } } }, '*');
      const p = asPublish(await b.client.next('publish'));
      assert.equal(p.topic, `$iothub/twin/PATCH/properties/desired/?$version=${twin.twin.desired.version}`);
      b.client.end();
      await b.client.closed;

      const c = await connectResume('d2', true);
      assert.equal(c.sessionPresent, false);
      assert.equal(t.hub.sessions.get('d2')?.acceptsMethods, false);
      await t.hub.updateTwin('d2', { properties: { desired: { after: 'clean' } } }, '*');
      const g = await twinRequest(c.client, '$iothub/twin/GET/', '');
      assert.equal(g.status, 200);
      c.client.end();
      await c.client.closed;

      const d = await connectResume('d2', false);
      assert.equal(d.sessionPresent, false, 'the clean connect removed the stored session');
      d.client.end();
    });
  });

  async function connectResume(id: string, clean: boolean): Promise<{ client: RawClient; sessionPresent: boolean }> {
    const client = await RawClient.connect(t.port, t.pki.ca.certPem);
    const ack = await client.connect({ clientId: id, username: deviceUsername(id), password: deviceSas(id, keys.get(id) ?? ''), clean });
    assert.equal(ack.returnCode, 0);
    return { client, sessionPresent: ack.sessionPresent };
  }

  describe('framing', () => {
    it('handles packets split into single bytes, several packets per chunk, and two devices interleaved', async () => {
      const a = await dev('d1');
      const b = await dev('d2');
      const getA = generate({ cmd: 'publish', topic: '$iothub/twin/GET/?$rid=split-a', payload: ' ', qos: 0, dup: false, retain: false });
      const getB = generate({ cmd: 'publish', topic: '$iothub/twin/GET/?$rid=whole-b', payload: ' ', qos: 0, dup: false, retain: false });
      // A: the first half byte by byte (one TLS record each), then B a whole packet, then the rest of A.
      const half = getA.length >> 1;
      for (let i = 0; i < half; i++) a.sendBytes(getA.subarray(i, i + 1));
      b.sendBytes(getB);
      assert.match(asPublish(await b.next('publish')).topic, /\$rid=whole-b$/);
      for (let i = half; i < getA.length; i++) a.sendBytes(getA.subarray(i, i + 1));
      assert.match(asPublish(await a.next('publish')).topic, /\$rid=split-a$/);
      // Three packets in one write, the last one cut in two.
      const ping = generate({ cmd: 'pingreq' });
      const tel = generate({ cmd: 'publish', topic: 'devices/d1/messages/events/', payload: 'x', qos: 1, messageId: 77, dup: false, retain: false });
      const both = Buffer.concat([ping, tel, ping]);
      a.sendBytes(both.subarray(0, both.length - 1));
      assert.equal((await a.next()).cmd, 'pingresp');
      const ack = await a.next();
      assert.equal(ack.cmd === 'puback' && ack.messageId, 77);
      a.sendBytes(both.subarray(both.length - 1));
      assert.equal((await a.next()).cmd, 'pingresp');
      a.end();
      b.end();
    });
  });

  describe('unusual device ids', () => {
    for (const id of ['dev%2F1', "a$b'c", 'x.y:z=1@w+#(!)']) {
      it(`works end to end for ${JSON.stringify(id)}`, async () => {
        const c = await dev(id);
        assert.deepEqual(await subscribe(c, ['$iothub/twin/res/#', 0], [`devices/${id}/messages/devicebound/#`, 1]), [0, 1]);
        publish(c, `devices/${id}/messages/events/k=v`, 'hello', 1, 3);
        await c.next('puback');
        assert.equal(t.hub.telemetry.countFor(id), 1);
        const r = await twinRequest(c, '$iothub/twin/PATCH/properties/reported/', '{"x":1}');
        assert.equal(r.status, 204);
        const g = await twinRequest(c, '$iothub/twin/GET/', '');
        assert.equal((json(g.packet) as { reported: { x: number } }).reported.x, 1);
        c.end();
      });
    }
  });
});

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TelemetryEvent, TelemetryListener } from '../../../src/hub/telemetry.ts';
import { createHubFixture, json, jsonObject, type HubFixture } from './hub-fixture.ts';

let f: HubFixture;
let base: string;
/** Live subscriptions of the telemetry feed, and waiters for the next unsubscribe. */
let live = 0;
let onUnsubscribe: (() => void)[] = [];

before(async () => {
  f = await createHubFixture({ telemetryHeartbeatMs: 25 });
  for (const id of ['t-a', 't-b']) assert.equal((await f.request({ method: 'PUT', url: `/devices/${id}`, payload: { deviceId: id } })).statusCode, 200);
  // Spy on subscriptions to prove streams unsubscribe when their client goes away.
  const feed = f.hub.telemetry;
  const subscribe = feed.subscribe.bind(feed);
  feed.subscribe = (l: TelemetryListener) => {
    live++;
    const off = subscribe(l);
    return () => {
      live--;
      const r = off();
      const waiters = onUnsubscribe;
      onUnsubscribe = [];
      for (const w of waiters) w();
      return r;
    };
  };
  await f.app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(f.app.server.address() as AddressInfo).port}`;
});

after(async () => {
  await f.close();
});

function send(deviceId: string, body: string | Buffer): TelemetryEvent {
  f.hub.recordTelemetry({ deviceId, systemProperties: { 'content-type': 'application/json' }, properties: { p: '1' }, body: Buffer.isBuffer(body) ? body : Buffer.from(body) });
  const e = f.hub.telemetry.recent({ limit: 1 })[0];
  assert.ok(e);
  return e;
}

interface SseClient {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Resolves with all text received once `pred` holds for it. */
  waitFor(pred: (text: string) => boolean): Promise<string>;
  ended: Promise<void>;
  events(): { id: string; data: TelemetryEvent }[];
  /** Destroys the connection and resolves once the server side unsubscribed. */
  close(): Promise<void>;
}

function openStream(path: string, headers: Record<string, string> = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${base}${path}`, { headers: { authorization: f.sas('service'), ...headers } }, (res) => {
      let text = '';
      const waiters: { pred: (t: string) => boolean; resolve: (t: string) => void }[] = [];
      const check = () => {
        for (const w of [...waiters]) {
          if (w.pred(text)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(text);
          }
        }
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        check();
      });
      const ended = new Promise<void>((r) => {
        res.on('end', () => r());
        res.on('close', () => r());
      });
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        waitFor: (pred) =>
          new Promise((r) => {
            waiters.push({ pred, resolve: r });
            check();
          }),
        ended,
        events: () =>
          text
            .split('\n\n')
            .filter((block) => block.startsWith('id: '))
            .map((block) => {
              const [idLine, dataLine] = block.split('\n');
              return { id: (idLine ?? '').slice(4), data: JSON.parse((dataLine ?? '').slice(6)) as TelemetryEvent };
            }),
        close: () => {
          const gone = new Promise<void>((r) => onUnsubscribe.push(r));
          req.destroy();
          return gone;
        },
      });
    });
    req.on('error', reject);
  });
}

describe('hub API: telemetry', () => {
  it('lists recent telemetry, filtered by device, limited and after a sequence number', async () => {
    const e1 = send('t-a', '{"temp":20}');
    const e2 = send('t-b', Buffer.from([0xff, 0x00, 0xfe]));
    const e3 = send('t-a', '{"temp":21}');
    const all = await f.request({ method: 'GET', url: `/homing/telemetry/recent?since=${e1.seq - 1}`, auth: 'service' });
    assert.equal(all.statusCode, 200);
    assert.equal(all.headers['content-type'], 'application/json; charset=utf-8');
    const rows = json(all) as unknown as TelemetryEvent[];
    assert.deepEqual(rows.map((e) => e.seq), [e1.seq, e2.seq, e3.seq]);
    assert.equal(rows[0]?.body, '{"temp":20}');
    assert.equal(rows[0]?.bodyEncoding, 'utf8');
    assert.equal(rows[1]?.bodyEncoding, 'base64');
    assert.equal(rows[1]?.body, Buffer.from([0xff, 0x00, 0xfe]).toString('base64'));
    const onlyA = json(await f.request({ method: 'GET', url: '/homing/telemetry/recent?deviceId=t-a&limit=1', auth: 'service' })) as unknown as TelemetryEvent[];
    assert.deepEqual(onlyA.map((e) => e.seq), [e3.seq]);
    const counts = await f.request({ method: 'GET', url: '/homing/telemetry/counts/t-a', auth: 'service' });
    assert.deepEqual(jsonObject(counts), { deviceId: 't-a', messages: 2 });
  });

  it('streams the backlog after ?since, then live events, with id: = seq', async () => {
    const first = send('t-a', 'one');
    const second = send('t-b', 'two');
    const c = await openStream(`/homing/telemetry/stream?since=${first.seq - 1}&api-version=1`);
    assert.equal(c.status, 200);
    assert.equal(c.headers['content-type'], 'text/event-stream; charset=utf-8');
    assert.equal(c.headers['cache-control'], 'no-cache, no-transform');
    await c.waitFor((t) => t.includes(`id: ${second.seq}\n`));
    const third = send('t-a', 'three');
    await c.waitFor((t) => t.includes(`id: ${third.seq}\n`));
    assert.deepEqual(c.events().map((e) => [e.id, e.data.body]), [[String(first.seq), 'one'], [String(second.seq), 'two'], [String(third.seq), 'three']]);
    assert.equal(c.events()[0]?.data.deviceId, 't-a');
    await c.close();
  });

  it('resumes after Last-Event-ID, filters by deviceId and sends heartbeats', async () => {
    const a1 = send('t-a', 'a1');
    send('t-b', 'b1');
    const a2 = send('t-a', 'a2');
    const c = await openStream('/homing/telemetry/stream?deviceId=t-a&since=0', { 'last-event-id': String(a1.seq) });
    await c.waitFor((t) => t.includes(`id: ${a2.seq}\n`));
    send('t-b', 'b2');
    const a3 = send('t-a', 'a3');
    await c.waitFor((t) => t.includes(`id: ${a3.seq}\n`));
    assert.deepEqual(c.events().map((e) => e.data.body), ['a2', 'a3']);
    await c.waitFor((t) => t.includes(': heartbeat\n\n'));
    await c.close();
  });

  it('sends only live events without since, and unsubscribes when the client goes away', async () => {
    const before = live;
    const old = send('t-a', 'old');
    const c = await openStream('/homing/telemetry/stream');
    await c.waitFor((t) => t.includes(': connected'));
    assert.equal(live, before + 1);
    const fresh = send('t-a', 'fresh');
    await c.waitFor((t) => t.includes(`id: ${fresh.seq}\n`));
    assert.deepEqual(c.events().map((e) => e.id), [String(fresh.seq)]);
    assert.notEqual(old.seq, fresh.seq);
    await c.close();
    assert.equal(live, before);
  });

  it('refuses streams without ServiceConnect', async () => {
    const c = await openStream('/homing/telemetry/stream', { authorization: f.sas('registryReadWrite') });
    assert.equal(c.status, 401);
    assert.equal(c.headers['content-type'], 'application/json; charset=utf-8');
    await c.ended;
    const none = await f.request({ method: 'GET', url: '/homing/telemetry/stream', auth: null });
    assert.equal(none.statusCode, 401);
  });

  it('ends open streams when the server closes', async () => {
    const before = live;
    const c = await openStream('/homing/telemetry/stream');
    await c.waitFor((t) => t.includes(': connected'));
    await f.app.close();
    await c.ended;
    assert.equal(live, before);
  });
});

import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';
import { deviceId, devicePassword, deviceUsername } from './mqtt-devices.ts';
import { emit, serveParent } from './mqtt-proc.ts';
import { percentile } from './mqtt-stats.ts';

/**
 * The load side of the MQTT benches, in its own (pinned) process: raw TLS sockets + mqtt-packet (a lighter client
 * than MQTT.js, so one client core drives more server work), noDelay on every socket.
 */
let ctx: SecureContext | undefined;

interface Target {
  port: number;
  ca: string;
}

function secureContext(ca: string): SecureContext {
  ctx ??= createSecureContext({ ca });
  return ctx;
}

/** One raw MQTT connection: packets go to `onPacket`. */
class Conn {
  readonly socket: TLSSocket;
  onPacket: (p: Packet) => void = () => undefined;
  onClose: () => void = () => undefined;
  private readonly parser = createParser();

  constructor(t: Target, onReady: () => void, onError: (e: Error) => void, localAddress?: string) {
    this.socket = tlsConnect({ host: '127.0.0.1', port: t.port, servername: 'localhost', secureContext: secureContext(t.ca), ...(localAddress ? { localAddress } : {}) }, onReady);
    this.socket.setNoDelay(true);
    this.parser.on('packet', (p: Packet) => this.onPacket(p));
    this.parser.on('error', (e: Error) => {
      onError(e);
      this.socket.destroy();
    });
    this.socket.on('data', (c: Buffer) => this.parser.parse(c));
    this.socket.on('error', onError);
    this.socket.on('close', () => this.onClose());
  }

  send(p: Packet): void {
    this.socket.write(generate(p));
  }

  sendConnect(id: string, clean: boolean): void {
    this.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: id, clean, keepalive: 0, username: deviceUsername(id), password: Buffer.from(devicePassword(id)) });
  }
}

/** CONNECT/CONNACK/DISCONNECT loops: `concurrency` loops over device ids until the deadline or `maxConnects`. */
async function connectLoop(m: Target & { concurrency: number; durationMs: number; maxConnects: number; devices: number }): Promise<Record<string, number>> {
  let completed = 0;
  let errors = 0;
  let refused = 0;
  let next = 0;
  const started = performance.now();
  const deadline = started + m.durationMs;
  const lat: number[] = [];
  const loop = () =>
    new Promise<void>((resolve) => {
      const one = () => {
        if (performance.now() >= deadline || completed + errors >= m.maxConnects) {
          resolve();
          return;
        }
        const id = deviceId(next++ % m.devices);
        const t0 = performance.now();
        let done = false;
        const finish = (ok: boolean) => {
          if (done) return;
          done = true;
          if (ok) completed++;
          else errors++;
        };
        const c = new Conn(m, () => c.sendConnect(id, true), () => finish(false));
        c.onPacket = (p) => {
          if (p.cmd !== 'connack') return;
          if (p.returnCode !== 0) refused++;
          lat.push(performance.now() - t0);
          c.send({ cmd: 'disconnect' });
          c.socket.end();
          finish(p.returnCode === 0);
        };
        c.onClose = () => {
          finish(false);
          setImmediate(one);
        };
      };
      one();
    });
  await Promise.all(Array.from({ length: m.concurrency }, loop));
  const elapsedMs = performance.now() - started;
  lat.sort((a, b) => a - b);
  return { completed, errors, refused, elapsedMs, p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99) };
}

/** Idle connections kept open by this process (memory bench). */
const idle: Conn[] = [];

async function openIdle(m: Target & { from: number; to: number; concurrency: number; localAddresses: string[] }): Promise<Record<string, number>> {
  let next = m.from;
  let opened = 0;
  let failed = 0;
  const started = performance.now();
  let lastReport = started;
  const loop = () =>
    new Promise<void>((resolve) => {
      const one = () => {
        if (next >= m.to) {
          resolve();
          return;
        }
        const i = next++;
        const id = deviceId(i);
        let settled = false;
        const settle = (ok: boolean) => {
          if (settled) return;
          settled = true;
          if (ok) opened++;
          else failed++;
          const now = performance.now();
          if (now - lastReport > 2000) {
            lastReport = now;
            emit({ event: 'progress', opened, failed });
          }
          setImmediate(one);
        };
        const local = m.localAddresses[i % m.localAddresses.length];
        const c = new Conn(m, () => c.sendConnect(id, false), () => settle(false), local);
        c.onPacket = (p) => {
          if (p.cmd === 'connack') {
            if (p.returnCode === 0) idle.push(c);
            else c.socket.destroy();
            settle(p.returnCode === 0);
          }
        };
        c.onClose = () => settle(false);
      };
      one();
    });
  await Promise.all(Array.from({ length: m.concurrency }, loop));
  return { opened, failed, elapsedMs: performance.now() - started, open: idle.filter((c) => !c.socket.destroyed).length };
}

/** Twin round-trip bench: devices connected first (twinConnect), then `twinRun` keeps one reported patch in flight each. */
const twin: Conn[] = [];

async function twinConnect(m: Target & { devices: number; concurrency: number }): Promise<Record<string, number>> {
  let next = 0;
  let failed = 0;
  const loop = () =>
    new Promise<void>((resolve) => {
      const one = () => {
        if (next >= m.devices) {
          resolve();
          return;
        }
        const id = deviceId(next++);
        const c = new Conn(m, () => c.sendConnect(id, true), () => undefined);
        c.onPacket = (p) => {
          if (p.cmd === 'connack') {
            if (p.returnCode !== 0) {
              failed++;
              setImmediate(one);
              return;
            }
            c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$iothub/twin/res/#', qos: 0 }] });
          } else if (p.cmd === 'suback') {
            twin.push(c);
            setImmediate(one);
          }
        };
      };
      one();
    });
  await Promise.all(Array.from({ length: m.concurrency }, loop));
  return { connected: twin.length, failed };
}

async function twinRun(m: { durationMs: number; maxRoundTrips: number }): Promise<Record<string, number>> {
  const lat: number[] = [];
  let errors = 0;
  let total = 0;
  const started = performance.now();
  const deadline = started + m.durationMs;
  await Promise.all(
    twin.map(
      (c, idx) =>
        new Promise<void>((resolve) => {
          let seq = 0;
          let t0 = 0;
          let rid = '';
          const send = () => {
            if (performance.now() >= deadline || total >= m.maxRoundTrips || c.socket.destroyed) {
              c.onPacket = () => undefined;
              resolve();
              return;
            }
            seq++;
            total++;
            rid = `${idx}-${seq}`;
            t0 = performance.now();
            c.send({ cmd: 'publish', topic: `$iothub/twin/PATCH/properties/reported/?$rid=${rid}`, payload: `{"temperature":${20 + (seq % 10)},"seq":${seq},"status":{"fw":"1.2.3","ok":true}}`, qos: 0, dup: false, retain: false });
          };
          c.onPacket = (p) => {
            if (p.cmd !== 'publish' || !p.topic.startsWith('$iothub/twin/res/')) return;
            if (!p.topic.includes(`$rid=${rid}&`) && !p.topic.endsWith(`$rid=${rid}`)) return;
            if (!p.topic.startsWith('$iothub/twin/res/204/')) errors++;
            lat.push(performance.now() - t0);
            send();
          };
          c.onClose = () => resolve();
          send();
        }),
    ),
  );
  const elapsedMs = performance.now() - started;
  lat.sort((a, b) => a - b);
  return { roundTrips: lat.length, errors, elapsedMs, p50Ms: percentile(lat, 50), p90Ms: percentile(lat, 90), p99Ms: percentile(lat, 99), maxMs: lat.at(-1) ?? NaN };
}

serveParent(async (m) => {
  switch (m.cmd) {
    case 'connectLoop':
      return connectLoop(m as unknown as Parameters<typeof connectLoop>[0]);
    case 'openIdle':
      return openIdle(m as unknown as Parameters<typeof openIdle>[0]);
    case 'twinConnect':
      return twinConnect(m as unknown as Parameters<typeof twinConnect>[0]);
    case 'twinRun':
      return twinRun(m as unknown as Parameters<typeof twinRun>[0]);
    case 'closeAll':
      for (const c of [...idle, ...twin]) c.socket.destroy();
      return { closed: idle.length + twin.length };
    default:
      throw new Error(`unknown command ${String(m.cmd)}`);
  }
});

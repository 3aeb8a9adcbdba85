import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { generate, parser as createParser, type IConnackPacket, type Packet } from 'mqtt-packet';
import { openStore } from '../../../src/store/open.ts';
import type { Store } from '../../../src/store/ports.ts';
import { HubService } from '../../../src/hub/hub-service.ts';
import { systemClock, type Clock } from '../../../src/core/clock.ts';
import { buildSas, strictEncode } from '../../../src/core/sas.ts';
import { silentLogger, type Logger } from '../../../src/observability/logger.ts';
import { Metrics } from '../../../src/observability/metrics.ts';
import { createHubRealm, startMqttListener, type MqttListener, type MqttListenerOptions } from '../../../src/transport/mqtt/listener.ts';
import { createTestPki, type TestPki } from '../../helpers/pki.ts';
import { realIds } from '../../helpers/ids.ts';

export const HUB_HOST = 'hub-test.local';

/** Fails with `label` when `p` does not settle within `ms`. */
export async function within<T>(p: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves on the first `event` of `emitter` (with its first argument). */
export function once<T = unknown>(emitter: { once(event: string, fn: (arg: T) => void): unknown }, event: string): Promise<T> {
  return new Promise<T>((resolve) => emitter.once(event, resolve));
}

export interface TestHub {
  pki: TestPki;
  store: Store;
  hub: HubService;
  listener: MqttListener;
  port: number;
  /** The hub's host names; tests may push `127.0.0.1:<port>` after listening. */
  hostNames: string[];
  metrics: Metrics;
  addSasDevice(deviceId: string, status?: 'enabled' | 'disabled'): Promise<string>;
  close(): Promise<void>;
}

let sharedPki: Promise<TestPki> | undefined;

/** One CA + server certificate per test process (issuing costs a few ms each). */
export function testPki(): Promise<TestPki> {
  sharedPki ??= createTestPki();
  return sharedPki;
}

/** A hub on an in-memory SQLite store behind a real MQTT/TLS listener on 127.0.0.1:0. */
export async function startTestHub(opts: { clock?: Clock; listener?: Partial<MqttListenerOptions>; logger?: Logger } = {}): Promise<TestHub> {
  const pki = await testPki();
  const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  const hostNames = [HUB_HOST];
  const hub = new HubService({ hubId: HUB_HOST, hostNames, policies: [], store: store.hub, clock: opts.clock ?? systemClock, ids: realIds });
  const metrics = new Metrics();
  const listener = await startMqttListener({
    host: '127.0.0.1',
    port: 0,
    tls: { cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true },
    realms: [createHubRealm(hub)],
    logger: opts.logger ?? silentLogger(),
    metrics,
    ...opts.listener,
  });
  const port = listener.address().port;
  hostNames.push(`127.0.0.1:${port}`);
  return {
    pki,
    store,
    hub,
    listener,
    port,
    hostNames,
    metrics,
    async addSasDevice(deviceId, status = 'enabled') {
      const d = await hub.createDevice({ deviceId, status, authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } } }, deviceId);
      const key = d.authentication.symmetricKey.primaryKey;
      if (!key) throw new Error('no key generated');
      return key;
    },
    async close() {
      await listener.close();
      hub.close();
      await store.close();
    },
  };
}

/** A device SAS token as the Node device SDK builds it (sr URL-encoded and signed encoded). */
export function deviceSas(deviceId: string, key: string, opts: { host?: string; expiry?: number } = {}): string {
  const sr = strictEncode(`${opts.host ?? HUB_HOST}/devices/${deviceId}`);
  return buildSas({ sr, keyBase64: key, expirySeconds: opts.expiry ?? Math.floor(Date.now() / 1000) + 3600 });
}

export function deviceUsername(deviceId: string, host = HUB_HOST): string {
  return `${host}/${deviceId}/?api-version=2021-04-12&DeviceClientType=homing-test`;
}

/**
 * A raw MQTT client: a TLS socket plus mqtt-packet, for edge cases MQTT.js will not produce. Received packets are
 * queued; `next()` waits for the next one (bounded).
 */
export class RawClient {
  readonly packets: Packet[] = [];
  private waiters: (() => void)[] = [];
  private isClosed = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: TLSSocket) {
    socket.setNoDelay(true);
    const p = createParser();
    p.on('packet', (pk: Packet) => {
      this.packets.push(pk);
      this.wake();
    });
    p.on('error', () => socket.destroy());
    socket.on('data', (c: Buffer) => p.parse(c));
    socket.on('error', () => undefined);
    this.closed = new Promise<void>((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  /** TLS to `host` (default 127.0.0.1, certificate name localhost). */
  static connect(port: number, ca: string, creds: { cert?: string; key?: string; host?: string; servername?: string } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost', ...creds }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  send(p: Packet): void {
    this.socket.write(generate(p));
  }

  sendBytes(b: Buffer): void {
    this.socket.write(b);
  }

  /** The next packet (matching `cmd` if given; others are skipped). Rejects when the socket closes first. */
  async next(cmd?: Packet['cmd'], ms = 5000): Promise<Packet> {
    const find = (): Packet | undefined => {
      while (this.packets.length > 0) {
        const p = this.packets.shift() as Packet;
        if (cmd === undefined || p.cmd === cmd) return p;
      }
      return undefined;
    };
    return within(
      new Promise<Packet>((resolve, reject) => {
        const check = () => {
          const p = find();
          if (p) resolve(p);
          else if (this.isClosed) reject(new Error(`connection closed while waiting for ${cmd ?? 'a packet'}`));
          else this.waiters.push(check);
        };
        check();
      }),
      ms,
      `waiting for ${cmd ?? 'a packet'}`,
    );
  }

  /** Sends CONNECT and returns the CONNACK. */
  async connect(o: { clientId: string; username?: string; password?: string; clean?: boolean; keepalive?: number; protocolVersion?: 3 | 4 | 5 }): Promise<IConnackPacket> {
    this.send({
      cmd: 'connect',
      protocolId: o.protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
      protocolVersion: o.protocolVersion ?? 4,
      clientId: o.clientId,
      clean: o.clean ?? true,
      keepalive: o.keepalive ?? 0,
      ...(o.username === undefined ? {} : { username: o.username }),
      ...(o.password === undefined ? {} : { password: Buffer.from(o.password) }),
    });
    const ack = await this.next('connack');
    if (ack.cmd !== 'connack') throw new Error(`expected CONNACK, got ${ack.cmd}`);
    return ack;
  }

  waitClosed(ms = 5000, label = 'server closes the connection'): Promise<void> {
    return within(this.closed, ms, label);
  }

  end(): void {
    this.socket.destroy();
  }
}

/** Opens a raw client and connects it as a SAS device; asserts CONNACK 0. */
export async function connectDevice(t: TestHub, deviceId: string, key: string, o: { clean?: boolean; keepalive?: number } = {}): Promise<RawClient> {
  const c = await RawClient.connect(t.port, t.pki.ca.certPem);
  const ack = await c.connect({ clientId: deviceId, username: deviceUsername(deviceId), password: deviceSas(deviceId, key), ...o });
  if (ack.returnCode !== 0) {
    c.end();
    throw new Error(`CONNACK ${String(ack.returnCode)}`);
  }
  return c;
}

let rid = 0;
export function nextRid(): string {
  return `r${++rid}`;
}

import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { generate, parser as createParser, type IConnectPacket, type IPublishPacket, type Packet } from 'mqtt-packet';
import { within } from './fake-runtime.ts';

/**
 * A scripted MQTT 3.1.1 server over TLS (127.0.0.1, port 0) built on mqtt-packet: it answers CONNECT with the
 * return code `onConnect` picks, acknowledges SUBSCRIBE/UNSUBSCRIBE/QoS 1 PUBLISH/PINGREQ, and hands every PUBLISH
 * to `onPublish`. Sockets use noDelay.
 */
export class FakeMqttServer {
  readonly connections: FakeMqttConnection[] = [];
  onConnect: (p: IConnectPacket, c: FakeMqttConnection) => number = () => 0;
  onPublish: (p: IPublishPacket, c: FakeMqttConnection) => void = () => undefined;
  /** Answer to SUBSCRIBE (granted QoS per filter); default grants what was asked. */
  grant: (topic: string, qos: number) => number = (_t, qos) => qos;
  private waiters: (() => void)[] = [];
  private taken = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(tls: { cert: string; key: string; ca: string }): Promise<FakeMqttServer> {
    const ref: { self?: FakeMqttServer } = {};
    const server = createServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, (socket) => {
      socket.setNoDelay(true);
      if (ref.self) ref.self.accept(socket);
      else socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const self = new FakeMqttServer(server, (server.address() as AddressInfo).port);
    ref.self = self;
    return self;
  }

  private accept(socket: TLSSocket): void {
    const conn = new FakeMqttConnection(socket, this);
    conn.ready.then(
      () => {
        this.connections.push(conn);
        this.wake();
      },
      () => undefined,
    );
  }

  /** Resolves with the next connection that sent CONNECT (accepted or not), in order. */
  nextConnection(realMs = 10_000): Promise<FakeMqttConnection> {
    return within(
      new Promise<FakeMqttConnection>((resolve) => {
        const check = (): void => {
          const c = this.connections[this.taken];
          if (c) {
            this.taken++;
            resolve(c);
          } else this.waiters.push(check);
        };
        check();
      }),
      realMs,
      'waiting for an MQTT connection',
    );
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** @internal */
  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}

export class FakeMqttConnection {
  connect: IConnectPacket | undefined;
  returnCode: number | undefined;
  readonly publishes: IPublishPacket[] = [];
  readonly subscriptions: { topic: string; qos: number }[] = [];
  readonly unsubscriptions: string[] = [];
  readonly clientCertCN: string | undefined;
  readonly ready: Promise<void>;
  readonly closed: Promise<void>;
  private isClosed = false;
  private waiters: (() => void)[] = [];
  private readCursor = 0;
  private nextMessageId = 1;

  constructor(
    private readonly socket: TLSSocket,
    private readonly server: FakeMqttServer,
  ) {
    const peer = socket.getPeerCertificate();
    const cn = peer && typeof peer.subject === 'object' && peer.subject ? peer.subject.CN : undefined;
    this.clientCertCN = typeof cn === 'string' ? cn : undefined;
    let markReady!: () => void;
    let failReady!: (e: Error) => void;
    this.ready = new Promise<void>((res, rej) => {
      markReady = res;
      failReady = rej;
    });
    this.ready.catch(() => undefined);
    this.closed = new Promise<void>((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        failReady(new Error('closed before CONNECT'));
        this.wake();
        resolve();
      }),
    );
    const p = createParser();
    p.on('packet', (pk: Packet) => this.onPacket(pk, markReady));
    p.on('error', () => socket.destroy());
    socket.on('data', (c: Buffer) => p.parse(c));
    socket.on('error', () => undefined);
  }

  get open(): boolean {
    return !this.isClosed;
  }

  private onPacket(pk: Packet, markReady: () => void): void {
    switch (pk.cmd) {
      case 'connect': {
        this.connect = pk;
        const rc = this.server.onConnect(pk, this);
        this.returnCode = rc;
        this.send({ cmd: 'connack', returnCode: rc, sessionPresent: false });
        markReady();
        if (rc !== 0) this.socket.end();
        break;
      }
      case 'subscribe':
        for (const s of pk.subscriptions) this.subscriptions.push({ topic: s.topic, qos: s.qos });
        this.send({ cmd: 'suback', messageId: pk.messageId, granted: pk.subscriptions.map((s) => this.server.grant(s.topic, s.qos)) });
        break;
      case 'unsubscribe':
        this.unsubscriptions.push(...pk.unsubscriptions);
        this.send({ cmd: 'unsuback', messageId: pk.messageId ?? 0, granted: [] });
        break;
      case 'publish':
        this.publishes.push(pk);
        if (pk.qos === 1 && pk.messageId !== undefined) this.send({ cmd: 'puback', messageId: pk.messageId });
        this.server.onPublish(pk, this);
        break;
      case 'pingreq':
        this.send({ cmd: 'pingresp' });
        break;
      case 'disconnect':
        this.socket.end();
        break;
      default:
        break;
    }
    this.wake();
  }

  send(p: Packet): void {
    if (!this.isClosed) this.socket.write(generate(p));
  }

  /** Publishes to the client (QoS 0 or 1). */
  publish(topic: string, payload: string | Buffer, qos: 0 | 1 = 0): void {
    this.send({
      cmd: 'publish',
      topic,
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
      qos,
      retain: false,
      dup: false,
      ...(qos === 1 ? { messageId: this.nextMessageId++ } : {}),
    });
  }

  /** The next PUBLISH from the client matching `pred`, not returned before (bounded in real time). */
  nextPublish(pred: (p: IPublishPacket) => boolean = () => true, realMs = 10_000): Promise<IPublishPacket> {
    return within(
      new Promise<IPublishPacket>((resolve, reject) => {
        const check = (): void => {
          while (this.readCursor < this.publishes.length) {
            const p = this.publishes[this.readCursor++];
            if (p && pred(p)) {
              resolve(p);
              return;
            }
          }
          if (this.isClosed) reject(new Error('connection closed while waiting for a PUBLISH'));
          else this.waiters.push(check);
        };
        check();
      }),
      realMs,
      'waiting for a PUBLISH',
    );
  }

  /** Resolves once `n` subscriptions have arrived. */
  waitSubscriptions(n: number, realMs = 10_000): Promise<void> {
    return within(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (this.subscriptions.length >= n) resolve();
          else this.waiters.push(check);
        };
        check();
      }),
      realMs,
      `waiting for ${n} subscriptions`,
    );
  }

  /** Drops the TCP connection (no DISCONNECT: MQTT 3.1.1 servers have none). */
  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}

/** The `$rid` of a request topic. */
export function ridOf(topic: string): string {
  const m = /[?&]\$rid=([^&]*)/.exec(topic);
  if (!m || m[1] === undefined) throw new Error(`no $rid in ${topic}`);
  return decodeURIComponent(m[1]);
}

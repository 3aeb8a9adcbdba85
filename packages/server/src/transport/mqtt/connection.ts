import type { TLSSocket } from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import { generate, parser as createParser, type IConnectPacket, type IPublishPacket, type Packet, type Parser } from 'mqtt-packet';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import { peerChain } from '../tls/peer-chain.ts';
import { CONNACK, type ConnackCode } from './errors.ts';
import { FRAME_OK, FRAME_TOO_LARGE, FrameGuard } from './frame-guard.ts';
import type { ConnectOutcome, ConnectRequest, MqttLink, MqttRealm, PublishOutcome, RealmSession } from './realm.ts';

/**
 * One mqtt-packet parser shared by all connections of a listener. A chunk that ends exactly at a packet boundary
 * (the frame guard knows) is parsed here synchronously and leaves nothing behind, so idle connections hold no
 * parser (about 1.7 KB of heap each). Only a connection with a partial packet pending gets its own parser, until
 * the packet is complete.
 */
export class SharedParser {
  private parser: Parser;
  private current: MqttConnection | undefined;

  constructor() {
    this.parser = this.create();
  }

  private create(): Parser {
    const p = createParser();
    p.on('packet', (pk: Packet) => this.current?.onPacket(pk));
    p.on('error', (e: unknown) => this.current?.onParseError(e));
    return p;
  }

  /** Parses a chunk that ends at a packet boundary. Returns false when bytes were left over (a framing mismatch). */
  parse(conn: MqttConnection, chunk: Buffer): boolean {
    this.current = conn;
    let left: number;
    try {
      left = this.parser.parse(chunk);
    } finally {
      this.current = undefined;
    }
    if (left > 0) {
      // Never let one connection's bytes reach the next one.
      this.parser = this.create();
      return false;
    }
    return true;
  }
}

/** What connections share with their listener. One object per listener, never per connection. */
export interface ConnectionHost {
  readonly parser: SharedParser;
  readonly realms: readonly MqttRealm[];
  readonly log: Logger;
  readonly metrics: Metrics | undefined;
  /** Largest accepted "remaining length" of a packet. */
  readonly maxPacketBytes: number;
  /** Outgoing bytes a client may leave unread before it is dropped. */
  readonly maxWriteBufferBytes: number;
  /** Async publish handlers in flight per connection before the socket is paused. */
  readonly maxInflight: number;
  /** Packets a client may send after CONNECT while it is being authenticated. */
  readonly maxQueuedPackets: number;
  readonly connectTimeoutMs: number;
  /** How long a connection may stay half-closed (waiting for the client's FIN) before it is destroyed. */
  readonly closeGraceMs: number;
  /** Called once the socket is closed. */
  removed(conn: MqttConnection): void;
}

const AWAIT_CONNECT = 0;
const CONNECTING = 1;
const OPEN = 2;
const CLOSING = 3;
const CLOSED = 4;
type State = typeof AWAIT_CONNECT | typeof CONNECTING | typeof OPEN | typeof CLOSING | typeof CLOSED;

let nextConnectionId = 0;

/** Socket event handlers are shared functions that find their connection through this property (no closures). */
const kConnection = Symbol('mqttConnection');
interface ConnectionSocket extends TLSSocket {
  [kConnection]?: MqttConnection;
}

function onSocketData(this: ConnectionSocket, chunk: Buffer): void {
  this[kConnection]?.onData(chunk);
}

function onSocketError(this: ConnectionSocket, e: Error): void {
  this[kConnection]?.onSocketError(e);
}

function onSocketClose(this: ConnectionSocket): void {
  this[kConnection]?.onSocketClose();
}

/**
 * One MQTT 3.1.1 connection over a TLS socket: packet I/O with mqtt-packet, the CONNECT handshake, keepalive
 * bookkeeping (checked by the listener's sweep), limits, and the lifecycle. Everything topic-related belongs to the
 * realm session. Errors never escape an event handler: they close the connection.
 */
export class MqttConnection implements MqttLink {
  readonly id = ++nextConnectionId;
  private state: State = AWAIT_CONNECT;
  /** Date.now() of the last state change (connect and close deadlines). */
  private stateSince: number;
  /** Date.now() of the last bytes received. */
  private lastSeen: number;
  /** Silence allowed before the connection is dropped: 1.5 x keepalive; 0 = unlimited. */
  private idleLimitMs = 0;
  /** Only while a partial packet is pending; see SharedParser. */
  private ownParser: Parser | undefined;
  private readonly guard: FrameGuard;
  private session: RealmSession | undefined;
  private sessionClosed = false;
  private queue: Packet[] | undefined;
  private inflight = 0;
  private pausedForInflight = false;
  private nextMessageId = 0;

  constructor(
    private readonly socket: TLSSocket,
    private readonly host: ConnectionHost,
    now: number,
  ) {
    this.stateSince = now;
    this.lastSeen = now;
    this.guard = new FrameGuard(host.maxPacketBytes);
    const s = socket as ConnectionSocket;
    s[kConnection] = this;
    s.on('data', onSocketData);
    s.on('error', onSocketError);
    s.on('close', onSocketClose);
  }

  // ------------------------------------------------------------------------------------------ MqttLink

  get log(): Logger {
    return this.host.log;
  }

  get metrics(): Metrics | undefined {
    return this.host.metrics;
  }

  get closed(): boolean {
    return this.state >= CLOSING;
  }

  publish(topic: string, payload: Buffer | string, qos: 0 | 1 = 0): void {
    if (this.state !== OPEN) return;
    if (qos === 1) {
      this.nextMessageId = (this.nextMessageId % 0xffff) + 1;
      this.write({ cmd: 'publish', topic, payload, qos: 1, dup: false, retain: false, messageId: this.nextMessageId });
    } else {
      this.write({ cmd: 'publish', topic, payload, qos: 0, dup: false, retain: false });
    }
  }

  /** Graceful close: pending writes are flushed, then the socket ends (destroyed by the sweep if the peer lingers). */
  close(reason: string): void {
    if (this.state >= CLOSING) return;
    this.log.debug({ conn: this.id, reason }, 'mqtt connection closing');
    this.state = CLOSING;
    this.stateSince = Date.now();
    this.endSession(reason);
    this.socket.end();
    // Keep reading (and ignoring) so the client's FIN is seen even if input was paused.
    this.socket.resume();
  }

  // ------------------------------------------------------------------------------------------ listener side

  /** Called by the listener's periodic sweep: enforces the CONNECT deadline, keepalive and close grace. */
  sweep(now: number): void {
    switch (this.state) {
      case AWAIT_CONNECT:
      case CONNECTING:
        if (now - this.stateSince > this.host.connectTimeoutMs) this.destroy('no CONNECT/CONNACK within the connect timeout');
        break;
      case OPEN:
        if (this.idleLimitMs > 0 && now - this.lastSeen > this.idleLimitMs) this.destroy('keepalive timeout');
        break;
      case CLOSING:
        if (now - this.stateSince > this.host.closeGraceMs) this.destroy('close grace elapsed');
        break;
      default:
        break;
    }
  }

  /** Immediate close, without flushing. */
  destroy(reason: string): void {
    if (this.state === CLOSED) return;
    if (this.state < CLOSING) this.log.debug({ conn: this.id, reason }, 'mqtt connection dropped');
    this.state = CLOSING;
    this.endSession(reason);
    this.socket.destroy();
  }

  // ------------------------------------------------------------------------------------------ input

  /** @internal socket 'data' */
  onData(chunk: Buffer): void {
    if (this.state >= CLOSING) return;
    this.lastSeen = Date.now();
    const verdict = this.guard.feed(chunk);
    if (verdict !== FRAME_OK) {
      this.violation(verdict === FRAME_TOO_LARGE ? 'packet larger than the limit' : 'malformed packet length');
      return;
    }
    try {
      if (this.ownParser === undefined && this.guard.atBoundary()) {
        if (!this.host.parser.parse(this, chunk)) this.violation('packet framing mismatch');
        return;
      }
      this.ownParser ??= this.createOwnParser();
      const left = this.ownParser.parse(chunk);
      if (left === 0 && this.guard.atBoundary()) this.ownParser = undefined;
    } catch (e) {
      this.violation('packet parsing failed', e);
    }
  }

  private createOwnParser(): Parser {
    const p = createParser();
    p.on('packet', (pk: Packet) => this.onPacket(pk));
    p.on('error', (e: unknown) => this.onParseError(e));
    return p;
  }

  /** @internal parser 'error' */
  onParseError(e: unknown): void {
    this.violation('malformed packet', e);
  }

  /** @internal parser 'packet' */
  onPacket(p: Packet): void {
    if (this.state >= CLOSING) return;
    try {
      switch (this.state) {
        case AWAIT_CONNECT:
          if (p.cmd !== 'connect') this.violation(`${p.cmd} before CONNECT`);
          else this.onConnect(p);
          break;
        case CONNECTING:
          if (p.cmd === 'connect') {
            this.violation('second CONNECT');
          } else {
            this.queue ??= [];
            if (this.queue.length >= this.host.maxQueuedPackets) this.violation('too many packets before CONNACK');
            else this.queue.push(p);
          }
          break;
        default:
          this.dispatch(p);
      }
    } catch (e) {
      this.violation('packet handler failed', e);
    }
  }

  private onConnect(p: IConnectPacket): void {
    this.state = CONNECTING;
    this.stateSince = Date.now();
    if (p.protocolVersion !== 4) {
      this.refuse(CONNACK.unacceptableProtocolVersion, `protocol level ${String(p.protocolVersion)}`);
      return;
    }
    const socket = this.socket;
    const req: ConnectRequest = {
      clientId: p.clientId,
      username: p.username,
      password: p.password,
      clean: p.clean !== false,
      keepalive: p.keepalive ?? 0,
      peerCertificate: () => peerCertificate(socket),
      peerChain: () => peerChain(socket),
      remoteAddress: socket.remoteAddress,
    };
    if (req.keepalive > 0) this.idleLimitMs = req.keepalive * 1500;
    const realm = this.host.realms.find((r) => r.claims(req));
    if (!realm) {
      this.refuse(CONNACK.badUsernameOrPassword, 'no realm for this username');
      return;
    }
    // Hold further input while authenticating; packets already received are queued.
    socket.pause();
    realm.connect(req, this).then(
      (outcome) => this.onConnectOutcome(outcome, realm),
      (e: unknown) => {
        try {
          this.log.error({ err: e, conn: this.id, realm: realm.name }, 'mqtt realm connect failed');
          this.refuse(CONNACK.serverUnavailable, 'realm connect failed');
        } catch {
          this.destroy('realm connect failed');
        }
      },
    );
  }

  private onConnectOutcome(outcome: ConnectOutcome, realm: MqttRealm): void {
    try {
      if (!outcome.ok) {
        this.refuse(outcome.returnCode, outcome.reason, realm.name);
        return;
      }
      this.session = outcome.session;
      if (this.state !== CONNECTING) {
        // The socket closed (or timed out) while the realm authenticated: the session still ends exactly once.
        this.endSession('closed during CONNECT');
        return;
      }
      this.state = OPEN;
      this.host.metrics?.mqttConnects.inc({ result: 'accepted' });
      this.write({ cmd: 'connack', returnCode: CONNACK.accepted, sessionPresent: outcome.sessionPresent });
      outcome.session.opened?.();
      const queued = this.queue;
      this.queue = undefined;
      if (queued) for (const p of queued) if (this.state === OPEN) this.dispatch(p);
      if (this.state === OPEN) this.socket.resume();
    } catch (e) {
      this.violation('connect completion failed', e);
    }
  }

  private refuse(code: Exclude<ConnackCode, 0>, reason: string, realm?: string): void {
    if (this.state >= CLOSING) return;
    this.host.metrics?.mqttConnects.inc({ result: 'refused' });
    this.log.debug({ conn: this.id, returnCode: code, reason, realm, remote: this.socket.remoteAddress }, 'mqtt connect refused');
    this.write({ cmd: 'connack', returnCode: code, sessionPresent: false });
    this.close(reason);
  }

  private dispatch(p: Packet): void {
    const session = this.session;
    if (!session) return;
    switch (p.cmd) {
      case 'publish':
        this.onPublish(session, p);
        break;
      case 'subscribe': {
        const granted = session.subscribe(p.subscriptions);
        this.write({ cmd: 'suback', messageId: p.messageId ?? 0, granted });
        break;
      }
      case 'unsubscribe':
        session.unsubscribe(p.unsubscriptions);
        this.write({ cmd: 'unsuback', messageId: p.messageId ?? 0, granted: [] });
        break;
      case 'puback':
        if (p.messageId !== undefined) session.puback(p.messageId);
        break;
      case 'pingreq':
        this.write({ cmd: 'pingresp' });
        break;
      case 'disconnect':
        this.close('client DISCONNECT');
        break;
      default:
        // CONNECT again, QoS 2 flow packets, server-only packets.
        this.violation(`unexpected ${p.cmd}`);
    }
  }

  private onPublish(session: RealmSession, p: IPublishPacket): void {
    if (p.qos === 2) {
      this.violation('QoS 2 is not supported');
      return;
    }
    const qos = p.qos;
    const messageId = p.messageId;
    const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload;
    const result = session.publish({ topic: p.topic, payload, qos });
    if (!isPromise(result)) {
      this.afterPublish(result, qos, messageId);
      return;
    }
    this.inflight++;
    if (this.inflight >= this.host.maxInflight && !this.pausedForInflight) {
      this.pausedForInflight = true;
      this.socket.pause();
    }
    result.then(
      (r) => {
        try {
          this.publishSettled();
          this.afterPublish(r, qos, messageId);
        } catch (e) {
          this.violation('publish completion failed', e);
        }
      },
      (e: unknown) => {
        try {
          this.publishSettled();
        } finally {
          this.violation('publish handler failed', e);
        }
      },
    );
  }

  private publishSettled(): void {
    this.inflight--;
    if (this.pausedForInflight && this.inflight < this.host.maxInflight) {
      this.pausedForInflight = false;
      if (this.state === OPEN) this.socket.resume();
    }
  }

  private afterPublish(r: PublishOutcome, qos: 0 | 1, messageId: number | undefined): void {
    if (this.state !== OPEN) return;
    if (r !== undefined) {
      this.log.debug({ conn: this.id, reason: r.close }, 'mqtt publish refused');
      this.close(r.close);
      return;
    }
    if (qos === 1) this.write({ cmd: 'puback', messageId: messageId ?? 0 });
  }

  // ------------------------------------------------------------------------------------------ output and lifecycle

  private write(p: Packet): void {
    if (this.state === CLOSED || this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.write(generate(p));
    if (this.socket.writableLength > this.host.maxWriteBufferBytes) this.destroy('client does not read its messages');
  }

  /** Protocol violations and malformed input: log without payloads or secrets, drop the socket. */
  private violation(reason: string, err?: unknown): void {
    if (this.state >= CLOSING) return;
    const detail = err instanceof Error ? err.message : undefined;
    if (this.state === AWAIT_CONNECT || this.state === CONNECTING) this.host.metrics?.mqttConnects.inc({ result: 'invalid' });
    this.log.warn({ conn: this.id, reason, detail, remote: this.socket.remoteAddress }, 'mqtt protocol violation; closing');
    this.destroy(reason);
  }

  /** @internal socket 'error' */
  onSocketError(e: Error): void {
    this.log.debug({ conn: this.id, err: e.message }, 'mqtt socket error');
  }

  /** @internal socket 'close' */
  onSocketClose(): void {
    const wasClosed = this.state === CLOSED;
    this.state = CLOSED;
    this.ownParser = undefined;
    this.queue = undefined;
    this.endSession('socket closed');
    (this.socket as ConnectionSocket)[kConnection] = undefined;
    if (!wasClosed) this.host.removed(this);
  }

  private endSession(reason: string): void {
    const s = this.session;
    if (!s || this.sessionClosed) return;
    this.sessionClosed = true;
    try {
      s.closed(reason);
    } catch (e) {
      this.log.error({ err: e, conn: this.id }, 'mqtt session close failed');
    }
  }
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}

function peerCertificate(socket: TLSSocket): X509Certificate | undefined {
  try {
    return socket.getPeerX509Certificate();
  } catch {
    return undefined;
  }
}

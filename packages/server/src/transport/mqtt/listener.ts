import { createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import { MqttConnection, SharedParser, type ConnectionHost } from './connection.ts';
import type { MqttRealm } from './realm.ts';

export { createHubRealm, type HubRealmOptions } from './hub/realm.ts';
export type { MqttRealm, RealmSession, MqttLink, ConnectRequest, ConnectOutcome, InboundPublish, PublishOutcome } from './realm.ts';

export interface MqttListenerOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /**
   * Server certificate. `requestCert` asks clients for a certificate (X.509 devices); it is never verified by TLS
   * (rejectUnauthorized is false): realms check thumbprints or chains themselves.
   */
  tls: { cert: string; key: string; ca?: string[]; requestCert?: boolean; secureOptions?: number };
  /** Who handles a CONNECT, chosen by username; the first realm that claims it wins. */
  realms: MqttRealm[];
  logger: Logger;
  metrics?: Metrics;
  /** Largest packet (remaining length) accepted; larger ones close the connection before they are buffered. Default 257 KiB. */
  maxPacketBytes?: number;
  /** CONNECT must arrive (and be answered) within this; also the TLS handshake timeout. Default 10 s. */
  connectTimeoutMs?: number;
  /** Period of the keepalive / deadline sweep. Default 1 s. */
  sweepIntervalMs?: number;
}

export interface MqttListener {
  address(): AddressInfo;
  /** Connections past the TLS handshake (authenticated or not). */
  connectionCount(): number;
  /** Stops accepting, ends every connection and resolves when the server is closed. */
  close(): Promise<void>;
}

export const DEFAULT_MAX_PACKET_BYTES = 256 * 1024 + 1024;

/** Starts an MQTT 3.1.1 over TLS listener (mqtt-packet codec, no broker: realms give topics their meaning). */
export async function startMqttListener(o: MqttListenerOptions): Promise<MqttListener> {
  const log = o.logger;
  const connections = new Set<MqttConnection>();
  /** Every accepted TCP socket, including those still in the TLS handshake, so close() can end them all. */
  const rawSockets = new Set<Socket>();
  const connectTimeoutMs = o.connectTimeoutMs ?? 10_000;

  const host: ConnectionHost = {
    parser: new SharedParser(),
    realms: [...o.realms],
    log,
    metrics: o.metrics,
    maxPacketBytes: o.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES,
    maxWriteBufferBytes: 4 * 1024 * 1024,
    maxInflight: 16,
    maxQueuedPackets: 32,
    connectTimeoutMs,
    closeGraceMs: 2_000,
    removed(conn) {
      connections.delete(conn);
      o.metrics?.mqttConnections.dec();
    },
  };

  const server = createServer({
    cert: o.tls.cert,
    key: o.tls.key,
    ...(o.tls.ca ? { ca: o.tls.ca } : {}),
    requestCert: o.tls.requestCert === true,
    ...(o.tls.secureOptions === undefined ? {} : { secureOptions: o.tls.secureOptions }),
    rejectUnauthorized: false,
    handshakeTimeout: connectTimeoutMs,
    noDelay: true,
  });

  function onRawClose(this: Socket): void {
    rawSockets.delete(this);
  }

  server.on('connection', (raw: Socket) => {
    rawSockets.add(raw);
    raw.on('close', onRawClose);
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    try {
      connections.add(new MqttConnection(socket, host, Date.now()));
      o.metrics?.mqttConnections.inc();
    } catch (e) {
      log.error({ err: e }, 'mqtt connection setup failed');
      socket.destroy();
    }
  });
  server.on('tlsClientError', (err: Error) => {
    log.debug({ err: err.message }, 'mqtt TLS handshake failed');
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    server.listen(o.port, o.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (e: Error) => log.error({ err: e }, 'mqtt listener error'));

  // One sweep per listener instead of a timer per connection: keepalive, CONNECT deadline, close grace.
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const c of connections) c.sweep(now);
  }, o.sweepIntervalMs ?? 1000);
  sweep.unref();

  const addr = server.address() as AddressInfo;
  log.info({ host: addr.address, port: addr.port, realms: o.realms.map((r) => r.name) }, 'mqtt listener started');

  let closing: Promise<void> | undefined;
  return {
    address: () => addr,
    connectionCount: () => connections.size,
    close() {
      closing ??= new Promise<void>((resolve) => {
        clearInterval(sweep);
        server.close(() => resolve());
        for (const c of [...connections]) c.destroy('listener closing');
        for (const s of [...rawSockets]) s.destroy();
      });
      return closing;
    },
  };
}

import { createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';

/**
 * The ceiling for the MQTT benches: a bare MQTT-over-TLS listener with the same TLS settings as the hub listener,
 * mqtt-packet for the codec, and no work at all: every CONNECT gets CONNACK 0, every SUBSCRIBE a SUBACK, a reported
 * PATCH is echoed at once as `$iothub/twin/res/204/?$rid=..&$version=1` (no store, no JSON), DISCONNECT ends the
 * socket.
 */
const REPORTED = '$iothub/twin/PATCH/properties/reported/?$rid=';
export async function startBareListener(o: { cert: string; key: string; requestCert: boolean }): Promise<{ port: number; close(): Promise<void>; count(): number }> {
  const sockets = new Set<TLSSocket>();
  const server = createServer({ cert: o.cert, key: o.key, requestCert: o.requestCert, rejectUnauthorized: false, noDelay: true, handshakeTimeout: 10_000 });
  server.on('secureConnection', (socket: TLSSocket) => {
    sockets.add(socket);
    const p = createParser();
    p.on('packet', (pk: Packet) => {
      if (pk.cmd === 'connect') socket.write(generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }));
      else if (pk.cmd === 'subscribe') socket.write(generate({ cmd: 'suback', messageId: pk.messageId ?? 0, granted: pk.subscriptions.map(() => 0) }));
      else if (pk.cmd === 'publish' && pk.topic.startsWith(REPORTED)) {
        socket.write(generate({ cmd: 'publish', topic: `$iothub/twin/res/204/?$rid=${pk.topic.slice(REPORTED.length)}&$version=1`, payload: '', qos: 0, dup: false, retain: false }));
      } else if (pk.cmd === 'pingreq') socket.write(generate({ cmd: 'pingresp' }));
      else if (pk.cmd === 'disconnect') socket.end();
    });
    p.on('error', () => socket.destroy());
    socket.on('data', (c: Buffer) => p.parse(c));
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    count: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

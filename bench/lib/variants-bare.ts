import { createServer as createHttpsServer } from 'node:https';
import { createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';

/**
 * Ceilings of bench/register-variants.ts, no work at all:
 * - a bare DPS MQTT/TLS listener (same TLS settings as the DPS listener: requestCert on, never verified by TLS;
 *   mqtt-packet): CONNACK 0, SUBACK, a register PUBLISH is answered at once with a fixed JSON on
 *   `$dps/registrations/res/200/?$rid=..` (PUBACK first when QoS 1), UNSUBACK, DISCONNECT ends the socket;
 * - a bare node:https server with requestCert + rejectUnauthorized (the client chain is verified against the device
 *   root CA by TLS) answering every request with a fixed JSON body.
 */
export const FIXED_BODY = JSON.stringify({
  operationId: '4.0123456789abcdef.00000000-0000-0000-0000-000000000000',
  status: 'assigned',
  registrationState: { registrationId: 'bench', createdDateTimeUtc: '2026-01-01T00:00:00.0000000Z', assignedHub: 'hub-1.bench', deviceId: 'bench', status: 'assigned', substatus: 'initialAssignment', lastUpdatedDateTimeUtc: '2026-01-01T00:00:00.0000000Z', etag: 'IjAwMDAi' },
});
const REGISTER = '$dps/registrations/PUT/iotdps-register/?$rid=';

export async function startBareDpsMqtt(o: { cert: string; key: string }): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<TLSSocket>();
  const server = createServer({ cert: o.cert, key: o.key, requestCert: true, rejectUnauthorized: false, noDelay: true, handshakeTimeout: 10_000, minVersion: 'TLSv1.2' });
  server.on('secureConnection', (socket: TLSSocket) => {
    sockets.add(socket);
    const p = createParser();
    p.on('packet', (pk: Packet) => {
      if (pk.cmd === 'connect') socket.write(generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }));
      else if (pk.cmd === 'subscribe') socket.write(generate({ cmd: 'suback', messageId: pk.messageId ?? 0, granted: pk.subscriptions.map(() => 1) }));
      else if (pk.cmd === 'publish') {
        if (pk.qos > 0) socket.write(generate({ cmd: 'puback', messageId: pk.messageId ?? 0 }));
        if (pk.topic.startsWith(REGISTER)) {
          const rid = pk.topic.slice(REGISTER.length).split('&', 1)[0];
          socket.write(generate({ cmd: 'publish', topic: `$dps/registrations/res/200/?$rid=${rid}`, payload: FIXED_BODY, qos: 0, dup: false, retain: false }));
        }
      } else if (pk.cmd === 'unsubscribe') socket.write(generate({ cmd: 'unsuback', messageId: pk.messageId ?? 0, granted: [] }));
      else if (pk.cmd === 'pingreq') socket.write(generate({ cmd: 'pingresp' }));
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
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

export async function startBareHttps(o: { cert: string; key: string; ca: string }): Promise<{ port: number; close(): Promise<void> }> {
  const server = createHttpsServer({ cert: o.cert, key: o.key, ca: o.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(FIXED_BODY) });
      res.end(FIXED_BODY);
    });
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

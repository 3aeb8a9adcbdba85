import { createServer, type Server } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { within } from './fake-runtime.ts';

export interface DpsRequest {
  method: string;
  /** Path without the query. */
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** Parsed JSON body (undefined when empty). */
  body: unknown;
  rawBody: string;
  /** Fake time of arrival (from `now`). */
  at: number;
  /** Subject CN of the TLS client certificate, if one was presented. */
  clientCertCN: string | undefined;
}

export interface DpsReply {
  status: number;
  /** Never answer (the client's timeout must fire). */
  hang?: boolean;
  body?: unknown;
  headers?: Record<string, string>;
}

export type DpsScript = (req: DpsRequest) => DpsReply;

/**
 * A scripted DPS device endpoint: a real HTTPS server on 127.0.0.1, port 0, asking for (not requiring) client
 * certificates. Each request is answered by the next queued reply, or by `fallback`.
 */
export class FakeDps {
  readonly requests: DpsRequest[] = [];
  private readonly queue: DpsScript[] = [];
  fallback: DpsScript = () => ({ status: 500, body: { errorCode: 500001, message: 'no scripted answer' } });
  private waiters: (() => void)[] = [];
  private unread = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(tls: { cert: string; key: string; ca: string }, now: () => number = () => Date.now()): Promise<FakeDps> {
    const ref: { self?: FakeDps } = {};
    const server = createServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const rawBody = Buffer.concat(chunks).toString('utf8');
        const url = new URL(req.url ?? '/', 'https://dps.test');
        let body: unknown;
        try {
          body = rawBody === '' ? undefined : JSON.parse(rawBody);
        } catch {
          body = rawBody;
        }
        const peer = (req.socket as TLSSocket).getPeerCertificate();
        const cn = peer && typeof peer.subject === 'object' && peer.subject ? peer.subject.CN : undefined;
        const r: DpsRequest = {
          method: req.method ?? '',
          path: url.pathname,
          query: url.searchParams,
          headers: req.headers,
          body,
          rawBody,
          at: now(),
          clientCertCN: typeof cn === 'string' ? cn : undefined,
        };
        const self = ref.self;
        if (!self) return;
        self.requests.push(r);
        const reply = (self.queue.shift() ?? self.fallback)(r);
        self.unread++;
        self.wake();
        if (reply.hang) return;
        const payload = reply.body === undefined ? '' : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
        res.writeHead(reply.status, { 'content-type': 'application/json; charset=utf-8', ...reply.headers });
        res.end(payload);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const self = new FakeDps(server, (server.address() as AddressInfo).port);
    ref.self = self;
    return self;
  }

  /** Queues replies (functions or fixed answers) for the next requests, in order. */
  script(...replies: (DpsScript | DpsReply)[]): void {
    for (const r of replies) this.queue.push(typeof r === 'function' ? r : () => r);
  }

  /** Resolves with the next request answered after the last call (bounded in real time). */
  nextRequest(realMs = 10_000): Promise<DpsRequest> {
    return within(
      new Promise<DpsRequest>((resolve) => {
        const check = (): void => {
          if (this.unread > 0) {
            const r = this.requests[this.requests.length - this.unread];
            this.unread--;
            if (r) resolve(r);
          } else this.waiters.push(check);
        };
        check();
      }),
      realMs,
      'waiting for a DPS request',
    );
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}

/** A DPS-style error body. */
export function dpsError(status: number, errorCode: number, message = 'scripted'): DpsReply['body'] {
  return { errorCode, trackingId: `t-${status}`, message, timestampUtc: '2026-01-01T00:00:00.0000000Z' };
}

/** A final `assigned` operation status. */
export function assignedBody(registrationId: string, assignedHub: string, deviceId = registrationId, extra: Record<string, unknown> = {}): unknown {
  return {
    operationId: `op-${registrationId}`,
    status: 'assigned',
    registrationState: {
      registrationId,
      assignedHub,
      deviceId,
      status: 'assigned',
      substatus: 'initialAssignment',
      createdDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
      lastUpdatedDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
      etag: 'ImUxIg==',
      ...extra,
    },
  };
}

/** A registration status lookup answer. */
export function lookupBody(registrationId: string, assignedHub: string, deviceId = registrationId): unknown {
  return { registrationId, assignedHub, deviceId, status: 'assigned', substatus: 'deviceDataMigrated', etag: 'ImUyIg==' };
}

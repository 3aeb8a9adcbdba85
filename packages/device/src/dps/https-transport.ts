import { Agent, request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { tlsConnectOptions } from '../credentials.ts';
import { AbortedError, NetworkError, ProtocolError, TimeoutError } from '../errors.ts';
import { tryParseJson } from '../json.ts';
import { CLIENT_VERSION } from '../version.ts';
import type { ResolvedDpsConnection } from './config.ts';
import { parseRetryAfter, type DeviceRegistrationRequest, type DpsLookupTransport, type DpsResponse } from './types.ts';

const MAX_BODY_BYTES = 1024 * 1024;

/**
 * DPS device API over HTTPS (dps-behavior.md §2.1, protocol-device.md §A):
 * `PUT /{idScope}/registrations/{id}/register`, `GET .../operations/{operationId}`, `POST /{idScope}/registrations/{id}`.
 * One keep-alive agent per transport, so a register and its polls share a TLS session.
 */
export class HttpsDpsTransport implements DpsLookupTransport {
  private readonly agent: Agent;

  constructor(private readonly c: ResolvedDpsConnection) {
    this.agent = new Agent({ keepAlive: true, maxSockets: 2, timeout: c.requestTimeoutMs });
  }

  private path(suffix: string): string {
    return `/${encodeURIComponent(this.c.idScope)}/registrations/${encodeURIComponent(this.c.registrationId)}${suffix}?api-version=${encodeURIComponent(this.c.apiVersion)}`;
  }

  register(request: DeviceRegistrationRequest, signal?: AbortSignal): Promise<DpsResponse> {
    return this.send('PUT', this.path('/register'), JSON.stringify(request), 'register', signal);
  }

  operationStatus(operationId: string, signal?: AbortSignal): Promise<DpsResponse> {
    return this.send('GET', this.path(`/operations/${encodeURIComponent(operationId)}`), undefined, 'operation status', signal);
  }

  lookup(signal?: AbortSignal): Promise<DpsResponse> {
    return this.send('POST', this.path(''), JSON.stringify({ registrationId: this.c.registrationId }), 'registration status lookup', signal);
  }

  close(): Promise<void> {
    this.agent.destroy();
    return Promise.resolve();
  }

  private send(method: string, path: string, body: string | undefined, what: string, signal?: AbortSignal): Promise<DpsResponse> {
    const { runtime } = this.c;
    return new Promise<DpsResponse>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new AbortedError());
        return;
      }
      const headers: Record<string, string> = {
        accept: 'application/json',
        'user-agent': CLIENT_VERSION,
      };
      if (body !== undefined) {
        headers['content-type'] = 'application/json; charset=utf-8';
        headers['content-length'] = String(Buffer.byteLength(body));
      }
      const authorization = this.c.authorization();
      if (authorization !== undefined) headers.authorization = authorization;

      let settled = false;
      const finish = (err: Error | undefined, value?: DpsResponse): void => {
        if (settled) return;
        settled = true;
        runtime.timers.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else if (value) resolve(value);
      };
      const req = httpsRequest({
        host: this.c.host,
        port: this.c.port,
        method,
        path,
        headers,
        agent: this.agent,
        ...tlsConnectOptions(this.c.credential, this.c.tls),
      });
      const onAbort = (): void => {
        finish(new AbortedError());
        req.destroy();
      };
      const timer = runtime.timers.setTimeout(() => {
        finish(new TimeoutError(`DPS ${what}`, this.c.requestTimeoutMs));
        req.destroy();
      }, this.c.requestTimeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('socket', (s) => s.setNoDelay(true));
      req.on('error', (e) => finish(new NetworkError(`DPS ${what} to ${this.c.host}:${this.c.port} failed: ${e.message}`, e)));
      req.on('response', (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) {
            finish(new ProtocolError(`DPS ${what}: response body larger than ${MAX_BODY_BYTES} bytes`));
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', (e) => finish(new NetworkError(`DPS ${what}: response failed: ${e.message}`, e)));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          const ra = res.headers['retry-after'];
          const retryAfterMs = parseRetryAfter(Array.isArray(ra) ? ra[0] : ra, runtime.clock.now());
          if (text.trim() === '') {
            finish(undefined, { status, retryAfterMs, body: undefined });
            return;
          }
          const parsed = tryParseJson(text);
          if (!parsed.ok) {
            // An error status with a non-JSON body is still an error status; a 2xx must be JSON.
            if (status >= 300) finish(undefined, { status, retryAfterMs, body: undefined });
            else finish(new ProtocolError(`DPS ${what}: the ${status} answer is not JSON`));
            return;
          }
          finish(undefined, { status, retryAfterMs, body: parsed.value });
        });
      });
      req.end(body);
    });
  }
}

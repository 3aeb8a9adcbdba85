import { Agent, request, type RequestOptions } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { buildSas, strictEncode } from '@homing/device';
import type { ServiceTarget } from './connection.ts';
import { CliError, scrubSecrets } from './errors.ts';

export interface ApiResponse<T = unknown> {
  status: number;
  headers: IncomingMessage['headers'];
  body: T;
}

export interface CallOptions {
  body?: unknown;
  headers?: Record<string, string | undefined>;
  /** Statuses that are not errors (default: 2xx). */
  accept?: (status: number) => boolean;
}

const REQUEST_TIMEOUT_MS = 30_000;
const TOKEN_TTL_S = 3600;

/** Encodes one path segment (ids may hold `:` and `.`, which are fine, but never `/`, `?` or `#`). */
export function seg(s: string): string {
  return encodeURIComponent(s);
}

/**
 * A small JSON client for the Homing service APIs (DPS service + admin API, hub service API): HTTPS with the dev
 * CA trusted through the agent, a SAS signed with the connection string's policy key, one keep-alive agent per
 * client. Errors become CliError with the service's error code; no key or token ever reaches a message.
 */
export class ServiceClient {
  private readonly agent: Agent;
  private token: { value: string; expires: number } | undefined;

  constructor(
    readonly target: ServiceTarget,
    private readonly flavor: 'dps' | 'hub',
    private readonly apiVersion = flavor === 'dps' ? '2021-10-01' : '2021-04-12',
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets: 8, ...(target.ca !== undefined ? { ca: target.ca } : {}) });
  }

  close(): void {
    this.agent.destroy();
  }

  /** The Authorization header value (renewed before expiry). */
  authorization(): string {
    const now = Math.floor(Date.now() / 1000);
    if (!this.token || this.token.expires - now < 300) {
      const expires = now + TOKEN_TTL_S;
      // DPS and hub service tokens: sr = the host name (URL-encoded), skn = the policy.
      this.token = { value: buildSas({ sr: strictEncode(this.target.hostName), keyBase64: this.target.key, expirySeconds: expires, keyName: this.target.keyName }), expires };
    }
    return this.token.value;
  }

  withApiVersion(path: string): string {
    return `${path}${path.includes('?') ? '&' : '?'}api-version=${this.apiVersion}`;
  }

  /** Options for a raw request (the telemetry stream). */
  requestOptions(method: string, path: string, headers: Record<string, string> = {}): RequestOptions {
    return {
      host: this.target.host,
      port: this.target.port,
      method,
      path: this.withApiVersion(path),
      agent: this.agent,
      servername: isIpAddress(this.target.host) ? undefined : this.target.host,
      headers: { authorization: this.authorization(), host: this.target.hostName, 'user-agent': 'homing-cli/0.1.0', ...headers },
    };
  }

  async call<T = unknown>(method: string, path: string, o: CallOptions = {}): Promise<ApiResponse<T>> {
    const payload = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
    const headers: Record<string, string> = { accept: 'application/json' };
    if (payload) headers['content-type'] = 'application/json; charset=utf-8';
    for (const [k, v] of Object.entries(o.headers ?? {})) if (v !== undefined) headers[k] = v;
    const res = await new Promise<{ status: number; headers: IncomingMessage['headers']; text: string }>((resolvePromise, reject) => {
      const req = request(this.requestOptions(method, path, headers), (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => resolvePromise({ status: r.statusCode ?? 0, headers: r.headers, text: Buffer.concat(chunks).toString('utf8') }));
        r.on('error', reject);
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new CliError('Timeout', `${method} ${path}: no answer from ${this.target.host}:${this.target.port} within ${REQUEST_TIMEOUT_MS / 1000} s`)));
      req.on('error', (e) => reject(networkError(e, this.target)));
      req.end(payload);
    });
    let body: unknown = undefined;
    if (res.text.length > 0) {
      try {
        body = JSON.parse(res.text) as unknown;
      } catch {
        body = res.text;
      }
    }
    const ok = o.accept ? o.accept(res.status) : res.status >= 200 && res.status < 300;
    if (!ok) throw serviceError(res.status, body, this.flavor);
    return { status: res.status, headers: res.headers, body: body as T };
  }
}

function isIpAddress(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(':');
}

export function networkError(e: unknown, t: ServiceTarget): CliError {
  if (e instanceof CliError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err.code ?? 'NetworkError';
  const hint = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code) ? ' (trust the dev CA with --ca-cert or --data-dir)' : '';
  return new CliError(code, `cannot reach ${t.host}:${t.port}: ${scrubSecrets(err.message)}${hint}`);
}

/** Maps a DPS body `{errorCode, message}` or a hub body `{Message: "ErrorCode:Name;text"}` to a CliError. */
export function serviceError(status: number, body: unknown, flavor: 'dps' | 'hub'): CliError {
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    if (typeof b.errorCode === 'number' || typeof b.errorCode === 'string') {
      return new CliError(String(b.errorCode), `${status} ${scrubSecrets(String(b.message ?? ''))}`.trim());
    }
    const m = typeof b.Message === 'string' ? b.Message : typeof b.message === 'string' ? b.message : undefined;
    if (m !== undefined) {
      const parsed = /^ErrorCode:([^;]+);(.*)$/s.exec(m);
      if (parsed) return new CliError(parsed[1] ?? String(status), `${status} ${scrubSecrets(parsed[2] ?? '')}`);
      return new CliError(String(status), `${status} ${scrubSecrets(m)}`);
    }
  }
  const text = typeof body === 'string' && body.length > 0 ? ` ${scrubSecrets(body).slice(0, 200)}` : '';
  return new CliError(String(status), `${flavor === 'dps' ? 'provisioning service' : 'hub'} answered ${status}${text}`);
}

/** Runs a POST .../query with x-ms-continuation paging; stops after `top` items when given. */
export async function queryAll<T>(client: ServiceClient, path: string, query: string, top?: number): Promise<T[]> {
  const out: T[] = [];
  let continuation: string | undefined;
  do {
    const pageSize = top === undefined ? 1000 : Math.min(1000, top - out.length);
    const res = await client.call<T[]>('POST', path, {
      body: { query },
      headers: { 'x-ms-max-item-count': String(pageSize), 'x-ms-continuation': continuation },
    });
    out.push(...(Array.isArray(res.body) ? res.body : []));
    const c = res.headers['x-ms-continuation'];
    continuation = typeof c === 'string' && c.length > 0 ? c : undefined;
  } while (continuation !== undefined && (top === undefined || out.length < top));
  return top === undefined ? out : out.slice(0, top);
}

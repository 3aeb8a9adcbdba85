import { request, type RequestOptions } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';

/** An answer with its body parsed as JSON (`{}` when empty). */
export interface JsonAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  json: Record<string, unknown>;
}

export interface JsonRequestBody {
  /** The `authorization` header (a SAS). */
  auth?: string;
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as is (instead of `body`), e.g. malformed JSON. */
  raw?: string;
}

/**
 * One HTTPS request without an agent: `options` (host, port, ca, method, path, extra headers...) plus the
 * authorization and, with a body, `content-type: application/json`.
 */
export function httpsJson(options: RequestOptions, o: JsonRequestBody = {}): Promise<JsonAnswer> {
  const payload = o.raw !== undefined ? Buffer.from(o.raw) : o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent: false,
        ...options,
        headers: { ...options.headers, ...(o.auth ? { authorization: o.auth } : {}), ...(payload ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, json: t ? (JSON.parse(t) as Record<string, unknown>) : {} }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

import { HomingError } from '../../core/errors.ts';
import { isPlainObject, type JsonValue } from '../../core/json.ts';

/**
 * Queries of the DPS service API: `POST .../query` with `{"query": "*"}` or `{"query": "SELECT * FROM <collection>"}`,
 * paged by `x-ms-max-item-count` and an opaque `x-ms-continuation` token (protocol-service.md §3.1, §3.2, T12).
 */
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

export interface PageParams {
  pageSize: number;
  /** The store key to continue after, decoded from the continuation token. */
  after: string | undefined;
}

export interface QueryPage<T> {
  items: T[];
  /** Present only when more items follow. */
  continuationToken: string | undefined;
  pageSize: number;
}

const SELECT_ALL_RE = /^\s*select\s+\*\s+from\s+[A-Za-z_][A-Za-z0-9_]*\s*;?\s*$/i;

/** Accepts `*` and `SELECT * FROM <collection>` (which return everything); anything else is a 400. */
export function validateQuerySpec(body: JsonValue | undefined): void {
  if (body === undefined || body === null) return;
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The query specification must be a JSON object {"query": "..."}.');
  const q = body.query;
  if (q === undefined || q === null) return;
  if (typeof q !== 'string') throw new HomingError('ArgumentInvalid', 'query must be a string.');
  if (q.trim() === '*' || q.trim() === '' || SELECT_ALL_RE.test(q)) return;
  throw new HomingError('ArgumentInvalid', "Only the queries '*' and 'SELECT * FROM <collection>' are supported.");
}

/** Parses `x-ms-max-item-count`: absent → the default, else an integer 1..1000 (larger values are capped). */
export function parsePageSize(raw: string | readonly string[] | undefined): number {
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (v === undefined || (typeof v === 'string' && v.trim() === '')) return DEFAULT_PAGE_SIZE;
  if (typeof v !== 'string' || !/^\s*\d{1,9}\s*$/.test(v)) throw new HomingError('ArgumentInvalid', 'x-ms-max-item-count must be a positive integer.');
  const n = Number(v);
  if (n < 1) throw new HomingError('ArgumentInvalid', 'x-ms-max-item-count must be a positive integer.');
  return Math.min(n, MAX_PAGE_SIZE);
}

const TOKEN_PREFIX = 'c1.';

/** The opaque continuation token for a store key. */
export function encodeContinuation(after: string): string {
  return TOKEN_PREFIX + Buffer.from(after, 'utf8').toString('base64url');
}

/** Decodes `x-ms-continuation`; absent or empty → start; anything not made by `encodeContinuation` → 400. */
export function decodeContinuation(raw: string | readonly string[] | undefined): string | undefined {
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (typeof v !== 'string' || v.length === 0) return undefined;
  const body = v.startsWith(TOKEN_PREFIX) ? v.slice(TOKEN_PREFIX.length) : undefined;
  if (body === undefined || body.length === 0 || body.length > 1024 || !/^[A-Za-z0-9_-]+$/.test(body)) {
    throw new HomingError('ArgumentInvalid', 'x-ms-continuation is not a continuation token of this service.');
  }
  const key = Buffer.from(body, 'base64url').toString('utf8');
  if (encodeContinuation(key) !== v) throw new HomingError('ArgumentInvalid', 'x-ms-continuation is not a continuation token of this service.');
  return key;
}

export function pageParams(raw: { pageSize?: string | readonly string[] | undefined; continuation?: string | readonly string[] | undefined }): PageParams {
  return { pageSize: parsePageSize(raw.pageSize), after: decodeContinuation(raw.continuation) };
}

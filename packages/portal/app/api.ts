/**
 * The portal's only way to the server: same-origin fetches to the DPS service API and the Homing admin API,
 * authorized with a DPS service SAS that the browser signs itself (WebCrypto HMAC-SHA256 over
 * `encodeURIComponent(sr) + "\n" + expiry`), or a token pasted by the user.
 */
export const API_VERSION = '2021-10-01';

export type Right = 'ServiceConfig' | 'EnrollmentRead' | 'EnrollmentWrite' | 'RegistrationStatusRead' | 'RegistrationStatusWrite' | 'DeviceConnect';

export interface Credentials {
  /** The service host name the SAS is for (`sr`). */
  host: string;
  keyName?: string;
  /** Base64 policy key (kept in sessionStorage only, so a reload keeps the session and a closed tab drops it). */
  key?: string;
  /** A pasted SAS (used as is until it expires). */
  token?: string;
}

export interface Features {
  /** `POST /homing/registrations/{id}/deprovision` exists. */
  deprovision: boolean;
  /** `/homing/fleet/jobs` (phased reprovisioning) exists. */
  fleetJobs: boolean;
}

export interface Session extends Credentials {
  policyName: string;
  rights: Right[];
  idScope: string;
  features: Features;
}

const STORAGE_KEY = 'homing.portal.session';

export function loadSession(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    if (raw === null) return undefined;
    const s = JSON.parse(raw) as Session;
    return typeof s.host === 'string' && Array.isArray(s.rights) && typeof s.features === 'object' ? s : undefined;
  } catch {
    return undefined;
  }
}

export function saveSession(s: Session | undefined): void {
  if (s === undefined) sessionStorage.removeItem(STORAGE_KEY);
  else sessionStorage.setItem(STORAGE_KEY, JSON.stringify(s));
}

function base64ToBytes(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64.trim());
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function bytesToBase64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** A random key as DPS makes them (64 bytes, base64). */
export function randomKey(bytes = 64): string {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return bytesToBase64(b);
}

export function isBase64Key(s: string): boolean {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(s.trim())) return false;
  try {
    const n = base64ToBytes(s).length;
    return n >= 16 && n <= 64;
  } catch {
    return false;
  }
}

/** `SharedAccessSignature sr=..&sig=..&se=..&skn=..` signed with the policy key. */
export async function signSas(host: string, keyName: string, keyBase64: string, ttlSeconds = 3600): Promise<string> {
  const sr = encodeURIComponent(host);
  const se = Math.floor(Date.now() / 1000) + ttlSeconds;
  let keyBytes: Uint8Array<ArrayBuffer>;
  try {
    keyBytes = base64ToBytes(keyBase64);
  } catch {
    throw new ApiError(0, 'The key is not valid base64.');
  }
  const key = await crypto.subtle.importKey('raw', keyBytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const sig = await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(`${sr}\n${se}`));
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(bytesToBase64(new Uint8Array(sig)))}&se=${se}&skn=${encodeURIComponent(keyName)}`;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errorCode?: number,
  ) {
    super(message);
  }
}

let cached: { token: string; until: number; forKey: string } | undefined;

export async function authorization(c: Credentials): Promise<string> {
  if (c.token !== undefined && c.token.length > 0) return c.token.trim();
  if (c.keyName === undefined || c.key === undefined) throw new ApiError(401, 'Not signed in.');
  const forKey = `${c.host}|${c.keyName}|${c.key}`;
  const now = Date.now();
  if (cached !== undefined && cached.forKey === forKey && cached.until > now) return cached.token;
  const token = await signSas(c.host, c.keyName, c.key);
  cached = { token, until: now + 50 * 60 * 1000, forKey };
  return token;
}

export interface ApiResponse<T> {
  status: number;
  body: T;
  headers: Headers;
}

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** Calls the API; non-2xx answers throw ApiError with the server's message. */
export async function api<T>(c: Credentials, method: string, path: string, o: RequestOptions = {}): Promise<ApiResponse<T>> {
  const url = path.startsWith('/homing/') ? path : `${path}${path.includes('?') ? '&' : '?'}api-version=${API_VERSION}`;
  const headers: Record<string, string> = { authorization: await authorization(c), accept: 'application/json', ...o.headers };
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  const init: RequestInit = { method, headers, cache: 'no-store' };
  if (o.body !== undefined) init.body = JSON.stringify(o.body);
  if (o.signal !== undefined) init.signal = o.signal;
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown = undefined;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  if (!res.ok) {
    const e = body as { message?: unknown; errorCode?: unknown } | undefined;
    const msg = typeof e?.message === 'string' ? e.message : `HTTP ${res.status}`;
    throw new ApiError(res.status, res.status === 401 ? 'Unauthorized: the key, token or policy rights were refused.' : msg, typeof e?.errorCode === 'number' ? e.errorCode : undefined);
  }
  return { status: res.status, body: body as T, headers: res.headers };
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.status > 0 ? `${e.message} (HTTP ${e.status}${e.errorCode ? `, ${e.errorCode}` : ''})` : e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Reads a Server-Sent Events stream with fetch (EventSource cannot send the Authorization header). */
export async function streamEvents(c: Credentials, path: string, onEvent: (type: string, data: string) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(path, { headers: { authorization: await authorization(c), accept: 'text/event-stream' }, signal, cache: 'no-store' });
  if (!res.ok || res.body === null) throw new ApiError(res.status, `The event stream was refused (HTTP ${res.status}).`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let idx: number;
    while ((idx = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, idx);
      buf = buf.slice(idx + 2);
      let type = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) type = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length > 0) onEvent(type, data.join('\n'));
    }
  }
}

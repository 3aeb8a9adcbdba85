import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Shared access signatures as the Azure IoT SDKs build them:
 * `SharedAccessSignature sr=<sr>&sig=<urlenc(base64 hmac)>&skn=<name>&se=<epoch seconds>`.
 * The signature is HMAC-SHA256 over `sr + "\n" + se` with the base64-decoded key, where `sr` is the value exactly as
 * it was sent: the device SDK URL-encodes it, the DPS device SDK and the service SDKs do not.
 */
export interface SasToken {
  /** sr exactly as transmitted. */
  readonly srRaw: string;
  /** sr percent-decoded. */
  readonly sr: string;
  /** Signature, percent-decoded (base64). */
  readonly sig: string;
  /** Expiry, epoch seconds. */
  readonly se: number;
  /** Key name, percent-decoded, if present. */
  readonly skn: string | undefined;
}

const PREFIX = 'sharedaccesssignature ';

function safeDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/** Parses a SAS string (with or without the `SharedAccessSignature ` prefix). Returns undefined when malformed. */
export function parseSas(input: string | undefined): SasToken | undefined {
  if (!input) return undefined;
  let s = input.trim();
  if (s.toLowerCase().startsWith(PREFIX)) s = s.slice(PREFIX.length).trim();
  if (s.length === 0 || s.length > 4096) return undefined;
  const fields = new Map<string, string>();
  for (const part of s.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    const name = part.slice(0, eq);
    if (fields.has(name)) return undefined;
    fields.set(name, part.slice(eq + 1));
  }
  const srRaw = fields.get('sr');
  const sigRaw = fields.get('sig');
  const seRaw = fields.get('se');
  if (srRaw === undefined || sigRaw === undefined || seRaw === undefined) return undefined;
  if (!/^\d{1,12}$/.test(seRaw)) return undefined;
  const sr = safeDecode(srRaw);
  const sig = safeDecode(sigRaw);
  const sknRaw = fields.get('skn');
  const skn = sknRaw === undefined ? undefined : safeDecode(sknRaw);
  if (sr === undefined || sig === undefined || (sknRaw !== undefined && skn === undefined)) return undefined;
  return { srRaw, sr, sig, se: Number(seRaw), skn };
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** True when `s` is canonical base64 of 1..512 bytes. */
export function isBase64(s: string, minBytes = 1, maxBytes = 512): boolean {
  if (typeof s !== 'string' || s.length === 0 || s.length % 4 !== 0 || !BASE64_RE.test(s)) return false;
  const buf = Buffer.from(s, 'base64');
  if (buf.length < minBytes || buf.length > maxBytes) return false;
  return buf.toString('base64') === s;
}

export function hmacBase64(keyBase64: string, message: string): string {
  return createHmac('sha256', Buffer.from(keyBase64, 'base64')).update(message, 'utf8').digest('base64');
}

function equalB64(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'base64');
  const bb = Buffer.from(b, 'base64');
  return ab.length === bb.length && ab.length > 0 && timingSafeEqual(ab, bb);
}

/**
 * Checks the signature against each key (primary, secondary...). Tries the sr as transmitted first, then the
 * decoded form, so tokens from every SDK verify. Expiry and sr matching are the caller's business.
 */
export function sasSignatureMatches(token: SasToken, keysBase64: readonly (string | undefined | null)[]): boolean {
  const candidates = token.srRaw === token.sr ? [token.srRaw] : [token.srRaw, token.sr];
  for (const key of keysBase64) {
    if (!key) continue;
    for (const sr of candidates) {
      if (equalB64(hmacBase64(key, `${sr}\n${token.se}`), token.sig)) return true;
    }
  }
  return false;
}

/** Strict URL encoding, as the SDKs use for sig and skn. */
export function strictEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Builds a SAS string. `sr` is used verbatim: encode it first where the protocol expects that. */
export function buildSas(opts: { sr: string; keyBase64: string; expirySeconds: number; keyName?: string }): string {
  const sig = strictEncode(hmacBase64(opts.keyBase64, `${opts.sr}\n${opts.expirySeconds}`));
  const skn = opts.keyName === undefined ? '' : `&skn=${strictEncode(opts.keyName)}`;
  return `SharedAccessSignature sr=${opts.sr}&sig=${sig}${skn}&se=${opts.expirySeconds}`;
}

/** Enrollment-group device key: base64(HMAC-SHA256(base64decode(groupKey), registrationId)). */
export function deriveDeviceKey(groupKeyBase64: string, registrationId: string): string {
  return hmacBase64(groupKeyBase64, registrationId);
}

/** Parses `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..` (split on ';', then on the first '='). */
export function parseConnectionString(cs: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of cs.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k && v) out[k] = v;
  }
  return out;
}

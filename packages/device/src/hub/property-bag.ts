import { safeDecode } from '../dps/topics.ts';

/**
 * System properties of hub messages, as the property bag of the MQTT topic carries them (protocol-device.md §D.2).
 */
export interface MessageSystemProperties {
  messageId?: string;
  correlationId?: string;
  userId?: string;
  to?: string;
  contentType?: string;
  contentEncoding?: string;
  interfaceId?: string;
  /** ISO-8601 absolute expiry. */
  expiryTimeUtc?: string;
  /** Module output name. */
  outputName?: string;
}

export interface MessageProperties extends MessageSystemProperties {
  /** Application properties. */
  properties?: Readonly<Record<string, string>>;
}

/** System properties in the order the official SDK writes them. */
const SYSTEM: readonly (readonly [keyof MessageSystemProperties, string])[] = [
  ['messageId', '$.mid'],
  ['correlationId', '$.cid'],
  ['userId', '$.uid'],
  ['to', '$.to'],
  ['contentType', '$.ct'],
  ['contentEncoding', '$.ce'],
  ['interfaceId', '$.ifid'],
  ['expiryTimeUtc', '$.exp'],
  ['outputName', '$.on'],
];

const BY_WIRE = new Map<string, keyof MessageSystemProperties>(SYSTEM.map(([k, w]) => [w, k]));

/** The application property the SDKs send as `$.sub`. */
const SUBJECT = 'dt-subject';

/**
 * Encodes the property bag: system properties first, then application properties, each as
 * `encodeURIComponent(key)=encodeURIComponent(value)` joined with `&` (so `$.mid` is sent as `%24.mid`).
 */
export function encodePropertyBag(m: MessageProperties): string {
  const parts: string[] = [];
  for (const [key, wire] of SYSTEM) {
    const v = m[key];
    if (v !== undefined) parts.push(`${encodeURIComponent(wire)}=${encodeURIComponent(v)}`);
  }
  for (const [k, v] of Object.entries(m.properties ?? {})) {
    const wire = k === SUBJECT ? '$.sub' : k;
    parts.push(`${encodeURIComponent(wire)}=${encodeURIComponent(v)}`);
  }
  return parts.join('&');
}

/** Decodes a property bag (split on `&`, then on the first `=`, percent-decoded). */
export function decodePropertyBag(bag: string): MessageProperties & { properties: Record<string, string> } {
  const out: MessageSystemProperties & { properties: Record<string, string> } = { properties: {} };
  for (const part of bag.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = safeDecode(eq < 0 ? part : part.slice(0, eq));
    const value = eq < 0 ? '' : safeDecode(part.slice(eq + 1));
    const sys = BY_WIRE.get(key);
    if (sys !== undefined) out[sys] = value;
    else setOwn(out.properties, key === '$.sub' ? SUBJECT : key, value);
  }
  return out;
}

/** Own-property write that cannot touch the prototype (`__proto__` is just a key here). */
function setOwn(target: Record<string, string>, key: string, value: string): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

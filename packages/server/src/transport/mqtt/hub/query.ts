/**
 * Small helpers for the query part of IoT Hub topics (`...?$rid=R&$version=n`) and for telemetry property bags
 * (`%24.mid=m&%24.ct=application%2Fjson&k=v`).
 */

function safeDecode(s: string): string {
  if (s.indexOf('%') < 0) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The raw value of `name` in a `a=1&b=2` query (first match), `$` also accepted as `%24`. Not decoded. */
export function queryParam(query: string, name: string): string | undefined {
  const alt = name.startsWith('$') ? `%24${name.slice(1)}` : undefined;
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    if (key === name || (alt !== undefined && key.toLowerCase() === alt.toLowerCase())) return eq < 0 ? '' : part.slice(eq + 1);
  }
  return undefined;
}

/** The query after the first `?` of a topic ('' when none). */
export function topicQuery(topic: string): string {
  const q = topic.indexOf('?');
  return q < 0 ? '' : topic.slice(q + 1);
}

/**
 * IoT Hub system properties of the telemetry property bag (`$.` prefix on the wire) and the names Homing gives them
 * in TelemetryMessage.systemProperties: the message annotations a service-side reader of IoT Hub sees.
 */
const SYSTEM_PROPERTY_NAMES: Readonly<Record<string, string>> = {
  mid: 'message-id',
  cid: 'correlation-id',
  uid: 'user-id',
  to: 'to',
  ct: 'content-type',
  ce: 'content-encoding',
  exp: 'absolute-expiry-time',
  ifid: 'iothub-interface-id',
  sub: 'dt-subject',
  on: 'output-name',
};

export interface PropertyBag {
  systemProperties: Record<string, string>;
  properties: Record<string, string>;
}

/**
 * Parses a telemetry property bag: split on `&`, then on the first `=`, percent-decode both sides (bad escapes are
 * kept as sent). Keys starting with `$.` are system properties; the rest are application properties.
 */
export function parsePropertyBag(bag: string): PropertyBag {
  const systemProperties: Record<string, string> = {};
  const properties: Record<string, string> = {};
  if (bag.length === 0) return { systemProperties, properties };
  for (const part of bag.split('&')) {
    if (part.length === 0) continue;
    const eq = part.indexOf('=');
    const key = safeDecode(eq < 0 ? part : part.slice(0, eq));
    const value = eq < 0 ? '' : safeDecode(part.slice(eq + 1));
    if (key.length === 0 || key === '__proto__') continue;
    if (key.startsWith('$.')) {
      const short = key.slice(2);
      systemProperties[SYSTEM_PROPERTY_NAMES[short] ?? key] = value;
    } else {
      properties[key] = value;
    }
  }
  return { systemProperties, properties };
}

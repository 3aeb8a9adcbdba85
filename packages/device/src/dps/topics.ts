/** DPS over MQTT (dps-behavior.md §2.9, protocol-device.md §B). */

export const DPS_RESPONSE_SUBSCRIPTION = '$dps/registrations/res/#';

/** `{idScope}/registrations/{registrationId}/api-version={v}&ClientVersion={urlenc(client)}` (no `?`: that is the protocol). */
export function dpsMqttUsername(idScope: string, registrationId: string, apiVersion: string, clientVersion?: string): string {
  const cv = clientVersion === undefined ? '' : `&ClientVersion=${encodeURIComponent(clientVersion)}`;
  return `${idScope}/registrations/${registrationId}/api-version=${apiVersion}${cv}`;
}

export function dpsRegisterTopic(rid: string): string {
  return `$dps/registrations/PUT/iotdps-register/?$rid=${rid}`;
}

export function dpsOperationStatusTopic(rid: string, operationId: string): string {
  return `$dps/registrations/GET/iotdps-get-operationstatus/?$rid=${rid}&operationId=${encodeURIComponent(operationId)}`;
}

export interface DpsResponseTopic {
  status: number;
  rid: string;
  /** `retry-after` in seconds, as sent. */
  retryAfterSeconds: number | undefined;
}

/** Parses `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`. */
export function parseDpsResponseTopic(topic: string): DpsResponseTopic | undefined {
  const m = /^\$dps\/registrations\/res\/(\d{3})\/\?(.*)$/.exec(topic);
  if (!m) return undefined;
  const query = parseQuery(m[2] ?? '');
  const rid = query.get('$rid');
  if (rid === undefined) return undefined;
  const ra = query.get('retry-after');
  const retryAfterSeconds = ra !== undefined && /^\d+(\.\d+)?$/.test(ra) ? Number(ra) : undefined;
  return { status: Number(m[1]), rid, retryAfterSeconds };
}

/** `a=1&b=2` → map, percent-decoded; keys keep their `$`. */
export function parseQuery(q: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of q.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? '' : part.slice(eq + 1);
    out.set(safeDecode(k), safeDecode(v));
  }
  return out;
}

export function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

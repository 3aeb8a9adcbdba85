/**
 * Topic strings of DPS over MQTT (protocol-device.md §B, dps-behavior.md §2.9) and the small parsers the realm needs.
 *
 * - requests:  `$dps/registrations/PUT/iotdps-register/?$rid={rid}`
 *              `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={operationId}`
 * - responses: `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={seconds}]`
 * - the only subscription filter: `$dps/registrations/res/#`
 */
export const RESPONSE_FILTER = '$dps/registrations/res/#';
export const RESPONSE_PREFIX = '$dps/registrations/res/';
export const REGISTER_PREFIX = '$dps/registrations/PUT/iotdps-register/';
export const OPERATION_STATUS_PREFIX = '$dps/registrations/GET/iotdps-get-operationstatus/';

/** Longest `$rid` echoed back (the SDK sends a 36-character uuid). */
export const MAX_RID_LENGTH = 128;

/** True when `topic` is `prefix` itself or `prefix` followed by a query (`?...`). */
export function topicIs(topic: string, prefix: string): boolean {
  return topic.startsWith(prefix) && (topic.length === prefix.length || topic.charCodeAt(prefix.length) === 0x3f /* ? */);
}

/** The query after the first `?` of a topic ('' when none). */
export function topicQuery(topic: string): string {
  const q = topic.indexOf('?');
  return q < 0 ? '' : topic.slice(q + 1);
}

/** The raw value of `name` in a `a=1&b=2` query (first match; `$` may be sent as `%24`). Not decoded. */
export function queryParam(query: string, name: string): string | undefined {
  if (query.length === 0) return undefined;
  const alt = name.startsWith('$') ? `%24${name.slice(1)}` : undefined;
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    if (key === name || (alt !== undefined && key.toLowerCase() === alt.toLowerCase())) return eq < 0 ? '' : part.slice(eq + 1);
  }
  return undefined;
}

/** Percent-decodes `s`, keeping it as sent when the escapes are broken. */
export function safeDecode(s: string): string {
  if (s.indexOf('%') < 0) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * True when `rid` can be echoed in a response topic: 1 to 128 printable ASCII characters without the MQTT wildcards
 * (`#`, `+`) or the characters that would break the topic's own structure (`/`, `?`, `&`).
 */
export function isUsableRid(rid: string): boolean {
  if (rid.length === 0 || rid.length > MAX_RID_LENGTH) return false;
  for (let i = 0; i < rid.length; i++) {
    const c = rid.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x23 /* # */ || c === 0x2b /* + */ || c === 0x2f /* / */ || c === 0x3f /* ? */ || c === 0x26 /* & */) return false;
  }
  return true;
}

/** `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}]`. */
export function responseTopic(status: number, rid: string, retryAfterSeconds?: number): string {
  const base = `${RESPONSE_PREFIX}${status}/?$rid=${rid}`;
  return retryAfterSeconds === undefined ? base : `${base}&retry-after=${retryAfterSeconds}`;
}

/** A retry-after the SDK can use: an integer ≥ 1 (0 would make it re-send at once, in a tight loop). */
export function retryAfterValue(seconds: number | undefined, fallback: number): number {
  const s = seconds !== undefined && Number.isFinite(seconds) ? seconds : fallback;
  return Math.max(1, Math.ceil(s));
}

export interface DpsUsername {
  idScope: string;
  registrationId: string;
  /** Everything after `{registrationId}/`, without a leading `?`. */
  query: string;
}

const REGISTRATIONS = '/registrations/';

/** Cheap test used by `claims`: `{something}/registrations/...`. */
export function looksLikeDpsUsername(username: string | undefined): boolean {
  if (username === undefined) return false;
  const slash = username.indexOf('/');
  return slash > 0 && username.startsWith(REGISTRATIONS, slash);
}

/**
 * `{idScope}/registrations/{registrationId}/api-version=...[&ClientVersion=...]`, as the SDKs send it (no `?`);
 * a `?` before the query and any extra parameters are tolerated, an `api-version` parameter is required.
 * The id scope and the registration id are taken verbatim (the SDK does not encode them).
 */
export function parseDpsUsername(username: string): DpsUsername | undefined {
  const slash = username.indexOf('/');
  if (slash <= 0 || !username.startsWith(REGISTRATIONS, slash)) return undefined;
  const idStart = slash + REGISTRATIONS.length;
  const idEnd = username.indexOf('/', idStart);
  if (idEnd <= idStart) return undefined;
  let query = username.slice(idEnd + 1);
  if (query.startsWith('?')) query = query.slice(1);
  const hasVersion = query.split('&').some((p) => {
    const eq = p.indexOf('=');
    return eq > 0 && p.slice(0, eq).toLowerCase() === 'api-version';
  });
  if (!hasVersion) return undefined;
  return { idScope: username.slice(0, slash), registrationId: username.slice(idStart, idEnd), query };
}

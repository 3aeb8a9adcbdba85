import { parseQuery } from '../dps/topics.ts';

/** IoT Hub device endpoint over MQTT (protocol-device.md §D, §H). */

export const DEFAULT_HUB_API_VERSION = '2021-04-12';

export const TWIN_RESPONSE_SUBSCRIPTION = '$iothub/twin/res/#';
export const DESIRED_SUBSCRIPTION = '$iothub/twin/PATCH/properties/desired/#';
export const METHODS_SUBSCRIPTION = '$iothub/methods/POST/#';

export interface HubUsernameOptions {
  apiVersion?: string;
  modelId?: string;
  /** DeviceClientType (URL-encoded on the wire). */
  clientType?: string;
}

/** `{hostName}/{deviceId}/?api-version=2021-04-12[&model-id=..][&DeviceClientType=..]`. */
export function hubUsername(hostName: string, deviceId: string, o: HubUsernameOptions = {}): string {
  let u = `${hostName}/${deviceId}/?api-version=${o.apiVersion ?? DEFAULT_HUB_API_VERSION}`;
  if (o.modelId !== undefined) u += `&model-id=${o.modelId}`;
  if (o.clientType !== undefined) u += `&DeviceClientType=${encodeURIComponent(o.clientType)}`;
  return u;
}

export function telemetryTopic(deviceId: string, propertyBag: string): string {
  return `devices/${deviceId}/messages/events/${propertyBag}`;
}

export function c2dPrefix(deviceId: string): string {
  return `devices/${deviceId}/messages/devicebound/`;
}

export function c2dSubscription(deviceId: string): string {
  return `${c2dPrefix(deviceId)}#`;
}

export function twinGetTopic(rid: string): string {
  return `$iothub/twin/GET/?$rid=${rid}`;
}

export function twinReportedTopic(rid: string): string {
  return `$iothub/twin/PATCH/properties/reported/?$rid=${rid}`;
}

export function methodResponseTopic(status: number, rid: string): string {
  return `$iothub/methods/res/${status}/?$rid=${rid}`;
}

export interface TwinResponseTopic {
  status: number;
  rid: string;
  version: number | undefined;
}

/** `$iothub/twin/res/{status}/?$rid={rid}[&$version={n}]`. */
export function parseTwinResponseTopic(topic: string): TwinResponseTopic | undefined {
  const m = /^\$iothub\/twin\/res\/(\d{3})\/\?(.*)$/.exec(topic);
  if (!m) return undefined;
  const q = parseQuery(m[2] ?? '');
  const rid = q.get('$rid');
  if (rid === undefined) return undefined;
  return { status: Number(m[1]), rid, version: intOrUndefined(q.get('$version')) };
}

/** `$iothub/twin/PATCH/properties/desired/?$version={n}` → the version (undefined when absent). */
export function parseDesiredTopic(topic: string): { version: number | undefined } | undefined {
  const prefix = '$iothub/twin/PATCH/properties/desired/';
  if (!topic.startsWith(prefix)) return undefined;
  const rest = topic.slice(prefix.length);
  const q = parseQuery(rest.startsWith('?') ? rest.slice(1) : rest);
  return { version: intOrUndefined(q.get('$version')) };
}

/** `$iothub/methods/POST/{name}/?$rid={rid}` → name and rid. */
export function parseMethodTopic(topic: string): { name: string; rid: string } | undefined {
  const m = /^\$iothub\/methods\/POST\/([^/]+)\/\?(.*)$/.exec(topic);
  if (!m) return undefined;
  const rid = parseQuery(m[2] ?? '').get('$rid');
  if (rid === undefined || m[1] === undefined) return undefined;
  return { name: m[1], rid };
}

function intOrUndefined(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

import { HomingError } from './errors.ts';
import { sasSignatureMatches, type SasToken } from './sas.ts';

/** Rights of shared access policies: the IoT Hub set and the DPS set. */
export type HubRight = 'RegistryRead' | 'RegistryWrite' | 'ServiceConnect' | 'DeviceConnect';
export type DpsRight = 'ServiceConfig' | 'EnrollmentRead' | 'EnrollmentWrite' | 'RegistrationStatusRead' | 'RegistrationStatusWrite' | 'DeviceConnect';

export interface SharedAccessPolicy<R extends string = string> {
  keyName: string;
  primaryKey: string;
  secondaryKey: string;
  rights: readonly R[];
}

/** Clock skew allowed on token expiry checks. */
export const SAS_SKEW_SECONDS = 300;

/**
 * Authorizes a service call carrying a policy SAS. The sr must name one of `hosts` (case-insensitive), alone or as
 * a prefix of a path. Every failure is the same 401, with no hint of which part failed.
 */
export function authorizePolicySas<R extends string>(
  token: SasToken | undefined,
  policies: readonly SharedAccessPolicy<R>[],
  hosts: readonly string[],
  nowSeconds: number,
  required: R,
  unauthorized: 'Unauthorized' | 'IotHubUnauthorizedAccess' = 'IotHubUnauthorizedAccess',
): SharedAccessPolicy<R> {
  const fail = () => new HomingError(unauthorized, 'Unauthorized');
  if (!token || token.skn === undefined) throw fail();
  if (token.se + SAS_SKEW_SECONDS < nowSeconds) throw fail();
  const policy = policies.find((p) => p.keyName === token.skn);
  if (!policy) throw fail();
  const sr = token.sr.toLowerCase();
  const slash = sr.indexOf('/');
  const srHost = stripPort(slash < 0 ? sr : sr.slice(0, slash));
  const hostOk = hosts.some((h) => stripPort(h.toLowerCase()) === srHost);
  if (!hostOk) throw fail();
  if (!sasSignatureMatches(token, [policy.primaryKey, policy.secondaryKey])) throw fail();
  if (!policy.rights.includes(required)) throw fail();
  return policy;
}

/** `host:port` → `host` (IPv6 literals in brackets keep their brackets). */
export function stripPort(h: string): string {
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const i = h.lastIndexOf(':');
  return i > 0 && h.indexOf(':') === i && /^\d+$/.test(h.slice(i + 1)) ? h.slice(0, i) : h;
}

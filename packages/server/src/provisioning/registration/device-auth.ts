import type { X509Certificate } from 'node:crypto';
import { HomingError } from '../../core/errors.ts';
import { SAS_SKEW_SECONDS } from '../../core/policies.ts';
import { registrationKey } from '../../core/registration-id.ts';
import { deriveDeviceKey, parseSas, sasSignatureMatches, type SasToken } from '../../core/sas.ts';
import type { ProvisioningReadStore } from '../../store/provisioning-ports.ts';
import type { EnrollmentGroup, IndividualEnrollment, RegistrationRecord } from '../model.ts';
import { authenticateX509, type X509MatchDetails, type X509MatchOptions } from './x509-auth.ts';

/**
 * Device authentication and enrollment matching for the DPS runtime (dps-behavior.md §6.1, §6.4).
 *
 * Every failure is the same 401 with no hint of which part failed (scope, token, enrollment).
 */

/**
 * How the device proved its identity: a SAS, or its TLS client chain (DER, leaf first). TPM comes later.
 * `parsed`: the same certificates already parsed by the transport (same order, each one's `raw` the Buffer in
 * `chain`), so the attestation need not parse them again.
 */
export type DeviceCredential =
  | { kind: 'sas'; authorization: string | undefined }
  | { kind: 'x509'; chain: readonly Buffer[]; parsed?: readonly X509Certificate[] }
  | { kind: 'none' };

export type EnrollmentMatch =
  | { kind: 'individual'; enrollment: IndividualEnrollment; x509?: X509MatchDetails }
  | { kind: 'group'; group: EnrollmentGroup; derivedKeys: { primaryKey: string; secondaryKey: string }; x509?: undefined }
  /** An X.509 device matched through a group (x509-auth.ts). */
  | { kind: 'group'; group: EnrollmentGroup; derivedKeys?: undefined; x509: X509MatchDetails }
  /** A disabled individual enrollment with this registration id blocks a device that a group would accept. */
  | { kind: 'blocked'; enrollment: IndividualEnrollment; acceptedBy: EnrollmentGroup };

/** The registration SAS skn devices use. */
export const REGISTRATION_KEY_NAME = 'registration';

export function unauthorized(): HomingError {
  return new HomingError('Unauthorized', 'Unauthorized');
}

/**
 * Structural checks of a device SAS: skn `registration`, not expired (5 minutes of skew), and sr naming
 * `{idScope}/registrations/{registrationId}` (decoded, case-insensitive). The signature is checked by the matcher.
 */
export function parseDeviceSas(authorization: string | undefined, idScope: string, registrationId: string, nowSeconds: number): SasToken | undefined {
  const token = parseSas(authorization);
  if (!token) return undefined;
  if (token.skn !== REGISTRATION_KEY_NAME) return undefined;
  if (token.se + SAS_SKEW_SECONDS < nowSeconds) return undefined;
  const expected = `${idScope}/registrations/${registrationId}`.toLowerCase();
  if (token.sr.toLowerCase() !== expected) return undefined;
  return token;
}

function individualAccepts(e: IndividualEnrollment, token: SasToken): boolean {
  const sk = e.attestation.type === 'symmetricKey' ? e.attestation.symmetricKey : undefined;
  return sk !== undefined && sasSignatureMatches(token, [sk.primaryKey, sk.secondaryKey]);
}

/** The group's derived keys when the token is signed with one of them (never with the group key itself). */
function groupAccepts(g: EnrollmentGroup, registrationId: string, token: SasToken): { primaryKey: string; secondaryKey: string } | undefined {
  const sk = g.attestation.type === 'symmetricKey' ? g.attestation.symmetricKey : undefined;
  if (!sk?.primaryKey || !sk.secondaryKey) return undefined;
  const derived = { primaryKey: deriveDeviceKey(sk.primaryKey, registrationId), secondaryKey: deriveDeviceKey(sk.secondaryKey, registrationId) };
  return sasSignatureMatches(token, [derived.primaryKey, derived.secondaryKey]) ? derived : undefined;
}

export interface MatchOptions {
  /** The registration record, if any: its group is tried first. */
  record?: RegistrationRecord | undefined;
  /** The individual enrollment with this registration id, when the caller already read it (null: there is none). */
  individual?: IndividualEnrollment | null;
  /**
   * The instance's symmetric-key groups, possibly from a cache; called again with `fresh` when no group accepts the
   * device (so a group created a moment ago is found). Default: paged from the store.
   */
  symmetricKeyGroups?: (fresh: boolean) => Promise<readonly EnrollmentGroup[]>;
  /** Called when two groups accept one token (duplicated keys): the operator should hear of it. */
  onAmbiguous?: (groupIds: string[]) => void;
  /** Trust material for X.509 devices (without it an X.509 device is refused). */
  x509?: X509MatchOptions;
}

const GROUP_PAGE = 200;

/**
 * Symmetric-key groups whose derived key signed the token (§6.4 step 4): the group of the existing record first (and
 * only, when it accepts); otherwise every symmetric-key group; two accepting groups are a 409.
 * The derivation uses the registration id as the device presented it (the device derived its key from it).
 */
async function matchGroup(store: ProvisioningReadStore, instance: string, registrationId: string, token: SasToken, opts: MatchOptions): Promise<EnrollmentMatch | undefined> {
  if (!opts.symmetricKeyGroups) return matchGroupIn(await listSymmetricKeyGroups(store, instance), registrationId, token, opts);
  const m = await matchGroupIn(await opts.symmetricKeyGroups(false), registrationId, token, opts);
  return m ?? matchGroupIn(await opts.symmetricKeyGroups(true), registrationId, token, opts);
}

async function matchGroupIn(groups: readonly EnrollmentGroup[], registrationId: string, token: SasToken, opts: MatchOptions): Promise<EnrollmentMatch | undefined> {
  let skip: string | undefined;
  const rec = opts.record;
  if (rec?.enrollment.kind === 'group') {
    const want = registrationKey(rec.enrollment.enrollmentGroupId);
    const g = groups.find((x) => registrationKey(x.enrollmentGroupId) === want);
    if (g) {
      const keys = groupAccepts(g, registrationId, token);
      if (keys) return { kind: 'group', group: g, derivedKeys: keys };
      skip = want;
    }
  }
  const accepted: EnrollmentMatch[] = [];
  for (const g of groups) {
    if (skip !== undefined && registrationKey(g.enrollmentGroupId) === skip) continue;
    const keys = groupAccepts(g, registrationId, token);
    if (keys) accepted.push({ kind: 'group', group: g, derivedKeys: keys });
  }
  if (accepted.length > 1) {
    const ids = accepted.map((m) => (m.kind === 'group' ? m.group.enrollmentGroupId : ''));
    opts.onAmbiguous?.(ids);
    throw new HomingError('DeviceAlreadyExists', 'More than one enrollment group accepts this device credential.');
  }
  return accepted[0];
}

/** Every symmetric-key group of an instance (at most a few hundred: the DPS limit is 100). */
export async function listSymmetricKeyGroups(store: ProvisioningReadStore, instance: string): Promise<EnrollmentGroup[]> {
  const out: EnrollmentGroup[] = [];
  let after: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const page = await store.listEnrollmentGroups(instance, { attestationType: 'symmetricKey', limit: GROUP_PAGE, ...(after === undefined ? {} : { after }) });
    out.push(...page.items);
    if (page.next === undefined) break;
    after = page.next;
  }
  return out;
}

/**
 * Authenticates a device and selects its enrollment (§6.4): the individual enrollment with this registration id is
 * the only candidate when it exists; otherwise symmetric-key groups by derived key. Throws 401 (or 409 for an
 * ambiguous group match).
 */
export async function authenticateDevice(
  store: ProvisioningReadStore,
  instance: { name: string; idScope: string },
  registrationId: string,
  credential: DeviceCredential,
  nowSeconds: number,
  opts: MatchOptions = {},
): Promise<EnrollmentMatch> {
  if (credential.kind === 'x509') {
    if (!opts.x509) throw unauthorized();
    return authenticateX509(store, instance, registrationId, credential.chain, nowSeconds * 1000, opts.x509, opts.individual, credential.parsed);
  }
  if (credential.kind !== 'sas') throw unauthorized();
  const token = parseDeviceSas(credential.authorization, instance.idScope, registrationId, nowSeconds);
  if (!token) throw unauthorized();
  const individual = opts.individual === undefined ? await store.getIndividualEnrollment(instance.name, registrationId) : (opts.individual ?? undefined);
  if (individual) {
    if (individualAccepts(individual, token)) return { kind: 'individual', enrollment: individual };
    // Blocklisting (§5): a disabled individual enrollment refuses a device of a group, whatever its attestation type.
    // The device must still prove a group credential, so a stranger learns nothing.
    if (individual.provisioningStatus === 'disabled') {
      const g = await matchGroup(store, instance.name, registrationId, token, opts);
      if (g?.kind === 'group') return { kind: 'blocked', enrollment: individual, acceptedBy: g.group };
    }
    throw unauthorized();
  }
  const g = await matchGroup(store, instance.name, registrationId, token, opts);
  if (!g) throw unauthorized();
  return g;
}

/**
 * Re-checks a device credential against the enrollment an operation was started through (operation polls): cheaper
 * than a full match, and a poll must come from the same device.
 */
export async function authenticateForEnrollment(
  store: ProvisioningReadStore,
  instance: { name: string; idScope: string },
  registrationId: string,
  credential: DeviceCredential,
  nowSeconds: number,
  enrollment: { kind: 'individual'; registrationId: string } | { kind: 'group'; enrollmentGroupId: string },
  x509?: X509MatchOptions,
): Promise<boolean> {
  if (credential.kind === 'x509') {
    // The chain is validated and matched again; the poll must land on the enrollment the operation started with.
    if (!x509) return false;
    const m = await authenticateX509(store, instance, registrationId, credential.chain, nowSeconds * 1000, x509, undefined, credential.parsed).catch(() => undefined);
    if (m === undefined) return false;
    if (m.kind === 'individual') return enrollment.kind === 'individual' && registrationKey(m.enrollment.registrationId) === registrationKey(enrollment.registrationId);
    const g = m.kind === 'group' ? m.group : m.acceptedBy;
    return enrollment.kind === 'group' && registrationKey(g.enrollmentGroupId) === registrationKey(enrollment.enrollmentGroupId);
  }
  if (credential.kind !== 'sas') return false;
  const token = parseDeviceSas(credential.authorization, instance.idScope, registrationId, nowSeconds);
  if (!token) return false;
  if (enrollment.kind === 'individual') {
    const e = await store.getIndividualEnrollment(instance.name, enrollment.registrationId);
    return e !== undefined && individualAccepts(e, token);
  }
  const g = await store.getEnrollmentGroup(instance.name, enrollment.enrollmentGroupId);
  return g !== undefined && groupAccepts(g, registrationId, token) !== undefined;
}

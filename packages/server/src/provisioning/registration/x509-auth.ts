import { createHash, X509Certificate } from 'node:crypto';
import { HomingError } from '../../core/errors.ts';
import { registrationKey } from '../../core/registration-id.ts';
import { isVerifiedFrom, TrustAnchors, validateDeviceChain, type ChainAccepted, type ParsedCrl } from '../../core/x509-chain.ts';
import type { JsonObject } from '../../core/json.ts';
import type { CaCertificateReadStore } from '../../store/ca-ports.ts';
import type { ProvisioningReadStore } from '../../store/provisioning-ports.ts';
import { loadCaTrustMaterial, type CaAnchorRef } from '../ca-certificates.ts';
import { certificateInfo, parseCertificate } from '../enrollments/x509.ts';
import type { HubCredentials } from '../hub-client.ts';
import type { EnrollmentGroup, IndividualEnrollment, X509CertificateInfo, X509CertificateWithInfo } from '../model.ts';

/**
 * X.509 attestation (dps-behavior.md §6.2, §6.4): the chain a device presented in its TLS handshake is validated by
 * `validateDeviceChain` against the instance's verified CA certificates, then matched:
 *
 * 1. The individual enrollment with this registration id, when it exists, is the only candidate: an X.509 one accepts
 *    the device when the leaf's SHA-256 thumbprint is its primary or secondary client certificate (no verified CA is
 *    needed for an individual enrollment). A disabled individual enrollment of any attestation type whose credential
 *    does not match blocks a device that a group accepts (blocklisting, §5); otherwise 401.
 * 2. Groups: the presented path is walked from the first certificate above the leaf upward; the first certificate
 *    that has an X.509 group (embedded signing certificate or resolved `caReferences`) decides; it is usable only when
 *    a verified certificate is at or above it (`isVerifiedFrom`). None: 401.
 *
 * Every refusal is the same 401 (401002 "Invalid certificate"); the reason is logged with the registration id and
 * the leaf's SHA-1 thumbprint, never a certificate or key.
 */

/** What an X.509 match carries to the result and the hub identity. */
export interface X509MatchDetails {
  /** The leaf, as `registrationState.x509.certificateInfo`. */
  certificateInfo: X509CertificateInfo;
  enrollmentGroupId?: string;
  /** The group's certificate that matched (group matches only). */
  signingCertificateInfo?: X509CertificateInfo;
}

export type X509Match =
  | { kind: 'individual'; enrollment: IndividualEnrollment; x509: X509MatchDetails }
  | { kind: 'group'; group: EnrollmentGroup; x509: X509MatchDetails }
  | { kind: 'blocked'; enrollment: IndividualEnrollment; acceptedBy: EnrollmentGroup };

/** An X.509 group indexed by one of its certificates. */
export interface X509GroupEntry {
  group: EnrollmentGroup;
  info: X509CertificateInfo;
}

/** The trust material of one instance for X.509 attestation (cache it; rebuild on CA or group changes). */
export interface X509Trust {
  anchors: TrustAnchors<CaAnchorRef>;
  crls: readonly ParsedCrl[];
  /** X.509 groups by the upper-case SHA-256 thumbprint of their signing certificate(s). */
  groups: ReadonlyMap<string, X509GroupEntry>;
  /** Things worth logging once (unreadable CAs, unresolvable caReferences). */
  problems: readonly string[];
}

export interface X509MatchOptions {
  /** The instance's trust material, possibly cached; called again with `fresh` before refusing. */
  trust: (fresh: boolean) => Promise<X509Trust>;
  /** Why a chain was refused (registration id, leaf SHA-1, reason): for the operator's log. */
  onRefused?: (info: { registrationId: string; leafSha1: string | undefined; reason: string }) => void;
}

const GROUP_PAGE = 200;

/** 401002 "Invalid certificate" (dps-behavior.md §6.2). */
export function invalidCertificate(): HomingError {
  return new HomingError('IotHubUnauthorizedAccess', 'Invalid certificate');
}

function sha256Of(raw: Buffer): string {
  return createHash('sha256').update(raw).digest('hex').toUpperCase();
}

function sha1Of(raw: Buffer): string {
  return createHash('sha1').update(raw).digest('hex').toUpperCase();
}

/** Parsed certificates devices present above their leaf (intermediates, shared by every device under them). */
const PRESENTED_CA_CACHE_SIZE = 256;
/** Only certificates up to this size are kept (CA certificates are 0.5–2 KB), so the cache stays under ~5 MB. */
const PRESENTED_CA_CACHE_MAX_BYTES = 8 * 1024;
/** Larger inputs are passed through as bytes (the chain validator's own size limit then refuses them). */
const PRESENTED_MAX_BYTES = 64 * 1024;
const presentedCas = new Map<string, X509Certificate>();

/**
 * The presented chain for `validateDeviceChain`, parsed as cheaply as possible (parsing a certificate costs more
 * than checking it: OpenSSL 3 decodes its key, about 0.25 ms):
 * - a certificate the transport parsed already (`parsed[i]`, whose `raw` is `chain[i]`) is used as it is;
 * - the certificates above the leaf are kept parsed by DER content (least recently used out): every device under one
 *   intermediate presents the same one, and the facts the validator memoizes per parsed object are reused with it.
 * Validation itself (times, signatures, revocation) still runs on every request. A certificate that does not parse is
 * passed on as bytes, so the validator refuses it as before.
 */
function presentedForValidation(chain: readonly Buffer[], parsed: readonly X509Certificate[] | undefined): (Buffer | X509Certificate)[] {
  const out: (Buffer | X509Certificate)[] = [];
  for (let i = 0; i < chain.length; i++) {
    const der = chain[i] as Buffer;
    if (!Buffer.isBuffer(der) || der.length === 0 || der.length > PRESENTED_MAX_BYTES) {
      out.push(der);
      continue;
    }
    const mine = parsed?.[i];
    const fromTransport = mine !== undefined && mine.raw === der ? mine : undefined;
    if (i === 0 || der.length > PRESENTED_CA_CACHE_MAX_BYTES) {
      out.push(fromTransport ?? der);
      continue;
    }
    const key = der.toString('base64');
    let cert = presentedCas.get(key);
    if (cert !== undefined) {
      presentedCas.delete(key);
      presentedCas.set(key, cert);
    } else {
      if (fromTransport !== undefined) cert = fromTransport;
      else {
        try {
          cert = new X509Certificate(der);
        } catch {
          out.push(der);
          continue;
        }
      }
      presentedCas.set(key, cert);
      if (presentedCas.size > PRESENTED_CA_CACHE_SIZE) {
        const oldest = presentedCas.keys().next();
        if (oldest.done !== true) presentedCas.delete(oldest.value);
      }
    }
    out.push(cert);
  }
  return out;
}

/** The SHA-256 thumbprint of an enrollment certificate (recomputed from the certificate when present). */
function thumbprintOf(c: X509CertificateWithInfo | undefined): string | undefined {
  if (c === undefined) return undefined;
  if (typeof c.certificate === 'string' && c.certificate.length > 0) {
    try {
      return sha256Of(parseCertificate(c.certificate, 'certificate').raw);
    } catch {
      return undefined;
    }
  }
  return c.info?.sha256Thumbprint.toUpperCase();
}

/** The SHA-256 thumbprints of an individual enrollment's client certificates (primary, secondary). */
export function clientThumbprints(e: IndividualEnrollment): string[] {
  const cc = e.attestation.type === 'x509' ? e.attestation.x509?.clientCertificates : undefined;
  return [thumbprintOf(cc?.primary), thumbprintOf(cc?.secondary)].filter((t): t is string => t !== undefined);
}

/** Every X.509 group of an instance (paged; the DPS limit on groups is small). */
export async function listX509Groups(store: ProvisioningReadStore, instance: string): Promise<EnrollmentGroup[]> {
  const out: EnrollmentGroup[] = [];
  let after: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const page = await store.listEnrollmentGroups(instance, { attestationType: 'x509', limit: GROUP_PAGE, ...(after === undefined ? {} : { after }) });
    out.push(...page.items);
    if (page.next === undefined) break;
    after = page.next;
  }
  return out;
}

/**
 * Builds the X.509 trust material of an instance: verified CA certificates as trust anchors (a group's embedded
 * signing certificate is verified exactly when the same certificate is an uploaded, verified CA, so it is an anchor
 * already), their CRLs, and the X.509 groups by the thumbprints of their signing certificates or referenced CAs.
 */
export async function loadX509Trust(store: ProvisioningReadStore, ca: CaCertificateReadStore | undefined, instance: string): Promise<X509Trust> {
  const material = ca === undefined ? undefined : await loadCaTrustMaterial(ca, instance);
  const problems = [...(material?.problems ?? [])];
  const groups = new Map<string, X509GroupEntry>();
  const add = (group: EnrollmentGroup, cert: X509Certificate): void => {
    const info = certificateInfo(cert);
    const existing = groups.get(info.sha256Thumbprint);
    if (existing && registrationKey(existing.group.enrollmentGroupId) !== registrationKey(group.enrollmentGroupId)) {
      problems.push(`certificate ${info.sha1Thumbprint} is in groups ${existing.group.enrollmentGroupId} and ${group.enrollmentGroupId}; the first is used`);
      return;
    }
    groups.set(info.sha256Thumbprint, { group, info });
  };
  for (const g of await listX509Groups(store, instance)) {
    const x = g.attestation.x509;
    for (const c of [x?.signingCertificates?.primary, x?.signingCertificates?.secondary]) {
      if (typeof c?.certificate !== 'string') continue;
      try {
        add(g, parseCertificate(c.certificate, 'signing certificate'));
      } catch {
        problems.push(`a signing certificate of group ${g.enrollmentGroupId} cannot be parsed`);
      }
    }
    for (const name of [x?.caReferences?.primary, x?.caReferences?.secondary]) {
      if (typeof name !== 'string' || name.length === 0) continue;
      const entry = material?.byName.get(name.toLowerCase());
      if (entry === undefined) problems.push(`group ${g.enrollmentGroupId} references CA certificate '${name}', which does not exist`);
      else add(g, entry.cert);
    }
  }
  return { anchors: new TrustAnchors(material?.anchors ?? []), crls: material?.crls ?? [], groups, problems };
}

/** The group that accepts this validated chain, or why none does. */
function groupFor(result: ChainAccepted<CaAnchorRef>, trust: X509Trust): { entry: X509GroupEntry } | { none: string } {
  for (let i = 1; i < result.path.length; i++) {
    const c = result.path[i];
    if (c === undefined) break;
    const entry = trust.groups.get(c.sha256Thumbprint);
    if (entry === undefined) continue;
    if (!isVerifiedFrom(result, i)) return { none: `group ${entry.group.enrollmentGroupId} matches, but no verified CA certificate is at or above ${c.subject}${result.unverifiedReason ? ` (${result.unverifiedReason})` : ''}` };
    return { entry };
  }
  return { none: 'no enrollment group holds a certificate of the chain' };
}

/**
 * Authenticates an X.509 device and selects its enrollment (see the module comment). `individual`: the individual
 * enrollment with this registration id (null: none), when the caller read it already. `parsed`: the chain's
 * certificates as the transport parsed them (optional). Throws 401002.
 */
export async function authenticateX509(
  store: ProvisioningReadStore,
  instance: { name: string },
  registrationId: string,
  chain: readonly Buffer[],
  nowMs: number,
  opts: X509MatchOptions,
  individual?: IndividualEnrollment | null,
  parsed?: readonly X509Certificate[],
): Promise<X509Match> {
  const refuse = (reason: string): HomingError => {
    const leafRaw = chain[0];
    const leafSha1 = leafRaw === undefined ? undefined : sha1Of(leafRaw);
    opts.onRefused?.({ registrationId, leafSha1, reason });
    return invalidCertificate();
  };
  const presented = presentedForValidation(chain, parsed);
  const validate = (trust: X509Trust) => validateDeviceChain<CaAnchorRef>({ presented, registrationId, anchors: trust.anchors, now: nowMs, crls: trust.crls });

  let trust = await opts.trust(false);
  let result = validate(trust);
  if (!result.ok) {
    // A CA (or CRL) changed a moment ago: decide on fresh material before refusing.
    trust = await opts.trust(true);
    result = validate(trust);
    if (!result.ok) throw refuse(`${result.reason}: ${result.message}`);
  }
  const leaf = result.leaf;
  const details: X509MatchDetails = { certificateInfo: certificateInfo(leaf.cert) };

  const ind = individual === undefined ? await store.getIndividualEnrollment(instance.name, registrationId) : (individual ?? undefined);
  if (ind) {
    if (ind.attestation.type === 'x509' && clientThumbprints(ind).includes(leaf.sha256Thumbprint)) {
      return { kind: 'individual', enrollment: ind, x509: details };
    }
    if (ind.provisioningStatus === 'disabled') {
      const g = await matchGroup(result, trust, opts, validate);
      if ('entry' in g) return { kind: 'blocked', enrollment: ind, acceptedBy: g.entry.group };
    }
    throw refuse(`the individual enrollment ${ind.registrationId} does not hold this certificate`);
  }
  const g = await matchGroup(result, trust, opts, validate);
  if ('none' in g) throw refuse(g.none);
  return {
    kind: 'group',
    group: g.entry.group,
    x509: { ...details, enrollmentGroupId: g.entry.group.enrollmentGroupId, signingCertificateInfo: g.entry.info },
  };
}

/** Group matching on cached material, re-read once before giving up (a group created a moment ago). */
async function matchGroup(
  result: ChainAccepted<CaAnchorRef>,
  trust: X509Trust,
  opts: X509MatchOptions,
  validate: (t: X509Trust) => ReturnType<typeof validateDeviceChain<CaAnchorRef>>,
): Promise<{ entry: X509GroupEntry } | { none: string }> {
  const first = groupFor(result, trust);
  if ('entry' in first) return first;
  const fresh = await opts.trust(true);
  if (fresh === trust) return first;
  const again = validate(fresh);
  if (!again.ok) return { none: `${again.reason}: ${again.message}` };
  return groupFor(again, fresh);
}

/** The hub identity of an X.509 device: self-signed with the leaf thumbprint (primary = secondary, §1.8). */
export function x509HubCredentials(d: X509MatchDetails): HubCredentials {
  return { type: 'selfSigned', primaryThumbprint: d.certificateInfo.sha1Thumbprint, secondaryThumbprint: d.certificateInfo.sha1Thumbprint };
}

/** `registrationState.x509` as stored in the registration record. */
export function x509ResultJson(d: X509MatchDetails): JsonObject {
  const out: JsonObject = { certificateInfo: { ...d.certificateInfo } };
  if (d.enrollmentGroupId !== undefined) out.enrollmentGroupId = d.enrollmentGroupId;
  if (d.signingCertificateInfo !== undefined) out.signingCertificateInfo = { ...d.signingCertificateInfo };
  return out;
}

import { createHash } from 'node:crypto';
import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import { registrationKey } from '../../core/registration-id.ts';
import type { CaCertificateReadStore } from '../../store/ca-ports.ts';
import type { CertificateClaimStore, ClaimOwner } from '../../store/certificate-claim-ports.ts';
import type { ProvisioningReadStore } from '../../store/provisioning-ports.ts';
import type { EnrollmentGroup, IndividualEnrollment, X509CertificateWithInfo } from '../model.ts';
import { parseCertificate } from './x509.ts';

/**
 * "A given certificate may appear in only one enrollment entry" (dps-behavior.md §6.2, scenario 13): creating or
 * updating an entry with a certificate another entry holds is 409 (DeviceAlreadyExists).
 *
 * The certificates of an entry are its client certificates (individual) or its signing certificates and referenced
 * CA certificates (group), by SHA-256 thumbprint. They are claimed in `dps_certificate_claims` before the entry is
 * written and released after (`around`), and released when the entry is deleted. The enrollments stay the truth: a
 * claim held by an entry that no longer holds the certificate (a write that died between claim and release) is taken
 * over — at once when that entry exists, after `graceMs` when it does not (it may be a create in flight).
 * X.509 groups are also scanned (at most a few hundred), so groups written before claims existed are seen too;
 * individual enrollments written before migration 0005 are claimed when they are next updated.
 */
export interface CertificateClaimsDeps {
  claims: CertificateClaimStore;
  store: ProvisioningReadStore;
  /** To resolve `caReferences` of groups (without it they are not claimed). */
  caCertificates?: CaCertificateReadStore;
  clock: Clock;
  /** How long a claim whose entry does not exist (yet) is respected, ms. Default 60 000. */
  graceMs?: number;
}

type Entry = IndividualEnrollment | EnrollmentGroup;

const GROUP_PAGE = 200;

function isGroup(e: Entry): e is EnrollmentGroup {
  return 'enrollmentGroupId' in e && typeof e.enrollmentGroupId === 'string';
}

export function claimOwnerOf(e: Entry): ClaimOwner {
  return isGroup(e) ? { kind: 'group', key: registrationKey(e.enrollmentGroupId) } : { kind: 'individual', key: registrationKey(e.registrationId) };
}

function sameOwner(a: ClaimOwner, b: ClaimOwner): boolean {
  return a.kind === b.kind && a.key === b.key;
}

function thumbprint(c: X509CertificateWithInfo | undefined): string | undefined {
  if (typeof c?.certificate !== 'string' || c.certificate.length === 0) return undefined;
  try {
    return createHash('sha256').update(parseCertificate(c.certificate, 'certificate').raw).digest('hex').toUpperCase();
  } catch {
    return undefined;
  }
}

export class CertificateClaims {
  private readonly d: CertificateClaimsDeps;
  private readonly graceMs: number;

  constructor(deps: CertificateClaimsDeps) {
    this.d = deps;
    this.graceMs = deps.graceMs ?? 60_000;
  }

  /** The SHA-256 thumbprints of the certificates an entry holds (empty for non-X.509 entries). */
  async thumbprintsOf(instance: string, e: Entry): Promise<string[]> {
    const x = e.attestation.type === 'x509' ? e.attestation.x509 : undefined;
    if (x === undefined) return [];
    const out = new Set<string>();
    const pair = isGroup(e) ? x.signingCertificates : x.clientCertificates;
    for (const c of [pair?.primary, pair?.secondary]) {
      const t = thumbprint(c);
      if (t !== undefined) out.add(t);
    }
    if (isGroup(e) && this.d.caCertificates) {
      for (const name of [x.caReferences?.primary, x.caReferences?.secondary]) {
        if (typeof name !== 'string' || name.length === 0) continue;
        const ca = await this.d.caCertificates.getCaCertificate(instance, name);
        if (ca) out.add(ca.sha256Thumbprint.toUpperCase());
      }
    }
    return [...out];
  }

  /** Claims the certificates of `next`, runs the write, then keeps only the claims of what is stored. */
  async around<R>(instance: string, next: Entry, write: () => Promise<R>): Promise<R> {
    const owner = claimOwnerOf(next);
    const wanted = await this.thumbprintsOf(instance, next);
    if (wanted.length > 0) {
      try {
        await this.reserve(instance, owner, wanted);
      } catch (e) {
        await this.settle(instance, owner).catch(() => undefined);
        throw e;
      }
    }
    try {
      return await write();
    } finally {
      await this.settle(instance, owner).catch(() => undefined);
    }
  }

  /** After a delete: the entry's claims go (what a concurrent re-create stored is kept). */
  async released(instance: string, owner: ClaimOwner): Promise<void> {
    await this.settle(instance, owner);
  }

  private async reserve(instance: string, owner: ClaimOwner, wanted: readonly string[]): Promise<void> {
    await this.scanGroups(instance, owner, wanted);
    const now = this.d.clock.now();
    for (const claim of await this.d.claims.claim(instance, wanted, owner, now)) {
      if (sameOwner(claim.owner, owner)) continue;
      const holder = await this.entryOf(instance, claim.owner);
      const holds = holder !== undefined && (await this.thumbprintsOf(instance, holder)).includes(claim.sha256);
      const stale = !holds && (holder !== undefined || claim.claimedMs + this.graceMs < now);
      if (stale && (await this.d.claims.takeOver(instance, claim.sha256, claim.owner, owner, now))) continue;
      throw inUse(claim.sha256, claim.owner);
    }
  }

  /** Groups are few: a scan catches groups stored before claims existed. */
  private async scanGroups(instance: string, owner: ClaimOwner, wanted: readonly string[]): Promise<void> {
    let after: string | undefined;
    for (let pages = 0; pages < 100; pages++) {
      const page = await this.d.store.listEnrollmentGroups(instance, { attestationType: 'x509', limit: GROUP_PAGE, ...(after === undefined ? {} : { after }) });
      for (const g of page.items) {
        const gOwner = claimOwnerOf(g);
        if (sameOwner(gOwner, owner)) continue;
        const held = await this.thumbprintsOf(instance, g);
        const clash = wanted.find((t) => held.includes(t));
        if (clash !== undefined) throw inUse(clash, gOwner);
      }
      if (page.next === undefined) break;
      after = page.next;
    }
  }

  private entryOf(instance: string, owner: ClaimOwner): Promise<Entry | undefined> {
    return owner.kind === 'group' ? this.d.store.getEnrollmentGroup(instance, owner.key) : this.d.store.getIndividualEnrollment(instance, owner.key);
  }

  /** Keeps the claims of what is stored for `owner` now, releases the rest. */
  private async settle(instance: string, owner: ClaimOwner): Promise<void> {
    const stored = await this.entryOf(instance, owner);
    const keep = stored === undefined ? [] : await this.thumbprintsOf(instance, stored);
    await this.d.claims.release(instance, owner, keep);
  }
}

function inUse(sha256: string, owner: ClaimOwner): HomingError {
  const what = owner.kind === 'group' ? 'enrollment group' : 'enrollment';
  return new HomingError('DeviceAlreadyExists', `The certificate ${sha256} is already in ${what} '${owner.key}'; a certificate may be in one enrollment entry only.`);
}

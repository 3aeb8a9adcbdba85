import 'reflect-metadata';
import { webcrypto, X509Certificate } from 'node:crypto';
import { X509Certificate as PeculiarCertificate, X509Crl } from '@peculiar/x509';
import { isoTime, type Clock, type IdSource } from '../core/clock.ts';
import { HomingError } from '../core/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../core/json.ts';
import {
  caProblem,
  crlSignedBy,
  crlToPem,
  isIssuedBy,
  parseCrl,
  subjectCommonNames,
  validityProblem,
  type ParsedCrl,
  type TrustAnchor,
} from '../core/x509-chain.ts';
import type { CaCertificateReadStore, CaCertificateRecord, CaCertificateStore, CaCrlRecord } from '../store/ca-ports.ts';
import { normalizeIfMatch } from './enrollments/validation.ts';
import { certificateInfo, parseCertificate } from './enrollments/x509.ts';

/**
 * CA certificates of a provisioning instance (Azure's "certificates" resource; dps-behavior.md §1.1, §6.2):
 * upload, proof of possession, CRLs, and the trust material the registration flow reads.
 *
 * - Upload: a PEM (or base64 of a PEM or DER) CA certificate (basicConstraints CA:true, keyCertSign when keyUsage is
 *   present, not expired). Unverified unless the admin says `isVerified: true` (Azure's "verified on upload").
 *   At most 25 per instance (403 403002); one name per certificate (409 409001).
 * - Proof of possession: `generateVerificationCode` stores a random code; `verify` accepts a certificate whose only
 *   subject CN is that code, signed by the CA and within its validity, marks the CA verified and spends the code.
 *   A failed proof is a 400 (the admin's call was authorized; the proof is a bad argument).
 * - CRL: one per CA, replaced by each upload; parsed and signature-checked with @peculiar/x509 against the CA, and
 *   with the same reader the registration flow uses (core/x509-chain.ts), so what is stored is usable there. Stale
 *   CRLs (nextUpdate past) and CRLs older than the one on file are refused.
 */
export const MAX_CA_CERTIFICATES = 25;

/** The certificate name: 1–64 letters, digits, '.', '_' and '-', starting with a letter or digit. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_CRL_TEXT = 1536 * 1024;
const MAX_CAS_RETRIES = 8;

type X509Crypto = Parameters<X509Crl['verify']>[1];
const x509Crypto = webcrypto as unknown as X509Crypto;

export interface CaCertificateLimits {
  maxCaCertificates: number;
}

export interface CaCertificateServiceDeps {
  store: CaCertificateStore;
  clock: Clock;
  ids: IdSource;
  limits?: Partial<CaCertificateLimits>;
  /**
   * Called after every change that affects trust (upload, replace, delete, verify, CRL), with the instance name: the
   * registration flow drops its cached trust material there.
   */
  onChange?: (instance: string) => void;
}

/** What a trust anchor taken from an uploaded CA refers to. */
export interface CaAnchorRef {
  kind: 'caCertificate';
  /** The CA certificate's name (what `caReferences` hold). */
  name: string;
}

/** What the registration flow needs from the CA certificates of an instance. */
export interface CaTrustMaterial {
  /** Verified CA certificates, as trust anchors. */
  anchors: TrustAnchor<CaAnchorRef>[];
  /** Every CA certificate (verified or not) by lower-cased name, to resolve `caReferences`. */
  byName: ReadonlyMap<string, { record: CaCertificateRecord; cert: X509Certificate }>;
  /** The CRLs on file. */
  crls: ParsedCrl[];
  /** Stored entries that could not be read (for logs). */
  problems: string[];
}

function bad(message: string): HomingError {
  return new HomingError('ArgumentInvalid', message);
}

function notFound(name: string): HomingError {
  return new HomingError('NotFound', `No CA certificate named '${name}'.`);
}

function preconditionFailed(): HomingError {
  return new HomingError('PreconditionFailed', 'The If-Match etag does not match the current CA certificate.');
}

export function validateCaCertificateName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw bad('The certificate name must be 1 to 64 letters, digits, periods, underscores and hyphens, starting with a letter or a digit.');
  }
}

/** Reads `field` from the body, at the top level or under `properties` (the ARM shape). */
function bodyField(body: JsonValue | undefined, field: string, what: string): JsonValue | undefined {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', `The body is a JSON object {${what}}.`);
  if (body[field] !== undefined) return body[field];
  const props = body.properties;
  return isPlainObject(props) ? props[field] : undefined;
}

function requiredText(v: JsonValue | undefined, field: string): string {
  if (typeof v !== 'string' || v.trim().length === 0) throw bad(`${field} is required (a PEM string).`);
  return v;
}

/** RFC 1123 time, as Azure's certificate resources show `expiry`, `created` and `updated`. */
function rfc1123(iso: string): string {
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? iso : new Date(ms).toUTCString();
}

/** The Azure CertificateResponse shape (plus Homing's `sha256Thumbprint` and `crl` summary). */
export function caCertificateToJson(c: CaCertificateRecord, extra: JsonObject = {}): JsonObject {
  const properties: JsonObject = {
    subject: c.subject,
    thumbprint: c.thumbprint,
    sha256Thumbprint: c.sha256Thumbprint,
    expiry: rfc1123(c.expiry),
    isVerified: c.isVerified,
    certificate: c.certificate,
    created: rfc1123(c.created),
    updated: rfc1123(c.updated),
    ...extra,
  };
  if (c.crl !== undefined) {
    const crl: JsonObject = { thisUpdate: c.crl.thisUpdate, revokedCount: c.crl.revokedCount, uploaded: c.crl.uploaded };
    if (c.crl.nextUpdate !== undefined) crl.nextUpdate = c.crl.nextUpdate;
    properties.crl = crl;
  }
  return { name: c.name, etag: c.etag, type: 'Microsoft.Devices/ProvisioningServices/Certificates', properties };
}

function isoFromMs(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export class CaCertificateService {
  private readonly store: CaCertificateStore;
  private readonly clock: Clock;
  private readonly ids: IdSource;
  private readonly limits: CaCertificateLimits;
  private readonly onChange: ((instance: string) => void) | undefined;

  constructor(deps: CaCertificateServiceDeps) {
    this.store = deps.store;
    this.onChange = deps.onChange;
    this.clock = deps.clock;
    this.ids = deps.ids;
    this.limits = { maxCaCertificates: MAX_CA_CERTIFICATES, ...deps.limits };
  }

  private newEtag(): string {
    return Buffer.from(`"${this.ids.uuid()}"`, 'utf8').toString('base64');
  }

  async list(instance: string): Promise<CaCertificateRecord[]> {
    return this.store.listCaCertificates(instance);
  }

  async get(instance: string, name: string): Promise<CaCertificateRecord> {
    validateCaCertificateName(name);
    const c = await this.store.getCaCertificate(instance, name);
    if (c === undefined) throw notFound(name);
    return c;
  }

  /**
   * `PUT /homing/certificates/{name}`: body `{certificate, isVerified?}`. Without If-Match it creates (409 when the
   * name exists); with If-Match (an etag or `*`) it replaces (412 when missing or stale). A replace with another
   * certificate drops the verification (unless `isVerified: true`), the pending code, and a CRL the new certificate
   * did not sign.
   */
  async upload(instance: string, name: string, body: JsonValue | undefined, ifMatch?: string | readonly string[]): Promise<CaCertificateRecord> {
    validateCaCertificateName(name);
    const pem = requiredText(bodyField(body, 'certificate', 'certificate, isVerified?'), 'certificate');
    const verifiedIn = bodyField(body, 'isVerified', 'certificate, isVerified?');
    if (verifiedIn !== undefined && verifiedIn !== null && typeof verifiedIn !== 'boolean') throw bad('isVerified must be true or false.');
    const isVerified = typeof verifiedIn === 'boolean' ? verifiedIn : undefined;
    const cert = parseCertificate(pem, 'certificate');
    const problem = caProblem(cert);
    if (problem !== undefined) throw bad(`certificate is not a CA certificate: ${problem}.`);
    const nowMs = this.clock.now();
    if (validityProblem(cert, nowMs) === 'expired') throw bad('certificate has expired.');
    const info = certificateInfo(cert);
    const now = isoTime(nowMs);
    const fresh: CaCertificateRecord = {
      name,
      certificate: cert.toString(),
      subject: info.subjectName,
      thumbprint: info.sha1Thumbprint,
      sha256Thumbprint: info.sha256Thumbprint,
      expiry: info.notAfterUtc,
      isVerified: isVerified ?? false,
      created: now,
      updated: now,
      etag: this.newEtag(),
    };
    const expected = normalizeIfMatch(ifMatch);
    if (expected === undefined) {
      return this.changed(instance, this.outcome(await this.store.putCaCertificate(instance, fresh, { kind: 'absent' }, this.limits.maxCaCertificates), fresh, name));
    }
    for (let attempt = 0; attempt < MAX_CAS_RETRIES; attempt++) {
      const current = await this.store.getCaCertificate(instance, name);
      if (current === undefined) throw preconditionFailed();
      if (expected !== '*' && expected !== current.etag) throw preconditionFailed();
      const same = current.sha256Thumbprint === fresh.sha256Thumbprint;
      const next: CaCertificateRecord = { ...fresh, created: current.created, isVerified: isVerified ?? (same && current.isVerified) };
      if (same && current.verificationCode !== undefined) next.verificationCode = current.verificationCode;
      if (current.crl !== undefined && this.crlStillSigned(current.crl, cert)) next.crl = current.crl;
      const r = await this.store.putCaCertificate(instance, next, { kind: 'etag', etag: current.etag }, this.limits.maxCaCertificates);
      if (r === 'precondition-failed' && expected === '*') continue;
      return this.changed(instance, this.outcome(r, next, name));
    }
    throw new HomingError('ServiceUnavailable', 'The CA certificate kept changing; try again.');
  }

  private changed<T>(instance: string, value: T): T {
    this.onChange?.(instance);
    return value;
  }

  private crlStillSigned(crl: CaCrlRecord, cert: X509Certificate): boolean {
    const parsed = parseCrl(crl.crl);
    return parsed.ok && crlSignedBy(parsed.crl, cert);
  }

  private outcome(r: Awaited<ReturnType<CaCertificateStore['putCaCertificate']>>, written: CaCertificateRecord, name: string): CaCertificateRecord {
    switch (r) {
      case 'ok':
        return written;
      case 'exists':
        throw new HomingError('DeviceAlreadyExists', `A CA certificate named '${name}' exists; send If-Match to replace it.`);
      case 'thumbprint-taken':
        throw new HomingError('DeviceAlreadyExists', 'This certificate is already uploaded under another name.');
      case 'limit-reached':
        throw new HomingError('QuotaExceeded', `An instance holds at most ${this.limits.maxCaCertificates} CA certificates.`);
      case 'not-found':
      case 'precondition-failed':
        throw preconditionFailed();
    }
  }

  /** `DELETE /homing/certificates/{name}`, optional If-Match. The CA's CRL and pending code go with it. */
  async delete(instance: string, name: string, ifMatch?: string | readonly string[]): Promise<void> {
    validateCaCertificateName(name);
    const r = await this.store.deleteCaCertificate(instance, name, normalizeIfMatch(ifMatch));
    if (r === 'not-found') throw notFound(name);
    if (r === 'precondition-failed') throw preconditionFailed();
    this.onChange?.(instance);
  }

  /** A new proof-of-possession code (48 upper-case hex digits), replacing any pending one. */
  async generateVerificationCode(instance: string, name: string, ifMatch?: string | readonly string[]): Promise<{ certificate: CaCertificateRecord; verificationCode: string }> {
    const current = await this.get(instance, name);
    const expected = normalizeIfMatch(ifMatch);
    if (expected !== undefined && expected !== '*' && expected !== current.etag) throw preconditionFailed();
    const code = this.ids.bytes(24).toString('hex').toUpperCase();
    const etag = this.newEtag();
    const updated = isoTime(this.clock.now());
    const r = await this.store.setVerificationCode(instance, name, code, { ...(expected === undefined ? {} : { expectedEtag: expected }), etag, updated });
    if (r === 'not-found') throw notFound(name);
    if (r === 'precondition-failed') throw preconditionFailed();
    return { certificate: { ...current, verificationCode: code, etag, updated }, verificationCode: code };
  }

  /** Proof of possession: body `{certificate}`, a certificate whose subject CN is the pending code, signed by the CA. */
  async verify(instance: string, name: string, body: JsonValue | undefined, ifMatch?: string | readonly string[]): Promise<CaCertificateRecord> {
    validateCaCertificateName(name);
    const pem = requiredText(bodyField(body, 'certificate', 'certificate'), 'certificate');
    const proof = parseCertificate(pem, 'certificate');
    const current = await this.get(instance, name);
    const expected = normalizeIfMatch(ifMatch);
    if (expected !== undefined && expected !== '*' && expected !== current.etag) throw preconditionFailed();
    const code = current.verificationCode;
    if (code === undefined) throw bad('No verification code is pending for this certificate: generate one first.');
    const cns = subjectCommonNames(proof);
    if (cns.length !== 1 || cns[0]?.toUpperCase() !== code) throw bad('The subject CN of the verification certificate must be the pending verification code.');
    const ca = new X509Certificate(current.certificate);
    if (!isIssuedBy(proof, ca)) throw bad('The verification certificate is not signed by this CA certificate.');
    if (validityProblem(proof, this.clock.now()) !== undefined) throw bad('The verification certificate is expired or not valid yet.');
    const etag = this.newEtag();
    const updated = isoTime(this.clock.now());
    const r = await this.store.markVerified(instance, name, code, { ...(expected === undefined ? {} : { expectedEtag: expected }), etag, updated });
    if (r === 'not-found') throw notFound(name);
    if (r === 'precondition-failed') throw new HomingError('PreconditionFailed', 'The CA certificate changed meanwhile (a new verification code or etag); try again.');
    const { verificationCode: _spent, ...rest } = current;
    return this.changed(instance, { ...rest, isVerified: true, etag, updated });
  }

  /** `PUT /homing/certificates/{name}/crl`: body `{crl}` (PEM, or base64 of the DER), signed by this CA. */
  async putCrl(instance: string, name: string, body: JsonValue | undefined, ifMatch?: string | readonly string[]): Promise<CaCertificateRecord> {
    validateCaCertificateName(name);
    const text = requiredText(bodyField(body, 'crl', 'crl'), 'crl');
    if (text.length > MAX_CRL_TEXT) throw bad('crl is too large.');
    const parsed = parseCrl(text);
    if (!parsed.ok) throw bad(`crl is not a usable X.509 CRL: ${parsed.reason}.`);
    let crl: X509Crl;
    try {
      crl = new X509Crl(parsed.crl.der);
    } catch {
      throw bad('crl is not a parsable X.509 CRL.');
    }
    const current = await this.get(instance, name);
    const expected = normalizeIfMatch(ifMatch);
    if (expected !== undefined && expected !== '*' && expected !== current.etag) throw preconditionFailed();
    const ca = new X509Certificate(current.certificate);
    let signed: boolean;
    try {
      signed = (await crl.verify({ publicKey: new PeculiarCertificate(ca.raw) }, x509Crypto)) && crlSignedBy(parsed.crl, ca);
    } catch {
      signed = false;
    }
    if (!signed) throw bad('The CRL is not issued by this CA certificate (issuer name, signature or key usage).');
    const nowMs = this.clock.now();
    if (parsed.crl.nextUpdate !== undefined && parsed.crl.nextUpdate < nowMs) throw bad('The CRL is stale: its nextUpdate has passed.');
    if (current.crl !== undefined && Date.parse(current.crl.thisUpdate) > parsed.crl.thisUpdate) {
      throw bad('The CRL is older than the one on file (thisUpdate).');
    }
    const record: CaCrlRecord = {
      crl: crlToPem(parsed.crl),
      thisUpdate: isoFromMs(parsed.crl.thisUpdate),
      revokedCount: parsed.crl.revokedSerials.size,
      uploaded: isoTime(nowMs),
    };
    if (parsed.crl.nextUpdate !== undefined) record.nextUpdate = isoFromMs(parsed.crl.nextUpdate);
    const etag = this.newEtag();
    const updated = isoTime(nowMs);
    const r = await this.store.putCrl(instance, name, record, current.sha256Thumbprint, { ...(expected === undefined ? {} : { expectedEtag: expected }), etag, updated });
    if (r === 'not-found') throw notFound(name);
    if (r === 'precondition-failed') throw new HomingError('PreconditionFailed', 'The CA certificate changed meanwhile; try again.');
    return this.changed(instance, { ...current, crl: record, etag, updated });
  }

  /** The trust material of an instance (see `loadCaTrustMaterial`). */
  trustMaterial(instance: string): Promise<CaTrustMaterial> {
    return loadCaTrustMaterial(this.store, instance);
  }
}

/**
 * Reads and parses the CA certificates of an instance for the registration flow: verified ones as trust anchors,
 * all of them by name (for `caReferences`), and their CRLs. Callers on the hot path should cache the result per
 * instance (it parses every certificate and CRL) and drop it when a CA changes.
 */
export async function loadCaTrustMaterial(store: CaCertificateReadStore, instance: string): Promise<CaTrustMaterial> {
  const anchors: TrustAnchor<CaAnchorRef>[] = [];
  const byName = new Map<string, { record: CaCertificateRecord; cert: X509Certificate }>();
  const crls: ParsedCrl[] = [];
  const problems: string[] = [];
  for (const record of await store.listCaCertificates(instance)) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(record.certificate);
    } catch {
      problems.push(`CA certificate '${record.name}' cannot be parsed`);
      continue;
    }
    byName.set(record.name.toLowerCase(), { record, cert });
    if (record.isVerified) anchors.push({ cert, ref: { kind: 'caCertificate', name: record.name } });
    if (record.crl !== undefined) {
      const parsed = parseCrl(record.crl.crl);
      if (parsed.ok) crls.push(parsed.crl);
      else problems.push(`the CRL of CA certificate '${record.name}' cannot be parsed: ${parsed.reason}`);
    }
  }
  return { anchors, byName, crls, problems };
}

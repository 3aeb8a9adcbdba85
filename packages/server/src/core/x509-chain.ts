import { createHash, verify as verifySignature, X509Certificate } from 'node:crypto';
import { AsnConvert, AsnParser } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate,
  CertificateList,
  id_ce_basicConstraints,
  id_ce_deltaCRLIndicator,
  id_ce_keyUsage,
  KeyUsage,
  type AttributeValue,
  type Name,
  type Time,
} from '@peculiar/asn1-x509';
import * as asn1js from 'asn1js';
import { isValidRegistrationId, sameRegistrationId } from './registration-id.ts';

/**
 * X.509 device chains for DPS attestation (dps-behavior.md §6.2, §6.4): pure decisions, no I/O, the time injected.
 *
 * `validateDeviceChain` takes the chain a device presented in its TLS handshake (leaf first, then the intermediates
 * as the device sent them), the instance's trust anchors (verified uploaded CAs, group signing certificates marked
 * verified) and optional CRLs, and builds the path from the leaf upward:
 *
 * - Leaf: subject CN = the registration id (case-insensitive, as registration ids are), at most 64 characters of the
 *   registration-id charset, exactly one CN.
 * - Each link: the issuer's subject names the certificate's issuer, `X509Certificate.checkIssued` and
 *   `verify(issuer.publicKey)` pass; issuers are CAs (basicConstraints CA:true, keyCertSign when keyUsage is present)
 *   and their pathLenConstraint holds. Issuers come from the presented certificates (any order; repeats and
 *   unrelated extras are ignored) or from the trust anchors, so a device must send every certificate from its leaf up
 *   to the first verified one, which itself it may omit (an unverified certificate it did not send ends the path).
 * - Every certificate used is within its validity at `now`.
 * - At most 10 certificates (presented, and in the path).
 * - The walk goes on above the first verified certificate (through further presented certificates and anchors) so
 *   the matcher sees the whole chain (a group on the root still matches a device whose intermediate is verified).
 *   Above the first verified certificate a failing link ends the path (with a warning) instead of refusing.
 * - Revocation: a CRL applies to a certificate of the path when its issuer name is the subject of the certificate's
 *   issuer in the path and its signature verifies with that issuer's key. A certificate listed by an applicable CRL is
 *   refused (leaf, intermediate or anchor alike). A CRL whose signature does not verify is **ignored** (with a
 *   warning): anyone can write a CRL naming any issuer, so an unsigned list proves nothing either way (uploads are
 *   checked, so in practice this is a CA of the same name with another key). When every applicable CRL is outside
 *   its thisUpdate..nextUpdate window, the certificate's revocation status is unknown: refused by default
 *   (`staleCrl: 'refuse'`, RFC 5280), or accepted with a warning (`staleCrl: 'ignore'`). Delta CRLs are not supported.
 *
 * Nothing here throws on bad input: every outcome is a typed result with a reason and a message for logs.
 * Certificates are public, so messages may name subjects; private keys never come here.
 */

/** Longest accepted chain, leaf included (dps-behavior.md §6.2 [P]). */
export const MAX_CHAIN_LENGTH = 10;
/** Leaf CN limit (the CN is the registration id). */
export const LEAF_CN_MAX_LENGTH = 64;
/** Largest certificate accepted in a chain (DER bytes). */
const MAX_CERT_BYTES = 64 * 1024;

/** A certificate as a device presents it: parsed, DER bytes, or PEM text. */
export type CertificateInput = X509Certificate | Uint8Array | string;

/** A verified certificate the instance trusts, with what the caller needs to know about it (`ref`). */
export interface TrustAnchor<T> {
  readonly cert: X509Certificate;
  readonly ref: T;
}

/** One certificate of a built path. Thumbprints are upper-case hex of the DER, as `X509CertificateInfo` has them. */
export interface ChainCertificate<T> {
  readonly cert: X509Certificate;
  readonly sha1Thumbprint: string;
  readonly sha256Thumbprint: string;
  /** Subject, comma-separated (for logs). */
  readonly subject: string;
  /** Upper-case hex, no leading zeros. */
  readonly serialNumber: string;
  /** Sent by the device (false: taken from the trust anchors). */
  readonly presented: boolean;
  /** Set when this certificate is a trust anchor (a verified certificate). */
  readonly anchor: TrustAnchor<T> | undefined;
}

export type ChainFailureReason =
  | 'no-certificate'
  | 'unparsable'
  | 'too-long'
  | 'leaf-cn-invalid'
  | 'leaf-cn-mismatch'
  | 'expired'
  | 'not-yet-valid'
  | 'signature-invalid'
  | 'issuer-not-ca'
  | 'path-length-exceeded'
  | 'revoked'
  | 'crl-stale';

export interface ChainAccepted<T> {
  readonly ok: true;
  /** From the leaf (index 0) upward, as far as it could be built. */
  readonly path: readonly ChainCertificate<T>[];
  readonly leaf: ChainCertificate<T>;
  /**
   * Index in `path` of the first (lowest) verified certificate, or undefined when the chain reaches none. Group
   * matching needs a verified certificate at or above the group's certificate (see `isVerifiedFrom`); an individual
   * enrollment (which holds the leaf itself) does not.
   */
  readonly verifiedAt: number | undefined;
  /** Why the chain reaches no verified certificate (for logs), when it does not. */
  readonly unverifiedReason: string | undefined;
  /** Things worth logging that did not refuse the chain (ignored CRLs, a path cut above the verified certificate). */
  readonly warnings: readonly string[];
}

export interface ChainRefused {
  readonly ok: false;
  readonly reason: ChainFailureReason;
  /** For logs. */
  readonly message: string;
  /** Index of the offending certificate (in the presented list for input errors, in the path otherwise). */
  readonly index: number | undefined;
  readonly warnings: readonly string[];
}

export type ChainResult<T> = ChainAccepted<T> | ChainRefused;

export interface ChainRequest<T> {
  /** Leaf first, then intermediates as the device sent them. */
  presented: readonly CertificateInput[];
  /** The registration id the device asked for (path or MQTT username). */
  registrationId: string;
  /** Verified certificates of the instance. */
  anchors: TrustAnchors<T> | readonly TrustAnchor<T>[];
  /** Milliseconds since the epoch. */
  now: number;
  /** Parsed CRLs (see `parseCrl`); each applies only where its signature verifies. */
  crls?: readonly ParsedCrl[];
  /** When every applicable CRL is outside its validity window (default 'refuse'). */
  staleCrl?: 'refuse' | 'ignore';
  /**
   * Parse the leaf with the ASN.1 schema too when it could be read through OpenSSL (see `leafFacts`). The outcome is
   * the same either way (the tests compare them); the quick reading only saves time.
   */
  fullLeafParse?: boolean;
}

/** True when the path has a verified certificate at `index` or above it: a group on `path[index]` may be used. */
export function isVerifiedFrom<T>(result: ChainAccepted<T>, index: number): boolean {
  for (let j = Math.max(index, 1); j < result.path.length; j++) if (result.path[j]?.anchor !== undefined) return true;
  return false;
}

// ---- ASN.1 reading (@peculiar/asn1-x509) ---------------------------------------------------------------------------

/** A certificate or CRL whose ASN.1 does not have the expected shape. */
class DerError extends Error {}

/** Parses `der` as one ASN.1 `type` with nothing after it. Throws DerError. */
function parseAsn<T>(der: Buffer, type: new () => T, what: string): T {
  const ber = asn1js.fromBER(der);
  if (ber.offset === -1 || ber.result.error !== '') throw new DerError(`${what}: not valid ASN.1`);
  if (ber.offset !== der.length) throw new DerError('trailing bytes');
  try {
    return AsnParser.fromASN<T>(ber.result, type);
  } catch {
    throw new DerError(`${what}: unexpected structure`);
  }
}

/** Upper-case hex of an INTEGER's value without leading zeros (serial numbers compare in this form). */
function normalizeSerial(value: ArrayBuffer): string {
  const s = Buffer.from(value).toString('hex').toUpperCase().replace(/^0+/, '');
  return s.length === 0 ? '0' : s;
}

/** The text of a name attribute; a value of another ASN.1 type is `#` and the hex of its encoding. */
function attributeText(v: AttributeValue): string {
  for (const s of [v.utf8String, v.printableString, v.ia5String, v.teletexString, v.bmpString, v.universalString]) {
    if (typeof s === 'string') return s;
  }
  return v.anyValue === undefined ? '' : `#${Buffer.from(v.anyValue).toString('hex')}`;
}

function timeOf(t: Time | undefined, what: string): number {
  const ms = t?.getTime().getTime();
  if (ms === undefined || !Number.isFinite(ms)) throw new DerError(`bad ${what}`);
  return ms;
}

const CN_OID = '2.5.4.3';
const NAME_LABELS: Readonly<Record<string, string>> = {
  '2.5.4.3': 'CN',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '2.5.4.5': 'serialNumber',
  '0.9.2342.19200300.100.1.25': 'DC',
  '1.2.840.113549.1.9.1': 'emailAddress',
};

interface ParsedName {
  /** Canonical form for comparisons: attribute types and case/space-folded values, RDN by RDN. */
  readonly key: string;
  readonly display: string;
  readonly commonNames: readonly string[];
}

function fold(v: string): string {
  return v.normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();
}

function parseName(name: Name): ParsedName {
  const keyParts: string[][] = [];
  const display: string[] = [];
  const commonNames: string[] = [];
  for (const rdn of name) {
    const parts: string[] = [];
    for (const atv of rdn) {
      const oid = atv.type;
      const v = attributeText(atv.value);
      parts.push(`${oid}=${fold(v)}`);
      display.push(`${NAME_LABELS[oid] ?? oid}=${v}`);
      if (oid === CN_OID) commonNames.push(v);
    }
    keyParts.push(parts.sort());
  }
  return { key: JSON.stringify(keyParts), display: display.join(', '), commonNames };
}

// ---- certificates ----------------------------------------------------------------------------------------------

const KU_KEY_CERT_SIGN = 5;
const KU_CRL_SIGN = 6;

interface CertFacts {
  readonly subject: ParsedName;
  readonly issuer: ParsedName;
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly isCa: boolean;
  readonly pathLen: number | undefined;
  /** Key usage bits (bit 0 = digitalSignature), undefined when the extension is absent. */
  readonly keyUsage: readonly boolean[] | undefined;
  readonly sha1: string;
  readonly sha256: string;
  /** The X.509 version, 1..3 (the DER field holds 0..2; absent means v1). */
  readonly version: number;
}

function parseCertFacts(der: Buffer): CertFacts {
  const tbs = parseAsn(der, Certificate, 'Certificate').tbsCertificate;
  let isCa = false;
  let pathLen: number | undefined;
  let keyUsage: boolean[] | undefined;
  for (const ext of tbs.extensions ?? []) {
    if (ext.extnID === id_ce_basicConstraints) {
      const bc = AsnConvert.parse(ext.extnValue.buffer, BasicConstraints);
      isCa = bc.cA;
      pathLen = bc.pathLenConstraint;
    } else if (ext.extnID === id_ce_keyUsage) {
      const bits = AsnConvert.parse(ext.extnValue.buffer, KeyUsage).toNumber();
      keyUsage = [];
      for (let bit = 0; bit < 9; bit++) keyUsage.push(((bits >> bit) & 1) === 1);
    }
  }
  return {
    subject: parseName(tbs.subject),
    issuer: parseName(tbs.issuer),
    serial: normalizeSerial(tbs.serialNumber),
    notBefore: timeOf(tbs.validity.notBefore, 'notBefore'),
    notAfter: timeOf(tbs.validity.notAfter, 'notAfter'),
    isCa,
    pathLen,
    keyUsage,
    sha1: createHash('sha1').update(der).digest('hex').toUpperCase(),
    sha256: createHash('sha256').update(der).digest('hex').toUpperCase(),
    version: tbs.version + 1,
  };
}

const factsCache = new WeakMap<X509Certificate, CertFacts>();

/** Facts of a parsed certificate (memoized per object). Throws DerError. */
function factsOf(cert: X509Certificate): CertFacts {
  let f = factsCache.get(cert);
  if (f === undefined) {
    f = parseCertFacts(cert.raw);
    factsCache.set(cert, f);
  }
  return f;
}

/**
 * The X.509 version (1..3) of a certificate, or undefined when it cannot be read. Shares the memoized parse with the
 * chain validation: the leaf of a registration is read once for both.
 */
export function certificateVersionOf(cert: X509Certificate): number | undefined {
  const known = factsCache.get(cert) ?? leafFactsCache.get(cert);
  if (known !== undefined) return known.version;
  try {
    return factsOf(cert).version;
  } catch {
    return undefined;
  }
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/;

function toX509(input: CertificateInput): X509Certificate {
  if (input instanceof X509Certificate) return input;
  let der: Buffer;
  if (typeof input === 'string') {
    const m = PEM_CERT_RE.exec(input);
    if (m?.[1] === undefined) throw new DerError('not a PEM certificate');
    der = Buffer.from(m[1].replace(/\s+/g, ''), 'base64');
  } else if (input instanceof Uint8Array) {
    der = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  } else {
    throw new DerError('not a certificate');
  }
  if (der.length === 0 || der.length > MAX_CERT_BYTES) throw new DerError('bad size');
  return new X509Certificate(der);
}

/** Why `cert` cannot issue certificates (not CA:true, or keyUsage without keyCertSign), or undefined when it can. */
export function caProblem(cert: X509Certificate): string | undefined {
  let f: CertFacts;
  try {
    f = factsOf(cert);
  } catch {
    return 'the certificate cannot be parsed';
  }
  if (!f.isCa) return 'basicConstraints does not say CA:true';
  if (f.keyUsage !== undefined && f.keyUsage[KU_KEY_CERT_SIGN] !== true) return 'keyUsage lacks keyCertSign';
  return undefined;
}

/** The subject common names of a certificate, decoded from the DER (empty when unparsable). */
export function subjectCommonNames(cert: X509Certificate): readonly string[] {
  try {
    return factsOf(cert).subject.commonNames;
  } catch {
    return [];
  }
}

/** Whether `issuer` signed `cert` (names, key identifiers and key usage per OpenSSL, then the signature). */
export function isIssuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** 'expired' / 'not-yet-valid' at `now`, or undefined. */
export function validityProblem(cert: X509Certificate, now: number): 'expired' | 'not-yet-valid' | undefined {
  let f: CertFacts;
  try {
    f = factsOf(cert);
  } catch {
    return 'expired';
  }
  if (now < f.notBefore) return 'not-yet-valid';
  if (now > f.notAfter) return 'expired';
  return undefined;
}

// ---- CRLs ------------------------------------------------------------------------------------------------------

/** A CRL read by `parseCrl`. Its signature is checked against each issuer it is used with. */
export interface ParsedCrl {
  readonly der: Buffer;
  /** Issuer, comma-separated (for logs). */
  readonly issuer: string;
  readonly thisUpdate: number;
  readonly nextUpdate: number | undefined;
  /** Serial numbers, upper-case hex without leading zeros. */
  readonly revokedSerials: ReadonlySet<string>;
  /** @internal */
  readonly issuerKey: string;
  /** @internal */
  readonly tbs: Buffer;
  /** @internal */
  readonly signature: Buffer;
  /** @internal */
  readonly signatureAlgorithm: string;
}

export type CrlParseResult = { ok: true; crl: ParsedCrl } | { ok: false; reason: string };

/** Signature algorithms we verify: OID → [hash (null: none), key type]. RSASSA-PSS and SHA-1 are not accepted. */
const SIGNATURE_ALGORITHMS: Readonly<Record<string, readonly [string | null, string]>> = {
  '1.2.840.10045.4.3.2': ['sha256', 'ec'],
  '1.2.840.10045.4.3.3': ['sha384', 'ec'],
  '1.2.840.10045.4.3.4': ['sha512', 'ec'],
  '1.2.840.113549.1.1.11': ['sha256', 'rsa'],
  '1.2.840.113549.1.1.12': ['sha384', 'rsa'],
  '1.2.840.113549.1.1.13': ['sha512', 'rsa'],
  '1.3.101.112': [null, 'ed25519'],
  '1.3.101.113': [null, 'ed448'],
};

const MAX_CRL_BYTES = 1024 * 1024;
/** RFC 7468 says `X509 CRL`; some tools (@peculiar/x509) write `CRL`. */
const PEM_CRL_RE = /-----BEGIN (?:X509 )?CRL-----([\s\S]+?)-----END (?:X509 )?CRL-----/;

/** The PEM of a CRL (`X509 CRL` label, RFC 7468). */
export function crlToPem(crl: ParsedCrl): string {
  const lines = crl.der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN X509 CRL-----\n${lines.join('\n')}\n-----END X509 CRL-----\n`;
}

/** Reads a CRL (PEM `X509 CRL` or `CRL`, base64 of the DER, or DER bytes). Never throws. */
export function parseCrl(input: Uint8Array | string): CrlParseResult {
  try {
    let der: Buffer;
    if (typeof input === 'string') {
      const m = PEM_CRL_RE.exec(input);
      const b64 = (m?.[1] ?? input).replace(/\s+/g, '');
      if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return { ok: false, reason: 'not a PEM or base64 CRL' };
      der = Buffer.from(b64, 'base64');
    } else {
      der = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    }
    if (der.length === 0 || der.length > MAX_CRL_BYTES) return { ok: false, reason: `a CRL is 1 byte to ${MAX_CRL_BYTES} bytes` };
    let list: CertificateList;
    try {
      list = parseAsn(der, CertificateList, 'CertificateList');
    } catch (e) {
      if (e instanceof DerError && e.message === 'trailing bytes') return { ok: false, reason: 'trailing bytes after the CRL' };
      throw e;
    }
    const tbs = list.tbsCertList;
    if (list.tbsCertListRaw === undefined) return { ok: false, reason: 'malformed CRL (no TBSCertList)' };
    if (list.signature.byteLength < 1) return { ok: false, reason: 'bad signature encoding' };
    if (!tbs.signature.isEqual(list.signatureAlgorithm)) return { ok: false, reason: 'the two signature algorithm fields differ' };
    if (tbs.crlExtensions?.some((ext) => ext.extnID === id_ce_deltaCRLIndicator) === true) return { ok: false, reason: 'delta CRLs are not supported' };
    const issuer = parseName(tbs.issuer);
    const revoked = new Set<string>();
    for (const entry of tbs.revokedCertificates ?? []) revoked.add(normalizeSerial(entry.userCertificate));
    return {
      ok: true,
      crl: {
        der,
        issuer: issuer.display,
        issuerKey: issuer.key,
        thisUpdate: timeOf(tbs.thisUpdate, 'thisUpdate'),
        nextUpdate: tbs.nextUpdate === undefined ? undefined : timeOf(tbs.nextUpdate, 'nextUpdate'),
        revokedSerials: revoked,
        tbs: Buffer.from(list.tbsCertListRaw),
        signature: Buffer.from(list.signature),
        signatureAlgorithm: list.signatureAlgorithm.algorithm,
      },
    };
  } catch (e) {
    return { ok: false, reason: e instanceof DerError ? `malformed CRL (${e.message})` : 'malformed CRL' };
  }
}

const crlSignatureCache = new WeakMap<ParsedCrl, Map<string, boolean>>();

/**
 * Whether `issuer` issued this CRL: the CRL's issuer is the certificate's subject, the certificate may sign CRLs
 * (cRLSign when keyUsage is present) and the signature verifies with its key (ECDSA, RSA PKCS#1 v1.5 with SHA-2,
 * Ed25519/Ed448). Memoized per (CRL, issuer).
 */
export function crlSignedBy(crl: ParsedCrl, issuer: X509Certificate): boolean {
  let f: CertFacts;
  try {
    f = factsOf(issuer);
  } catch {
    return false;
  }
  let byIssuer = crlSignatureCache.get(crl);
  const cached = byIssuer?.get(f.sha256);
  if (cached !== undefined) return cached;
  const ok = checkCrlSignature(crl, issuer, f);
  if (byIssuer === undefined) {
    byIssuer = new Map();
    crlSignatureCache.set(crl, byIssuer);
  }
  byIssuer.set(f.sha256, ok);
  return ok;
}

function checkCrlSignature(crl: ParsedCrl, issuer: X509Certificate, f: CertFacts): boolean {
  if (crl.issuerKey !== f.subject.key) return false;
  if (f.keyUsage !== undefined && f.keyUsage[KU_CRL_SIGN] !== true) return false;
  const alg = SIGNATURE_ALGORITHMS[crl.signatureAlgorithm];
  if (alg === undefined) return false;
  try {
    const key = issuer.publicKey;
    if (key.asymmetricKeyType !== alg[1]) return false;
    return verifySignature(alg[0], crl.tbs, key, crl.signature);
  } catch {
    return false;
  }
}

// ---- trust anchors -----------------------------------------------------------------------------------------------

interface AnchorEntry<T> {
  readonly anchor: TrustAnchor<T>;
  readonly facts: CertFacts;
}

/**
 * The verified certificates of an instance, indexed by subject and thumbprint. Build it once per change of the
 * anchors (it parses every certificate). Anchors that cannot issue certificates are left out and listed in
 * `problems`.
 */
export class TrustAnchors<T> {
  private readonly bySubject = new Map<string, AnchorEntry<T>[]>();
  private readonly bySha256 = new Map<string, AnchorEntry<T>>();
  readonly problems: readonly string[];

  constructor(anchors: readonly TrustAnchor<T>[]) {
    const problems: string[] = [];
    for (const anchor of anchors) {
      let facts: CertFacts;
      try {
        facts = factsOf(anchor.cert);
      } catch {
        problems.push('a trust anchor cannot be parsed');
        continue;
      }
      const p = caProblem(anchor.cert);
      if (p !== undefined) {
        problems.push(`trust anchor ${facts.subject.display} left out: ${p}`);
        continue;
      }
      if (this.bySha256.has(facts.sha256)) continue;
      const entry = { anchor, facts };
      this.bySha256.set(facts.sha256, entry);
      const list = this.bySubject.get(facts.subject.key);
      if (list === undefined) this.bySubject.set(facts.subject.key, [entry]);
      else list.push(entry);
    }
    this.problems = problems;
  }

  get size(): number {
    return this.bySha256.size;
  }

  /** @internal Anchors whose subject is `subjectKey`. */
  withSubject(subjectKey: string): readonly AnchorEntry<T>[] {
    return this.bySubject.get(subjectKey) ?? [];
  }

  /** @internal The anchor with this SHA-256 thumbprint. */
  bySha256Thumbprint(sha256: string): AnchorEntry<T> | undefined {
    return this.bySha256.get(sha256);
  }

  /** @internal Every anchor. */
  entries(): IterableIterator<AnchorEntry<T>> {
    return this.bySha256.values();
  }
}

// ---- the chain ---------------------------------------------------------------------------------------------------

interface Node<T> {
  readonly cert: X509Certificate;
  readonly facts: CertFacts;
  readonly presented: boolean;
  readonly anchor: TrustAnchor<T> | undefined;
}

function publicNode<T>(n: Node<T>): ChainCertificate<T> {
  return {
    cert: n.cert,
    sha1Thumbprint: n.facts.sha1,
    sha256Thumbprint: n.facts.sha256,
    subject: n.facts.subject.display,
    serialNumber: n.facts.serial,
    presented: n.presented,
    anchor: n.anchor,
  };
}

/**
 * Signature checks, memoized per (certificate, issuer) pair of parsed objects. The certificates above a device's leaf
 * are the same parsed objects for every device under them (anchors, and presented CAs kept parsed by DER), so the
 * intermediate-by-root and the root's own signature are checked once, not once per registration (about 70 µs each
 * for ECDSA P-256). A parsed certificate never changes, so neither does the answer.
 */
const signatureMemo = new WeakMap<X509Certificate, WeakMap<X509Certificate, boolean>>();

function signedWith(cert: X509Certificate, issuer: X509Certificate): boolean {
  let byIssuer = signatureMemo.get(cert);
  const known = byIssuer?.get(issuer);
  if (known !== undefined) return known;
  let ok: boolean;
  try {
    ok = cert.verify(issuer.publicKey);
  } catch {
    ok = false;
  }
  if (byIssuer === undefined) signatureMemo.set(cert, (byIssuer = new WeakMap()));
  byIssuer.set(issuer, ok);
  return ok;
}

function selfSigned(n: Node<unknown>): boolean {
  if (n.facts.subject.key !== n.facts.issuer.key) return false;
  return signedWith(n.cert, n.cert);
}

function timeOk(f: CertFacts, now: number): 'expired' | 'not-yet-valid' | undefined {
  if (now < f.notBefore) return 'not-yet-valid';
  if (now > f.notAfter) return 'expired';
  return undefined;
}

/** Why `issuer` cannot sign at path position `index` (so with index - 1 intermediates below it), or undefined. */
function issuerProblem(f: CertFacts, index: number): { reason: ChainFailureReason; message: string } | undefined {
  if (!f.isCa) return { reason: 'issuer-not-ca', message: `${f.subject.display} is not a CA (basicConstraints CA:true missing)` };
  if (f.keyUsage !== undefined && f.keyUsage[KU_KEY_CERT_SIGN] !== true) {
    return { reason: 'issuer-not-ca', message: `${f.subject.display} may not sign certificates (keyUsage lacks keyCertSign)` };
  }
  if (f.pathLen !== undefined && index - 1 > f.pathLen) {
    return { reason: 'path-length-exceeded', message: `${f.subject.display} allows ${f.pathLen} intermediate(s) below it, the path has ${index - 1}` };
  }
  return undefined;
}

function timeProblem(f: CertFacts, now: number): { reason: ChainFailureReason; message: string } | undefined {
  const t = timeOk(f, now);
  return t === undefined ? undefined : { reason: t, message: `${f.subject.display} is ${t === 'expired' ? 'expired' : 'not valid yet'}` };
}

function identifierProblem(cert: Node<unknown>, issuer: Node<unknown>): { reason: ChainFailureReason; message: string } | undefined {
  let ok: boolean;
  try {
    ok = cert.cert.checkIssued(issuer.cert);
  } catch {
    ok = false;
  }
  return ok ? undefined : { reason: 'signature-invalid', message: `${issuer.facts.subject.display} does not pass the issuer check for ${cert.facts.subject.display} (key identifiers)` };
}

function refuse(reason: ChainFailureReason, message: string, index: number | undefined, warnings: readonly string[]): ChainRefused {
  return { ok: false, reason, message, index, warnings };
}

/**
 * Validates a device chain and builds its path (see the module comment for the rules). Never throws.
 */
export function validateDeviceChain<T>(req: ChainRequest<T>): ChainResult<T> {
  const warnings: string[] = [];
  try {
    return buildChain(req, warnings);
  } catch (e) {
    return refuse('unparsable', `the chain could not be read${e instanceof DerError ? ` (${e.message})` : ''}`, undefined, warnings);
  }
}

function buildChain<T>(req: ChainRequest<T>, warnings: string[]): ChainResult<T> {
  const { now } = req;
  if (typeof now !== 'number' || !Number.isFinite(now)) return refuse('unparsable', 'no valid time to check the chain against', undefined, warnings);
  const presentedInput: readonly CertificateInput[] = Array.isArray(req.presented) ? req.presented : [];
  if (presentedInput.length === 0) return refuse('no-certificate', 'the device presented no certificate', undefined, warnings);
  if (presentedInput.length > MAX_CHAIN_LENGTH) {
    return refuse('too-long', `the device presented ${presentedInput.length} certificates; at most ${MAX_CHAIN_LENGTH} are accepted`, undefined, warnings);
  }
  const anchors: TrustAnchors<T> =
    req.anchors instanceof TrustAnchors ? (req.anchors as TrustAnchors<T>) : new TrustAnchors<T>(Array.isArray(req.anchors) ? (req.anchors as readonly TrustAnchor<T>[]) : []);
  const crls = Array.isArray(req.crls) ? req.crls : [];

  // Without CRLs, a leaf that links cleanly is read through OpenSSL (see leafChain); anything else takes the full walk.
  if (crls.length === 0 && req.fullLeafParse !== true) {
    const quick = leafChain(presentedInput, req.registrationId, anchors, now);
    if (quick !== undefined) return quick;
  }

  // Parse what the device sent; drop repeats.
  const presented: Node<T>[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < presentedInput.length; i++) {
    let cert: X509Certificate;
    let facts: CertFacts;
    try {
      cert = toX509(presentedInput[i] as CertificateInput);
      facts = factsOf(cert);
    } catch {
      return refuse('unparsable', `presented certificate ${i} is not a parsable X.509 certificate`, i, warnings);
    }
    if (seen.has(facts.sha256)) continue;
    seen.add(facts.sha256);
    // The leaf is never a trust anchor: anchors vouch for what they issue.
    const anchor = presented.length === 0 ? undefined : anchors.bySha256Thumbprint(facts.sha256)?.anchor;
    presented.push({ cert, facts, presented: true, anchor });
  }
  const leaf = presented[0];
  if (leaf === undefined) return refuse('no-certificate', 'the device presented no certificate', undefined, warnings);

  // The leaf: CN = registration id, in validity.
  const cns = leaf.facts.subject.commonNames;
  const cn = cns[0];
  if (cns.length !== 1 || cn === undefined || cn.length > LEAF_CN_MAX_LENGTH || !isValidRegistrationId(cn)) {
    return refuse('leaf-cn-invalid', `the leaf subject (${leaf.facts.subject.display}) needs exactly one CN of at most ${LEAF_CN_MAX_LENGTH} registration-id characters`, 0, warnings);
  }
  if (typeof req.registrationId !== 'string' || !sameRegistrationId(cn, req.registrationId)) {
    return refuse('leaf-cn-mismatch', `the leaf CN '${cn}' is not the registration id`, 0, warnings);
  }
  const leafTime = timeOk(leaf.facts, now);
  if (leafTime !== undefined) return refuse(leafTime, `the leaf certificate is ${leafTime === 'expired' ? 'expired' : 'not valid yet'}`, 0, warnings);

  const path: Node<T>[] = [leaf];
  const walked = walkUp({ path, used: new Set<string>([leaf.facts.sha256]), presented, seen, anchors, now, warnings, verifiedAt: undefined });
  if ('ok' in walked) return walked;

  // Revocation of every certificate whose issuer is in the path.
  if (crls.length > 0) {
    for (let i = 0; i + 1 < path.length; i++) {
      const subject = path[i] as Node<T>;
      const issuer = path[i + 1] as Node<T>;
      const named = crls.filter((c) => c.issuerKey === issuer.facts.subject.key);
      if (named.length === 0) continue;
      const signed = named.filter((c) => {
        const ok = crlSignedBy(c, issuer.cert);
        if (!ok) warnings.push(`CRL naming ${c.issuer} ignored: not signed by ${issuer.facts.subject.display} (${issuer.facts.sha1})`);
        return ok;
      });
      if (signed.length === 0) continue;
      if (signed.some((c) => c.revokedSerials.has(subject.facts.serial))) {
        return refuse('revoked', `${subject.facts.subject.display} (serial ${subject.facts.serial}) is revoked by its issuer's CRL`, i, warnings);
      }
      const current = signed.some((c) => c.thisUpdate <= now && (c.nextUpdate === undefined || now <= c.nextUpdate));
      if (!current) {
        const msg = `every CRL of ${issuer.facts.subject.display} is outside its validity window, so the status of ${subject.facts.subject.display} is unknown`;
        if (req.staleCrl !== 'ignore') return refuse('crl-stale', msg, i, warnings);
        warnings.push(msg);
      }
    }
  }
  return accepted(path, walked.verifiedAt, walked.stop, warnings);
}

function accepted<T>(path: readonly Node<T>[], verifiedAt: number | undefined, stop: string | undefined, warnings: readonly string[]): ChainAccepted<T> {
  const out = path.map(publicNode);
  return {
    ok: true,
    path: out,
    leaf: out[0] as ChainCertificate<T>,
    verifiedAt,
    unverifiedReason: verifiedAt === undefined ? stop ?? 'the chain reaches no verified certificate' : undefined,
    warnings,
  };
}

/** A candidate issuer from the trust anchors. */
function anchorNode<T>(e: AnchorEntry<T>): Node<T> {
  return { cert: e.anchor.cert, facts: e.facts, presented: false, anchor: e.anchor };
}

/** A valid anchor before an expired one of the same name. */
function validFirst<T>(now: number): (a: Node<T>, b: Node<T>) => number {
  return (a, b) => Number(timeOk(a.facts, now) !== undefined) - Number(timeOk(b.facts, now) !== undefined);
}

interface Walk<T> {
  /** Built so far (leaf first); extended in place. */
  readonly path: Node<T>[];
  /** SHA-256 of the certificates in `path`. */
  readonly used: Set<string>;
  readonly presented: readonly Node<T>[];
  /** SHA-256 of the presented certificates. */
  readonly seen: ReadonlySet<string>;
  readonly anchors: TrustAnchors<T>;
  readonly now: number;
  readonly warnings: string[];
  verifiedAt: number | undefined;
}

/**
 * Extends `w.path` upward from its last certificate (see the module comment for the rules): the issuer's subject must
 * name the certificate's issuer, its signature decide between candidates, and the issuer be a CA in validity that
 * passes OpenSSL's issuer check. Returns where the trust starts and why the path ended, or the refusal.
 */
function walkUp<T>(w: Walk<T>): { verifiedAt: number | undefined; stop: string | undefined } | ChainRefused {
  const { path, used, presented, seen, anchors, now, warnings } = w;
  let stop: string | undefined;
  for (;;) {
    const cur = path[path.length - 1] as Node<T>;
    if (selfSigned(cur)) {
      stop = `${cur.facts.subject.display} is self-signed and not verified`;
      break;
    }
    const want = cur.facts.issuer.key;
    const candidates: Node<T>[] = presented.filter((n) => !used.has(n.facts.sha256) && n.facts.subject.key === want);
    const fromAnchors = anchors
      .withSubject(want)
      .filter((e) => !used.has(e.facts.sha256) && !seen.has(e.facts.sha256))
      .map(anchorNode)
      .sort(validFirst(now));
    candidates.push(...fromAnchors);
    const inTrustSegment = w.verifiedAt === undefined;
    const at = path.length;
    if (candidates.length === 0) {
      stop = `the issuer of ${cur.facts.subject.display} (${cur.facts.issuer.display}) was not presented and is not verified`;
      break;
    }
    // The signature decides which candidate issued it; then the issuer must be a CA, in validity, and pass OpenSSL's
    // issuer check (names, key identifiers, key usage).
    const issuer = candidates.find((c) => signedWith(cur.cert, c.cert));
    if (issuer === undefined) {
      const msg = `no certificate named ${cur.facts.issuer.display} signed ${cur.facts.subject.display}`;
      if (inTrustSegment) return refuse('signature-invalid', msg, at - 1, warnings);
      warnings.push(`path cut above the verified certificate: ${msg}`);
      break;
    }
    const problem = issuerProblem(issuer.facts, at) ?? timeProblem(issuer.facts, now) ?? identifierProblem(cur, issuer);
    if (problem !== undefined) {
      if (inTrustSegment) return refuse(problem.reason, problem.message, at, warnings);
      warnings.push(`path cut above the verified certificate: ${problem.message}`);
      break;
    }
    if (at + 1 > MAX_CHAIN_LENGTH) {
      const msg = `the path is longer than ${MAX_CHAIN_LENGTH} certificates`;
      if (inTrustSegment) return refuse('too-long', msg, at, warnings);
      warnings.push(`path cut above the verified certificate: ${msg}`);
      break;
    }
    path.push(issuer);
    used.add(issuer.facts.sha256);
    if (issuer.anchor !== undefined && w.verifiedAt === undefined) w.verifiedAt = at;
  }
  return { verifiedAt: w.verifiedAt, stop };
}

// ---- the leaf, read through OpenSSL ------------------------------------------------------------------------------

/**
 * Facts of leaves read by {@link leafFacts} (their names carry no comparison key: see there). Kept apart from
 * `factsCache`, so `factsOf` still parses such a certificate fully when something needs its names.
 */
const leafFactsCache = new WeakMap<X509Certificate, CertFacts>();

/** Upper-case hex without leading zeros, as `normalizeSerial` writes it; undefined for anything else. */
function serialFromOpenSsl(s: string): string | undefined {
  if (!/^[0-9A-Fa-f]+$/.test(s)) return undefined;
  const t = s.toUpperCase().replace(/^0+/, '');
  return t.length === 0 ? '0' : t;
}

/** Node's one-attribute-per-line distinguished name, comma-separated (as `ParsedName.display`). */
function displayOfLines(dn: string): string {
  return dn.split('\n').join(', ');
}

/**
 * The facts of a device's leaf from Node's X509Certificate (what OpenSSL decoded when it parsed the certificate),
 * without the ASN.1 schema parse: on the registration path that parse is the dearest step of an X.509 device
 * (about 0.25 ms with asn1js for a small ECDSA certificate; the CA certificates above the leaf are shared by every
 * device under them and parsed once). Undefined (the caller then parses fully) unless every fact is exact:
 *
 * - Subject: Node prints one RDN per line with RFC 2253 and control-character escapes (ASN1_STRFLGS_ESC_2253,
 *   ESC_CTRL, UTF-8 conversion). The subject must hold exactly one `CN=` in all, at the start of a line, whose value
 *   is a registration id (at most 64 characters of a charset that needs no escape and has no ` + `, so the value
 *   printed is the value stored, and no other attribute shares its RDN).
 * - Serial number: hex digits only (a negative serial, which OpenSSL prints with a sign, is left to the full parse).
 * - Validity: `validFrom` / `validTo` (second precision, as X.509 times are).
 * - Version: 3 when Node shows an extension that only a v3 certificate carries (basicConstraints CA:true, extended
 *   key usage, subjectAltName, authorityInfoAccess); otherwise the full parse reads the field.
 *
 * The names get no comparison key (the sentinels below never equal a real key): the caller links the leaf to its
 * issuer with OpenSSL's own name comparison (`checkIssued`). Not kept in `factsCache`.
 */
function leafFacts(cert: X509Certificate): CertFacts | undefined {
  let subject: string;
  let issuer: string;
  let serialText: string;
  let from: string;
  let to: string;
  let v3: boolean;
  try {
    subject = cert.subject;
    issuer = cert.issuer;
    serialText = cert.serialNumber;
    from = cert.validFrom;
    to = cert.validTo;
    v3 = cert.ca || cert.keyUsage !== undefined || cert.subjectAltName !== undefined || cert.infoAccess !== undefined;
  } catch {
    return undefined;
  }
  if (!v3 || typeof subject !== 'string' || typeof issuer !== 'string') return undefined;
  const at = subject.indexOf('CN=');
  if (at < 0 || subject.indexOf('CN=', at + 1) >= 0 || (at > 0 && subject[at - 1] !== '\n')) return undefined;
  const end = subject.indexOf('\n', at);
  const cn = subject.slice(at + 3, end < 0 ? undefined : end);
  if (cn.length === 0 || cn.length > LEAF_CN_MAX_LENGTH || !isValidRegistrationId(cn)) return undefined;
  const serial = serialFromOpenSsl(serialText);
  const notBefore = Date.parse(from);
  const notAfter = Date.parse(to);
  if (serial === undefined || !Number.isFinite(notBefore) || !Number.isFinite(notAfter)) return undefined;
  const raw = cert.raw;
  return {
    subject: { key: '\u0000leaf subject', display: displayOfLines(subject), commonNames: [cn] },
    issuer: { key: '\u0000leaf issuer', display: displayOfLines(issuer), commonNames: [] },
    serial,
    notBefore,
    notAfter,
    // Never used as an issuer: the leaf is the first certificate of its path.
    isCa: false,
    pathLen: undefined,
    keyUsage: undefined,
    sha1: createHash('sha1').update(raw).digest('hex').toUpperCase(),
    sha256: createHash('sha256').update(raw).digest('hex').toUpperCase(),
    version: 3,
  };
}

/** @internal Whether a leaf's facts can be read through OpenSSL alone (see `leafFacts`), for tests. */
export function leafReadableThroughOpenSsl(cert: X509Certificate): boolean {
  return leafFacts(cert) !== undefined;
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer);
  } catch {
    return false;
  }
}

/**
 * The chain when its leaf reads through {@link leafFacts} and links cleanly to an issuer, else undefined: the full
 * walk then decides, with its reasons (this returns no refusals, so every refused chain is refused exactly as
 * before). The first link uses OpenSSL's issuer check (issuer name, key identifiers, key usage) to find the
 * candidates, in the same order as the full walk (presented first, then anchors, valid before expired), and the
 * signature to choose among them; the issuer must be a CA in validity. The rest of the path is the full walk's.
 * A leaf whose subject may name itself as issuer (possibly self-signed) takes the full walk.
 */
function leafChain<T>(input: readonly CertificateInput[], registrationId: string, anchors: TrustAnchors<T>, now: number): ChainAccepted<T> | undefined {
  if (typeof registrationId !== 'string') return undefined;
  let leafCert: X509Certificate;
  try {
    leafCert = toX509(input[0] as CertificateInput);
  } catch {
    return undefined;
  }
  const lf = leafFactsCache.get(leafCert) ?? leafFacts(leafCert);
  const cn = lf?.subject.commonNames[0];
  if (lf === undefined || cn === undefined || !sameRegistrationId(cn, registrationId) || timeOk(lf, now) !== undefined) return undefined;
  if (fold(leafCert.subject) === fold(leafCert.issuer) || issuedBy(leafCert, leafCert)) return undefined;

  const leaf: Node<T> = { cert: leafCert, facts: lf, presented: true, anchor: undefined };
  const presented: Node<T>[] = [leaf];
  const seen = new Set<string>([lf.sha256]);
  for (let i = 1; i < input.length; i++) {
    let cert: X509Certificate;
    let facts: CertFacts;
    try {
      cert = toX509(input[i] as CertificateInput);
      facts = factsOf(cert);
    } catch {
      return undefined;
    }
    if (seen.has(facts.sha256)) continue;
    seen.add(facts.sha256);
    presented.push({ cert, facts, presented: true, anchor: anchors.bySha256Thumbprint(facts.sha256)?.anchor });
  }

  const candidates = presented.filter((n) => n !== leaf && issuedBy(leafCert, n.cert));
  const fromAnchors: Node<T>[] = [];
  for (const e of anchors.entries()) if (!seen.has(e.facts.sha256) && issuedBy(leafCert, e.anchor.cert)) fromAnchors.push(anchorNode(e));
  candidates.push(...fromAnchors.sort(validFirst(now)));
  const issuer = candidates.find((c) => signedWith(leafCert, c.cert));
  if (issuer === undefined || issuerProblem(issuer.facts, 1) !== undefined || timeProblem(issuer.facts, now) !== undefined) return undefined;

  const warnings: string[] = [];
  const path: Node<T>[] = [leaf, issuer];
  const walked = walkUp({ path, used: new Set<string>([lf.sha256, issuer.facts.sha256]), presented, seen, anchors, now, warnings, verifiedAt: issuer.anchor === undefined ? undefined : 1 });
  if ('ok' in walked) return undefined;
  leafFactsCache.set(leafCert, lf);
  return accepted(path, walked.verifiedAt, walked.stop, warnings);
}

import { X509Certificate, createHash } from 'node:crypto';
import { HomingError } from '../../core/errors.ts';
import { certificateVersionOf } from '../../core/x509-chain.ts';
import type { X509CertificateInfo } from '../model.ts';

/**
 * Certificates given in enrollments: `certificate` is a PEM, base64 of a PEM (one Azure e2e test does that) or
 * base64 of the DER. The service fills `info` from the parsed certificate; what the client sent as `info` is ignored.
 */
const PEM_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/;
const BASE64_RE = /^[A-Za-z0-9+/\s]+={0,2}\s*$/;

/** Parses the first certificate of `text`. Throws 400 ArgumentInvalid (naming `what`, never the content). */
export function parseCertificate(text: string, what: string): X509Certificate {
  const bad = () => new HomingError('ArgumentInvalid', `${what} is not a parsable X.509 certificate (PEM, or base64 of a PEM or DER).`);
  if (typeof text !== 'string' || text.trim().length === 0 || text.length > 64 * 1024) throw bad();
  const pem = PEM_RE.exec(text)?.[0];
  try {
    if (pem !== undefined) return new X509Certificate(pem);
    if (!BASE64_RE.test(text)) throw bad();
    const bytes = Buffer.from(text.replace(/\s+/g, ''), 'base64');
    const inner = PEM_RE.exec(bytes.toString('latin1'))?.[0];
    return new X509Certificate(inner ?? bytes);
  } catch (e) {
    if (e instanceof HomingError) throw e;
    throw bad();
  }
}

/** Node writes distinguished names one attribute per line; DPS shows them comma-separated. */
function distinguishedName(s: string): string {
  return s
    .split('\n')
    .map((p) => p.trim())
    .filter((p) => p.length > 0)
    .join(', ');
}

/** `YYYY-MM-DDTHH:mm:ssZ` from OpenSSL's `Mon DD HH:MM:SS YYYY GMT`. */
function certTime(s: string): string {
  const ms = Date.parse(s);
  if (Number.isNaN(ms)) return s;
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function certificateInfo(cert: X509Certificate): X509CertificateInfo {
  return {
    subjectName: distinguishedName(cert.subject),
    sha1Thumbprint: createHash('sha1').update(cert.raw).digest('hex').toUpperCase(),
    sha256Thumbprint: createHash('sha256').update(cert.raw).digest('hex').toUpperCase(),
    issuerName: distinguishedName(cert.issuer),
    notBeforeUtc: certTime(cert.validFrom),
    notAfterUtc: certTime(cert.validTo),
    serialNumber: cert.serialNumber.toUpperCase(),
    // v1 when it cannot be read (the field is optional, v1 by default).
    version: certificateVersionOf(cert) ?? 1,
  };
}

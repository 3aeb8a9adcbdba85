import type { WriteResult } from './ports.ts';

/**
 * Store port of the CA certificates of a provisioning instance (Azure's "certificates" child resource,
 * dps-behavior.md §1.1 and §6.2): uploaded CA certificates, their proof-of-possession state, and one CRL per CA.
 *
 * Conventions (shared with provisioning-ports.ts):
 * - Every row belongs to one instance, named by `instance`.
 * - Names are case-insensitive: rows are keyed by the lower-cased name, the name is kept as given.
 * - A certificate (its SHA-256 thumbprint) appears at most once per instance.
 * - Expected outcomes are values; methods throw only for unexpected failures.
 * - Writes carry the etag the caller read (`'*'` or undefined: any) and the new etag and `updated` time to write.
 */

/** The CRL on file for one CA (already verified against it by the use case). */
export interface CaCrlRecord {
  /** PEM (`-----BEGIN X509 CRL-----`). */
  crl: string;
  /** ISO times from the CRL. */
  thisUpdate: string;
  nextUpdate?: string;
  revokedCount: number;
  /** When it was uploaded (ISO). */
  uploaded: string;
}

export interface CaCertificateRecord {
  /** As given by the operator; lookups are case-insensitive. */
  name: string;
  /** The certificate, PEM (re-encoded from the DER). */
  certificate: string;
  /** Subject, comma-separated. */
  subject: string;
  /** SHA-1 thumbprint, upper-case hex (Azure's `thumbprint`). */
  thumbprint: string;
  /** SHA-256 thumbprint, upper-case hex: unique per instance. */
  sha256Thumbprint: string;
  /** notAfter (ISO). */
  expiry: string;
  isVerified: boolean;
  /** ISO times. */
  created: string;
  updated: string;
  etag: string;
  /** The pending proof-of-possession code, if one was generated and not used yet. */
  verificationCode?: string;
  crl?: CaCrlRecord;
}

/** How a put relates to what is stored. */
export type CaPutExpectation =
  /** Create: only when the name is free. */
  | { kind: 'absent' }
  /** Replace: only when the stored etag matches (`'*'`: any stored etag). */
  | { kind: 'etag'; etag: string };

export type CaPutResult =
  | 'ok'
  /** Create, and the name is taken. */
  | 'exists'
  /** Replace, and no certificate of that name. */
  | 'not-found'
  /** Replace, and the etag differs. */
  | 'precondition-failed'
  /** The same certificate is stored under another name. */
  | 'thumbprint-taken'
  /** Create, and the instance already holds the maximum number of CA certificates. */
  | 'limit-reached';

/** What a conditional field update writes. */
export interface CaUpdate {
  /** The etag the caller read; undefined or `'*'` match any. */
  expectedEtag?: string;
  /** The new etag. */
  etag: string;
  /** The new `updated` time (ISO). */
  updated: string;
}

/** Narrow read port for the device hot path (trust anchors and CRLs of an instance). */
export interface CaCertificateReadStore {
  getCaCertificate(instance: string, name: string): Promise<CaCertificateRecord | undefined>;
  /** Every CA certificate of the instance (at most a few dozen), ordered by lower-cased name. */
  listCaCertificates(instance: string): Promise<CaCertificateRecord[]>;
}

export interface CaCertificateStore extends CaCertificateReadStore {
  /**
   * Creates or replaces a CA certificate as a whole (a replace writes every field of `record`, so the caller decides
   * what survives: verification, code, CRL). Creation is atomic with the count, so `maxPerInstance` holds under
   * concurrent uploads. Nothing is written unless the result is 'ok'.
   */
  putCaCertificate(instance: string, record: CaCertificateRecord, expect: CaPutExpectation, maxPerInstance: number): Promise<CaPutResult>;
  /** Sets a new proof-of-possession code (replacing any pending one). */
  setVerificationCode(instance: string, name: string, code: string, update: CaUpdate): Promise<WriteResult>;
  /**
   * Marks the certificate verified and clears the code, only while `verificationCode` is still the pending code
   * ('precondition-failed' otherwise, e.g. a newer code was generated meanwhile).
   */
  markVerified(instance: string, name: string, verificationCode: string, update: CaUpdate): Promise<WriteResult>;
  /**
   * Stores (or replaces) the CRL of a CA, only while the stored certificate is still the one the CRL was verified
   * against (`caSha256Thumbprint`; 'precondition-failed' otherwise).
   */
  putCrl(instance: string, name: string, crl: CaCrlRecord, caSha256Thumbprint: string, update: CaUpdate): Promise<WriteResult>;
  /** Deletes a CA certificate (its code and CRL with it) when the etag matches (undefined or `'*'`: any). */
  deleteCaCertificate(instance: string, name: string, expectedEtag?: string): Promise<WriteResult>;
}

/**
 * Store port of certificate claims: which enrollment entry holds an X.509 certificate (by upper-case SHA-256
 * thumbprint), so a certificate is in at most one entry of an instance (dps-behavior.md §6.2, 409 on a second one).
 * Owners are keyed by kind and lower-cased id. The claims are an index kept by the enrollment use cases; the
 * enrollments stay the truth (a claim whose owner no longer holds the certificate may be taken over).
 */
export interface ClaimOwner {
  kind: 'individual' | 'group';
  /** Lower-cased registration id or enrollment group id. */
  key: string;
}

export interface CertificateClaim {
  sha256: string;
  owner: ClaimOwner;
  /** When it was claimed (ms since the epoch). */
  claimedMs: number;
}

export interface CertificateClaimStore {
  /**
   * Claims every thumbprint not claimed yet for `owner`, then returns the current claim of each thumbprint (ours or
   * another owner's). One call may leave some claimed and report others held elsewhere: the caller releases.
   */
  claim(instance: string, sha256s: readonly string[], owner: ClaimOwner, nowMs: number): Promise<CertificateClaim[]>;
  /** Moves a claim from `from` to `to` only when `from` still holds it. True when moved. */
  takeOver(instance: string, sha256: string, from: ClaimOwner, to: ClaimOwner, nowMs: number): Promise<boolean>;
  /** Deletes the claims of `owner` except those in `keep`. */
  release(instance: string, owner: ClaimOwner, keep: readonly string[]): Promise<void>;
}

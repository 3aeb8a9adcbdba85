import type { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';

/** Most certificates read from a TLS peer (a device may send at most 10; a few more are read so the matcher refuses). */
const MAX_PEER_CHAIN = 16;

/** Parsed peer chains of TLS 1.3 sockets (read once per connection, see {@link peerCertificates}). */
const chains = new WeakMap<object, readonly X509Certificate[]>();

/**
 * The certificates a TLS 1.3 client presented, as parsed `X509Certificate`s (leaf first, in the order sent, at most
 * 16, stopping at a repeat), or undefined when they cannot be read this way (not TLS 1.3, or no
 * `getPeerX509Certificate`): then use {@link peerChain}.
 *
 * Reading them costs a fraction of `getPeerCertificate(true)` followed by parsing the DER again (OpenSSL 3 decodes
 * every certificate's key anew: about 0.25 ms per certificate), so the X.509 attestation can use these objects as
 * they are. Read once per connection and kept: Node's `getPeerX509Certificate()` links the issuers only on its first
 * call (later calls return the leaf alone). TLS 1.3 has no renegotiation, so the chain cannot change on the
 * connection; TLS 1.2 sockets are read anew on every call through `getPeerCertificate(true)`.
 */
export function peerCertificates(socket: unknown): readonly X509Certificate[] | undefined {
  if (socket === null || typeof socket !== 'object') return undefined;
  const cached = chains.get(socket);
  if (cached !== undefined) return cached;
  const tls = socket as Partial<Pick<TLSSocket, 'getPeerX509Certificate' | 'getProtocol'>>;
  if (typeof tls.getPeerX509Certificate !== 'function' || typeof tls.getProtocol !== 'function') return undefined;
  let cert: X509Certificate | undefined;
  try {
    if (tls.getProtocol() !== 'TLSv1.3') return undefined;
    cert = tls.getPeerX509Certificate();
  } catch {
    return undefined;
  }
  const out: X509Certificate[] = [];
  const raws: Buffer[] = [];
  while (cert !== undefined && cert !== null && out.length < MAX_PEER_CHAIN) {
    const raw = cert.raw;
    if (!Buffer.isBuffer(raw) || raw.length === 0 || raws.some((b) => b.equals(raw))) break;
    out.push(cert);
    raws.push(raw);
    const next: X509Certificate | undefined = cert.issuerCertificate;
    if (next === cert) break;
    cert = next;
  }
  chains.set(socket, out);
  return out;
}

/**
 * The certificate chain a TLS client presented (DER, leaf first), for X.509 attestation (dps-behavior.md §6.2).
 * Empty when the client sent no certificate or the socket is not TLS. Trust is not decided here: the use cases
 * validate the chain (its certificates in any order).
 *
 * TLS 1.3: the DER of {@link peerCertificates} (the `raw` of each, the same Buffer objects). Otherwise walks
 * `getPeerCertificate(true)` through `issuerCertificate`, stopping at a self-reference (same SHA-256 fingerprint:
 * OpenSSL links a self-signed certificate to itself) or after 16 certificates.
 */
export function peerChain(socket: unknown): Buffer[] {
  const parsed = peerCertificates(socket);
  if (parsed !== undefined) return parsed.map((c) => c.raw);
  const tls = socket as Partial<Pick<TLSSocket, 'getPeerCertificate'>> | null | undefined;
  if (tls === null || tls === undefined || typeof tls.getPeerCertificate !== 'function') return [];
  let cert: DetailedPeerCertificate | undefined;
  try {
    cert = tls.getPeerCertificate(true);
  } catch {
    return [];
  }
  const out: Buffer[] = [];
  const seen = new Set<string>();
  while (cert !== undefined && cert !== null && Buffer.isBuffer(cert.raw) && cert.raw.length > 0 && out.length < MAX_PEER_CHAIN) {
    const fp = cert.fingerprint256;
    if (seen.has(fp)) break;
    seen.add(fp);
    out.push(cert.raw);
    const next: DetailedPeerCertificate | undefined = cert.issuerCertificate;
    if (next === undefined || next === null || next === cert || next.fingerprint256 === fp) break;
    cert = next;
  }
  return out;
}

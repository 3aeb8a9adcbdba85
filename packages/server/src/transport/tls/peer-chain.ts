import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';

/** Most certificates read from a TLS peer (a device may send at most 10; a few more are read so the matcher refuses). */
const MAX_PEER_CHAIN = 16;

/**
 * The certificate chain a TLS client presented (DER, leaf first), for X.509 attestation (dps-behavior.md §6.2).
 * Walks `getPeerCertificate(true)` through `issuerCertificate`, stopping at a self-reference (same SHA-256
 * fingerprint: OpenSSL links a self-signed certificate to itself) or after 16 certificates. Empty when the client
 * sent no certificate or the socket is not TLS. Trust is not decided here: the use cases validate the chain.
 */
export function peerChain(socket: unknown): Buffer[] {
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

import { issueCertificate } from '../../packages/server/src/transport/tls/pki.ts';

/** A throwaway CA and an ECDSA P-256 server certificate for 127.0.0.1/localhost (the production default key type). */
export async function benchPki(): Promise<{ ca: string; cert: string; key: string }> {
  const ca = await issueCertificate({ commonName: 'Homing Bench CA', isCA: true, pathLength: 1 });
  const server = await issueCertificate({ commonName: 'localhost', sans: ['localhost', '127.0.0.1'], issuer: ca, usages: ['server'] });
  return { ca: ca.certPem, cert: server.certPem, key: server.keyPem };
}

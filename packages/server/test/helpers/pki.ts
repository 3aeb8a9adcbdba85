import { issueCertificate, type IssuedCert } from '../../src/transport/tls/pki.ts';

export interface TestPki {
  ca: IssuedCert;
  /** Server certificate for localhost, 127.0.0.1 and every name in `sans`. */
  server: IssuedCert;
}

/** A throwaway CA and server certificate for one test file. */
export async function createTestPki(sans: readonly string[] = []): Promise<TestPki> {
  const ca = await issueCertificate({ commonName: 'Homing Test CA', isCA: true, pathLength: 2 });
  const server = await issueCertificate({ commonName: 'localhost', sans: ['localhost', '127.0.0.1', ...sans], issuer: ca, usages: ['server'] });
  return { ca, server };
}

/** A device (client) certificate whose CN is the device or registration id. */
export function issueDeviceCert(issuer: IssuedCert, commonName: string, opts: { notBefore?: Date; notAfter?: Date } = {}): Promise<IssuedCert> {
  return issueCertificate({ commonName, issuer, usages: ['client'], ...opts });
}

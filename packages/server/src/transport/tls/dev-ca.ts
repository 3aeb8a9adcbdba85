import { mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { certificateSans, issueCertificate, loadIssuer } from './pki.ts';

export interface DevPki {
  caCertPath: string;
  caCertPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  /** True when this call created or re-issued the server certificate. */
  issued: boolean;
}

/**
 * Makes sure DIR/tls holds a dev CA and a server certificate whose SANs cover every host name and address in
 * `sans`. The CA is created once and kept; the server certificate is re-issued when SANs are missing or it is close
 * to expiry. Private keys are written with mode 0600.
 */
export async function ensureDevPki(dataDir: string, sans: readonly string[]): Promise<DevPki> {
  const dir = join(dataDir, 'tls');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caCertPath = join(dir, 'ca.pem');
  const caKeyPath = join(dir, 'ca-key.pem');
  const certPath = join(dir, 'server.pem');
  const keyPath = join(dir, 'server-key.pem');

  let ca;
  if (existsSync(caCertPath) && existsSync(caKeyPath)) {
    ca = await loadIssuer(await readFile(caCertPath, 'utf8'), await readFile(caKeyPath, 'utf8'));
  } else {
    ca = await issueCertificate({ commonName: 'Homing Dev CA', organization: 'Homing', isCA: true, pathLength: 1 });
    await writeFile(caKeyPath, ca.keyPem, { mode: 0o600 });
    await chmod(caKeyPath, 0o600);
    await writeFile(caCertPath, ca.certPem);
  }

  const wanted = [...new Set(sans.map((s) => s.toLowerCase()))];
  if (existsSync(certPath) && existsSync(keyPath)) {
    const pem = await readFile(certPath, 'utf8');
    const have = new Set(certificateSans(pem).map((s) => s.toLowerCase()));
    const cert = new X509Certificate(pem);
    const fresh = Date.parse(cert.validTo) - Date.now() > 30 * 86_400_000;
    const signedByCa = cert.checkIssued(new X509Certificate(ca.certPem));
    if (fresh && signedByCa && wanted.every((s) => have.has(s))) {
      return { caCertPath, caCertPem: ca.certPem, serverCertPem: pem, serverKeyPem: await readFile(keyPath, 'utf8'), issued: false };
    }
  }
  const server = await issueCertificate({ commonName: wanted[0] ?? 'localhost', organization: 'Homing', sans: wanted, issuer: ca, usages: ['server'], days: 397 });
  await writeFile(keyPath, server.keyPem, { mode: 0o600 });
  await chmod(keyPath, 0o600);
  // The chain file carries the CA too, so clients that trust only the CA can build the path.
  await writeFile(certPath, server.certPem);
  return { caCertPath, caCertPem: ca.certPem, serverCertPem: server.certPem, serverKeyPem: server.keyPem, issued: true };
}

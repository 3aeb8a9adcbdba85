import 'reflect-metadata';
import { webcrypto, X509Certificate as NodeX509 } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

/**
 * Certificate issuing for dev TLS and for tests: ECDSA P-256 keys (the cheapest full handshake on these machines),
 * issued with @peculiar/x509. Verification elsewhere uses node:crypto.
 */
const crypto = webcrypto;
type X509Crypto = Parameters<typeof x509.cryptoProvider.set>[0];
const x509Crypto = webcrypto as unknown as X509Crypto;
x509.cryptoProvider.set(x509Crypto);

const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

export interface IssuedCert {
  certPem: string;
  keyPem: string;
  /** The private key, for issuing further certificates with this one. */
  key: CryptoKey;
  cert: x509.X509Certificate;
}

export interface IssueOptions {
  /** Subject common name. */
  commonName: string;
  /** Extra subject attributes, e.g. 'O=Homing'. */
  organization?: string;
  /** DNS names and IP addresses (told apart automatically). */
  sans?: readonly string[];
  /** Issuer; self-signed when absent. */
  issuer?: IssuedCert;
  isCA?: boolean;
  /** Path length constraint for CAs. */
  pathLength?: number;
  /** 'server', 'client' or both (default: none for CAs, server for leaves). */
  usages?: readonly ('server' | 'client')[];
  notBefore?: Date;
  notAfter?: Date;
  /** Validity in days from notBefore when notAfter is absent (default 825 for leaves, 3650 for CAs). */
  days?: number;
}

function subjectName(cn: string, org?: string): string {
  const esc = (s: string) => s.replace(/([,+"\\<>;=])/g, '\\$1');
  return org ? `CN=${esc(cn)}, O=${esc(org)}` : `CN=${esc(cn)}`;
}

export async function issueCertificate(o: IssueOptions): Promise<IssuedCert> {
  const keys = (await crypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const notBefore = o.notBefore ?? new Date(Date.now() - 5 * 60_000);
  const notAfter = o.notAfter ?? new Date(notBefore.getTime() + (o.days ?? (o.isCA ? 3650 : 825)) * DAY_MS);
  const extensions: x509.Extension[] = [];
  if (o.isCA) {
    extensions.push(new x509.BasicConstraintsExtension(true, o.pathLength, true));
    extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true));
  } else {
    extensions.push(new x509.BasicConstraintsExtension(false, undefined, true));
    extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true));
    const usages = o.usages ?? ['server'];
    const eku: string[] = [];
    if (usages.includes('server')) eku.push(x509.ExtendedKeyUsage.serverAuth);
    if (usages.includes('client')) eku.push(x509.ExtendedKeyUsage.clientAuth);
    if (eku.length > 0) extensions.push(new x509.ExtendedKeyUsageExtension(eku, false));
  }
  if (o.sans && o.sans.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension(o.sans.map((s) => (isIP(s) ? { type: 'ip' as const, value: s } : { type: 'dns' as const, value: s })), false));
  }
  extensions.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as unknown as Parameters<typeof x509.SubjectKeyIdentifierExtension.create>[0], false, x509Crypto));
  if (o.issuer) extensions.push(await x509.AuthorityKeyIdentifierExtension.create(o.issuer.cert, false, x509Crypto));
  const name = subjectName(o.commonName, o.organization);
  const serialNumber = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1');
  const cert = o.issuer
    ? await x509.X509CertificateGenerator.create(
        { serialNumber, subject: name, issuer: o.issuer.cert.subject, notBefore, notAfter, signingAlgorithm: EC_ALG, publicKey: keys.publicKey, signingKey: o.issuer.key, extensions } as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[0],
        x509Crypto,
      )
    : await x509.X509CertificateGenerator.createSelfSigned({ serialNumber, name, notBefore, notAfter, signingAlgorithm: EC_ALG, keys, extensions } as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0], x509Crypto);
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), key: keys.privateKey, cert };
}

/** Loads a certificate and its PKCS#8 P-256 private key from PEM, to issue more certificates with it. */
export async function loadIssuer(certPem: string, keyPem: string): Promise<IssuedCert> {
  const der = x509.PemConverter.decodeFirst(keyPem);
  const key = await crypto.subtle.importKey('pkcs8', der, EC_ALG, true, ['sign']);
  return { certPem, keyPem, key, cert: new x509.X509Certificate(certPem) };
}

/** The SAN entries (DNS names and IPs) of a PEM certificate, via node:crypto. */
export function certificateSans(certPem: string): string[] {
  const alt = new NodeX509(certPem).subjectAltName ?? '';
  return alt
    .split(',')
    .map((s) => s.trim())
    .map((s) => s.replace(/^(DNS|IP Address):/, ''))
    .filter((s) => s.length > 0);
}

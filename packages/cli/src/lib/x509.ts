import 'reflect-metadata';
import { createPrivateKey, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { argumentError } from './errors.ts';

/**
 * Certificate issuing for the CLI: proof-of-possession certificates (`homing ca verify`) and simulated X.509 devices
 * (`homing simulate`). New keys are ECDSA P-256; issuers may hold an EC (P-256/384/521) or RSA key, in any PEM form
 * node:crypto reads (PKCS#8, SEC1, PKCS#1).
 */
type CryptoKey = webcrypto.CryptoKey;
type X509Crypto = Parameters<typeof x509.cryptoProvider.set>[0];
const x509Crypto = webcrypto as unknown as X509Crypto;
x509.cryptoProvider.set(x509Crypto);

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface Issuer {
  cert: x509.X509Certificate;
  key: CryptoKey;
  algorithm: { name: string; hash: string; namedCurve?: string };
  certPem: string;
}

export interface Issued {
  certPem: string;
  keyPem: string;
}

/** Loads an issuing CA: its certificate (first of the PEM) and private key; checks that they belong together. */
export async function loadIssuer(certPem: string, keyPem: string): Promise<Issuer> {
  let nodeKey;
  try {
    nodeKey = createPrivateKey(keyPem);
  } catch {
    throw argumentError('the CA private key is not a readable PEM private key (an encrypted key is not supported)');
  }
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(certPem);
  } catch {
    throw argumentError('the CA certificate is not a readable PEM certificate');
  }
  if (!new NodeX509(certPem).checkPrivateKey(nodeKey)) throw argumentError('the CA private key does not belong to the CA certificate');
  const pkcs8 = nodeKey.export({ type: 'pkcs8', format: 'der' });
  let algorithm: Issuer['algorithm'];
  if (nodeKey.asymmetricKeyType === 'ec') {
    const curve = nodeKey.asymmetricKeyDetails?.namedCurve;
    const named = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : undefined;
    if (!named) throw argumentError(`unsupported EC curve ${curve ?? '?'} (P-256, P-384 or P-521)`);
    algorithm = { name: 'ECDSA', namedCurve: named, hash: named === 'P-256' ? 'SHA-256' : named === 'P-384' ? 'SHA-384' : 'SHA-512' };
  } else if (nodeKey.asymmetricKeyType === 'rsa') {
    algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  } else {
    throw argumentError(`unsupported CA key type ${nodeKey.asymmetricKeyType ?? '?'} (EC or RSA)`);
  }
  const key = await webcrypto.subtle.importKey('pkcs8', pkcs8, algorithm, false, ['sign']);
  return { cert, key, algorithm, certPem };
}

/** Issues a leaf certificate with subject `CN=<commonName>` and a new P-256 key, signed by the issuer. */
export async function issueLeaf(issuer: Issuer, commonName: string, o: { days?: number; clientAuth?: boolean } = {}): Promise<Issued> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 5 * 60_000);
  const notAfter = new Date(notBefore.getTime() + (o.days ?? 365) * 86_400_000);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.cert, false, x509Crypto),
  ];
  if (o.clientAuth) extensions.push(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false));
  const serialNumber = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1');
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber,
      subject: `CN=${commonName.replace(/([,+"\\<>;=])/g, '\\$1')}`,
      issuer: issuer.cert.subject,
      notBefore,
      notAfter,
      signingAlgorithm: issuer.algorithm,
      publicKey: keys.publicKey,
      signingKey: issuer.key,
      extensions,
    } as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[0],
    x509Crypto,
  );
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}

import { deriveDeviceKey } from './sas.ts';

/** An individual enrollment's key (or a key already derived from a group key), base64. */
export interface SymmetricKeyCredential {
  type: 'symmetricKey';
  key: string;
}

/** An enrollment group's key, base64: the device key is derived on the device from the registration id. */
export interface GroupKeyCredential {
  type: 'groupKey';
  groupKey: string;
}

/** A client certificate (PEM, leaf first, then the chain up to the verified CA) and its private key. */
export interface X509Credential {
  type: 'x509';
  cert: string | Buffer;
  key: string | Buffer;
  passphrase?: string;
}

export type DeviceCredential = SymmetricKeyCredential | GroupKeyCredential | X509Credential;

/** The credential a device presents to its hub: a symmetric key (the derived one for group members) or X.509. */
export type HubCredential = SymmetricKeyCredential | X509Credential;

/** Resolves a group key to the device's own key; other credentials are returned unchanged. */
export function resolveCredential(credential: DeviceCredential, registrationId: string): HubCredential {
  if (credential.type === 'groupKey') return { type: 'symmetricKey', key: deriveDeviceKey(credential.groupKey, registrationId) };
  return credential;
}

/** Server trust and identity checks for TLS connections. */
export interface TlsOptions {
  /** CA certificate(s) to trust, PEM (in addition to nothing: when set, only these are trusted). */
  ca?: string | Buffer | (string | Buffer)[];
  /** SNI and certificate host name to check, when it differs from the host dialled. */
  servername?: string;
  /** Default true. Turning it off is for experiments only. */
  rejectUnauthorized?: boolean;
}

/** The node:tls options for a credential and trust settings (client certificate only for X.509). */
export function tlsConnectOptions(credential: HubCredential, tls: TlsOptions | undefined): {
  ca?: string | Buffer | (string | Buffer)[];
  cert?: string | Buffer;
  key?: string | Buffer;
  passphrase?: string;
  servername?: string;
  rejectUnauthorized: boolean;
} {
  return {
    ...(tls?.ca !== undefined ? { ca: tls.ca } : {}),
    ...(tls?.servername !== undefined ? { servername: tls.servername } : {}),
    rejectUnauthorized: tls?.rejectUnauthorized !== false,
    ...(credential.type === 'x509'
      ? { cert: credential.cert, key: credential.key, ...(credential.passphrase !== undefined ? { passphrase: credential.passphrase } : {}) }
      : {}),
  };
}

/** Splits `host[:port]` (and `[v6]:port`); `port` is undefined when absent. */
export function splitHostPort(hostPort: string): { host: string; port: number | undefined } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(hostPort);
  if (v6) return { host: v6[1] ?? hostPort, port: v6[2] === undefined ? undefined : Number(v6[2]) };
  const i = hostPort.lastIndexOf(':');
  if (i > 0 && hostPort.indexOf(':') === i && /^\d+$/.test(hostPort.slice(i + 1))) {
    return { host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) };
  }
  return { host: hostPort, port: undefined };
}

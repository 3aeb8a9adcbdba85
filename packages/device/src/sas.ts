import { createHmac } from 'node:crypto';

/**
 * Shared access signatures as the Azure IoT device SDKs build them (protocol-device.md §C):
 * `SharedAccessSignature sr=<sr>&sig=<urlenc(base64(HMAC-SHA256(base64decode(key), sr + "\n" + se)))>[&skn=<name>]&se=<epoch s>`.
 * `sr` is used verbatim and signed exactly as sent; each caller decides whether it is encoded.
 * (Deliberately a copy, not an import, of the server's helper: device code stands alone.)
 */

/** Strict URL encoding: encodeURIComponent plus `! ' ( ) *`, as the SDKs encode sig, skn and the hub sr. */
export function strictEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** base64(HMAC-SHA256(base64decode(keyBase64), utf8(message))). */
export function hmacSha256Base64(keyBase64: string, message: string): string {
  return createHmac('sha256', Buffer.from(keyBase64, 'base64')).update(message, 'utf8').digest('base64');
}

export interface SasOptions {
  /** The resource, exactly as it goes on the wire (and is signed). */
  sr: string;
  /** The signing key, base64. */
  keyBase64: string;
  /** Expiry, epoch seconds. */
  expirySeconds: number;
  keyName?: string;
}

/** Builds `SharedAccessSignature sr=..&sig=..[&skn=..]&se=..`. */
export function buildSas(o: SasOptions): string {
  const sig = strictEncode(hmacSha256Base64(o.keyBase64, `${o.sr}\n${o.expirySeconds}`));
  const skn = o.keyName === undefined ? '' : `&skn=${strictEncode(o.keyName)}`;
  return `SharedAccessSignature sr=${o.sr}&sig=${sig}${skn}&se=${o.expirySeconds}`;
}

/** The device key of an enrollment-group member: base64(HMAC-SHA256(base64decode(groupKey), registrationId)). */
export function deriveDeviceKey(groupKeyBase64: string, registrationId: string): string {
  return hmacSha256Base64(groupKeyBase64, registrationId);
}

/**
 * The DPS device token: sr = `{idScope}/registrations/{registrationId}` (not encoded, as the Node SDK sends it),
 * skn = `registration`.
 */
export function dpsSas(idScope: string, registrationId: string, keyBase64: string, expirySeconds: number): string {
  return buildSas({ sr: `${idScope}/registrations/${registrationId}`, keyBase64, expirySeconds, keyName: 'registration' });
}

/** The hub device token: sr = urlencode(`{hostName}/devices/{deviceId}`), signed encoded, no skn. */
export function hubSas(hostName: string, deviceId: string, keyBase64: string, expirySeconds: number): string {
  return buildSas({ sr: strictEncode(`${hostName}/devices/${deviceId}`), keyBase64, expirySeconds });
}

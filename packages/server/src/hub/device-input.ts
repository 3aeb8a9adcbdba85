import { HomingError } from '../core/errors.ts';
import { isPlainObject, type JsonValue } from '../core/json.ts';
import { isBase64 } from '../core/sas.ts';
import type { AuthType, DeviceAuthentication, DeviceStatus } from './model.ts';

/** IoT Hub device ids: up to 128 ASCII characters from this set. Case-sensitive. */
const DEVICE_ID_RE = /^[A-Za-z0-9\-.%_*?!(),:=@$'+#]{1,128}$/;

export function validateDeviceId(id: string): void {
  if (typeof id !== 'string' || !DEVICE_ID_RE.test(id)) {
    throw new HomingError('InvalidDeviceId', 'Device ids are 1 to 128 characters of letters, digits and - . % _ * ? ! ( ) , : = @ $ \' + #.');
  }
}

export interface DeviceInput {
  deviceId: string;
  status: DeviceStatus;
  statusReason: string | null;
  /** Keys left null are generated. */
  authentication: DeviceAuthentication;
  capabilities: { iotEdge: boolean };
  etag: string | undefined;
}

const THUMBPRINT_RE = /^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$/;

function str(v: JsonValue | undefined): string | null {
  return typeof v === 'string' && v.length > 0 ? v : null;
}

/** Validates and normalizes a Device JSON body (the shape azure-iothub sends on create and update). */
export function parseDeviceInput(body: JsonValue, pathDeviceId: string): DeviceInput {
  validateDeviceId(pathDeviceId);
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The device body must be a JSON object.');
  const bodyId = body.deviceId ?? body.id;
  if (bodyId !== undefined && bodyId !== pathDeviceId) {
    throw new HomingError('ArgumentInvalid', 'The deviceId in the body does not match the device id in the path.');
  }
  const status = body.status ?? 'enabled';
  if (status !== 'enabled' && status !== 'disabled') throw new HomingError('ArgumentInvalid', "status must be 'enabled' or 'disabled'.");
  const statusReason = body.statusReason ?? null;
  if (statusReason !== null && (typeof statusReason !== 'string' || statusReason.length > 128)) {
    throw new HomingError('ArgumentInvalid', 'statusReason must be a string of at most 128 characters.');
  }
  let capabilities = { iotEdge: false };
  if (body.capabilities !== undefined && body.capabilities !== null) {
    if (!isPlainObject(body.capabilities)) throw new HomingError('ArgumentInvalid', 'capabilities must be an object.');
    const edge = body.capabilities.iotEdge ?? false;
    if (typeof edge !== 'boolean') throw new HomingError('ArgumentInvalid', 'capabilities.iotEdge must be a boolean.');
    capabilities = { iotEdge: edge };
  }
  const auth = body.authentication ?? null;
  if (auth !== null && !isPlainObject(auth)) throw new HomingError('ArgumentInvalid', 'authentication must be an object.');
  const sk = auth && isPlainObject(auth.symmetricKey) ? auth.symmetricKey : {};
  const tp = auth && isPlainObject(auth.x509Thumbprint) ? auth.x509Thumbprint : {};
  const primaryKey = str(sk.primaryKey);
  const secondaryKey = str(sk.secondaryKey);
  const primaryThumbprint = str(tp.primaryThumbprint);
  const secondaryThumbprint = str(tp.secondaryThumbprint);
  const rawType = auth?.type ?? (primaryThumbprint ? 'selfSigned' : 'sas');
  const types: AuthType[] = ['sas', 'selfSigned', 'certificateAuthority', 'none'];
  if (typeof rawType !== 'string' || !types.includes(rawType as AuthType)) {
    throw new HomingError('ArgumentInvalid', "authentication.type must be one of 'sas', 'selfSigned', 'certificateAuthority', 'none'.");
  }
  const type = rawType as AuthType;
  const authentication: DeviceAuthentication = {
    type,
    symmetricKey: { primaryKey: null, secondaryKey: null },
    x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
  };
  if (type === 'sas') {
    for (const k of [primaryKey, secondaryKey]) {
      if (k !== null && !isBase64(k, 16, 64)) {
        throw new HomingError('ArgumentInvalid', 'Symmetric keys must be base64 of 16 to 64 bytes.');
      }
    }
    authentication.symmetricKey = { primaryKey, secondaryKey };
  } else if (type === 'selfSigned') {
    if (!primaryThumbprint) throw new HomingError('ArgumentInvalid', 'selfSigned authentication needs x509Thumbprint.primaryThumbprint.');
    for (const t of [primaryThumbprint, secondaryThumbprint]) {
      if (t !== null && !THUMBPRINT_RE.test(t)) {
        throw new HomingError('ArgumentInvalid', 'Thumbprints are 40 (SHA-1) or 64 (SHA-256) hex digits.');
      }
    }
    authentication.x509Thumbprint = {
      primaryThumbprint: primaryThumbprint.toUpperCase(),
      secondaryThumbprint: (secondaryThumbprint ?? primaryThumbprint).toUpperCase(),
    };
  }
  const etag = typeof body.etag === 'string' && body.etag.length > 0 ? body.etag : undefined;
  return { deviceId: pathDeviceId, status, statusReason, authentication, capabilities, etag };
}

import type { JsonObject } from '../../core/json.ts';
import type { OperationStatus, RegistrationOperation, RegistrationRecord, RegistrationStatus, RegistrationSubstatus } from '../model.ts';

/**
 * Wire shapes of the DPS device API (protocol-device.md A.4): RegistrationOperationStatus and
 * DeviceRegistrationResult, with Azure's key order.
 */
export interface DeviceRegistrationResult {
  registrationId: string;
  createdDateTimeUtc?: string;
  assignedHub?: string;
  deviceId?: string;
  status: RegistrationStatus;
  substatus?: RegistrationSubstatus;
  lastUpdatedDateTimeUtc?: string;
  etag?: string;
  /** X.509 devices: `{ certificateInfo, enrollmentGroupId?, signingCertificateInfo? }`. */
  x509?: JsonObject;
  symmetricKey?: { enrollmentGroupId?: string };
  payload?: JsonObject;
  errorCode?: number;
  errorMessage?: string;
}

export interface RegistrationOperationStatus {
  operationId: string;
  status: OperationStatus;
  registrationState?: DeviceRegistrationResult;
}

/** The device-facing view of a registration record. */
export function registrationResult(r: RegistrationRecord): DeviceRegistrationResult {
  const out = { registrationId: r.registrationId, createdDateTimeUtc: r.createdDateTimeUtc } as DeviceRegistrationResult;
  if (r.assignedHub !== undefined) out.assignedHub = r.assignedHub;
  if (r.deviceId !== undefined) out.deviceId = r.deviceId;
  out.status = r.status;
  if (r.substatus !== undefined) out.substatus = r.substatus;
  out.lastUpdatedDateTimeUtc = r.lastUpdatedDateTimeUtc;
  out.etag = r.etag;
  if (r.attestationType === 'x509' && r.x509 !== undefined) out.x509 = r.x509;
  if (r.attestationType === 'symmetricKey' && r.enrollment.kind === 'group') out.symmetricKey = { enrollmentGroupId: r.enrollment.enrollmentGroupId };
  if (r.payload !== undefined) out.payload = r.payload;
  if (r.errorCode !== undefined) out.errorCode = r.errorCode;
  if (r.errorMessage !== undefined) out.errorMessage = r.errorMessage;
  return out;
}

/** An operation as the device sees it: `assigning` carries only the registration id and status. */
export function operationStatusBody(op: RegistrationOperation): RegistrationOperationStatus {
  if (op.status === 'assigning' || op.result === undefined) {
    return { operationId: op.operationId, status: op.status, registrationState: { registrationId: op.registrationId, status: op.status } };
  }
  return { operationId: op.operationId, status: op.status, registrationState: op.result as unknown as DeviceRegistrationResult };
}

/** A result holds only JSON values (optional fields are left out, never undefined). */
export function resultAsJson(r: DeviceRegistrationResult): JsonObject {
  return r as unknown as JsonObject;
}

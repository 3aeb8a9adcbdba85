import type { JsonObject, JsonValue } from '../json.ts';

/** Registration status values (dps-behavior.md §1.6); other strings are passed through. */
export type RegistrationStatus = 'unassigned' | 'assigning' | 'assigned' | 'failed' | 'disabled';

export type RegistrationSubstatus = 'initialAssignment' | 'deviceDataMigrated' | 'deviceDataReset' | 'reprovisionedToInitialAssignment';

/** `DeviceRegistrationResult`: the `registrationState` of an operation, and the answer of a status lookup. */
export interface DeviceRegistrationResult {
  registrationId: string;
  status: RegistrationStatus | (string & {});
  assignedHub?: string;
  deviceId?: string;
  substatus?: RegistrationSubstatus | (string & {});
  createdDateTimeUtc?: string;
  lastUpdatedDateTimeUtc?: string;
  etag?: string;
  errorCode?: number;
  errorMessage?: string;
  /** What a custom allocation webhook returned for the device. */
  payload?: JsonValue;
  symmetricKey?: { enrollmentGroupId?: string };
  x509?: JsonObject;
  tpm?: JsonObject;
}

/** `RegistrationOperationStatus`: the answer of register and of the operation-status poll. */
export interface RegistrationOperationStatus {
  operationId?: string;
  status: string;
  registrationState?: DeviceRegistrationResult;
}

/** A successful registration: the device is assigned to `assignedHub` as `deviceId`. */
export interface AssignedRegistration extends DeviceRegistrationResult {
  status: 'assigned';
  assignedHub: string;
  deviceId: string;
}

/** The register body (`DeviceRegistration`). */
export interface DeviceRegistrationRequest {
  registrationId: string;
  payload?: JsonObject;
}

/** One answer from DPS, before interpretation: HTTP status (or the MQTT topic status), Retry-After, JSON body. */
export interface DpsResponse {
  status: number;
  retryAfterMs: number | undefined;
  /** The parsed JSON body; undefined when the body was empty. */
  body: JsonValue | undefined;
}

/** The wire half of a provisioning client: one request, one answer. Retry rules live above it. */
export interface DpsTransport {
  register(request: DeviceRegistrationRequest, signal?: AbortSignal): Promise<DpsResponse>;
  operationStatus(operationId: string, signal?: AbortSignal): Promise<DpsResponse>;
  close(): Promise<void>;
}

/** Transports that also offer the registration status lookup (`POST /{idScope}/registrations/{id}`). */
export interface DpsLookupTransport extends DpsTransport {
  lookup(signal?: AbortSignal): Promise<DpsResponse>;
}

/** Parses a Retry-After value (delay seconds, or an HTTP date) into milliseconds from `nowMs`. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (v === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const date = Date.parse(v);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - nowMs);
}

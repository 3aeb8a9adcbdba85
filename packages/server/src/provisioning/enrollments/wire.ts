import type { JsonObject, JsonValue } from '../../core/json.ts';
import type {
  AttestationMechanism,
  EnrollmentCommon,
  EnrollmentGroup,
  IndividualEnrollment,
  RegistrationRecord,
} from '../model.ts';

/**
 * The DPS service API JSON of enrollments, groups and registration records (protocol-service.md §3.3–3.6).
 * Unknown fields the client sent (`extra`) go out first, so they can never shadow a field the service owns.
 * Keys are returned by GET and PUT too (protocol-service.md §3.2: more lenient for SDK users).
 */
function toJson(v: unknown): JsonValue {
  return JSON.parse(JSON.stringify(v)) as JsonValue;
}

export function attestationToJson(a: AttestationMechanism): JsonObject {
  return toJson(a) as JsonObject;
}

function commonToJson(e: EnrollmentCommon): JsonObject {
  const out: JsonObject = {
    attestation: attestationToJson(e.attestation),
    capabilities: { iotEdge: e.capabilities.iotEdge },
    etag: e.etag,
    provisioningStatus: e.provisioningStatus,
    reprovisionPolicy: { updateHubAssignment: e.reprovisionPolicy.updateHubAssignment, migrateDeviceData: e.reprovisionPolicy.migrateDeviceData },
    createdDateTimeUtc: e.createdDateTimeUtc,
    lastUpdatedDateTimeUtc: e.lastUpdatedDateTimeUtc,
  };
  if (e.initialTwin !== undefined) out.initialTwin = toJson(e.initialTwin);
  if (e.allocationPolicy !== undefined) out.allocationPolicy = e.allocationPolicy;
  if (e.iotHubs !== undefined) out.iotHubs = [...e.iotHubs];
  if (e.iotHubHostName !== undefined) out.iotHubHostName = e.iotHubHostName;
  if (e.customAllocationDefinition !== undefined) out.customAllocationDefinition = toJson(e.customAllocationDefinition);
  return out;
}

/** DeviceRegistrationState: what the service API shows of a registration record. */
export function registrationToJson(r: RegistrationRecord): JsonObject {
  const out: JsonObject = { registrationId: r.registrationId, createdDateTimeUtc: r.createdDateTimeUtc };
  if (r.assignedHub !== undefined) out.assignedHub = r.assignedHub;
  if (r.deviceId !== undefined) out.deviceId = r.deviceId;
  out.status = r.status;
  if (r.substatus !== undefined) out.substatus = r.substatus;
  if (r.errorCode !== undefined) out.errorCode = r.errorCode;
  if (r.errorMessage !== undefined) out.errorMessage = r.errorMessage;
  out.lastUpdatedDateTimeUtc = r.lastUpdatedDateTimeUtc;
  out.etag = r.etag;
  if (r.payload !== undefined) out.payload = toJson(r.payload);
  return out;
}

export function individualEnrollmentToJson(e: IndividualEnrollment, registrationState?: RegistrationRecord): JsonObject {
  const own: JsonObject = { registrationId: e.registrationId };
  if (e.deviceId !== undefined) own.deviceId = e.deviceId;
  if (registrationState !== undefined) own.registrationState = registrationToJson(registrationState);
  const out: JsonObject = { ...(e.extra ?? {}), ...own, ...commonToJson(e) };
  if (e.optionalDeviceInformation !== undefined) out.optionalDeviceInformation = toJson(e.optionalDeviceInformation);
  return out;
}

export function enrollmentGroupToJson(g: EnrollmentGroup): JsonObject {
  return { ...(g.extra ?? {}), enrollmentGroupId: g.enrollmentGroupId, ...commonToJson(g) };
}

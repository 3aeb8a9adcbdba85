import type { JsonObject } from '../core/json.ts';
import type { DpsRight, SharedAccessPolicy } from '../core/policies.ts';

/**
 * The provisioning (DPS role) domain model, in the shapes of the DPS service API 2021-10-01
 * (see shared/reference/protocol-service.md §3 and dps-behavior.md §1).
 */
export type AllocationPolicy = 'hashed' | 'geoLatency' | 'static' | 'custom';
export type ProvisioningStatus = 'enabled' | 'disabled';
export type RegistrationStatus = 'unassigned' | 'assigning' | 'assigned' | 'failed' | 'disabled';
export type RegistrationSubstatus = 'initialAssignment' | 'deviceDataMigrated' | 'deviceDataReset' | 'reprovisionedToInitialAssignment';

export interface ReprovisionPolicy {
  updateHubAssignment: boolean;
  migrateDeviceData: boolean;
}

export interface X509CertificateInfo {
  subjectName: string;
  sha1Thumbprint: string;
  sha256Thumbprint: string;
  issuerName: string;
  notBeforeUtc: string;
  notAfterUtc: string;
  serialNumber: string;
  version: number;
}

export interface X509CertificateWithInfo {
  certificate?: string;
  info?: X509CertificateInfo;
}

export interface X509Attestation {
  clientCertificates?: { primary?: X509CertificateWithInfo; secondary?: X509CertificateWithInfo };
  signingCertificates?: { primary?: X509CertificateWithInfo; secondary?: X509CertificateWithInfo };
  caReferences?: { primary?: string; secondary?: string };
}

export interface AttestationMechanism {
  type: 'none' | 'tpm' | 'x509' | 'symmetricKey';
  tpm?: { endorsementKey: string; storageRootKey?: string };
  x509?: X509Attestation;
  symmetricKey?: { primaryKey: string; secondaryKey: string };
}

export interface InitialTwin {
  tags?: JsonObject;
  properties?: { desired?: JsonObject };
}

export interface CustomAllocationDefinition {
  webhookUrl: string;
  apiVersion: string;
}

/** Fields individual enrollments and enrollment groups share. */
export interface EnrollmentCommon {
  attestation: AttestationMechanism;
  capabilities: { iotEdge: boolean };
  initialTwin?: InitialTwin;
  provisioningStatus: ProvisioningStatus;
  reprovisionPolicy: ReprovisionPolicy;
  allocationPolicy?: AllocationPolicy;
  iotHubs?: string[];
  iotHubHostName?: string;
  customAllocationDefinition?: CustomAllocationDefinition;
  etag: string;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  /** Unknown top-level fields, kept round-trip. */
  extra?: JsonObject;
}

export interface IndividualEnrollment extends EnrollmentCommon {
  /** As given by the operator; lookups use the lower-cased form. */
  registrationId: string;
  deviceId?: string;
  optionalDeviceInformation?: JsonObject;
}

export interface EnrollmentGroup extends EnrollmentCommon {
  enrollmentGroupId: string;
}

/** A registration record (DeviceRegistrationState), one per registration id and instance. */
export interface RegistrationRecord {
  registrationId: string;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  assignedHub?: string;
  deviceId?: string;
  status: RegistrationStatus;
  substatus?: RegistrationSubstatus;
  errorCode?: number;
  errorMessage?: string;
  etag: string;
  payload?: JsonObject;
  /** Which enrollment the device registered through. */
  enrollment: { kind: 'individual'; registrationId: string } | { kind: 'group'; enrollmentGroupId: string };
  attestationType: 'symmetricKey' | 'x509' | 'tpm';
  /** X.509 details returned to the device (certificateInfo, signingCertificateInfo). */
  x509?: JsonObject;
  /** The operation that produced (or is producing) this record. */
  operationId?: string;
}

export interface LinkedHub {
  /** The hub host name: what enrollments list in iotHubs and devices get as assignedHub. */
  name: string;
  /** Service connection string with a policy holding RegistryWrite + ServiceConnect. */
  connectionString: string;
  location: string;
  /** 1..1000; null behaves as 1. */
  allocationWeight: number;
  /** False: skipped by hashed/geoLatency allocation (still usable by static). */
  applyAllocationPolicy: boolean;
}

/** Named sets of quota values (docs/api/quotas.md). `default`: rate quotas off, 5 polls / 10 s per device. */
export type QuotaPreset = 'default' | 'azure';

/**
 * Rate quotas and the registration-record limit of one instance, as stored (docs/api/quotas.md). Each field: a
 * positive integer is the limit, `0` switches that quota off, absent means "from the preset" (then the service
 * defaults, then the built-in defaults).
 */
export interface InstanceQuotaSettings {
  preset?: QuotaPreset;
  /** Register PUTs and registration status lookups per instance per minute. */
  registrationsPerMinute?: number;
  /** Device API calls (register, operation status, status lookup) and DPS service API calls per instance per minute. */
  operationsPerMinute?: number;
  /** Operation-status polls per device per 10 s. */
  pollsPer10Seconds?: number;
  /** Registration records per instance (a new device beyond it gets 403 403002). */
  maxRegistrations?: number;
}

export interface ProvisioningInstance {
  /** Instance name (service host label). */
  name: string;
  /** `0ne` + 8 hex digits. */
  idScope: string;
  /** Host names the service API answers to (sr of service SAS tokens). */
  serviceHostNames: string[];
  /** Default allocation policy (never custom). */
  allocationPolicy: Exclude<AllocationPolicy, 'custom'>;
  policies: SharedAccessPolicy<DpsRight>[];
  linkedHubs: LinkedHub[];
  etag: string;
  /** Rate quotas and limits; absent: the service defaults (docs/api/quotas.md). */
  quotas?: InstanceQuotaSettings;
}

/** Statuses of a registration operation (RegistrationOperationStatus.status). */
export type OperationStatus = 'unassigned' | 'assigning' | 'assigned' | 'failed' | 'disabled';

/**
 * One device registration attempt (`PUT /{idScope}/registrations/{id}/register` or its MQTT twin), polled by the
 * device through its operation id. At most one operation per registration id is in flight (`assigning`) at a time;
 * the store enforces it. Updates are compare-and-set on `version`.
 */
export interface RegistrationOperation {
  /** Opaque, unique within the instance. */
  operationId: string;
  /** As the device sent it; lookups use the lower-cased form. */
  registrationId: string;
  status: OperationStatus;
  /** Starts at 1; every update writes version + 1 when the stored version equals the expected one. */
  version: number;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  /** What the runtime needs to carry on after a restart (the device's payload, the matched enrollment...). */
  request?: JsonObject;
  /** Runtime-private progress of a multi-step assignment (the durable plan and the steps done). */
  progress?: JsonObject;
  /** The DeviceRegistrationResult once the operation is final. */
  result?: JsonObject;
}

/** The twin a hub move installs on the new hub (hub-client.ts ImportDeviceRequest['twin']). */
export interface HubMoveTwin {
  tags: JsonObject;
  desired: JsonObject;
  reported: JsonObject;
  desiredVersion: number;
  reportedVersion: number;
}

/**
 * A durable reprovisioning job (docs/adr/015-reprovisioning-and-hub-moves.md): a device moving from one hub to another under
 * the migrate or reset policy. One per registration id at a time. Its steps are idempotent and recorded:
 * `planned` (nothing done) → `copied` (the state for the new hub is in `twin`: the old hub's for migrate, the
 * initial twin for reset) → `written` (the new hub has the device) → the old hub's device is deleted and the finish
 * deletes the job, ends the operation and writes the record in one transaction (`removed` is only reported to the
 * step hook between the two; it is never stored). `aborting`: the move is being
 * undone (the new hub could not be written): the device is removed from the new hub, then the operation ends
 * `failed` and the record returns to the old hub.
 *
 * Holds the credentials the new hub gets (the store already keeps enrollment keys); never logged.
 */
export interface HubMove {
  registrationId: string;
  /** The `assigning` operation this move belongs to. */
  operationId: string;
  kind: 'migrate' | 'reset';
  deviceId: string;
  fromHub: string;
  toHub: string;
  step: 'planned' | 'copied' | 'written' | 'removed' | 'aborting';
  /** Compare-and-set key: every update writes version + 1. */
  version: number;
  /** The node running it, and until when (ISO) its lease holds; another node takes it over only after that. */
  owner: string;
  leaseUntil: string;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  credentials: { type: 'sas'; primaryKey: string; secondaryKey: string } | { type: 'selfSigned'; primaryThumbprint: string; secondaryThumbprint: string };
  capabilities: { iotEdge: boolean };
  /** What the new hub gets; set from `copied` on. */
  twin?: HubMoveTwin;
  /** Used when the old hub no longer has the device (nothing to migrate). */
  initialTwin?: HubMoveTwin;
  /** The record to write when the move ends (status assigned on the new hub). */
  record: RegistrationRecord;
  /** The record before the move, written back when the move is undone. */
  prior: RegistrationRecord;
  /** Failed attempts of the current step, and the last failure (no secrets). */
  attempts: number;
  lastError?: string;
  /** Why the move is being undone (the error the operation ends with). */
  abort?: { errorCode: number; errorMessage: string };
}

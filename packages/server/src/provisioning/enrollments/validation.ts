import { HomingError } from '../../core/errors.ts';
import { isPlainObject, jsonByteLength, type JsonObject, type JsonValue } from '../../core/json.ts';
import { isBase64 } from '../../core/sas.ts';
import { TWIN_SECTION_MAX_BYTES, validateTwinPatch } from '../../core/twin.ts';
import { isValidRegistrationId, sameRegistrationId, validateRegistrationId } from '../../core/registration-id.ts';
import { validateDeviceId } from '../../hub/device-input.ts';
import type {
  AllocationPolicy,
  AttestationMechanism,
  CustomAllocationDefinition,
  EnrollmentCommon,
  InitialTwin,
  LinkedHub,
  ProvisioningStatus,
  ReprovisionPolicy,
  X509Attestation,
  X509CertificateWithInfo,
} from '../model.ts';
import { certificateInfo, parseCertificate } from './x509.ts';

/**
 * Pure validation of enrollment bodies (dps-behavior.md §1.3–1.5, protocol-service.md §3.3–3.5). A parse either
 * returns the normalized fields or throws a 400 HomingError naming the field; secrets never appear in messages.
 */
export type EnrollmentKind = 'individual' | 'group';

/** Fields of an enrollment the client controls (everything but etag and timestamps). */
export type EnrollmentFields = Omit<EnrollmentCommon, 'etag' | 'createdDateTimeUtc' | 'lastUpdatedDateTimeUtc'>;

export interface ParsedIndividual extends EnrollmentFields {
  registrationId: string;
  deviceId?: string;
  optionalDeviceInformation?: JsonObject;
}

export interface ParsedGroup extends EnrollmentFields {
  enrollmentGroupId: string;
}

export interface ParseContext {
  /** The instance's linked hubs: `iotHubs` and `iotHubHostName` must name them. */
  linkedHubs: readonly LinkedHub[];
  /** A fresh symmetric key (64 random bytes, base64). */
  newKey(): string;
  /** Keys kept when an update leaves them out (instead of generating new ones). */
  currentKeys?: { primaryKey: string; secondaryKey: string } | undefined;
}

export const SYMMETRIC_KEY_MIN_BYTES = 16;
export const SYMMETRIC_KEY_MAX_BYTES = 64;
/** The custom allocation webhook API versions start here. */
export const MIN_CUSTOM_ALLOCATION_API_VERSION = '2018-09-01-preview';

const COMMON_FIELDS = [
  'attestation', 'capabilities', 'initialTwin', 'provisioningStatus', 'reprovisionPolicy', 'allocationPolicy', 'iotHubs',
  'iotHubHostName', 'customAllocationDefinition', 'etag', 'createdDateTimeUtc', 'lastUpdatedDateTimeUtc',
] as const;
const INDIVIDUAL_FIELDS = new Set<string>([...COMMON_FIELDS, 'registrationId', 'deviceId', 'optionalDeviceInformation', 'registrationState']);
const GROUP_FIELDS = new Set<string>([...COMMON_FIELDS, 'enrollmentGroupId']);
const ALLOCATION_POLICIES: readonly AllocationPolicy[] = ['hashed', 'geoLatency', 'static', 'custom'];

function bad(message: string): HomingError {
  return new HomingError('ArgumentInvalid', message);
}

/** null and undefined both mean "not given". */
function given<T extends JsonValue>(v: T | undefined): v is T {
  return v !== undefined && v !== null;
}

function optString(o: JsonObject, field: string, path: string): string | undefined {
  const v = o[field];
  if (!given(v)) return undefined;
  if (typeof v !== 'string') throw bad(`${path} must be a string.`);
  return v;
}

function optObject(o: JsonObject, field: string, path: string): JsonObject | undefined {
  const v = o[field];
  if (!given(v)) return undefined;
  if (!isPlainObject(v)) throw bad(`${path} must be a JSON object.`);
  return v;
}

function optBoolean(o: JsonObject, field: string, path: string): boolean | undefined {
  const v = o[field];
  if (!given(v)) return undefined;
  if (typeof v !== 'boolean') throw bad(`${path} must be true or false.`);
  return v;
}

/** Group ids follow the registration id rules (letters, digits, `- . _ :`, ending alphanumeric or `-`, ≤128). */
export function validateEnrollmentGroupId(id: unknown, what = 'enrollmentGroupId'): asserts id is string {
  if (!isValidRegistrationId(id)) {
    throw bad(`${what} must be 1 to 128 characters of letters, digits and - . _ : ending with a letter, a digit or -.`);
  }
}

export { validateRegistrationId };

// ---- attestation ---------------------------------------------------------------------------------------------

function parseSymmetricKey(a: JsonObject, ctx: ParseContext): { primaryKey: string; secondaryKey: string } {
  const sk = optObject(a, 'symmetricKey', 'attestation.symmetricKey') ?? {};
  const key = (field: 'primaryKey' | 'secondaryKey'): string => {
    const v = sk[field];
    if (!given(v) || v === '') return ctx.currentKeys?.[field] ?? ctx.newKey();
    if (typeof v !== 'string' || !isBase64(v, SYMMETRIC_KEY_MIN_BYTES, SYMMETRIC_KEY_MAX_BYTES)) {
      throw bad(`attestation.symmetricKey.${field} must be base64 of ${SYMMETRIC_KEY_MIN_BYTES} to ${SYMMETRIC_KEY_MAX_BYTES} bytes.`);
    }
    return v;
  };
  return { primaryKey: key('primaryKey'), secondaryKey: key('secondaryKey') };
}

function parseCertWithInfo(v: JsonValue | undefined, path: string, required: boolean): X509CertificateWithInfo | undefined {
  if (!given(v)) {
    if (required) throw bad(`${path} is required.`);
    return undefined;
  }
  if (!isPlainObject(v)) throw bad(`${path} must be a JSON object.`);
  const certificate = v.certificate;
  if (typeof certificate !== 'string' || certificate.length === 0) throw bad(`${path}.certificate must be a certificate (PEM).`);
  return { certificate, info: certificateInfo(parseCertificate(certificate, `${path}.certificate`)) };
}

function parseCertPair(o: JsonObject, field: 'clientCertificates' | 'signingCertificates'): X509Attestation['clientCertificates'] {
  const pair = optObject(o, field, `attestation.x509.${field}`);
  if (pair === undefined) return undefined;
  const primary = parseCertWithInfo(pair.primary, `attestation.x509.${field}.primary`, true);
  const secondary = parseCertWithInfo(pair.secondary, `attestation.x509.${field}.secondary`, false);
  return { ...(primary ? { primary } : {}), ...(secondary ? { secondary } : {}) };
}

function parseCaReferences(o: JsonObject): X509Attestation['caReferences'] {
  const refs = optObject(o, 'caReferences', 'attestation.x509.caReferences');
  if (refs === undefined) return undefined;
  const ref = (field: 'primary' | 'secondary', required: boolean): string | undefined => {
    const v = optString(refs, field, `attestation.x509.caReferences.${field}`);
    if (v === undefined || v.length === 0) {
      if (required) throw bad(`attestation.x509.caReferences.${field} is required.`);
      return undefined;
    }
    if (v.length > 256) throw bad(`attestation.x509.caReferences.${field} is longer than 256 characters.`);
    return v;
  };
  const primary = ref('primary', true);
  const secondary = ref('secondary', false);
  return { ...(primary ? { primary } : {}), ...(secondary ? { secondary } : {}) };
}

function parseX509(a: JsonObject, kind: EnrollmentKind): X509Attestation {
  const x = optObject(a, 'x509', 'attestation.x509');
  if (x === undefined) throw bad('attestation.x509 is required for x509 attestation.');
  if (kind === 'individual') {
    if (given(x.signingCertificates) || given(x.caReferences)) {
      throw bad('Individual X.509 enrollments name the device certificate in attestation.x509.clientCertificates.');
    }
    const clientCertificates = parseCertPair(x, 'clientCertificates');
    if (clientCertificates === undefined) throw bad('attestation.x509.clientCertificates is required for an individual X.509 enrollment.');
    return { clientCertificates };
  }
  if (given(x.clientCertificates)) throw bad('Enrollment groups name signing certificates or CA references, not client certificates.');
  const signingCertificates = parseCertPair(x, 'signingCertificates');
  const caReferences = parseCaReferences(x);
  if ((signingCertificates === undefined) === (caReferences === undefined)) {
    throw bad('An X.509 enrollment group needs exactly one of attestation.x509.signingCertificates and attestation.x509.caReferences.');
  }
  return signingCertificates ? { signingCertificates } : { caReferences: caReferences ?? {} };
}

function parseTpm(a: JsonObject): { endorsementKey: string; storageRootKey?: string } {
  const t = optObject(a, 'tpm', 'attestation.tpm');
  if (t === undefined) throw bad('attestation.tpm is required for tpm attestation.');
  const ek = t.endorsementKey;
  if (typeof ek !== 'string' || !isBase64(ek, 1, 2048)) throw bad('attestation.tpm.endorsementKey must be base64.');
  const srk = t.storageRootKey;
  if (given(srk) && srk !== '') {
    if (typeof srk !== 'string' || !isBase64(srk, 1, 2048)) throw bad('attestation.tpm.storageRootKey must be base64.');
    return { endorsementKey: ek, storageRootKey: srk };
  }
  return { endorsementKey: ek };
}

/** Parses `attestation`. Individual enrollments: symmetricKey, x509 or tpm; groups: symmetricKey or x509. */
export function parseAttestation(v: JsonValue | undefined, kind: EnrollmentKind, ctx: ParseContext): AttestationMechanism {
  if (!given(v)) throw bad('attestation is required.');
  if (!isPlainObject(v)) throw bad('attestation must be a JSON object.');
  const allowed = kind === 'individual' ? ['symmetricKey', 'x509', 'tpm'] : ['symmetricKey', 'x509'];
  const type = v.type;
  if (typeof type !== 'string' || !allowed.includes(type)) {
    throw bad(`attestation.type must be one of ${allowed.join(', ')}${kind === 'group' ? ' (enrollment groups do not support TPM)' : ''}.`);
  }
  switch (type) {
    case 'symmetricKey':
      return { type, symmetricKey: parseSymmetricKey(v, ctx) };
    case 'x509':
      return { type, x509: parseX509(v, kind) };
    default:
      return { type: 'tpm', tpm: parseTpm(v) };
  }
}

// ---- the other fields ----------------------------------------------------------------------------------------

function parseCapabilities(o: JsonObject): { iotEdge: boolean } {
  const c = optObject(o, 'capabilities', 'capabilities');
  if (c === undefined) return { iotEdge: false };
  const iotEdge = optBoolean(c, 'iotEdge', 'capabilities.iotEdge');
  if (iotEdge === undefined) throw bad('capabilities.iotEdge is required when capabilities is present.');
  return { iotEdge };
}

function checkTwinSection(section: JsonObject, what: string): void {
  validateTwinPatch(section, what);
  if (jsonByteLength(section) > TWIN_SECTION_MAX_BYTES) throw new HomingError('TwinTooLarge', `${what} exceeds ${TWIN_SECTION_MAX_BYTES} bytes.`);
}

function parseInitialTwin(o: JsonObject): InitialTwin | undefined {
  const t = optObject(o, 'initialTwin', 'initialTwin');
  if (t === undefined) return undefined;
  const out: InitialTwin = {};
  const tags = optObject(t, 'tags', 'initialTwin.tags');
  if (tags !== undefined) {
    checkTwinSection(tags, 'initialTwin.tags');
    out.tags = tags;
  }
  const props = optObject(t, 'properties', 'initialTwin.properties');
  if (props !== undefined) {
    if (given(props.reported)) throw bad('initialTwin.properties.reported cannot be set: only tags and desired properties are seeded.');
    const desired = optObject(props, 'desired', 'initialTwin.properties.desired');
    out.properties = {};
    if (desired !== undefined) {
      checkTwinSection(desired, 'initialTwin.properties.desired');
      out.properties.desired = desired;
    }
  }
  return out;
}

function parseProvisioningStatus(o: JsonObject): ProvisioningStatus {
  const v = o.provisioningStatus;
  if (!given(v)) return 'enabled';
  if (v !== 'enabled' && v !== 'disabled') throw bad("provisioningStatus must be 'enabled' or 'disabled'.");
  return v;
}

function parseReprovisionPolicy(o: JsonObject): ReprovisionPolicy {
  const r = optObject(o, 'reprovisionPolicy', 'reprovisionPolicy');
  if (r === undefined) return { updateHubAssignment: true, migrateDeviceData: true };
  const updateHubAssignment = optBoolean(r, 'updateHubAssignment', 'reprovisionPolicy.updateHubAssignment');
  const migrateDeviceData = optBoolean(r, 'migrateDeviceData', 'reprovisionPolicy.migrateDeviceData');
  if (updateHubAssignment === undefined || migrateDeviceData === undefined) {
    throw bad('reprovisionPolicy needs both updateHubAssignment and migrateDeviceData.');
  }
  return { updateHubAssignment, migrateDeviceData };
}

function linkedHubName(name: string, hubs: readonly LinkedHub[], path: string): string {
  const hub = hubs.find((h) => h.name.toLowerCase() === name.toLowerCase());
  if (hub === undefined) throw bad(`${path} names a hub that is not linked to this provisioning service.`);
  return hub.name;
}

function parseWebhookUrl(s: string): void {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw bad('customAllocationDefinition.webhookUrl must be an http or https URL.');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw bad('customAllocationDefinition.webhookUrl must be an http or https URL.');
}

function parseCustomAllocation(o: JsonObject): CustomAllocationDefinition | undefined {
  const c = optObject(o, 'customAllocationDefinition', 'customAllocationDefinition');
  if (c === undefined) return undefined;
  const webhookUrl = optString(c, 'webhookUrl', 'customAllocationDefinition.webhookUrl');
  const apiVersion = optString(c, 'apiVersion', 'customAllocationDefinition.apiVersion');
  if (!webhookUrl || !apiVersion) throw bad('customAllocationDefinition needs both webhookUrl and apiVersion.');
  if (webhookUrl.length > 2048) throw bad('customAllocationDefinition.webhookUrl is longer than 2048 characters.');
  parseWebhookUrl(webhookUrl);
  if (!/^\d{4}-\d{2}-\d{2}(-preview)?$/.test(apiVersion) || apiVersion < MIN_CUSTOM_ALLOCATION_API_VERSION) {
    throw bad(`customAllocationDefinition.apiVersion must be an API version from ${MIN_CUSTOM_ALLOCATION_API_VERSION} on.`);
  }
  return { webhookUrl, apiVersion };
}

interface Allocation {
  allocationPolicy?: AllocationPolicy;
  iotHubs?: string[];
  iotHubHostName?: string;
  customAllocationDefinition?: CustomAllocationDefinition;
}

function parseAllocation(o: JsonObject, ctx: ParseContext): Allocation {
  const out: Allocation = {};
  const policy = o.allocationPolicy;
  if (given(policy)) {
    if (typeof policy !== 'string' || !(ALLOCATION_POLICIES as readonly string[]).includes(policy)) {
      throw bad(`allocationPolicy must be one of ${ALLOCATION_POLICIES.join(', ')}.`);
    }
    out.allocationPolicy = policy as AllocationPolicy;
  }
  const hubs = o.iotHubs;
  if (given(hubs)) {
    if (!Array.isArray(hubs) || hubs.some((h) => typeof h !== 'string' || h.length === 0)) throw bad('iotHubs must be an array of hub host names.');
    const names: string[] = [];
    for (const [i, h] of (hubs as string[]).entries()) {
      const name = linkedHubName(h, ctx.linkedHubs, `iotHubs[${i}]`);
      if (!names.includes(name)) names.push(name);
    }
    out.iotHubs = names;
  }
  const hostName = optString(o, 'iotHubHostName', 'iotHubHostName');
  if (hostName !== undefined && hostName.length > 0) out.iotHubHostName = linkedHubName(hostName, ctx.linkedHubs, 'iotHubHostName');
  const custom = parseCustomAllocation(o);
  if (custom !== undefined) out.customAllocationDefinition = custom;

  if (out.allocationPolicy === 'static') {
    const targets = new Set([...(out.iotHubs ?? []), ...(out.iotHubHostName ? [out.iotHubHostName] : [])]);
    if (targets.size !== 1) throw bad('The static allocation policy needs exactly one hub (iotHubs with one entry, or iotHubHostName).');
  }
  if (out.allocationPolicy === 'custom' && out.customAllocationDefinition === undefined) {
    throw bad('The custom allocation policy needs customAllocationDefinition {webhookUrl, apiVersion}.');
  }
  return out;
}

function extraFields(o: JsonObject, known: ReadonlySet<string>): JsonObject | undefined {
  const extra: JsonObject = {};
  for (const [k, v] of Object.entries(o)) if (!known.has(k)) extra[k] = v;
  return Object.keys(extra).length > 0 ? extra : undefined;
}

function parseFields(o: JsonObject, kind: EnrollmentKind, ctx: ParseContext): EnrollmentFields {
  const fields: EnrollmentFields = {
    attestation: parseAttestation(o.attestation, kind, ctx),
    capabilities: parseCapabilities(o),
    provisioningStatus: parseProvisioningStatus(o),
    reprovisionPolicy: parseReprovisionPolicy(o),
    ...parseAllocation(o, ctx),
  };
  const initialTwin = parseInitialTwin(o);
  if (initialTwin !== undefined) fields.initialTwin = initialTwin;
  const extra = extraFields(o, kind === 'individual' ? INDIVIDUAL_FIELDS : GROUP_FIELDS);
  if (extra !== undefined) fields.extra = extra;
  return fields;
}

/** Validates an IndividualEnrollment body for `PUT /enrollments/{pathId}` (or a bulk item, pathId = its own id). */
export function parseIndividualEnrollment(body: JsonValue | undefined, pathId: string, ctx: ParseContext): ParsedIndividual {
  validateRegistrationId(pathId);
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The enrollment must be a JSON object.');
  const bodyId = optString(body, 'registrationId', 'registrationId');
  if (bodyId !== undefined && !sameRegistrationId(bodyId, pathId)) {
    throw new HomingError('RegistrationIdMismatch', 'The registrationId in the body differs from the one in the path.');
  }
  const out: ParsedIndividual = { registrationId: bodyId ?? pathId, ...parseFields(body, 'individual', ctx) };
  const deviceId = optString(body, 'deviceId', 'deviceId');
  if (deviceId !== undefined && deviceId.length > 0) {
    validateDeviceId(deviceId);
    out.deviceId = deviceId;
  }
  const info = optObject(body, 'optionalDeviceInformation', 'optionalDeviceInformation');
  if (info !== undefined) out.optionalDeviceInformation = info;
  return out;
}

/** Validates an EnrollmentGroup body for `PUT /enrollmentGroups/{pathId}`. */
export function parseEnrollmentGroup(body: JsonValue | undefined, pathId: string, ctx: ParseContext): ParsedGroup {
  validateEnrollmentGroupId(pathId);
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The enrollment group must be a JSON object.');
  const bodyId = optString(body, 'enrollmentGroupId', 'enrollmentGroupId');
  if (bodyId !== undefined && bodyId.toLowerCase() !== pathId.toLowerCase()) {
    throw bad('The enrollmentGroupId in the body differs from the one in the path.');
  }
  if (given(body.deviceId)) throw bad('deviceId can only be set on individual enrollments: group devices get their registration id.');
  return { enrollmentGroupId: bodyId ?? pathId, ...parseFields(body, 'group', ctx) };
}

/**
 * Normalizes an If-Match header: surrounding whitespace, a weak `W/` prefix and surrounding double quotes are
 * dropped (the Node SDK sends the etag unquoted, others quote it). Empty means absent.
 */
export function normalizeIfMatch(raw: string | readonly string[] | undefined): string | undefined {
  const first = Array.isArray(raw) ? raw[0] : raw;
  if (typeof first !== 'string') return undefined;
  let s = first.trim();
  if (s.startsWith('W/')) s = s.slice(2);
  if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) s = s.slice(1, -1);
  return s.length > 0 ? s : undefined;
}

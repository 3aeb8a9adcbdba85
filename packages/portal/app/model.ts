/** Wire shapes of the DPS service API (only the fields the portal reads; the rest is kept as is on save). */
export interface SymmetricKeyAttestation {
  primaryKey?: string;
  secondaryKey?: string;
}

export interface X509CertificateWithInfo {
  certificate?: string;
  info?: { subjectName?: string; sha1Thumbprint?: string; sha256Thumbprint?: string; notAfterUtc?: string };
}

export interface Attestation {
  type: 'symmetricKey' | 'x509' | 'tpm';
  symmetricKey?: SymmetricKeyAttestation;
  x509?: {
    clientCertificates?: { primary?: X509CertificateWithInfo; secondary?: X509CertificateWithInfo };
    signingCertificates?: { primary?: X509CertificateWithInfo; secondary?: X509CertificateWithInfo };
    caReferences?: { primary?: string; secondary?: string };
  };
  tpm?: { endorsementKey?: string };
}

export interface ReprovisionPolicy {
  updateHubAssignment: boolean;
  migrateDeviceData: boolean;
}

export interface Enrollment {
  registrationId?: string;
  enrollmentGroupId?: string;
  deviceId?: string;
  attestation?: Attestation;
  provisioningStatus?: 'enabled' | 'disabled';
  allocationPolicy?: 'hashed' | 'geoLatency' | 'static' | 'custom';
  iotHubs?: string[];
  iotHubHostName?: string;
  customAllocationDefinition?: { webhookUrl?: string; apiVersion?: string };
  reprovisionPolicy?: ReprovisionPolicy;
  initialTwin?: { tags?: Record<string, unknown>; properties?: { desired?: Record<string, unknown> } };
  capabilities?: { iotEdge?: boolean };
  registrationState?: RegistrationRecord;
  etag?: string;
  createdDateTimeUtc?: string;
  lastUpdatedDateTimeUtc?: string;
  [k: string]: unknown;
}

export interface RegistrationRecord {
  registrationId: string;
  deviceId?: string;
  assignedHub?: string;
  status?: string;
  substatus?: string;
  errorCode?: number;
  errorMessage?: string;
  createdDateTimeUtc?: string;
  lastUpdatedDateTimeUtc?: string;
  etag?: string;
  enrollmentGroupId?: string;
}

export interface LinkedHub {
  name: string;
  connectionString: string;
  location: string;
  allocationWeight: number;
  applyAllocationPolicy: boolean;
}

export type ReprovisionChoice = 'never' | 'reset' | 'migrate';

export function reprovisionOf(p: ReprovisionPolicy | undefined): ReprovisionChoice {
  if (p === undefined) return 'migrate';
  if (!p.updateHubAssignment) return 'never';
  return p.migrateDeviceData ? 'migrate' : 'reset';
}

export function reprovisionPolicy(c: ReprovisionChoice): ReprovisionPolicy {
  if (c === 'never') return { updateHubAssignment: false, migrateDeviceData: false };
  if (c === 'reset') return { updateHubAssignment: true, migrateDeviceData: false };
  return { updateHubAssignment: true, migrateDeviceData: true };
}

/** Allocation share of each hub: weight / sum of the weights of the hubs that take part (applyAllocationPolicy). */
export function allocationShares(hubs: readonly { name: string; allocationWeight: number; applyAllocationPolicy: boolean }[]): Map<string, number> {
  const eligible = hubs.filter((h) => h.applyAllocationPolicy && h.allocationWeight > 0);
  const sum = eligible.reduce((s, h) => s + h.allocationWeight, 0);
  return new Map(hubs.map((h) => [h.name, sum > 0 && h.applyAllocationPolicy && h.allocationWeight > 0 ? h.allocationWeight / sum : 0]));
}

/** Checks an initialTwin document as the server will; returns an error text or undefined. */
export function initialTwinError(text: string): string | undefined {
  if (text.trim().length === 0) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return `Not valid JSON: ${e instanceof Error ? e.message : String(e)}`;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'The initial twin must be a JSON object.';
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'tags' && k !== 'properties') return `Unexpected field "${k}": only "tags" and "properties" are allowed.`;
  const isObj = (x: unknown): boolean => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (o.tags !== undefined && o.tags !== null && !isObj(o.tags)) return '"tags" must be an object.';
  if (o.properties !== undefined && o.properties !== null) {
    if (!isObj(o.properties)) return '"properties" must be an object.';
    const p = o.properties as Record<string, unknown>;
    for (const k of Object.keys(p)) if (k !== 'desired') return `"properties.${k}" is not allowed: only "properties.desired".`;
    if (p.desired !== undefined && p.desired !== null && !isObj(p.desired)) return '"properties.desired" must be an object.';
  }
  const badName = (x: unknown, path: string, depth: number): string | undefined => {
    if (!isObj(x)) return undefined;
    if (depth > 10) return `${path} is nested deeper than 10 levels.`;
    for (const [k, val] of Object.entries(x as Record<string, unknown>)) {
      if (/[.$ ]/.test(k)) return `Property name "${k}" at ${path} must not contain ".", "$" or spaces.`;
      const inner = badName(val, `${path}.${k}`, depth + 1);
      if (inner) return inner;
    }
    return undefined;
  };
  return badName(o.tags, 'tags', 1) ?? badName((o.properties as Record<string, unknown> | undefined)?.desired, 'properties.desired', 1);
}

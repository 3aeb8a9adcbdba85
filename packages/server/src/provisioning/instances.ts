import { HomingError } from '../core/errors.ts';
import type { Clock, IdSource } from '../core/clock.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../core/json.ts';
import type { DpsRight, SharedAccessPolicy } from '../core/policies.ts';
import { isBase64, parseConnectionString } from '../core/sas.ts';
import type { ProvisioningStore } from '../store/provisioning-ports.ts';
import type { AllocationPolicy, InstanceQuotaSettings, LinkedHub, ProvisioningInstance } from './model.ts';
import { normalizeIfMatch } from './enrollments/validation.ts';
import { mergeQuotaSettings, parseQuotaSettings, quotaSettingsToJson, sameQuotaSettings } from './quotas/settings.ts';

/**
 * The provisioning service instance (one id scope) and its linked hubs. There is no Azure data-plane API for this
 * (it is ARM management there), so Homing offers its own admin API (transport/http/dps-service-api.ts, /homing/...).
 */
export const DPS_RIGHTS: readonly DpsRight[] = ['ServiceConfig', 'EnrollmentRead', 'EnrollmentWrite', 'RegistrationStatusRead', 'RegistrationStatusWrite', 'DeviceConnect'];

/** Linked hubs per instance (dps-behavior.md §1.2). */
export const MAX_LINKED_HUBS = 50;
export const MIN_ALLOCATION_WEIGHT = 1;
export const MAX_ALLOCATION_WEIGHT = 1000;
/** Instance default allocation policies: everything but custom (dps-behavior.md §1.1). */
export const INSTANCE_ALLOCATION_POLICIES: readonly Exclude<AllocationPolicy, 'custom'>[] = ['hashed', 'geoLatency', 'static'];

/** The default policies of a new instance: the owner with every right, plus one policy per task. */
export const DEFAULT_POLICY_RIGHTS: ReadonlyArray<readonly [string, readonly DpsRight[]]> = [
  ['provisioningserviceowner', DPS_RIGHTS],
  ['enrollmentread', ['EnrollmentRead']],
  ['enrollmentwrite', ['EnrollmentRead', 'EnrollmentWrite']],
  ['registrationstatusread', ['RegistrationStatusRead']],
  ['registrationstatuswrite', ['RegistrationStatusRead', 'RegistrationStatusWrite']],
  ['serviceconfig', ['ServiceConfig']],
  ['deviceconnect', ['DeviceConnect']],
];

const INSTANCE_NAME_RE = /^(?!-)(?![0-9]+$)[A-Za-z0-9-]{3,50}(?<!-)$/;
const HOST_RE = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
const MAX_CAS_RETRIES = 8;

export interface LinkedHubInput {
  name: string;
  connectionString: string;
  location?: string;
  allocationWeight?: number | null;
  applyAllocationPolicy?: boolean | null;
}

export interface InstanceSpec {
  /** Instance name: 3–50 letters, digits and hyphens, not all digits, no hyphen at either end. */
  name: string;
  /** Host names (or addresses) the service API answers to. */
  serviceHostNames: readonly string[];
  /** Default allocation policy of a new instance (default hashed). */
  allocationPolicy?: Exclude<AllocationPolicy, 'custom'>;
  /** Policies of a new instance (default: DEFAULT_POLICY_RIGHTS with fresh keys). */
  policies?: readonly SharedAccessPolicy<DpsRight>[];
  /** Hubs linked when the instance is created. */
  linkedHubs?: readonly LinkedHubInput[];
  /** Id scope of a new instance (default: generated). */
  idScope?: string;
  /**
   * Quota settings from the configuration: written over the instance's stored ones at every start (fields not given
   * keep their stored value; docs/api/quotas.md).
   */
  quotas?: InstanceQuotaSettings;
}

export interface InstanceServiceDeps {
  store: ProvisioningStore;
  ids: IdSource;
  /** Called after every change (e.g. to drop a resolver cache). */
  onChange?: (instance: ProvisioningInstance) => void;
}

function bad(message: string): HomingError {
  return new HomingError('ArgumentInvalid', message);
}

export function validateInstanceName(name: string): void {
  if (typeof name !== 'string' || !INSTANCE_NAME_RE.test(name)) {
    throw bad('The instance name must be 3 to 50 letters, digits and hyphens, not all digits, without a hyphen at either end.');
  }
}

export function validateHubName(name: unknown, what = 'name'): asserts name is string {
  if (typeof name !== 'string' || !HOST_RE.test(name)) throw bad(`${what} must be a hub host name (letters, digits, '.' and '-').`);
}

function validateConnectionString(cs: unknown): asserts cs is string {
  if (typeof cs !== 'string' || cs.length > 1024) throw bad('connectionString must be a hub connection string.');
  const parts = parseConnectionString(cs);
  const key = parts.SharedAccessKey;
  if (!parts.HostName || !parts.SharedAccessKeyName || key === undefined || !isBase64(key, 1, 512)) {
    throw bad('connectionString must be HostName=...;SharedAccessKeyName=...;SharedAccessKey=<base64> (a policy with RegistryWrite and ServiceConnect).');
  }
}

function parseWeight(v: JsonValue | undefined): number {
  if (v === undefined || v === null) return 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < MIN_ALLOCATION_WEIGHT || v > MAX_ALLOCATION_WEIGHT) {
    throw bad(`allocationWeight must be an integer from ${MIN_ALLOCATION_WEIGHT} to ${MAX_ALLOCATION_WEIGHT}.`);
  }
  return v;
}

function parseApply(v: JsonValue | undefined): boolean {
  if (v === undefined || v === null) return true;
  if (typeof v !== 'boolean') throw bad('applyAllocationPolicy must be true or false.');
  return v;
}

function parseLocation(v: JsonValue | undefined, fallback: string): string {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'string' || v.length === 0 || v.length > 64) throw bad('location must be a string of 1 to 64 characters.');
  return v;
}

/** Validates a full linked-hub definition (link / PUT). */
export function parseLinkedHub(body: JsonValue | undefined, pathName: string): LinkedHub {
  validateHubName(pathName);
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'A linked hub is a JSON object {connectionString, location, allocationWeight, applyAllocationPolicy}.');
  if (body.name !== undefined && body.name !== null && (typeof body.name !== 'string' || body.name.toLowerCase() !== pathName.toLowerCase())) {
    throw bad('The name in the body differs from the one in the path.');
  }
  validateConnectionString(body.connectionString);
  return {
    name: pathName,
    connectionString: body.connectionString,
    location: parseLocation(body.location, 'local'),
    allocationWeight: parseWeight(body.allocationWeight),
    applyAllocationPolicy: parseApply(body.applyAllocationPolicy),
  };
}

/** Applies a partial update (PATCH) to a linked hub. */
export function patchLinkedHub(hub: LinkedHub, body: JsonValue | undefined): LinkedHub {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'A linked hub update is a JSON object.');
  const out: LinkedHub = { ...hub };
  if (body.name !== undefined && body.name !== null && (typeof body.name !== 'string' || body.name.toLowerCase() !== hub.name.toLowerCase())) {
    throw bad('A linked hub cannot be renamed: unlink it and link the new name.');
  }
  if (body.connectionString !== undefined) {
    validateConnectionString(body.connectionString);
    out.connectionString = body.connectionString;
  }
  if (body.location !== undefined) out.location = parseLocation(body.location, hub.location);
  if (body.allocationWeight !== undefined) out.allocationWeight = parseWeight(body.allocationWeight);
  if (body.applyAllocationPolicy !== undefined) out.applyAllocationPolicy = parseApply(body.applyAllocationPolicy);
  return out;
}

export function parseInstanceAllocationPolicy(v: JsonValue | undefined): Exclude<AllocationPolicy, 'custom'> {
  if (v === 'custom') throw bad('custom cannot be the default allocation policy of the instance: set it per enrollment.');
  if (typeof v !== 'string' || !(INSTANCE_ALLOCATION_POLICIES as readonly string[]).includes(v)) {
    throw bad(`allocationPolicy must be one of ${INSTANCE_ALLOCATION_POLICIES.join(', ')}.`);
  }
  return v as Exclude<AllocationPolicy, 'custom'>;
}

/** A connection string with its key replaced, for answers and logs. */
export function maskConnectionString(cs: string): string {
  return cs
    .split(';')
    .map((part) => (/^\s*SharedAccessKey\s*=/i.test(part) ? 'SharedAccessKey=****' : part))
    .join(';');
}

/** Admin JSON of a linked hub (the key of the connection string masked). */
export function linkedHubToJson(h: LinkedHub): JsonObject {
  return {
    name: h.name,
    connectionString: maskConnectionString(h.connectionString),
    location: h.location,
    allocationWeight: h.allocationWeight,
    applyAllocationPolicy: h.applyAllocationPolicy,
  };
}

/** Admin JSON of an instance: policies without keys (`listKeys` returns them). */
export function instanceToJson(i: ProvisioningInstance): JsonObject {
  return {
    name: i.name,
    idScope: i.idScope,
    serviceHostNames: [...i.serviceHostNames],
    allocationPolicy: i.allocationPolicy,
    authorizationPolicies: i.policies.map((p) => ({ keyName: p.keyName, rights: [...p.rights] })),
    linkedHubs: i.linkedHubs.map(linkedHubToJson),
    etag: i.etag,
    ...(i.quotas === undefined ? {} : { quotas: quotaSettingsToJson(i.quotas) }),
  };
}

export function policiesWithKeysToJson(i: ProvisioningInstance): JsonObject {
  return {
    authorizationPolicies: i.policies.map((p) => ({ keyName: p.keyName, primaryKey: p.primaryKey, secondaryKey: p.secondaryKey, rights: [...p.rights] })),
  };
}

export class InstanceService {
  private readonly store: ProvisioningStore;
  private readonly ids: IdSource;
  private readonly onChange: ((instance: ProvisioningInstance) => void) | undefined;

  constructor(deps: InstanceServiceDeps) {
    this.store = deps.store;
    this.ids = deps.ids;
    this.onChange = deps.onChange;
  }

  private newEtag(): string {
    return Buffer.from(`"${this.ids.uuid()}"`, 'utf8').toString('base64');
  }

  private newKey(): string {
    return this.ids.bytes(32).toString('base64');
  }

  /** `0ne` + 8 upper-case hex digits, as DPS id scopes look. */
  newIdScope(): string {
    return `0ne${this.ids.bytes(4).toString('hex').toUpperCase()}`;
  }

  defaultPolicies(): SharedAccessPolicy<DpsRight>[] {
    return DEFAULT_POLICY_RIGHTS.map(([keyName, rights]) => ({ keyName, primaryKey: this.newKey(), secondaryKey: this.newKey(), rights: [...rights] }));
  }

  /**
   * Creates the instance when it does not exist yet (the composition root calls this at start-up). An existing
   * instance keeps its id scope, keys and hubs; only its service host names follow the configuration.
   */
  async ensureInstance(spec: InstanceSpec): Promise<{ instance: ProvisioningInstance; created: boolean }> {
    validateInstanceName(spec.name);
    if (spec.serviceHostNames.length === 0) throw bad('An instance needs at least one service host name.');
    for (const h of spec.serviceHostNames) validateHubName(h, 'serviceHostNames');
    const hostNames = [...spec.serviceHostNames];
    const configuredQuotas = spec.quotas === undefined ? undefined : parseQuotaSettings(quotaSettingsToJson(spec.quotas));
    for (let attempt = 0; attempt < MAX_CAS_RETRIES; attempt++) {
      const existing = await this.store.getInstance(spec.name);
      if (existing !== undefined) {
        const same = existing.serviceHostNames.length === hostNames.length && existing.serviceHostNames.every((h, i) => h === hostNames[i]);
        const quotas = configuredQuotas === undefined ? existing.quotas : mergeQuotaSettings(existing.quotas, configuredQuotas);
        const sameQuotas = sameQuotaSettings(existing.quotas, quotas);
        if (same && sameQuotas) return { instance: existing, created: false };
        const next = { ...existing, serviceHostNames: hostNames, ...(sameQuotas ? {} : { quotas }), etag: this.newEtag() };
        if ((await this.store.replaceInstance(next, existing.etag)) === 'ok') {
          this.onChange?.(next);
          return { instance: next, created: false };
        }
        continue;
      }
      const linkedHubs: LinkedHub[] = [];
      for (const h of spec.linkedHubs ?? []) {
        const body: JsonObject = { connectionString: h.connectionString };
        if (h.location !== undefined) body.location = h.location;
        if (h.allocationWeight !== undefined) body.allocationWeight = h.allocationWeight;
        if (h.applyAllocationPolicy !== undefined) body.applyAllocationPolicy = h.applyAllocationPolicy;
        const hub = parseLinkedHub(body, h.name);
        if (linkedHubs.some((x) => x.name.toLowerCase() === hub.name.toLowerCase())) throw new HomingError('DeviceAlreadyExists', `The hub ${hub.name} is linked twice.`);
        linkedHubs.push(hub);
      }
      if (linkedHubs.length > MAX_LINKED_HUBS) throw bad(`An instance links at most ${MAX_LINKED_HUBS} hubs.`);
      const instance: ProvisioningInstance = {
        name: spec.name,
        idScope: spec.idScope ?? this.newIdScope(),
        serviceHostNames: hostNames,
        allocationPolicy: spec.allocationPolicy ?? 'hashed',
        policies: spec.policies ? spec.policies.map((p) => ({ ...p, rights: [...p.rights] })) : this.defaultPolicies(),
        linkedHubs,
        etag: this.newEtag(),
        ...(configuredQuotas !== undefined && Object.keys(configuredQuotas).length > 0 ? { quotas: configuredQuotas } : {}),
      };
      if ((await this.store.createInstance(instance)) === 'ok') {
        this.onChange?.(instance);
        return { instance, created: true };
      }
      // Lost a race with another node (same name), or the generated id scope was taken: look again.
    }
    throw new HomingError('ServiceUnavailable', 'The instance kept changing while it was being created; try again.');
  }

  async getInstance(name: string): Promise<ProvisioningInstance> {
    const i = await this.store.getInstance(name);
    if (i === undefined) throw new HomingError('NotFound', `No provisioning instance '${name}'.`);
    return i;
  }

  /** `PUT /homing/instance`: the default allocation policy (the only setting the admin API changes). */
  async updateInstance(name: string, body: JsonValue | undefined, ifMatch?: string | readonly string[]): Promise<ProvisioningInstance> {
    if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The instance update is a JSON object {allocationPolicy}.');
    const policy = body.allocationPolicy === undefined ? undefined : parseInstanceAllocationPolicy(body.allocationPolicy);
    return this.change(name, normalizeIfMatch(ifMatch), (i) => (policy === undefined ? i : { ...i, allocationPolicy: policy }));
  }

  /**
   * `PUT /homing/instance/quotas`: replaces the instance's quota settings (an empty object: back to the service
   * defaults). Effective within the registration service's read cache (1 s) on every node.
   */
  async setQuotas(name: string, body: JsonValue | undefined, ifMatch?: string | readonly string[]): Promise<ProvisioningInstance> {
    const quotas = parseQuotaSettings(body);
    return this.change(name, normalizeIfMatch(ifMatch), (i) => {
      if (sameQuotaSettings(i.quotas, quotas)) return i;
      const { quotas: _old, ...rest } = i;
      return Object.keys(quotas).length === 0 ? rest : { ...rest, quotas };
    });
  }

  async setAllocationPolicy(name: string, policy: string): Promise<ProvisioningInstance> {
    const p = parseInstanceAllocationPolicy(policy);
    return this.change(name, undefined, (i) => ({ ...i, allocationPolicy: p }));
  }

  async listLinkedHubs(name: string): Promise<LinkedHub[]> {
    return (await this.getInstance(name)).linkedHubs;
  }

  async getLinkedHub(name: string, hubName: string): Promise<LinkedHub> {
    const hub = (await this.getInstance(name)).linkedHubs.find((h) => h.name.toLowerCase() === hubName.toLowerCase());
    if (hub === undefined) throw new HomingError('NotFound', `The hub '${hubName}' is not linked.`);
    return hub;
  }

  /** Links a hub: 409 when a hub of that name is linked, 400 past 50 hubs. */
  async linkHub(name: string, hubName: string, body: JsonValue | undefined): Promise<LinkedHub> {
    const hub = parseLinkedHub(body, hubName);
    await this.change(name, undefined, (i) => {
      if (i.linkedHubs.some((h) => h.name.toLowerCase() === hub.name.toLowerCase())) {
        throw new HomingError('DeviceAlreadyExists', `The hub '${hub.name}' is already linked; PATCH it to change it.`);
      }
      if (i.linkedHubs.length >= MAX_LINKED_HUBS) throw bad(`An instance links at most ${MAX_LINKED_HUBS} hubs.`);
      return { ...i, linkedHubs: [...i.linkedHubs, hub] };
    });
    return hub;
  }

  /** Changes some fields of a linked hub (connection string, location, weight, apply flag); effective at once. */
  async updateLinkedHub(name: string, hubName: string, body: JsonValue | undefined): Promise<LinkedHub> {
    let updated: LinkedHub | undefined;
    await this.change(name, undefined, (i) => {
      const at = i.linkedHubs.findIndex((h) => h.name.toLowerCase() === hubName.toLowerCase());
      const current = i.linkedHubs[at];
      if (current === undefined) throw new HomingError('NotFound', `The hub '${hubName}' is not linked.`);
      updated = patchLinkedHub(current, body);
      const linkedHubs = [...i.linkedHubs];
      linkedHubs[at] = updated;
      return { ...i, linkedHubs };
    });
    if (updated === undefined) throw new Error('unreachable');
    return updated;
  }

  /**
   * Unlinks a hub. Enrollments that name it keep the stale name (devices provisioning through them fail until the
   * enrollment is edited), as DPS does (dps-behavior.md §1.2).
   */
  async unlinkHub(name: string, hubName: string): Promise<void> {
    await this.change(name, undefined, (i) => {
      const linkedHubs = i.linkedHubs.filter((h) => h.name.toLowerCase() !== hubName.toLowerCase());
      if (linkedHubs.length === i.linkedHubs.length) throw new HomingError('NotFound', `The hub '${hubName}' is not linked.`);
      return { ...i, linkedHubs };
    });
  }

  /** Read-modify-write with compare-and-set on the instance etag, retried on concurrent changes. */
  private async change(name: string, ifMatch: string | undefined, fn: (i: ProvisioningInstance) => ProvisioningInstance): Promise<ProvisioningInstance> {
    for (let attempt = 0; attempt < MAX_CAS_RETRIES; attempt++) {
      const current = await this.getInstance(name);
      if (ifMatch !== undefined && ifMatch !== '*' && ifMatch !== current.etag) {
        throw new HomingError('PreconditionFailed', 'The If-Match etag does not match the current instance.');
      }
      const changed = fn(current);
      if (changed === current) return current;
      const next = { ...changed, etag: this.newEtag() };
      const r = await this.store.replaceInstance(next, current.etag);
      if (r === 'ok') {
        this.onChange?.(next);
        return next;
      }
      if (r === 'not-found') throw new HomingError('NotFound', `No provisioning instance '${name}'.`);
      if (ifMatch !== undefined && ifMatch !== '*') throw new HomingError('PreconditionFailed', 'The If-Match etag does not match the current instance.');
    }
    throw new HomingError('ServiceUnavailable', 'The instance kept changing; try again.');
  }
}

/** Finds the instance a service API request is for: by the host name the caller dialled (Host header, SAS sr). */
export interface InstanceResolver {
  byHostName(host: string): Promise<ProvisioningInstance | undefined>;
}

/**
 * An InstanceResolver on the store, keeping the (few) instances in memory for `ttlMs`. InstanceService's
 * `onChange` should call `invalidate()`, so changes made in this process show at once; changes made by other
 * nodes show after at most `ttlMs`.
 */
export class StoreInstanceResolver implements InstanceResolver {
  private cache: { at: number; instances: ProvisioningInstance[] } | undefined;
  private readonly store: Pick<ProvisioningStore, 'listInstances'>;
  private readonly clock: Clock;
  private readonly ttlMs: number;

  constructor(deps: { store: Pick<ProvisioningStore, 'listInstances'>; clock: Clock; ttlMs?: number }) {
    this.store = deps.store;
    this.clock = deps.clock;
    this.ttlMs = deps.ttlMs ?? 1000;
  }

  invalidate(): void {
    this.cache = undefined;
  }

  async byHostName(host: string): Promise<ProvisioningInstance | undefined> {
    const h = host.toLowerCase();
    const now = this.clock.now();
    if (this.cache === undefined || now - this.cache.at >= this.ttlMs) {
      this.cache = { at: now, instances: await this.store.listInstances() };
    }
    return this.cache.instances.find((i) => i.serviceHostNames.some((s) => s.toLowerCase() === h));
  }
}

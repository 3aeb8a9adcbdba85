import { isHomingError, type ErrorName } from '../core/errors.ts';
import type { Clock } from '../core/clock.ts';
import type { JsonObject } from '../core/json.ts';
import { buildSas, parseConnectionString } from '../core/sas.ts';
import type { HubService } from '../hub/hub-service.ts';
import type { DeviceIdentity, TwinState } from '../hub/model.ts';
import type { LinkedHub } from './model.ts';
import {
  hubFail,
  hubOk,
  type HubClient,
  type HubClientFactory,
  type HubDevice,
  type HubDeviceState,
  type HubFailure,
  type HubResult,
  type HubTwinState,
  type ImportDeviceRequest,
  type InitialTwinContent,
  type ProvisionDeviceRequest,
  type ProvisionDeviceResult,
} from './hub-client.ts';

/**
 * HubClient on a HubService in this process. It still authenticates with the linked hub's connection string (a SAS
 * checked by the hub, RegistryWrite for writes, RegistryRead for reads), so a stale linked-hub key fails the same way
 * it does over REST.
 */
export class InProcessHubClient implements HubClient {
  readonly hubName: string;
  private readonly hub: HubService;
  private readonly connectionString: string;
  private readonly clock: Clock;
  /** Per right: until when (epoch seconds) the hub accepted this client's token; see `authorize`. */
  private readonly authorizedUntil = new Map<'RegistryRead' | 'RegistryWrite', number>();

  constructor(hub: HubService, linked: LinkedHub, clock: Clock) {
    this.hub = hub;
    this.hubName = linked.name;
    this.connectionString = linked.connectionString;
    this.clock = clock;
  }

  /**
   * Signs a token with the linked hub's key and has the hub check it, as a REST call would. A hub's policies are
   * fixed for its lifetime, so an accepted token stays accepted until it expires: the check is done again only when
   * the last accepted token is within a minute of its expiry (two HMACs saved per call on the registration hot
   * path). Refusals are never remembered.
   */
  private authorize(right: 'RegistryRead' | 'RegistryWrite'): HubFailure | undefined {
    const nowS = Math.floor(this.clock.now() / 1000);
    if ((this.authorizedUntil.get(right) ?? 0) > nowS + TOKEN_RENEW_SECONDS) return undefined;
    const cs = parseConnectionString(this.connectionString);
    const key = cs.SharedAccessKey;
    const host = cs.HostName ?? this.hubName;
    if (!key || !cs.SharedAccessKeyName) return unauthorized(this.hubName, 'the linked hub connection string has no shared access key');
    try {
      const expirySeconds = nowS + TOKEN_SECONDS;
      const sas = buildSas({ sr: host, keyBase64: key, keyName: cs.SharedAccessKeyName, expirySeconds });
      this.hub.authorizeService(sas, right);
      this.authorizedUntil.set(right, expirySeconds);
      return undefined;
    } catch {
      this.authorizedUntil.delete(right);
      return unauthorized(this.hubName, 'ErrorCode:IotHubUnauthorizedAccess');
    }
  }

  async getDevice(deviceId: string): Promise<HubResult<HubDevice | undefined>> {
    const denied = this.authorize('RegistryRead');
    if (denied) return hubFail(denied);
    try {
      const d = await this.hub.findDevice(deviceId);
      return hubOk(d === undefined ? undefined : toHubDevice(d));
    } catch (e) {
      return hubFail(this.failure(e));
    }
  }

  async provisionDevice(req: ProvisionDeviceRequest): Promise<HubResult<ProvisionDeviceResult>> {
    const denied = this.authorize('RegistryWrite');
    if (denied) return hubFail(denied);
    try {
      for (let attempt = 0; attempt < 4; attempt++) {
        const existing = attempt === 0 && req.likelyNew === true ? undefined : await this.hub.findDevice(req.deviceId);
        if (existing === undefined) {
          try {
            const twin = req.initialTwin === undefined ? undefined : twinInit(req.initialTwin);
            const created = await this.hub.createDevice(deviceBody(req, 'enabled', null), req.deviceId, twin);
            return hubOk({ created: true, device: toHubDevice(created) });
          } catch (e) {
            if (isHomingError(e) && e.errorName === 'DeviceAlreadyExists') continue; // created concurrently: update it
            throw e;
          }
        }
        if (sameIdentity(existing, req)) return hubOk({ created: false, device: toHubDevice(existing) });
        try {
          const updated = await this.hub.updateDevice(deviceBody(req, existing.status, existing.statusReason), req.deviceId, existing.etag);
          return hubOk({ created: false, device: toHubDevice(updated) });
        } catch (e) {
          if (isHomingError(e) && (e.errorName === 'PreconditionFailed' || e.errorName === 'DeviceNotFound')) continue; // changed concurrently
          throw e;
        }
      }
      return hubFail({ kind: 'conflict', message: `IoT hub ${this.hubName}: device ${req.deviceId} kept changing concurrently.` });
    } catch (e) {
      return hubFail(this.failure(e));
    }
  }

  async patchTwin(deviceId: string, twin: InitialTwinContent, etag?: string): Promise<HubResult<HubTwinState>> {
    const denied = this.authorize('RegistryWrite');
    if (denied) return hubFail(denied);
    try {
      const body: JsonObject = {};
      if (twin.tags !== undefined) body.tags = twin.tags;
      if (twin.desired !== undefined) body.properties = { desired: twin.desired };
      const r = await this.hub.updateTwin(deviceId, body, etag ?? '*');
      return hubOk(toHubTwin(r.twin));
    } catch (e) {
      return hubFail(this.failure(e));
    }
  }

  async getDeviceState(deviceId: string): Promise<HubResult<HubDeviceState | undefined>> {
    const denied = this.authorize('RegistryRead');
    if (denied) return hubFail(denied);
    try {
      const r = await this.hub.getTwinState(deviceId);
      return hubOk({ device: toHubDevice(r.device), twin: toHubTwin(r.twin) });
    } catch (e) {
      if (isHomingError(e) && e.errorName === 'DeviceNotFound') return hubOk(undefined);
      return hubFail(this.failure(e));
    }
  }

  async importDeviceState(req: ImportDeviceRequest): Promise<HubResult<ProvisionDeviceResult>> {
    const denied = this.authorize('RegistryWrite');
    if (denied) return hubFail(denied);
    try {
      const r = await this.hub.importDevice(importBody(req), req.deviceId, { likelyNew: req.likelyNew === true });
      return hubOk({ created: r.created, device: toHubDevice(r.device) });
    } catch (e) {
      return hubFail(this.failure(e));
    }
  }

  async setDeviceStatus(deviceId: string, status: 'enabled' | 'disabled'): Promise<HubResult<boolean>> {
    const denied = this.authorize('RegistryWrite');
    if (denied) return hubFail(denied);
    try {
      return hubOk((await this.hub.setDeviceStatus(deviceId, status)) !== undefined);
    } catch (e) {
      return hubFail(this.failure(e));
    }
  }

  async deleteDevice(deviceId: string, etag?: string): Promise<HubResult<boolean>> {
    const denied = this.authorize('RegistryWrite');
    if (denied) return hubFail(denied);
    try {
      await this.hub.deleteDevice(deviceId, etag);
      return hubOk(true);
    } catch (e) {
      if (isHomingError(e) && e.errorName === 'DeviceNotFound') return hubOk(false);
      return hubFail(this.failure(e));
    }
  }

  close(): void {
    // Nothing to release.
  }

  private failure(e: unknown): HubFailure {
    if (isHomingError(e)) {
      return { kind: kindOf(e.errorName), status: e.status, hubErrorCode: e.errorName, message: `IoT hub ${this.hubName}: ErrorCode:${e.errorName};${e.message}` };
    }
    return { kind: 'unavailable', message: `IoT hub ${this.hubName} failed: ${e instanceof Error ? e.message : String(e)}` };
  }
}

function kindOf(name: ErrorName): HubFailure['kind'] {
  switch (name) {
    case 'Unauthorized':
    case 'IotHubUnauthorizedAccess':
      return 'unauthorized';
    case 'PreconditionFailed':
    case 'DeviceAlreadyExists':
      return 'conflict';
    case 'ThrottlingException':
    case 'ServerError':
    case 'ServiceUnavailable':
      return 'unavailable';
    case 'GatewayTimeout':
      return 'timeout';
    default:
      return 'rejected';
  }
}

function unauthorized(hubName: string, detail: string): HubFailure {
  return {
    kind: 'unauthorized',
    status: 401,
    hubErrorCode: 'IotHubUnauthorizedAccess',
    message: `IoT hub ${hubName} refused the linked hub credential (${detail}); update the linked hub's connection string.`,
  };
}

function twinInit(t: InitialTwinContent): { tags?: JsonObject; desired?: JsonObject } {
  const out: { tags?: JsonObject; desired?: JsonObject } = {};
  if (t.tags !== undefined) out.tags = t.tags;
  if (t.desired !== undefined) out.desired = t.desired;
  return out;
}

function deviceBody(req: Pick<ProvisionDeviceRequest, 'deviceId' | 'credentials' | 'capabilities'>, status: 'enabled' | 'disabled', statusReason: string | null): JsonObject {
  const c = req.credentials;
  const authentication: JsonObject =
    c.type === 'sas'
      ? { type: 'sas', symmetricKey: { primaryKey: c.primaryKey, secondaryKey: c.secondaryKey } }
      : { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: c.primaryThumbprint, secondaryThumbprint: c.secondaryThumbprint } };
  return { deviceId: req.deviceId, status, statusReason, authentication, capabilities: { iotEdge: req.capabilities.iotEdge } };
}

/** The body of Homing's device state import (`PUT /homing/devices/{id}/state`) for a request; status enabled. */
export function importBody(req: ImportDeviceRequest): JsonObject {
  const t = req.twin;
  return {
    ...deviceBody(req, 'enabled', null),
    tags: t.tags,
    properties: { desired: { ...t.desired, $version: t.desiredVersion }, reported: { ...t.reported, $version: t.reportedVersion } },
  };
}

function sameIdentity(d: DeviceIdentity, req: ProvisionDeviceRequest): boolean {
  if (d.capabilities.iotEdge !== req.capabilities.iotEdge) return false;
  const c = req.credentials;
  if (c.type === 'sas') {
    return d.authentication.type === 'sas' && d.authentication.symmetricKey.primaryKey === c.primaryKey && d.authentication.symmetricKey.secondaryKey === c.secondaryKey;
  }
  return (
    d.authentication.type === 'selfSigned' &&
    d.authentication.x509Thumbprint.primaryThumbprint === c.primaryThumbprint.toUpperCase() &&
    d.authentication.x509Thumbprint.secondaryThumbprint === c.secondaryThumbprint.toUpperCase()
  );
}

export function toHubDevice(d: DeviceIdentity): HubDevice {
  return { deviceId: d.deviceId, etag: d.etag, status: d.status, authenticationType: d.authentication.type, capabilities: { iotEdge: d.capabilities.iotEdge } };
}

function toHubTwin(t: TwinState): HubTwinState {
  return {
    etag: t.etag,
    tags: t.tags,
    desired: t.desired.props,
    reported: t.reported.props,
    desiredVersion: t.desired.version,
    reportedVersion: t.reported.version,
  };
}

/** Lifetime of the tokens an in-process client signs, and how long before expiry it signs a new one (seconds). */
const TOKEN_SECONDS = 300;
const TOKEN_RENEW_SECONDS = 60;
/** Clients kept by the factory (one per linked hub and connection string in use); beyond this the cache restarts. */
const MAX_CLIENTS = 1000;

/**
 * Clients for the hubs of this process, found by linked hub name (case-insensitive). A client is kept per linked
 * hub name and connection string, so its accepted token is reused across registrations; a changed connection string
 * (a rotated linked-hub key) gets a new client, checked afresh.
 */
export class InProcessHubClientFactory implements HubClientFactory {
  private readonly hubs: Map<string, HubService>;
  private readonly clock: Clock;
  private readonly clients = new Map<string, InProcessHubClient>();

  constructor(hubs: Iterable<HubService>, clock: Clock) {
    this.hubs = new Map([...hubs].map((h) => [h.hubId.toLowerCase(), h]));
    this.clock = clock;
  }

  /** True when the linked hub runs in this process. */
  has(hub: LinkedHub): boolean {
    return this.hubs.has(hub.name.toLowerCase());
  }

  forHub(linked: LinkedHub): HubClient {
    const name = linked.name.toLowerCase();
    const hub = this.hubs.get(name);
    if (!hub) throw new Error(`IoT hub ${linked.name} does not run in this process.`);
    const cacheKey = `${name}\u0000${linked.name}\u0000${linked.connectionString}`;
    const known = this.clients.get(cacheKey);
    if (known) return known;
    if (this.clients.size >= MAX_CLIENTS) this.clients.clear();
    const client = new InProcessHubClient(hub, linked, this.clock);
    this.clients.set(cacheKey, client);
    return client;
  }

  close(): void {
    // Nothing to release.
  }
}

import type { JsonObject } from '../core/json.ts';
import type { LinkedHub } from './model.ts';

/**
 * The port through which the provisioning service writes devices to IoT hubs (ARCHITECTURE.md: "DPS -> hub through
 * a HubClient port"). Two adapters: in-process (a HubService in this process) and REST (the IoT Hub service API of
 * a remote hub, ours or anything compatible).
 *
 * Every method resolves to a typed result and never throws for an outcome of the hub (unauthorized, unreachable,
 * timeout, not found...), so the registration use case can end a registration `failed` with the right code.
 * Keys never appear in results' messages.
 *
 * Migration (a later issue) composes from the same port: `getDeviceState` on the old hub (identity + tags, desired
 * and reported), `importDeviceState` on the new one (tags, desired and reported in one write, as the IoT Hub bulk
 * import does), then `deleteDevice` on the old hub with the etag it read.
 */

/** Credentials DPS puts on a hub identity (dps-behavior.md §1.8). */
export type HubCredentials =
  | { type: 'sas'; primaryKey: string; secondaryKey: string }
  | { type: 'selfSigned'; primaryThumbprint: string; secondaryThumbprint: string };

/** A hub device identity without its secrets. */
export interface HubDevice {
  deviceId: string;
  etag: string;
  status: 'enabled' | 'disabled';
  authenticationType: 'sas' | 'selfSigned' | 'certificateAuthority' | 'none';
  capabilities: { iotEdge: boolean };
}

export interface HubTwinState {
  etag: string;
  tags: JsonObject;
  /** Without `$version` / `$metadata`. */
  desired: JsonObject;
  reported: JsonObject;
  desiredVersion: number;
  reportedVersion: number;
}

export interface HubDeviceState {
  device: HubDevice;
  twin: HubTwinState;
}

export interface InitialTwinContent {
  tags?: JsonObject | undefined;
  desired?: JsonObject | undefined;
}

/** What a hub said or why it could not be reached. */
export type HubFailureKind =
  /** The linked hub's credential was refused (stale / rotated key, missing rights). */
  | 'unauthorized'
  /** Connection refused, TLS failure, DNS, 5xx, 429. */
  | 'unavailable'
  | 'timeout'
  /** An etag precondition failed, or the entity changed under us. */
  | 'conflict'
  /** The hub refused the request as invalid (4xx other than the above), e.g. a device id it does not accept. */
  | 'rejected'
  /** The hub answered something we could not understand. */
  | 'protocol';

export interface HubFailure {
  kind: HubFailureKind;
  /** HTTP status when the hub answered. */
  status?: number;
  /** The hub's error code when it gave one (e.g. `IotHubUnauthorizedAccess`, `DeviceNotFound`). */
  hubErrorCode?: string;
  /** Human-readable, names the hub, never holds keys. */
  message: string;
}

export type HubResult<T> = { ok: true; value: T } | { ok: false; failure: HubFailure };

export interface ProvisionDeviceRequest {
  deviceId: string;
  credentials: HubCredentials;
  capabilities: { iotEdge: boolean };
  /**
   * Applied only when this call creates the device (initial assignment). An existing device keeps its twin: a
   * re-registration to the same hub leaves tags and desired properties untouched.
   */
  initialTwin?: InitialTwinContent | undefined;
  /**
   * A hint: the device is probably not on the hub yet (no earlier assignment known), so try the create first and
   * skip the read. The result is the same either way.
   */
  likelyNew?: boolean;
}

export interface ProvisionDeviceResult {
  /** True when the device did not exist on the hub before this call. */
  created: boolean;
  device: HubDevice;
}

/** The whole state to install on a hub (migration: the old hub's; reset: the initial twin, empty reported). */
export interface ImportDeviceRequest {
  deviceId: string;
  credentials: HubCredentials;
  capabilities: { iotEdge: boolean };
  /** Tags, desired and reported replace whatever the hub holds; versions are kept as given (≥ 1). */
  twin: { tags: JsonObject; desired: JsonObject; reported: JsonObject; desiredVersion: number; reportedVersion: number };
  /** A hint: the hub probably does not have the device yet, so try the create first. The result is the same. */
  likelyNew?: boolean;
}

export interface HubClient {
  /** The hub host name (the linked hub's `name`). */
  readonly hubName: string;
  /** The identity, or undefined when the hub does not have it. */
  getDevice(deviceId: string): Promise<HubResult<HubDevice | undefined>>;
  /**
   * Creates the device with credentials, capabilities and the initial twin, or, when it exists, replaces its
   * credentials and capabilities keeping its status and twin.
   */
  provisionDevice(req: ProvisionDeviceRequest): Promise<HubResult<ProvisionDeviceResult>>;
  /** Merge-patches tags and desired properties (If-Match: the etag, or `*`). */
  patchTwin(deviceId: string, twin: InitialTwinContent, etag?: string): Promise<HubResult<HubTwinState>>;
  /** Identity and twin, or undefined when the hub does not have the device. */
  getDeviceState(deviceId: string): Promise<HubResult<HubDeviceState | undefined>>;
  /**
   * Creates the device, or replaces an existing one, with exactly this identity and twin (status enabled). Idempotent:
   * the same request twice leaves the same state (migration steps are retried after a crash).
   */
  importDeviceState(req: ImportDeviceRequest): Promise<HubResult<ProvisionDeviceResult>>;
  /** Sets the device's status (disabling disconnects it). `false` when the device does not exist. */
  setDeviceStatus(deviceId: string, status: 'enabled' | 'disabled'): Promise<HubResult<boolean>>;
  /** Deletes the device (If-Match: the etag, or `*`). `false` when it did not exist. */
  deleteDevice(deviceId: string, etag?: string): Promise<HubResult<boolean>>;
  /** Releases connections (keep-alive sockets). */
  close(): void;
}

/** Gives the client for a linked hub. Implementations cache clients and rebuild them when the connection string changes. */
export interface HubClientFactory {
  forHub(hub: LinkedHub): HubClient;
  close(): void;
}

export function hubOk<T>(value: T): HubResult<T> {
  return { ok: true, value };
}

export function hubFail<T>(failure: HubFailure): HubResult<T> {
  return { ok: false, failure };
}

/** Routes each linked hub to the first factory that claims it (e.g. in-process for local hubs, REST otherwise). */
export function routingHubClientFactory(routes: readonly { claims: (hub: LinkedHub) => boolean; factory: HubClientFactory }[]): HubClientFactory {
  return {
    forHub(hub) {
      const route = routes.find((r) => r.claims(hub));
      if (!route) throw new Error(`No hub client for linked hub ${hub.name}.`);
      return route.factory.forHub(hub);
    },
    close() {
      for (const r of routes) r.factory.close();
    },
  };
}

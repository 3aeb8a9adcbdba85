import type { DeviceIdentity, TwinState, ConnectionState } from '../hub/model.ts';
import type { ProvisioningStore } from './provisioning-ports.ts';
import type { CaCertificateStore } from './ca-ports.ts';

/**
 * Store ports. Adapters (store/kysely/*) implement them on the embedded SQLite default and on PostgreSQL, and
 * test/contract/* runs one behavioural suite against both. Methods are named for intents and report what happened
 * instead of throwing for expected outcomes, so use cases decide the error a client sees.
 *
 * Hubs share one database: every hub row carries the hub id (the hub's host name).
 */
export type WriteResult = 'ok' | 'not-found' | 'precondition-failed';

export interface DevicePage {
  devices: DeviceIdentity[];
  /** Set when more rows may follow: pass it as `after` to continue. */
  next: string | undefined;
}

export interface TwinRow {
  device: DeviceIdentity;
  twin: TwinState;
}

export interface ConnectionUpdate {
  deviceId: string;
  connectionState?: ConnectionState;
  connectionStateUpdatedTime?: string;
  lastActivityTime?: string;
}

/** Narrow read port for the device hot path (MQTT CONNECT, twin GET). */
export interface HubReadStore {
  getDevice(hubId: string, deviceId: string): Promise<DeviceIdentity | undefined>;
  getTwin(hubId: string, deviceId: string): Promise<TwinState | undefined>;
}

export interface HubStore extends HubReadStore {
  /** Inserts a device and its twin in one transaction. Returns false (and writes nothing) when the id exists. */
  createDevice(hubId: string, device: DeviceIdentity, twin: TwinState): Promise<boolean>;
  /**
   * Replaces a device identity when its stored etag equals `expectedEtag` ('*' matches any).
   * Connection state and last activity are kept as stored.
   */
  replaceDevice(hubId: string, device: DeviceIdentity, expectedEtag: string): Promise<WriteResult>;
  /**
   * Writes a device and its twin together, in one transaction, with the twin exactly as given (versions included):
   * the hub's import. Without `expected`: inserts both ('exists', and nothing written, when the id is taken). With
   * `expected`: replaces both when the stored device etag and twin version equal the expected ones
   * ('precondition-failed' or 'not-found' otherwise, and nothing written). Connection state and last activity are
   * kept as stored on replace.
   */
  writeDeviceState(hubId: string, device: DeviceIdentity, twin: TwinState, expected?: { deviceEtag: string; twinVersion: number }): Promise<WriteResult | 'exists'>;
  /** Deletes a device and its twin when the etag matches ('*' or undefined match any). */
  deleteDevice(hubId: string, deviceId: string, expectedEtag?: string): Promise<WriteResult>;
  /** Devices ordered by device id (binary order), starting after `after`. */
  listDevices(hubId: string, opts: { after?: string; limit: number }): Promise<DevicePage>;
  countDevices(hubId: string): Promise<{ total: number; enabled: number; disabled: number }>;
  /** Compare-and-set on the twin version: writes only when the stored version equals `expectedVersion`. */
  replaceTwin(hubId: string, twin: TwinState, expectedVersion: number): Promise<WriteResult>;
  /** Devices with their twins, ordered by device id, starting after `after`. */
  listTwins(hubId: string, opts: { after?: string; limit: number }): Promise<{ rows: TwinRow[]; next: string | undefined }>;
  /** Batched connection-state / last-activity writes. Unknown devices are ignored. */
  recordConnections(hubId: string, updates: readonly ConnectionUpdate[]): Promise<void>;
}

export type Dialect = 'sqlite' | 'postgres';

export interface StoreConfig {
  dialect: Dialect;
  /** SQLite: the database file path (':memory:' allowed in tests). */
  sqlitePath?: string;
  /** PostgreSQL: connection string. */
  postgresUrl?: string;
  /** PostgreSQL: schema to use (created when missing). Tests use one schema per run. */
  postgresSchema?: string;
  /** PostgreSQL pool size (default 8). */
  poolSize?: number;
  /**
   * SQLite: group the registration path's writes of one event-loop turn into one transaction (default true; see
   * SqliteGroupCommit). Off: each of those writes is its own transaction (benches compare the two).
   */
  sqliteGroupCommit?: boolean;
  /**
   * SQLite file databases: run WAL checkpoints on a worker thread instead of inside a commit on the event loop
   * (default true; see SqliteCheckpointer). Off: SQLite's automatic checkpoints every 8,192 pages.
   */
  sqliteBackgroundCheckpoints?: boolean;
  /** SQLite: pause between two background checkpoint passes (ms, default 500). */
  sqliteCheckpointIntervalMs?: number;
}

/** The opened store: one database, one migration history, one port per module. */
export interface Store {
  readonly dialect: Dialect;
  readonly hub: HubStore;
  readonly provisioning: ProvisioningStore;
  readonly caCertificates: CaCertificateStore;
  close(): Promise<void>;
}

import type { ConnectionState, DeviceStatus } from '../../hub/model.ts';

/**
 * Kysely table types of the Homing database. Both dialects share them: JSON documents are TEXT, times are the
 * Azure-style ISO strings the model carries, and BIGINT columns come back as JS numbers (the PostgreSQL pool parses
 * INT8 as a number; every BIGINT we store stays far below 2^53).
 *
 * Modules that add tables in their own migration (e.g. `0002_provisioning`) add their table interfaces here, or
 * keep them private and use `db.withTables<TheirTables>()` on the shared `Kysely<Database>`.
 */

/** One device identity of one hub. The device document lives in `doc`; a few fields are columns. */
export interface HubDevicesTable {
  /** The hub's host name. */
  hub_id: string;
  /** Case-sensitive; ordered binary (SQLite BINARY, PostgreSQL `COLLATE "C"`). */
  device_id: string;
  etag: string;
  status: DeviceStatus;
  /**
   * The DeviceIdentity JSON without `connectionState`, `connectionStateUpdatedTime` and `lastActivityTime`, which
   * the columns below own (`recordConnections` writes them; `replaceDevice` leaves them alone).
   */
  doc: string;
  connection_state: ConnectionState;
  connection_state_updated_time: string;
  last_activity_time: string;
}

/** The twin of one device; deleted with its device (ON DELETE CASCADE). */
export interface HubTwinsTable {
  hub_id: string;
  device_id: string;
  /** The twin version: the compare-and-set key of `replaceTwin`. */
  version: number;
  etag: string;
  /** The TwinState JSON. */
  doc: string;
}

export interface Database {
  hub_devices: HubDevicesTable;
  hub_twins: HubTwinsTable;
}

import { sql, type Kysely, type Selectable } from 'kysely';
import type { ConnectionUpdate, DevicePage, Dialect, HubStore, TwinRow, WriteResult } from '../ports.ts';
import type { DeviceIdentity, TwinState } from '../../hub/model.ts';
import type { Database, HubDevicesTable } from './schema.ts';
import type { SqliteGroupCommit } from './sqlite-group-commit.ts';
import { PreparedQuery, slot } from './prepared.ts';

/** The device columns a read needs: the document plus the connection columns `recordConnections` owns. */
type DeviceRow = Pick<Selectable<HubDevicesTable>, 'doc' | 'connection_state' | 'connection_state_updated_time' | 'last_activity_time'>;

const DEVICE_COLUMNS = ['doc', 'connection_state', 'connection_state_updated_time', 'last_activity_time'] as const;

/** The device document as stored: the identity without the fields owned by the connection columns. */
function deviceDoc(device: DeviceIdentity): string {
  const { connectionState: _s, connectionStateUpdatedTime: _u, lastActivityTime: _a, ...rest } = device;
  return JSON.stringify(rest);
}

function toDevice(row: DeviceRow): DeviceIdentity {
  const doc = JSON.parse(row.doc) as Omit<DeviceIdentity, 'connectionState' | 'connectionStateUpdatedTime' | 'lastActivityTime'>;
  return {
    ...doc,
    connectionState: row.connection_state,
    connectionStateUpdatedTime: row.connection_state_updated_time,
    lastActivityTime: row.last_activity_time,
  };
}

function toTwin(doc: string): TwinState {
  return JSON.parse(doc) as TwinState;
}

/** Thrown inside a transaction to roll it back when a compare-and-set on the twin fails. */
const TWIN_CHANGED = new Error('store: the twin changed concurrently');

function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`store: page limit must be a positive integer, got ${limit}`);
}

/** Merges updates of the same device (later defined fields win), drops empty ones, and sorts by device id. */
function normalizeConnectionUpdates(updates: readonly ConnectionUpdate[]): ConnectionUpdate[] {
  const byId = new Map<string, ConnectionUpdate>();
  for (const u of updates) {
    const prev = byId.get(u.deviceId);
    const merged: ConnectionUpdate = { ...prev, deviceId: u.deviceId };
    if (u.connectionState !== undefined) merged.connectionState = u.connectionState;
    if (u.connectionStateUpdatedTime !== undefined) merged.connectionStateUpdatedTime = u.connectionStateUpdatedTime;
    if (u.lastActivityTime !== undefined) merged.lastActivityTime = u.lastActivityTime;
    byId.set(u.deviceId, merged);
  }
  return [...byId.values()]
    .filter((u) => u.connectionState !== undefined || u.connectionStateUpdatedTime !== undefined || u.lastActivityTime !== undefined)
    .sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0));
}

/**
 * The hub store on Kysely: one implementation for SQLite (better-sqlite3) and PostgreSQL (pg). SQL differs only in
 * `recordConnections`, where PostgreSQL takes the whole batch in two statements instead of one per device.
 *
 * Hot path (per MQTT message): getDevice, getTwin and replaceTwin are one primary-key statement each, compiled once
 * (see {@link PreparedQuery}; building a Kysely query costs more than SQLite takes to run it).
 * Compare-and-set writes are a single UPDATE/DELETE with the expected etag/version in the WHERE clause; only when it
 * changed nothing does a second primary-key read tell 'not-found' from 'precondition-failed'.
 */
export class KyselyHubStore implements HubStore {
  private readonly db: Kysely<Database>;
  private readonly dialect: Dialect;
  private readonly q: ReturnType<typeof prepareQueries>;

  /** SQLite: the group commit that createDevice's and replaceTwin's writes go through (see SqliteGroupCommit). */
  private readonly groupCommit: SqliteGroupCommit | undefined;

  constructor(db: Kysely<Database>, dialect: Dialect, opts: { groupCommit?: SqliteGroupCommit } = {}) {
    this.db = db;
    this.dialect = dialect;
    this.q = prepareQueries(db);
    this.groupCommit = opts.groupCommit;
  }

  async getDevice(hubId: string, deviceId: string): Promise<DeviceIdentity | undefined> {
    const { rows } = await this.db.executeQuery(this.q.getDevice.bind([hubId, deviceId]));
    const row = rows[0];
    return row === undefined ? undefined : toDevice(row);
  }

  async getTwin(hubId: string, deviceId: string): Promise<TwinState | undefined> {
    const { rows } = await this.db.executeQuery(this.q.getTwin.bind([hubId, deviceId]));
    const row = rows[0];
    return row === undefined ? undefined : toTwin(row.doc);
  }

  async createDevice(hubId: string, device: DeviceIdentity, twin: TwinState): Promise<boolean> {
    if (twin.deviceId !== device.deviceId) {
      throw new Error(`store: twin of ${JSON.stringify(twin.deviceId)} given for device ${JSON.stringify(device.deviceId)}`);
    }
    const deviceArgs = [
      hubId,
      device.deviceId,
      device.etag,
      device.status,
      deviceDoc(device),
      device.connectionState,
      device.connectionStateUpdatedTime,
      device.lastActivityTime,
    ];
    const twinArgs = [hubId, device.deviceId, twin.version, twin.etag, JSON.stringify(twin)];
    if (this.dialect === 'postgres') {
      const r = await this.db.executeQuery(this.q.createDevicePg.bind([...deviceArgs, ...twinArgs.slice(2)]));
      return Number(r.numAffectedRows ?? 0n) === 1;
    }
    if (this.groupCommit) {
      // The registration path's hub write: shares a commit with the other writes of this event-loop turn.
      return this.groupCommit.submit((s) => {
        if (s.run(this.q.insertDevice.bind(deviceArgs)).changes !== 1) return false;
        s.run(this.q.insertTwin.bind(twinArgs));
        return true;
      });
    }
    return this.db.transaction().execute(async (trx) => {
      // ON CONFLICT DO NOTHING: an existing id inserts no row (and raises no error) instead of failing the statement.
      const inserted = await trx.executeQuery(this.q.insertDevice.bind(deviceArgs));
      if (inserted.numAffectedRows !== 1n) return false;
      // A twin cannot outlive its device (ON DELETE CASCADE), so this insert cannot conflict.
      await trx.executeQuery(this.q.insertTwin.bind(twinArgs));
      return true;
    });
  }

  async replaceDevice(hubId: string, device: DeviceIdentity, expectedEtag: string): Promise<WriteResult> {
    let q = this.db
      .updateTable('hub_devices')
      .set({ etag: device.etag, status: device.status, doc: deviceDoc(device) })
      .where('hub_id', '=', hubId)
      .where('device_id', '=', device.deviceId);
    if (expectedEtag !== '*') q = q.where('etag', '=', expectedEtag);
    const r = await q.executeTakeFirst();
    if (r.numUpdatedRows > 0n) return 'ok';
    if (expectedEtag === '*') return 'not-found';
    return (await this.deviceExists(hubId, device.deviceId)) ? 'precondition-failed' : 'not-found';
  }

  async writeDeviceState(hubId: string, device: DeviceIdentity, twin: TwinState, expected?: { deviceEtag: string; twinVersion: number }): Promise<WriteResult | 'exists'> {
    if (expected === undefined) return (await this.createDevice(hubId, device, twin)) ? 'ok' : 'exists';
    if (twin.deviceId !== device.deviceId) {
      throw new Error(`store: twin of ${JSON.stringify(twin.deviceId)} given for device ${JSON.stringify(device.deviceId)}`);
    }
    try {
      return await this.db.transaction().execute(async (trx) => {
        const d = await trx
          .updateTable('hub_devices')
          .set({ etag: device.etag, status: device.status, doc: deviceDoc(device) })
          .where('hub_id', '=', hubId)
          .where('device_id', '=', device.deviceId)
          .where('etag', '=', expected.deviceEtag)
          .executeTakeFirst();
        if (d.numUpdatedRows === 0n) return 'no-device' as const;
        const t = await trx.executeQuery(
          this.q.updateTwin.bind([hubId, twin.deviceId, twin.version, twin.etag, JSON.stringify(twin), expected.twinVersion]),
        );
        // The twin changed since it was read: undo the device update too.
        if (t.numAffectedRows === undefined || t.numAffectedRows === 0n) throw TWIN_CHANGED;
        return 'ok' as const;
      }).then(async (r) => {
        if (r === 'ok') return r;
        return (await this.deviceExists(hubId, device.deviceId)) ? 'precondition-failed' : 'not-found';
      });
    } catch (e) {
      if (e === TWIN_CHANGED) return (await this.deviceExists(hubId, device.deviceId)) ? 'precondition-failed' : 'not-found';
      throw e;
    }
  }

  async deleteDevice(hubId: string, deviceId: string, expectedEtag?: string): Promise<WriteResult> {
    const any = expectedEtag === undefined || expectedEtag === '*';
    // The twin goes with the device: hub_twins references hub_devices ON DELETE CASCADE (one statement, atomic).
    let q = this.db.deleteFrom('hub_devices').where('hub_id', '=', hubId).where('device_id', '=', deviceId);
    if (!any) q = q.where('etag', '=', expectedEtag);
    const r = await q.executeTakeFirst();
    if (r.numDeletedRows > 0n) return 'ok';
    if (any) return 'not-found';
    return (await this.deviceExists(hubId, deviceId)) ? 'precondition-failed' : 'not-found';
  }

  async listDevices(hubId: string, opts: { after?: string; limit: number }): Promise<DevicePage> {
    checkLimit(opts.limit);
    let q = this.db.selectFrom('hub_devices').select(['device_id', ...DEVICE_COLUMNS]).where('hub_id', '=', hubId);
    if (opts.after !== undefined) q = q.where('device_id', '>', opts.after);
    const rows = await q.orderBy('device_id').limit(opts.limit).execute();
    const last = rows[rows.length - 1];
    return { devices: rows.map(toDevice), next: rows.length === opts.limit && last !== undefined ? last.device_id : undefined };
  }

  async countDevices(hubId: string): Promise<{ total: number; enabled: number; disabled: number }> {
    // Served by the (hub_id, status) index without reading the documents.
    const rows = await this.db
      .selectFrom('hub_devices')
      .select((eb) => ['status', eb.fn.countAll().as('n')])
      .where('hub_id', '=', hubId)
      .groupBy('status')
      .execute();
    const out = { total: 0, enabled: 0, disabled: 0 };
    for (const r of rows) {
      const n = Number(r.n);
      out.total += n;
      out[r.status] += n;
    }
    return out;
  }

  async replaceTwin(hubId: string, twin: TwinState, expectedVersion: number): Promise<WriteResult> {
    const update = this.q.updateTwin.bind([hubId, twin.deviceId, twin.version, twin.etag, JSON.stringify(twin), expectedVersion]);
    if (this.groupCommit) {
      // Reported-properties patches of many devices share a commit (each is its own savepoint).
      const exists = this.q.twinExists.bind([hubId, twin.deviceId]);
      return this.groupCommit.submit((s): WriteResult => {
        if (s.run(update).changes > 0) return 'ok';
        return s.all(exists).length === 0 ? 'not-found' : 'precondition-failed';
      });
    }
    const r = await this.db.executeQuery(update);
    if (r.numAffectedRows !== undefined && r.numAffectedRows > 0n) return 'ok';
    const exists = await this.db.executeQuery(this.q.twinExists.bind([hubId, twin.deviceId]));
    return exists.rows.length === 0 ? 'not-found' : 'precondition-failed';
  }

  async listTwins(hubId: string, opts: { after?: string; limit: number }): Promise<{ rows: TwinRow[]; next: string | undefined }> {
    checkLimit(opts.limit);
    let q = this.db
      .selectFrom('hub_devices as d')
      .innerJoin('hub_twins as t', (j) => j.onRef('t.hub_id', '=', 'd.hub_id').onRef('t.device_id', '=', 'd.device_id'))
      .select([
        'd.device_id',
        'd.doc',
        'd.connection_state',
        'd.connection_state_updated_time',
        'd.last_activity_time',
        't.doc as twin_doc',
      ])
      .where('d.hub_id', '=', hubId);
    if (opts.after !== undefined) q = q.where('d.device_id', '>', opts.after);
    const rows = await q.orderBy('d.device_id').limit(opts.limit).execute();
    const last = rows[rows.length - 1];
    return {
      rows: rows.map((r) => ({ device: toDevice(r), twin: toTwin(r.twin_doc) })),
      next: rows.length === opts.limit && last !== undefined ? last.device_id : undefined,
    };
  }

  async recordConnections(hubId: string, updates: readonly ConnectionUpdate[]): Promise<void> {
    const batch = normalizeConnectionUpdates(updates);
    if (batch.length === 0) return;
    if (this.dialect === 'postgres') {
      await this.recordConnectionsPostgres(hubId, batch);
      return;
    }
    // SQLite: statements are in-process and cheap; one transaction makes the batch one commit.
    await this.db.transaction().execute(async (trx) => {
      for (const u of batch) {
        await trx.executeQuery(
          this.q.recordConnection.bind([hubId, u.deviceId, u.connectionState ?? null, u.connectionStateUpdatedTime ?? null, u.lastActivityTime ?? null]),
        );
      }
    });
  }

  /**
   * PostgreSQL: the whole batch in one transaction of two statements, whatever its size. The first locks the rows in
   * device-id order (ORDER BY runs below the row locking, so locks are taken in that order): concurrent batches
   * over overlapping devices then queue instead of deadlocking. The second updates them from arrays; a null element
   * leaves its column unchanged.
   */
  private async recordConnectionsPostgres(hubId: string, batch: readonly ConnectionUpdate[]): Promise<void> {
    const ids = batch.map((u) => u.deviceId);
    const states = batch.map((u) => u.connectionState ?? null);
    const stateTimes = batch.map((u) => u.connectionStateUpdatedTime ?? null);
    const activity = batch.map((u) => u.lastActivityTime ?? null);
    await this.db.transaction().execute(async (trx) => {
      await sql`select 1 from hub_devices
        where hub_id = ${hubId} and device_id = any(${ids}::text[])
        order by device_id
        for update`.execute(trx);
      await sql`update hub_devices as d set
          connection_state = coalesce(u.connection_state, d.connection_state),
          connection_state_updated_time = coalesce(u.connection_state_updated_time, d.connection_state_updated_time),
          last_activity_time = coalesce(u.last_activity_time, d.last_activity_time)
        from unnest(${ids}::text[], ${states}::text[], ${stateTimes}::text[], ${activity}::text[])
          as u(device_id, connection_state, connection_state_updated_time, last_activity_time)
        where d.hub_id = ${hubId} and d.device_id = u.device_id`.execute(trx);
    });
  }

  private async deviceExists(hubId: string, deviceId: string): Promise<boolean> {
    const r = await this.db.executeQuery(this.q.deviceExists.bind([hubId, deviceId]));
    return r.rows.length > 0;
  }
}

/**
 * The statements of the per-message hot path and of device creation (a DPS registration creates a device), built
 * and compiled once per store. Arguments are listed in each query's comment, in `slot` order.
 */
function prepareQueries(db: Kysely<Database>) {
  return {
    /** hubId, deviceId */
    getDevice: new PreparedQuery(
      db.selectFrom('hub_devices').select(DEVICE_COLUMNS).where('hub_id', '=', slot(0)).where('device_id', '=', slot(1)),
    ),
    /** hubId, deviceId */
    deviceExists: new PreparedQuery(
      db.selectFrom('hub_devices').select('etag').where('hub_id', '=', slot(0)).where('device_id', '=', slot(1)),
    ),
    /** hubId, deviceId */
    getTwin: new PreparedQuery(db.selectFrom('hub_twins').select('doc').where('hub_id', '=', slot(0)).where('device_id', '=', slot(1))),
    /** hubId, deviceId */
    twinExists: new PreparedQuery(
      db.selectFrom('hub_twins').select('version').where('hub_id', '=', slot(0)).where('device_id', '=', slot(1)),
    ),
    /** hubId, deviceId, version, etag, doc, expectedVersion */
    updateTwin: new PreparedQuery(
      db
        .updateTable('hub_twins')
        .set({ version: slot<number>(2), etag: slot(3), doc: slot(4) })
        .where('hub_id', '=', slot(0))
        .where('device_id', '=', slot(1))
        .where('version', '=', slot<number>(5)),
    ),
    /** hubId, deviceId, etag, status, doc, connectionState, connectionStateUpdatedTime, lastActivityTime */
    insertDevice: new PreparedQuery(
      db
        .insertInto('hub_devices')
        .values({
          hub_id: slot(0),
          device_id: slot(1),
          etag: slot(2),
          status: slot<DeviceIdentity['status']>(3),
          doc: slot(4),
          connection_state: slot<DeviceIdentity['connectionState']>(5),
          connection_state_updated_time: slot(6),
          last_activity_time: slot(7),
        })
        .onConflict((oc) => oc.columns(['hub_id', 'device_id']).doNothing()),
    ),
    /** hubId, deviceId, version, etag, doc */
    insertTwin: new PreparedQuery(
      db.insertInto('hub_twins').values({ hub_id: slot(0), device_id: slot(1), version: slot<number>(2), etag: slot(3), doc: slot(4) }),
    ),
    /**
     * PostgreSQL: the device and its twin in one statement (one round trip instead of BEGIN, two inserts and COMMIT).
     * The twin is inserted only when the device was (ON CONFLICT DO NOTHING returns no row); the foreign key is
     * checked at the end of the statement, when the device row exists. Affected rows: 1 created, 0 existed.
     * hubId, deviceId, etag, status, doc, connectionState, connectionStateUpdatedTime, lastActivityTime, twin version,
     * twin etag, twin doc.
     */
    createDevicePg: new PreparedQuery<unknown>({
      compile: () =>
        sql`with d as (
              insert into hub_devices (hub_id, device_id, etag, status, doc, connection_state, connection_state_updated_time, last_activity_time)
              values (${slot(0)}, ${slot(1)}, ${slot(2)}, ${slot(3)}, ${slot(4)}, ${slot(5)}, ${slot(6)}, ${slot(7)})
              on conflict (hub_id, device_id) do nothing
              returning hub_id, device_id
            )
            insert into hub_twins (hub_id, device_id, version, etag, doc)
            select hub_id, device_id, ${slot<number>(8)}, ${slot(9)}, ${slot(10)} from d`.compile(db),
    }),
    /** hubId, deviceId, connectionState | null, connectionStateUpdatedTime | null, lastActivityTime | null (null keeps) */
    recordConnection: new PreparedQuery(
      db
        .updateTable('hub_devices')
        .set((eb) => ({
          connection_state: eb.fn.coalesce(eb.val(slot<DeviceIdentity['connectionState'] | null>(2)), eb.ref('connection_state')),
          connection_state_updated_time: eb.fn.coalesce(eb.val(slot<string | null>(3)), eb.ref('connection_state_updated_time')),
          last_activity_time: eb.fn.coalesce(eb.val(slot<string | null>(4)), eb.ref('last_activity_time')),
        }))
        .where('hub_id', '=', slot(0))
        .where('device_id', '=', slot(1)),
    ),
  };
}

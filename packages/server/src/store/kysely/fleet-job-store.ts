import type { Kysely } from 'kysely';
import type { FleetJobStore } from '../fleet-ports.ts';
import type { FleetDevice, FleetDeviceState, FleetJob, FleetJobState } from '../../provisioning/fleet/model.ts';
import type { RegistrationRecord } from '../../provisioning/model.ts';

interface FleetJobsTable {
  id: string;
  instance: string;
  state: string;
  created_at: string;
  version: number;
  doc: string;
}

interface FleetJobDevicesTable {
  job_id: string;
  seq: number;
  state: string;
  doc: string;
}

/** The provisioning table this store reads (never writes) for selections. */
interface RegistrationsTable {
  instance: string;
  registration_key: string;
  etag: string;
  doc: string;
}

interface FleetDb {
  fleet_jobs: FleetJobsTable;
  fleet_job_devices: FleetJobDevicesTable;
  dps_registrations: RegistrationsTable;
}

/** Rows per INSERT / UPDATE batch (well under SQLite's bound-variable limit). */
const BATCH = 400;

const DEVICE_STATES: readonly FleetDeviceState[] = ['pending', 'invoked', 'moved', 'unchanged', 'failed'];

function jobRow(job: FleetJob): FleetJobsTable {
  return { id: job.id, instance: job.instance, state: job.state, created_at: job.createdDateTimeUtc, version: job.version, doc: JSON.stringify(job) };
}

function parseJob(r: { doc: string; version: number | string; state: string }): FleetJob {
  return { ...(JSON.parse(r.doc) as FleetJob), state: r.state as FleetJobState, version: Number(r.version) };
}

function parseDevice(r: { doc: string; state: string; seq: number | string }): FleetDevice {
  return { ...(JSON.parse(r.doc) as FleetDevice), state: r.state as FleetDeviceState, seq: Number(r.seq) };
}

/** FleetJobStore on `fleet_jobs` / `fleet_job_devices` (migration 0007_fleet_jobs), SQLite and PostgreSQL. */
export class KyselyFleetJobStore implements FleetJobStore {
  private readonly db: Kysely<FleetDb>;

  /** `db`: the store's Kysely instance (any table type; only the fleet tables and dps_registrations are used). */
  static on<DB>(db: Kysely<DB>): KyselyFleetJobStore {
    return new KyselyFleetJobStore(db as unknown as Kysely<FleetDb>);
  }

  private constructor(db: Kysely<FleetDb>) {
    this.db = db;
  }

  async createJob(job: FleetJob, devices: readonly FleetDevice[]): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.insertInto('fleet_jobs').values(jobRow(job)).execute();
      for (let i = 0; i < devices.length; i += BATCH) {
        const rows = devices.slice(i, i + BATCH).map((d) => ({ job_id: d.jobId, seq: d.seq, state: d.state, doc: JSON.stringify(d) }));
        await tx.insertInto('fleet_job_devices').values(rows).execute();
      }
    });
  }

  async getJob(instance: string, id: string): Promise<FleetJob | undefined> {
    const r = await this.db.selectFrom('fleet_jobs').select(['doc', 'version', 'state']).where('id', '=', id).where('instance', '=', instance).executeTakeFirst();
    return r === undefined ? undefined : parseJob(r);
  }

  async listJobs(instance: string, limit: number): Promise<FleetJob[]> {
    const rows = await this.db
      .selectFrom('fleet_jobs')
      .select(['doc', 'version', 'state'])
      .where('instance', '=', instance)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(limit)
      .execute();
    return rows.map(parseJob);
  }

  async listJobsInStates(states: readonly FleetJobState[]): Promise<FleetJob[]> {
    if (states.length === 0) return [];
    const rows = await this.db.selectFrom('fleet_jobs').select(['doc', 'version', 'state']).where('state', 'in', [...states]).orderBy('created_at').execute();
    return rows.map(parseJob);
  }

  async updateJob(job: FleetJob, expectedVersion: number): Promise<boolean> {
    const r = await this.db
      .updateTable('fleet_jobs')
      .set({ state: job.state, version: job.version, doc: JSON.stringify(job) })
      .where('id', '=', job.id)
      .where('version', '=', expectedVersion)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async listDevices(jobId: string, opts: { state?: FleetDeviceState; afterSeq?: number; limit: number }): Promise<FleetDevice[]> {
    let q = this.db.selectFrom('fleet_job_devices').select(['doc', 'state', 'seq']).where('job_id', '=', jobId);
    if (opts.state !== undefined) q = q.where('state', '=', opts.state);
    if (opts.afterSeq !== undefined) q = q.where('seq', '>', opts.afterSeq);
    const rows = await q.orderBy('seq').limit(opts.limit).execute();
    return rows.map(parseDevice);
  }

  async updateDevices(devices: readonly FleetDevice[]): Promise<void> {
    if (devices.length === 0) return;
    await this.db.transaction().execute(async (tx) => {
      for (const d of devices) {
        await tx.updateTable('fleet_job_devices').set({ state: d.state, doc: JSON.stringify(d) }).where('job_id', '=', d.jobId).where('seq', '=', d.seq).execute();
      }
    });
  }

  async countDevices(jobId: string): Promise<Record<FleetDeviceState, number>> {
    const rows = await this.db
      .selectFrom('fleet_job_devices')
      .select((eb) => ['state', eb.fn.countAll<number>().as('n')])
      .where('job_id', '=', jobId)
      .groupBy('state')
      .execute();
    const out = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0])) as Record<FleetDeviceState, number>;
    for (const r of rows) if ((DEVICE_STATES as readonly string[]).includes(r.state)) out[r.state as FleetDeviceState] = Number(r.n);
    return out;
  }

  async scanRegistrations(instance: string, after: string | undefined, limit: number): Promise<{ items: RegistrationRecord[]; next: string | undefined }> {
    let q = this.db.selectFrom('dps_registrations').select(['registration_key', 'etag', 'doc']).where('instance', '=', instance);
    if (after !== undefined) q = q.where('registration_key', '>', after);
    const rows = await q.orderBy('registration_key').limit(limit + 1).execute();
    const page = rows.slice(0, limit);
    const items = page.map((r) => ({ ...(JSON.parse(r.doc) as RegistrationRecord), etag: r.etag }));
    return { items, next: rows.length > limit ? page[page.length - 1]?.registration_key : undefined };
  }
}

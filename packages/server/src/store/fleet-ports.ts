import type { FleetDevice, FleetDeviceState, FleetJob, FleetJobState } from '../provisioning/fleet/model.ts';
import type { RegistrationRecord } from '../provisioning/model.ts';

/**
 * Store port of phased fleet reprovisioning (provisioning/fleet): jobs and their per-device progress, so a restarted
 * server resumes a running job where it stopped. Adapter: store/kysely/fleet-job-store.ts (migration 0007_fleet_jobs).
 */
export interface FleetJobStore {
  /** Inserts a job and its devices in one transaction. */
  createJob(job: FleetJob, devices: readonly FleetDevice[]): Promise<void>;
  getJob(instance: string, id: string): Promise<FleetJob | undefined>;
  /** Jobs of an instance, newest first. */
  listJobs(instance: string, limit: number): Promise<FleetJob[]>;
  /** Jobs of every instance in these states (what a starting server resumes). */
  listJobsInStates(states: readonly FleetJobState[]): Promise<FleetJob[]>;
  /** Compare-and-set on the version: writes `job` (whose version must be expectedVersion + 1). False when it changed. */
  updateJob(job: FleetJob, expectedVersion: number): Promise<boolean>;
  /** Devices of a job in a state, in `seq` order after `afterSeq`. */
  listDevices(jobId: string, opts: { state?: FleetDeviceState; afterSeq?: number; limit: number }): Promise<FleetDevice[]>;
  /** Writes the progress of devices (state, marker, outcome), in one transaction. */
  updateDevices(devices: readonly FleetDevice[]): Promise<void>;
  /** How many devices of the job are in each state. */
  countDevices(jobId: string): Promise<Record<FleetDeviceState, number>>;
  /**
   * Registration records of an instance in registration-key order after `after` (read-only scan of the
   * provisioning tables, for selections by hub, id pattern or twin query).
   */
  scanRegistrations(instance: string, after: string | undefined, limit: number): Promise<{ items: RegistrationRecord[]; next: string | undefined }>;
}

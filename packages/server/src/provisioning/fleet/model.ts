/**
 * Phased fleet reprovisioning (docs/api/fleet.md, docs/adr/014-fleet-reprovisioning.md): the job model shared by the
 * service, the store port and the admin API.
 */

export type FleetJobState = 'pending' | 'running' | 'paused' | 'completed' | 'cancelled' | 'failed';

/** Per-device progress. `invoked`: the method was answered, the registration is being watched. */
export type FleetDeviceState = 'pending' | 'invoked' | 'moved' | 'unchanged' | 'failed';

/** Which devices a job reprovisions: exactly one criterion. */
export type FleetSelection =
  | { kind: 'enrollmentGroup'; enrollmentGroupId: string }
  | { kind: 'enrollment'; registrationId: string }
  | { kind: 'hub'; hub: string }
  | { kind: 'pattern'; pattern: string }
  | { kind: 'query'; query: string };

export interface FleetRate {
  /** Devices invoked per minute (the registrations they cause are the same number). */
  perMinute: number;
  /** `quota`: the instance's registrationsPerMinute; `request`: given by the caller. */
  source: 'quota' | 'request';
  /** Devices per wave. */
  waveSize: number;
  /** Time between the starts of two waves, ms: waveSize × 60 000 / perMinute. */
  waveIntervalMs: number;
}

export interface FailureThreshold {
  /** Pause when failed / processed × 100 exceeds this (evaluated once 10 devices, or all, are processed). */
  percent?: number;
  /** Pause when more than this many devices failed. */
  count?: number;
}

export interface FleetCounts {
  total: number;
  pending: number;
  inFlight: number;
  moved: number;
  unchanged: number;
  failed: number;
}

export interface FleetJob {
  id: string;
  instance: string;
  state: FleetJobState;
  selection: FleetSelection;
  /** The direct method; `connectTimeoutSeconds`: how long a disconnected device is waited for. */
  method: { name: string; responseTimeoutSeconds: number; connectTimeoutSeconds: number };
  rate: FleetRate;
  failureThreshold: FailureThreshold;
  /** How long a device has, from its method answer, to finish its registration. */
  deviceTimeoutMs: number;
  counts: FleetCounts;
  /** Devices the selection matched that were not eligible (no assigned registration): not part of `total`. */
  skipped: number;
  /** The failed / processed counts when the job was last resumed: the threshold applies to what follows. */
  baseline: { processed: number; failed: number };
  pausedReason?: 'operator' | 'failureThreshold';
  /** Why the job failed (state `failed`). */
  error?: string;
  createdDateTimeUtc: string;
  lastUpdatedDateTimeUtc: string;
  startedDateTimeUtc?: string;
  finishedDateTimeUtc?: string;
  /** Compare-and-set key of the stored job. */
  version: number;
}

/** One device of a job. */
export interface FleetDevice {
  jobId: string;
  /** Order of processing (0-based). */
  seq: number;
  registrationId: string;
  deviceId: string;
  fromHub: string;
  state: FleetDeviceState;
  /** The registration record's etag when the method was invoked: a newer final record ends the watch. */
  beforeEtag?: string;
  invokedMs?: number;
  toHub?: string;
  substatus?: string;
  error?: string;
  finishedMs?: number;
}

/** A dry run's answer for one device. */
export interface PlannedMove {
  registrationId: string;
  deviceId: string;
  fromHub: string;
  /** The hub allocation picks now; undefined when it cannot be predicted or fails. */
  toHub?: string;
  outcome: 'move' | 'stay' | 'unknown' | 'fail';
  /** Why `unknown` / `fail` / `stay` under a never-reprovision policy. */
  reason?: string;
}

export const TERMINAL_STATES: readonly FleetJobState[] = ['completed', 'cancelled', 'failed'];

import { createHash } from 'node:crypto';
import type { JsonObject } from './json.ts';
import type { AllocationPolicy, EnrollmentGroup, IndividualEnrollment, InitialTwin, LinkedHub } from '../provisioning/model.ts';
import type { ErrorName } from './errors.ts';
import { registrationKey } from './registration-id.ts';
import { latencyTier, reportedLatency, type LatencyEstimator } from './geo-latency.ts';

/**
 * Hub allocation (dps-behavior.md §3): which policy applies, which linked hubs are candidates, and which one a
 * device gets. Pure: no I/O, no clock, no randomness (hashing is deterministic).
 *
 * Policies dispatch through `ALLOCATORS`. `geoLatency` ranks hubs by estimated latency (geo-latency.ts; here with the
 * device-reported times only, the provisioning layer adds the configured network map). `custom` is a webhook call
 * (I/O): the provisioning layer supplies it as an async allocator handed the same context; here it answers `failed`.
 */

/** The enrollment fields allocation reads (individual and group alike). */
export interface AllocationEnrollment {
  allocationPolicy?: AllocationPolicy | undefined;
  iotHubs?: readonly string[] | undefined;
  /** Legacy single-hub field: treated as the static target / a one-hub list. */
  iotHubHostName?: string | undefined;
}

export interface AllocationInstance {
  allocationPolicy: Exclude<AllocationPolicy, 'custom'>;
  linkedHubs: readonly LinkedHub[];
}

export interface AllocationContext {
  /** As presented by the device; hashing lower-cases it. */
  registrationId: string;
  policy: AllocationPolicy;
  /**
   * Linked hubs the enrollment allows, before the applyAllocationPolicy filter (the custom webhook gets this list,
   * static picks from it).
   */
  hubs: readonly LinkedHub[];
  /** Hub names the enrollment lists that are not linked (stale references), for error messages. */
  unlinked: readonly string[];
  /** True when the enrollment lists hubs (false: `hubs` is every linked hub). */
  listed: boolean;
  /** What is known about the registering device (geoLatency and custom read it; pure unit tests may omit it). */
  device?: AllocationDevice;
}

/**
 * The registering device as allocation sees it. Never holds secrets: the custom webhook serializes parts of it.
 */
export interface AllocationDevice {
  /** Source IP address of the device's connection, as the socket reports it (IPv4, IPv6, or IPv4-mapped IPv6). */
  sourceAddress?: string;
  /** The register body's `payload` object, unchanged. */
  payload?: JsonObject;
  /** On re-registration of an assigned device: its current hub and device id. */
  currentHub?: string;
  currentDeviceId?: string;
  /** The attestation used for this registration, without secrets (x509: the certificate details DPS returns). */
  attestation: { type: 'symmetricKey' } | { type: 'x509'; x509?: JsonObject };
  /** The enrollment entry the device matched (holds keys: serializers must strip them). */
  enrollment: { kind: 'individual'; value: IndividualEnrollment } | { kind: 'group'; value: EnrollmentGroup };
}

export type AllocationDecision =
  | {
      kind: 'assigned';
      hub: LinkedHub;
      policy: AllocationPolicy;
      /** Custom webhook: its initialTwin (used on first assignment, or a reset that changes hub). */
      initialTwin?: InitialTwin;
      /** Custom webhook: its payload, returned to the device in registrationState.payload. */
      payload?: JsonObject;
    }
  | { kind: 'failed'; errorName: Extract<ErrorName, 'NoEligibleHub' | 'CustomAllocationFailed'>; message: string; policy: AllocationPolicy };

export type Allocator = (ctx: AllocationContext) => AllocationDecision;

/** Policy at registration time: the enrollment's, else the instance default (§3.1 step 1). */
export function selectPolicy(enrollment: AllocationEnrollment, instance: AllocationInstance): AllocationPolicy {
  return enrollment.allocationPolicy ?? instance.allocationPolicy;
}

/** The hub names an enrollment lists (iotHubs, else the legacy iotHubHostName), or undefined for "all linked". */
export function listedHubs(enrollment: AllocationEnrollment): readonly string[] | undefined {
  if (enrollment.iotHubs && enrollment.iotHubs.length > 0) return enrollment.iotHubs;
  if (enrollment.iotHubHostName) return [enrollment.iotHubHostName];
  return undefined;
}

/**
 * Candidate hubs (§3.1 step 2): the enrollment's list when non-empty, else every linked hub, evaluated now (a newly
 * linked hub joins at once). Names compare case-insensitively; listed names that are not linked are reported.
 */
export function candidateHubs(enrollment: AllocationEnrollment, instance: AllocationInstance): { hubs: LinkedHub[]; unlinked: string[] } {
  const listed = listedHubs(enrollment);
  if (listed === undefined) return { hubs: [...instance.linkedHubs], unlinked: [] };
  const byName = new Map(instance.linkedHubs.map((h) => [h.name.toLowerCase(), h]));
  const hubs: LinkedHub[] = [];
  const unlinked: string[] = [];
  const seen = new Set<string>();
  for (const name of listed) {
    const key = name.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    const hub = byName.get(key);
    if (hub) hubs.push(hub);
    else unlinked.push(name);
  }
  return { hubs, unlinked };
}

export function allocationContext(registrationId: string, enrollment: AllocationEnrollment, instance: AllocationInstance): AllocationContext {
  const { hubs, unlinked } = candidateHubs(enrollment, instance);
  return { registrationId, policy: selectPolicy(enrollment, instance), hubs, unlinked, listed: listedHubs(enrollment) !== undefined };
}

/** Hubs that take part in hashed / geoLatency allocation (§3.1 step 3). */
export function policyEligible(hubs: readonly LinkedHub[]): LinkedHub[] {
  return hubs.filter((h) => h.applyAllocationPolicy);
}

/** A uniform value in (0,1) from SHA-256(lowercase(registrationId) + "|" + hubName): 53 bits, never 0 or 1. */
export function hashUnit(registrationId: string, hubName: string): number {
  const digest = createHash('sha256').update(`${registrationKey(registrationId)}|${hubName}`, 'utf8').digest();
  const hi = digest.readUInt32BE(0) >>> 5; // 27 bits
  const lo = digest.readUInt32BE(4) >>> 6; // 26 bits
  const n = hi * 67108864 + lo; // 0 .. 2^53 - 1
  return (n + 0.5) / 9007199254740992;
}

/** Weight of a linked hub: 1..1000, anything else (null, 0, NaN) behaves as 1. */
export function effectiveWeight(hub: LinkedHub): number {
  const w = hub.allocationWeight;
  return Number.isFinite(w) && w >= 1 ? Math.min(1000, Math.floor(w)) : 1;
}

/**
 * Weighted rendezvous hashing (§3.2): score = -weight / ln(U); the highest score wins. A device's share of a hub is
 * weight / total weight, it stays put while hubs and weights do not change, and adding a hub moves only the devices
 * the new hub wins. Ties (practically impossible) go to the smaller hub name.
 */
export function rendezvousPick(registrationId: string, hubs: readonly LinkedHub[]): LinkedHub | undefined {
  let best: LinkedHub | undefined;
  let bestScore = -Infinity;
  for (const hub of hubs) {
    const score = -effectiveWeight(hub) / Math.log(hashUnit(registrationId, hub.name));
    if (score > bestScore || (score === bestScore && best !== undefined && hub.name < best.name)) {
      best = hub;
      bestScore = score;
    }
  }
  return best;
}

function noHub(ctx: AllocationContext, why: string): AllocationDecision {
  const stale = ctx.unlinked.length > 0 ? ` Listed hubs that are not linked: ${ctx.unlinked.join(', ')}.` : '';
  return { kind: 'failed', errorName: 'NoEligibleHub', message: `No eligible IoT hub: ${why}.${stale}`, policy: ctx.policy };
}

const hashed: Allocator = (ctx) => {
  const eligible = policyEligible(ctx.hubs);
  const hub = rendezvousPick(ctx.registrationId, eligible);
  if (!hub) {
    return noHub(ctx, ctx.hubs.length === 0 ? 'the enrollment allows no linked hub' : 'every candidate hub has applyAllocationPolicy=false');
  }
  return { kind: 'assigned', hub, policy: 'hashed' };
};

/** Static: the one hub the enrollment names wins, whatever its weight or applyAllocationPolicy flag (§3.4). */
const staticPolicy: Allocator = (ctx) => {
  if (!ctx.listed) return noHub(ctx, 'the static policy needs exactly one hub on the enrollment');
  if (ctx.hubs.length + ctx.unlinked.length > 1) return noHub(ctx, 'the static policy needs exactly one hub on the enrollment');
  const hub = ctx.hubs[0];
  if (!hub) return noHub(ctx, ctx.unlinked.length > 0 ? 'the static hub is not linked' : 'the static policy needs exactly one hub on the enrollment');
  return { kind: 'assigned', hub, policy: 'static' };
};

export interface GeoLatencyOptions {
  /** Latency from the device to a hub (default: the device-reported times only, `reportedLatency`). */
  estimate?: LatencyEstimator;
  /** Latencies within this many ms of the lowest count as a tie (default 0). */
  tieEpsilonMs?: number;
}

/**
 * geoLatency (§3.3, docs/api/allocation.md): among the eligible hubs (applyAllocationPolicy), the ones with the lowest
 * estimated latency (within `tieEpsilonMs`), weighted-hashed as `hashed` does; hubs without an estimate rank after
 * those with one; no estimate at all: the weighted hash over every eligible hub.
 */
export function geoLatencyAllocator(opts: GeoLatencyOptions = {}): Allocator {
  const estimate = opts.estimate ?? reportedLatency;
  return (ctx) => {
    const eligible = policyEligible(ctx.hubs);
    const { tier } = latencyTier(eligible, ctx.device, estimate, opts.tieEpsilonMs ?? 0);
    const hub = rendezvousPick(ctx.registrationId, tier);
    if (!hub) {
      return noHub(ctx, ctx.hubs.length === 0 ? 'the enrollment allows no linked hub' : 'every candidate hub has applyAllocationPolicy=false');
    }
    return { kind: 'assigned', hub, policy: 'geoLatency' };
  };
}

/** Without a network map, geoLatency uses what the device reported, else the weighted hash. */
const geoLatency: Allocator = geoLatencyAllocator();

/** The webhook is I/O: the provisioning layer supplies it (provisioning/allocation/custom-webhook.ts). */
const custom: Allocator = (ctx) => ({
  kind: 'failed',
  errorName: 'CustomAllocationFailed',
  message: 'Custom allocation failed: no webhook client is configured on this server.',
  policy: ctx.policy,
});

/** The built-in allocators, one per policy. The provisioning layer may override entries (e.g. custom → webhook). */
export const ALLOCATORS: Readonly<Record<AllocationPolicy, Allocator>> = { hashed, static: staticPolicy, geoLatency, custom };

/** Runs the allocation policy for a registration. */
export function allocate(
  registrationId: string,
  enrollment: AllocationEnrollment,
  instance: AllocationInstance,
  allocators: Readonly<Record<AllocationPolicy, Allocator>> = ALLOCATORS,
): AllocationDecision {
  const ctx = allocationContext(registrationId, enrollment, instance);
  return allocators[ctx.policy](ctx);
}

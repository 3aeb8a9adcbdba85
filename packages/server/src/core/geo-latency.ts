import { isIP } from 'node:net';
import type { AllocationDevice } from './allocation.ts';
import { isPlainObject } from './json.ts';
import type { LinkedHub } from '../provisioning/model.ts';

/**
 * The `geoLatency` allocation policy's model (dps-behavior.md §3.3, docs/api/allocation.md), pure: no I/O, no clock.
 *
 * A latency estimator answers "how many milliseconds from this device to this hub", or `undefined` when it cannot
 * tell. Built-ins:
 * - `reportedLatency`: round-trip times the device measured itself and sent in its registration payload,
 *   `payload.homing.latencyMs = { "<hub host name>": <ms>, ... }` (names case-insensitive; values must be finite
 *   numbers ≥ 0, others are ignored);
 * - `networkMapLatency(map)`: the device's source address → a location (longest matching CIDR prefix) → the
 *   configured latency from that location to the hub's `location`.
 * Estimators combine with `firstEstimate`: for each hub, the first estimator with an answer wins (the server puts
 * `reportedLatency` first, so what a device measured beats the map).
 */

/** Milliseconds from the device to the hub, or undefined when unknown. */
export type LatencyEstimator = (device: AllocationDevice | undefined, hub: LinkedHub) => number | undefined;

/** Network map configuration (DpsConfig.geoLatency). */
export interface NetworkMapConfig {
  /** CIDR ranges of device source addresses (IPv4 or IPv6) and the location they are in. */
  networks: readonly { cidr: string; location: string }[];
  /** Device location → hub location (`LinkedHub.location`, case-insensitive) → latency in ms. */
  latencyMs: Readonly<Record<string, Readonly<Record<string, number>>>>;
}

// ------------------------------------------------------------------------------------------------ addresses

/** An address as bytes: 4 for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6. */
export type AddressBytes = Uint8Array;

function parseIpv4(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (const [i, p] of parts.entries()) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIpv6(s: string): Uint8Array | undefined {
  if (isIP(s) !== 6) return undefined;
  let text = s;
  let tail: Uint8Array | undefined;
  // An embedded IPv4 tail (::ffff:127.0.0.1, 64:ff9b::192.0.2.1).
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    tail = parseIpv4(text.slice(lastColon + 1));
    if (!tail) return undefined;
    const h = ((tail[0] ?? 0) << 8) | (tail[1] ?? 0);
    const l = ((tail[2] ?? 0) << 8) | (tail[3] ?? 0);
    text = `${text.slice(0, lastColon + 1)}${h.toString(16)}:${l.toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const group = (part: string | undefined): string[] => (part === undefined || part === '' ? [] : part.split(':'));
  const head = group(halves[0]);
  const rest = halves.length === 2 ? group(halves[1]) : [];
  const fill = halves.length === 2 ? 8 - head.length - rest.length : 0;
  const words = [...head, ...Array.from({ length: fill }, () => '0'), ...rest];
  if (words.length !== 8) return undefined;
  const out = new Uint8Array(16);
  for (const [i, w] of words.entries()) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(w)) return undefined;
    const n = parseInt(w, 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  }
  return out;
}

function isV4Mapped(b: Uint8Array): boolean {
  if (b.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Parses an IP address as sockets report it: IPv4, IPv6 (a `%zone` suffix is dropped), IPv4-mapped IPv6
 * (`::ffff:127.0.0.5` → the IPv4 address). Undefined when it is not an address.
 */
export function parseAddress(address: string): AddressBytes | undefined {
  const s = address.trim();
  const v4 = parseIpv4(s);
  if (v4) return v4;
  const zone = s.indexOf('%');
  const v6 = parseIpv6(zone >= 0 ? s.slice(0, zone) : s);
  if (!v6) return undefined;
  return isV4Mapped(v6) ? v6.slice(12) : v6;
}

export interface Cidr {
  /** The network as configured (for messages). */
  text: string;
  bytes: AddressBytes;
  prefix: number;
}

/**
 * Parses `address/prefix` (a bare address is a host route). IPv4-mapped IPv6 ranges with a prefix ≥ 96
 * (`::ffff:127.0.0.0/104`) become the IPv4 range. Throws an Error naming the bad value.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addr = slash >= 0 ? text.slice(0, slash) : text;
  const raw = parseIpv4(addr.trim()) ?? parseIpv6(addr.trim());
  if (!raw) throw new Error(`"${text}" is not an IPv4 or IPv6 CIDR range`);
  const max = raw.length * 8;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1).trim();
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) throw new Error(`"${text}" has an invalid prefix length (0..${max})`);
    prefix = Number(p);
  }
  let bytes = raw;
  if (isV4Mapped(raw) && prefix >= 96) {
    bytes = raw.slice(12);
    prefix -= 96;
  }
  return { text, bytes: maskBytes(bytes, prefix), prefix };
}

function maskBytes(b: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = (b[i] ?? 0) & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** True when `address` (parsed) is inside `cidr` (same family only). */
export function cidrContains(cidr: Cidr, address: AddressBytes): boolean {
  if (cidr.bytes.length !== address.length) return false;
  const masked = maskBytes(address, cidr.prefix);
  for (let i = 0; i < masked.length; i++) if (masked[i] !== cidr.bytes[i]) return false;
  return true;
}

// ------------------------------------------------------------------------------------------------ estimators

/** A valid latency: a finite number ≥ 0. */
export function isLatency(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

/** The `payload.homing.latencyMs` object of a device, if it sent one. */
export function reportedLatencies(device: AllocationDevice | undefined): Map<string, number> | undefined {
  const homing = device?.payload?.homing;
  if (!isPlainObject(homing)) return undefined;
  const table = homing.latencyMs;
  if (!isPlainObject(table)) return undefined;
  const out = new Map<string, number>();
  for (const [host, ms] of Object.entries(table)) if (isLatency(ms)) out.set(host.toLowerCase(), ms);
  return out;
}

/** Round-trip times the device reported in `payload.homing.latencyMs` (by hub host name, case-insensitive). */
export const reportedLatency: LatencyEstimator = (device, hub) => reportedLatencies(device)?.get(hub.name.toLowerCase());

/** A compiled network map: where a device is, and the latency from there to a hub location. */
export interface NetworkMap {
  /** The location of a source address: the longest matching prefix wins; undefined when none matches. */
  locate(address: string): string | undefined;
  latency(deviceLocation: string, hubLocation: string): number | undefined;
}

/** Validates and compiles a network map. Throws an Error naming the first bad entry. */
export function compileNetworkMap(cfg: NetworkMapConfig): NetworkMap {
  if (!Array.isArray(cfg.networks)) throw new Error('networks must be an array of {cidr, location}');
  const networks = cfg.networks.map((n, i) => {
    if (typeof n !== 'object' || n === null || typeof n.cidr !== 'string' || typeof n.location !== 'string' || n.location === '') {
      throw new Error(`networks[${i}] must be {cidr: string, location: non-empty string}`);
    }
    let cidr: Cidr;
    try {
      cidr = parseCidr(n.cidr);
    } catch (e) {
      throw new Error(`networks[${i}]: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    return { cidr, location: n.location };
  });
  // Longest prefix first; equal prefixes keep their configured order.
  const ordered = networks.map((n, i) => ({ ...n, i })).sort((a, b) => b.cidr.prefix - a.cidr.prefix || a.i - b.i);
  if (!isPlainObject(cfg.latencyMs as unknown)) throw new Error('latencyMs must be an object: device location → hub location → ms');
  const table = new Map<string, Map<string, number>>();
  for (const [from, row] of Object.entries(cfg.latencyMs)) {
    if (!isPlainObject(row as unknown)) throw new Error(`latencyMs.${from} must be an object: hub location → ms`);
    const m = new Map<string, number>();
    for (const [to, ms] of Object.entries(row)) {
      if (!isLatency(ms)) throw new Error(`latencyMs.${from}.${to} must be a number ≥ 0 (ms)`);
      m.set(to.toLowerCase(), ms);
    }
    table.set(from.toLowerCase(), m);
  }
  return {
    locate(address) {
      const bytes = parseAddress(address);
      if (!bytes) return undefined;
      return ordered.find((n) => cidrContains(n.cidr, bytes))?.location;
    },
    latency(deviceLocation, hubLocation) {
      return table.get(deviceLocation.toLowerCase())?.get(hubLocation.toLowerCase());
    },
  };
}

/** Latency from the network map: device source address → location → hub location. */
export function networkMapLatency(map: NetworkMap): LatencyEstimator {
  return (device, hub) => {
    const address = device?.sourceAddress;
    if (address === undefined) return undefined;
    const where = map.locate(address);
    return where === undefined ? undefined : map.latency(where, hub.location);
  };
}

/** Per hub, the first estimator with an answer wins (order = precedence). */
export function firstEstimate(estimators: readonly LatencyEstimator[]): LatencyEstimator {
  return (device, hub) => {
    for (const e of estimators) {
      const ms = e(device, hub);
      if (isLatency(ms)) return ms;
    }
    return undefined;
  };
}

// ------------------------------------------------------------------------------------------------ ranking

export interface LatencyRanking {
  /** The hubs the weighted hash chooses among: the lowest-latency tier, or every hub when none has an estimate. */
  tier: LinkedHub[];
  /** The lowest latency, when some hub has an estimate. */
  bestMs?: number;
  /** Estimates by hub name, for logs and tests. */
  estimates: Map<string, number>;
}

/**
 * Ranks hubs by latency (§3.3): the hubs within `epsilonMs` of the lowest estimate form the tier the weighted hash
 * picks from; hubs without an estimate rank after every hub with one; when no hub has an estimate, the tier is every
 * hub (weighted hash over all, as `hashed`).
 */
export function latencyTier(hubs: readonly LinkedHub[], device: AllocationDevice | undefined, estimate: LatencyEstimator, epsilonMs = 0): LatencyRanking {
  const estimates = new Map<string, number>();
  let best = Infinity;
  for (const hub of hubs) {
    const ms = estimate(device, hub);
    if (!isLatency(ms)) continue;
    estimates.set(hub.name, ms);
    if (ms < best) best = ms;
  }
  if (estimates.size === 0) return { tier: [...hubs], estimates };
  const eps = isLatency(epsilonMs) ? epsilonMs : 0;
  const tier = hubs.filter((h) => {
    const ms = estimates.get(h.name);
    return ms !== undefined && ms <= best + eps;
  });
  return { tier, bestMs: best, estimates };
}

import { geoLatencyAllocator, type Allocator } from '../../core/allocation.ts';
import { compileNetworkMap, firstEstimate, isLatency, networkMapLatency, reportedLatency, type LatencyEstimator, type NetworkMapConfig } from '../../core/geo-latency.ts';

/** `DpsConfig.geoLatency`: the network map and the tie tolerance (docs/api/allocation.md). */
export interface GeoLatencyConfig extends NetworkMapConfig {
  /** Latencies within this many ms of the lowest tie (weighted hash across them). Default 0. */
  tieEpsilonMs?: number;
}

/** Checks a geoLatency config (throws an Error naming the bad field). */
export function validateGeoLatencyConfig(cfg: GeoLatencyConfig): void {
  compileNetworkMap(cfg);
  if (cfg.tieEpsilonMs !== undefined && !isLatency(cfg.tieEpsilonMs)) throw new Error('tieEpsilonMs must be a number ≥ 0 (ms)');
}

export interface GeoLatencyAllocatorOptions {
  /** The configured network map (absent: device-reported times only, else the weighted hash). */
  config?: GeoLatencyConfig | undefined;
  /**
   * More estimators, consulted after the device-reported times and before the network map (e.g. a GeoIP lookup, or
   * measurements an operator collects). Per hub, the first estimator with an answer wins.
   */
  estimators?: readonly LatencyEstimator[] | undefined;
}

/**
 * The geoLatency allocator of a server. Precedence per hub: the device-reported round-trip time
 * (`payload.homing.latencyMs`), then the extra estimators, then the network map. Synchronous and pure once built.
 */
export function createGeoLatencyAllocator(opts: GeoLatencyAllocatorOptions = {}): Allocator {
  const estimators: LatencyEstimator[] = [reportedLatency, ...(opts.estimators ?? [])];
  if (opts.config) estimators.push(networkMapLatency(compileNetworkMap(opts.config)));
  return geoLatencyAllocator({ estimate: firstEstimate(estimators), tieEpsilonMs: opts.config?.tieEpsilonMs ?? 0 });
}

import type { Clock } from '../../core/clock.ts';
import type { LatencyEstimator } from '../../core/geo-latency.ts';
import type { Logger } from '../../observability/logger.ts';
import type { AllocationPolicy } from '../model.ts';
import type { AsyncAllocator } from '../registration.ts';
import { createCustomWebhookAllocator, type CustomAllocationConfig, type WebhookTransport } from './custom-webhook.ts';
import { createGeoLatencyAllocator, type GeoLatencyConfig } from './geo-latency.ts';

export {
  createCustomWebhookAllocator,
  buildAllocationRequest,
  parseAllocationResponse,
  signWebhookBody,
  redactUrl,
  nodeWebhookTransport,
  validateCustomAllocationConfig,
  WebhookCallError,
  DEFAULT_WEBHOOK_TIMEOUT_MS,
  MAX_WEBHOOK_RESPONSE_BYTES,
  type CustomAllocationConfig,
  type WebhookTransport,
  type WebhookRequest,
  type WebhookResponse,
} from './custom-webhook.ts';
export { createGeoLatencyAllocator, validateGeoLatencyConfig, type GeoLatencyConfig } from './geo-latency.ts';

/** The allocation settings of the provisioning service (`DpsConfig.geoLatency`, `DpsConfig.customAllocation`). */
export interface AllocatorConfig {
  geoLatency?: GeoLatencyConfig | undefined;
  customAllocation?: CustomAllocationConfig | undefined;
}

export interface AllocatorDeps {
  logger: Logger;
  clock?: Clock;
  /** Replaces the webhook HTTP client (tests). */
  webhookTransport?: WebhookTransport;
  /** Extra geoLatency estimators, after the device-reported times and before the network map. */
  latencyEstimators?: readonly LatencyEstimator[];
}

/**
 * The allocators the provisioning layer supplies to RegistrationService: `geoLatency` with the configured network map
 * and `custom` as the webhook client (docs/api/allocation.md). `hashed` and `static` stay the core's.
 */
export function createAllocators(cfg: AllocatorConfig, deps: AllocatorDeps): Partial<Record<AllocationPolicy, AsyncAllocator>> {
  return {
    geoLatency: createGeoLatencyAllocator({ config: cfg.geoLatency, estimators: deps.latencyEstimators }),
    custom: createCustomWebhookAllocator({
      config: cfg.customAllocation,
      logger: deps.logger,
      ...(deps.clock ? { clock: deps.clock } : {}),
      ...(deps.webhookTransport ? { transport: deps.webhookTransport } : {}),
    }),
  };
}

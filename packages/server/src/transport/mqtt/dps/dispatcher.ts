import { operationStatusRoute } from './handlers/operation-status.ts';
import { registerRoute } from './handlers/register.ts';
import type { DpsPublishRoute } from './routes.ts';
import { RESPONSE_FILTER } from './topics.ts';

/**
 * The topic table of the DPS device endpoint (one handler file per topic family). Anything not listed is refused:
 * an unknown publish topic closes the connection, an unknown filter gets SUBACK 128 (dps-behavior.md §2.9: only the
 * documented topics and filters are accepted).
 */
const PUBLISH_ROUTES: readonly DpsPublishRoute[] = [registerRoute, operationStatusRoute];

export function publishRouteFor(topic: string): DpsPublishRoute | undefined {
  for (const r of PUBLISH_ROUTES) if (r.matches(topic)) return r;
  return undefined;
}

/** Granted QoS of a SUBSCRIBE filter: min(requested, 1) for `$dps/registrations/res/#` (QoS 2 is granted 1), else 128. */
export function grantFor(filter: string, requestedQos: number): number {
  return filter === RESPONSE_FILTER ? Math.min(requestedQos, 1) : 128;
}

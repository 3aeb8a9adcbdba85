import { c2dSubscribeRoute } from './handlers/c2d.ts';
import { methodResponseRoute, methodsSubscribeRoute } from './handlers/methods.ts';
import { telemetryRoute } from './handlers/telemetry.ts';
import { desiredSubscribeRoute } from './handlers/twin-desired.ts';
import { twinGetRoute, twinResponsesSubscribeRoute } from './handlers/twin-get.ts';
import { twinReportedRoute } from './handlers/twin-reported.ts';
import type { PublishRoute, SubscribeRoute } from './routes.ts';

/**
 * The topic table of the hub device endpoint (one handler file per topic family, aedes lib/handlers style).
 * Anything not listed is refused: unknown publish topics close the connection, unknown filters get SUBACK 128.
 */
const PUBLISH_ROUTES: readonly PublishRoute[] = [telemetryRoute, twinReportedRoute, twinGetRoute, methodResponseRoute];

const SUBSCRIBE_ROUTES: readonly SubscribeRoute[] = [
  twinResponsesSubscribeRoute,
  desiredSubscribeRoute,
  methodsSubscribeRoute,
  c2dSubscribeRoute,
];

export function publishRouteFor(topic: string): PublishRoute | undefined {
  for (const r of PUBLISH_ROUTES) if (r.matches(topic)) return r;
  return undefined;
}

export function subscribeRouteFor(filter: string, deviceId: string): SubscribeRoute | undefined {
  for (const r of SUBSCRIBE_ROUTES) if (r.matches(filter, deviceId)) return r;
  return undefined;
}

import type { JsonObject } from '../../../../core/json.ts';
import { SUB_DESIRED, type DeviceScope, type SubscribeRoute } from '../routes.ts';

/**
 * Desired properties: SUBSCRIBE `$iothub/twin/PATCH/properties/desired/#`; patches made on the service side are
 * delivered on `$iothub/twin/PATCH/properties/desired/?$version=n` (the JSON carries `$version` too), only to a
 * session that holds the subscription.
 */
export const desiredSubscribeRoute: SubscribeRoute = {
  name: 'twin-desired',
  flag: SUB_DESIRED,
  matches: (filter) => filter === '$iothub/twin/PATCH/properties/desired/#',
};

export function deliverDesiredPatch(scope: DeviceScope, patch: JsonObject, version: number): void {
  if (!scope.subscribed(SUB_DESIRED)) return;
  scope.link.publish(`$iothub/twin/PATCH/properties/desired/?$version=${version}`, JSON.stringify(patch), 0);
}

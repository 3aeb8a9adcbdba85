import type { InboundPublish, PublishOutcome } from '../../realm.ts';
import { queryParam, topicQuery } from '../query.ts';
import { SUB_METHODS, type DeviceScope, type PublishRoute, type SubscribeRoute } from '../routes.ts';

/**
 * Direct methods: SUBSCRIBE `$iothub/methods/POST/#` makes the device accept methods; requests go out on
 * `$iothub/methods/POST/{name}/?$rid={rid}` with a JSON payload; the device answers on
 * `$iothub/methods/res/{status}/?$rid={rid}`.
 */
const RES = '$iothub/methods/res/';

export const methodsSubscribeRoute: SubscribeRoute = {
  name: 'methods',
  flag: SUB_METHODS,
  matches: (filter) => filter === '$iothub/methods/POST/#',
  changed(scope: DeviceScope, subscribed: boolean): void {
    // Invocations waiting for the device to accept methods can go on.
    if (subscribed) scope.realm.hub.sessions.notify(scope.deviceId);
  },
};

export function sendMethodRequest(scope: DeviceScope, methodName: string, rid: string, payload: Buffer): void {
  // The SDK answers an empty payload with 400 without calling the handler: always send JSON.
  scope.link.publish(`$iothub/methods/POST/${methodName}/?$rid=${rid}`, payload.length > 0 ? payload : 'null', 0);
}

export const methodResponseRoute: PublishRoute = {
  name: 'method-response',
  matches: (topic) => topic.startsWith(RES),
  handle(scope: DeviceScope, msg: InboundPublish): PublishOutcome {
    const { topic } = msg;
    const slash = topic.indexOf('/', RES.length);
    const statusText = slash < 0 ? '' : topic.slice(RES.length, slash);
    if (!/^\d{1,9}$/.test(statusText) || topic.charCodeAt(slash + 1) !== 0x3f /* ? */) return { close: 'malformed method response topic' };
    const rid = queryParam(topicQuery(topic), '$rid');
    if (rid === undefined) return { close: 'method response without $rid' };
    scope.realm.hub.methodResponse(scope.deviceId, rid, Number(statusText), msg.payload);
    return undefined;
  },
};

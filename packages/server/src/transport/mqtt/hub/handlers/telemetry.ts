import type { InboundPublish, PublishOutcome } from '../../realm.ts';
import { parsePropertyBag } from '../query.ts';
import type { DeviceScope, PublishRoute } from '../routes.ts';

/**
 * Device-to-cloud telemetry: PUBLISH (QoS 0 or 1) on `devices/{deviceId}/messages/events/{propertyBag}`.
 * A device may only publish on its own topic; a payload over the limit closes the connection, as IoT Hub does.
 */
const PREFIX = 'devices/';
const EVENTS = '/messages/events';

export const telemetryRoute: PublishRoute = {
  name: 'telemetry',
  matches: (topic) => topic.startsWith(PREFIX),
  handle(scope: DeviceScope, msg: InboundPublish): PublishOutcome {
    const { topic } = msg;
    const id = scope.deviceId;
    const at = PREFIX.length + id.length;
    if (!topic.startsWith(id, PREFIX.length) || topic.charCodeAt(at) !== 0x2f /* / */) {
      return { close: "publish on another device's topic" };
    }
    if (!topic.startsWith(EVENTS, at)) return { close: 'unknown device topic' };
    const rest = topic.slice(at + EVENTS.length);
    if (rest.length > 0 && rest[0] !== '/') return { close: 'unknown device topic' };
    if (msg.payload.length > scope.realm.maxTelemetryBytes) return { close: 'telemetry payload larger than the limit' };
    const { systemProperties, properties } = parsePropertyBag(rest.slice(1));
    const { hub } = scope.realm;
    hub.recordTelemetry({ deviceId: id, systemProperties, properties, body: msg.payload });
    scope.link.metrics?.telemetryMessages.inc({ hub: hub.hubId });
    return undefined;
  },
};

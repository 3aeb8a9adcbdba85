import { HomingError } from '../../../../core/errors.ts';
import type { JsonValue } from '../../../../core/json.ts';
import type { InboundPublish, PublishOutcome } from '../../realm.ts';
import type { DeviceScope, PublishRoute } from '../routes.ts';
import { requestId, respond, respondError } from './twin-response.ts';

/**
 * Reported properties: PUBLISH `$iothub/twin/PATCH/properties/reported/?$rid=R` with a JSON merge patch ->
 * `hub.patchReported` -> `$iothub/twin/res/204/?$rid=R&$version=<new reported version>` with an empty payload.
 * Malformed JSON, an invalid patch or one over the size limit is answered 400 with an error body; the connection
 * stays open.
 */
const PATCH = '$iothub/twin/PATCH/properties/reported/';

export const twinReportedRoute: PublishRoute = {
  name: 'twin-reported',
  matches: (topic) => topic.startsWith(PATCH) && (topic.length === PATCH.length || topic.charCodeAt(PATCH.length) === 0x3f /* ? */),
  async handle(scope: DeviceScope, msg: InboundPublish): Promise<PublishOutcome> {
    const rid = requestId(msg.topic);
    const { realm } = scope;
    try {
      if (msg.payload.length > realm.maxTwinPatchBytes) {
        throw new HomingError('TwinTooLarge', `The reported properties patch exceeds ${realm.maxTwinPatchBytes} bytes.`);
      }
      let patch: JsonValue;
      try {
        patch = JSON.parse(msg.payload.toString('utf8')) as JsonValue;
      } catch {
        throw new HomingError('InvalidJson', 'The reported properties patch is not valid JSON.');
      }
      const version = await realm.hub.patchReported(scope.deviceId, patch);
      scope.link.metrics?.twinUpdates.inc({ hub: realm.hub.hubId, side: 'device' });
      respond(scope, 204, rid, '', `&$version=${version}`);
    } catch (e) {
      respondError(scope, rid, e);
    }
    return undefined;
  },
};

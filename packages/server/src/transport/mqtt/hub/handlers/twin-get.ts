import { devicePropertiesDoc } from '../../../../core/twin.ts';
import type { InboundPublish, PublishOutcome } from '../../realm.ts';
import { SUB_TWIN_RESPONSES, type DeviceScope, type PublishRoute, type SubscribeRoute } from '../routes.ts';
import { requestId, respond, respondError } from './twin-response.ts';

/**
 * Twin GET: SUBSCRIBE `$iothub/twin/res/#`, then PUBLISH `$iothub/twin/GET/?$rid=R` ->
 * `$iothub/twin/res/200/?$rid=R` with `{"desired":{...,"$version":n},"reported":{...,"$version":m}}`.
 */
const GET = '$iothub/twin/GET/';

export const twinResponsesSubscribeRoute: SubscribeRoute = {
  name: 'twin-responses',
  flag: SUB_TWIN_RESPONSES,
  matches: (filter) => filter === '$iothub/twin/res/#',
};

export const twinGetRoute: PublishRoute = {
  name: 'twin-get',
  matches: (topic) => topic.startsWith(GET) && (topic.length === GET.length || topic.charCodeAt(GET.length) === 0x3f /* ? */),
  async handle(scope: DeviceScope, msg: InboundPublish): Promise<PublishOutcome> {
    const rid = requestId(msg.topic);
    try {
      const { twin } = await scope.realm.hub.getTwinState(scope.deviceId);
      respond(scope, 200, rid, JSON.stringify(devicePropertiesDoc(twin)));
    } catch (e) {
      respondError(scope, rid, e);
    }
    return undefined;
  },
};

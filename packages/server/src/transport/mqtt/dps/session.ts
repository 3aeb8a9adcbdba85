import type { ISubscription } from 'mqtt-packet';
import { HomingError } from '../../../core/errors.ts';
import type { DeviceCredential } from '../../../provisioning/registration.ts';
import type { InboundPublish, MqttLink, PublishOutcome, RealmSession } from '../realm.ts';
import { grantFor, publishRouteFor } from './dispatcher.ts';
import { respondError } from './handlers/response.ts';
import type { DpsRealmContext, DpsScope } from './routes.ts';
import { isUsableRid, queryParam, topicQuery } from './topics.ts';

/**
 * One device connection of the DPS realm. It holds the identity from the CONNECT (id scope, registration id), the
 * credential and its link: nothing else. Subscriptions are not tracked (there is one filter, and answers go to the
 * requesting connection anyway), and requests carry no state between them: the SDK correlates by `$rid`.
 *
 * Request handling: an unknown topic closes the connection; a known one without a usable `$rid` closes it too (no
 * answer could be matched); a payload over the limit is answered 413; everything else goes to its handler, which
 * answers exactly once. PUBACK (QoS 1) follows the answer.
 */
export class DpsDeviceSession implements RealmSession, DpsScope {
  constructor(
    readonly idScope: string,
    readonly registrationId: string,
    readonly credential: DeviceCredential,
    readonly link: MqttLink,
    readonly realm: DpsRealmContext,
    readonly sourceAddress?: string,
  ) {}

  subscribe(subscriptions: readonly ISubscription[]): number[] {
    return subscriptions.map((s) => grantFor(s.topic, s.qos));
  }

  unsubscribe(_topics: readonly string[]): void {
    // Nothing to forget; the transport always answers UNSUBACK (the SDK's register() waits for it).
  }

  publish(msg: InboundPublish): PublishOutcome | Promise<PublishOutcome> {
    const route = publishRouteFor(msg.topic);
    if (!route) return { close: 'publish on an unknown DPS topic' };
    const query = topicQuery(msg.topic);
    const rid = queryParam(query, '$rid');
    if (rid === undefined || !isUsableRid(rid)) return { close: 'DPS request without a usable $rid' };
    if (msg.payload.length > this.realm.maxPayloadBytes) {
      respondError(this, rid, new HomingError('MessageTooLarge', `The request payload is larger than ${this.realm.maxPayloadBytes} bytes.`));
      return undefined;
    }
    return route.handle(this, { rid, query, msg });
  }

  puback(_messageId: number): void {
    // Answers are sent with QoS 0.
  }

  closed(_reason: string): void {
    // No registrations with other services: nothing to release.
  }
}

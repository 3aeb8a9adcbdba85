import { errorResponse } from '../../errors.ts';
import { queryParam, topicQuery } from '../query.ts';
import type { DeviceScope } from '../routes.ts';

/**
 * Answers to twin requests on `$iothub/twin/res/{status}/?$rid={rid}[&...]`. Shared by the twin GET and reported
 * PATCH handlers. Every twin request gets an answer, errors included (the device SDK has no timeout and waits
 * forever otherwise); answers go to the device's connection even without a `$iothub/twin/res/#` subscription,
 * because the official SDK does not re-subscribe it after a reconnect.
 */
const RES = '$iothub/twin/res/';

/** The request id of a twin request topic, verbatim ('' when absent). */
export function requestId(topic: string): string {
  return queryParam(topicQuery(topic), '$rid') ?? '';
}

export function respond(scope: DeviceScope, status: number, rid: string, payload: string, extraQuery = ''): void {
  scope.link.publish(`${RES}${status}/?$rid=${rid}${extraQuery}`, payload, 0);
}

export function respondError(scope: DeviceScope, rid: string, e: unknown): void {
  const { realm, link } = scope;
  const r = errorResponse(e, link.log, realm.clock.now(), realm.ids.uuid().replace(/-/g, ''));
  link.log.debug({ conn: link.id, status: r.status }, 'twin request failed');
  respond(scope, r.status, rid, r.body);
}

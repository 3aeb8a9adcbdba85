import type { RegistrationReply } from '../../../../provisioning/registration.ts';
import { dpsErrorAnswer } from '../errors.ts';
import type { DpsScope } from '../routes.ts';
import { responseTopic, retryAfterValue } from '../topics.ts';

/**
 * Answers on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after=N]`, shared by the register and operation
 * status handlers. Every request gets exactly one answer with a JSON payload (the SDK crashes on anything else and
 * waits 30 s for a missing one). Answers are QoS 0 and go to the requesting connection whether or not it subscribed
 * `$dps/registrations/res/#`.
 */
export function respond(scope: DpsScope, status: number, rid: string, payload: string, retryAfterSeconds?: number): void {
  scope.link.publish(responseTopic(status, rid, retryAfterSeconds), payload, 0);
  scope.realm.onAnswer?.(scope.idScope, status);
}

/** A use-case reply: 200 with the final status, or 202 `assigning` with an integer retry-after ≥ 1. */
export function respondReply(scope: DpsScope, rid: string, r: RegistrationReply): void {
  const retryAfter = r.httpStatus === 202 ? retryAfterValue(r.retryAfterSeconds, 1) : undefined;
  respond(scope, r.httpStatus, rid, JSON.stringify(r.body), retryAfter);
}

export function respondError(scope: DpsScope, rid: string, e: unknown): void {
  const { realm, link } = scope;
  const a = dpsErrorAnswer(e, realm.log, realm.clock.now(), realm.ids.uuid().replace(/-/g, ''), realm.serverErrorRetryAfterSeconds);
  link.log.debug({ conn: link.id, status: a.status }, 'DPS request failed');
  respond(scope, a.status, rid, a.body, a.retryAfterSeconds);
}


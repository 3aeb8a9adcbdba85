import { HomingError } from '../../../../core/errors.ts';
import type { PublishOutcome } from '../../realm.ts';
import type { DpsPublishRoute, DpsRequest, DpsScope } from '../routes.ts';
import { REGISTER_PREFIX, topicIs } from '../topics.ts';
import { respondError, respondReply } from './response.ts';

/**
 * Register: PUBLISH `$dps/registrations/PUT/iotdps-register/?$rid={rid}` with the DeviceRegistration JSON
 * (`{"registrationId":"...","payload":{...}}`) -> `$dps/registrations/res/200/?$rid={rid}` with the final
 * RegistrationOperationStatus when the assignment ends within the response budget, else
 * `$dps/registrations/res/202/?$rid={rid}&retry-after=N` with `{"operationId","status":"assigning"}`.
 * The registration id is the one of the CONNECT username (the HTTPS path's); the use case checks the body's.
 */
export const registerRoute: DpsPublishRoute = {
  name: 'register',
  matches: (topic) => topicIs(topic, REGISTER_PREFIX),
  async handle(scope: DpsScope, req: DpsRequest): Promise<PublishOutcome> {
    try {
      const body = parseJsonPayload(req.msg.payload);
      const { realm } = scope;
      // register waits up to the budget itself (as over HTTPS): an assignment that ends in time is one store write
      // and its reply is final; otherwise the reply is 202 `assigning`.
      const pending = await realm.registration.register(scope.idScope, scope.registrationId, body, scope.credential, {
        budgetMs: realm.responseBudgetMs,
        ...(scope.sourceAddress ? { sourceAddress: scope.sourceAddress } : {}),
      });
      respondReply(scope, req.rid, pending.reply);
    } catch (e) {
      respondError(scope, req.rid, e);
    }
    return undefined;
  },
};

/**
 * The request payload as JSON (400 InvalidJson otherwise). Objects with a `__proto__` key are refused, as the HTTPS
 * transport's JSON parser does.
 */
export function parseJsonPayload(payload: Buffer): unknown {
  const text = payload.toString('utf8');
  if (text.trim().length === 0) throw new HomingError('InvalidJson', 'The request payload is empty; a JSON DeviceRegistration is expected.');
  try {
    if (!text.includes('__proto__')) return JSON.parse(text) as unknown;
    return JSON.parse(text, (key: string, value: unknown) => {
      if (key === '__proto__') throw new SyntaxError('__proto__ key');
      return value;
    }) as unknown;
  } catch {
    throw new HomingError('InvalidJson', 'The request payload is not valid JSON.');
  }
}

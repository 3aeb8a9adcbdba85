import { HomingError } from '../../../../core/errors.ts';
import type { PublishOutcome } from '../../realm.ts';
import type { DpsPublishRoute, DpsRequest, DpsScope } from '../routes.ts';
import { OPERATION_STATUS_PREFIX, queryParam, safeDecode, topicIs } from '../topics.ts';
import { withinBudget } from '../../../../provisioning/registration.ts';
import { respondError, respondReply } from './response.ts';

/**
 * Operation status (the poll): PUBLISH `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`
 * (the SDK's payload is one space and is ignored) -> `$dps/registrations/res/200/?$rid={rid}` when the operation has
 * ended, else `$dps/registrations/res/202/?$rid={rid}&retry-after=N` with `status: assigning`. The same response
 * budget as a register applies. A missing operationId is a 400; an unknown one a 404 (after authentication).
 */
const MAX_OPERATION_ID_LENGTH = 256;

export const operationStatusRoute: DpsPublishRoute = {
  name: 'operation-status',
  matches: (topic) => topicIs(topic, OPERATION_STATUS_PREFIX),
  async handle(scope: DpsScope, req: DpsRequest): Promise<PublishOutcome> {
    try {
      const raw = queryParam(req.query, 'operationId');
      const operationId = raw === undefined ? '' : safeDecode(raw);
      if (operationId.length === 0) throw new HomingError('ArgumentInvalid', 'The operationId topic parameter is required.');
      if (operationId.length > MAX_OPERATION_ID_LENGTH) throw new HomingError('ArgumentInvalid', 'The operationId is too long.');
      const { realm } = scope;
      const pending = await realm.registration.operationStatus(scope.idScope, scope.registrationId, operationId, scope.credential);
      respondReply(scope, req.rid, await withinBudget(pending, realm.responseBudgetMs));
    } catch (e) {
      respondError(scope, req.rid, e);
    }
    return undefined;
  },
};

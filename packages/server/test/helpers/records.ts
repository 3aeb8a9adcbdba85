import assert from 'node:assert/strict';
import type { RegistrationRecord } from '../../src/provisioning/model.ts';
import type { RunningHoming } from '../../src/server.ts';
import { realIds } from './ids.ts';

/**
 * Writes a registration record straight into the running server's store: an assigned record of an individual
 * symmetric-key enrollment, with `over` applied.
 */
export async function putRegistrationRecord(homing: RunningHoming, registrationId: string, over: Partial<RegistrationRecord> = {}): Promise<void> {
  const now = new Date().toISOString();
  const rec: RegistrationRecord = {
    registrationId,
    createdDateTimeUtc: now,
    lastUpdatedDateTimeUtc: now,
    status: 'assigned',
    etag: realIds.uuid(),
    enrollment: { kind: 'individual', registrationId },
    attestationType: 'symmetricKey',
    ...over,
  };
  assert.equal(await homing.store.provisioning.putRegistration(homing.dps.instance.name, rec, { kind: 'any' }), 'ok');
}

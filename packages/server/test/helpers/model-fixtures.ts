import type { EnrollmentGroup } from '../../src/provisioning/model.ts';

/** An enabled symmetric-key enrollment group `g` (reprovisioning migrates device data), with `o` applied. */
export function enrollmentGroupFixture(o: Partial<EnrollmentGroup> = {}): EnrollmentGroup {
  return {
    enrollmentGroupId: 'g',
    attestation: { type: 'symmetricKey' },
    capabilities: { iotEdge: false },
    provisioningStatus: 'enabled',
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    etag: 'e',
    createdDateTimeUtc: '',
    lastUpdatedDateTimeUtc: '',
    ...o,
  };
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isHomingError } from '../../../src/core/errors.ts';
import { assignedDeviceId, isValidRegistrationId, registrationKey, sameRegistrationId, validateRegistrationId } from '../../../src/core/registration-id.ts';
import { buildSas, deriveDeviceKey, strictEncode } from '../../../src/core/sas.ts';
import { authenticateDevice, parseDeviceSas, type EnrollmentMatch } from '../../../src/provisioning/registration/device-auth.ts';
import { createRuntimeFixture, newKey } from './fixture.ts';

test('registration ids: charset, last character, length', () => {
  for (const ok of ['a', 'dev-1', 'Dev.A_b:c-', 'x'.repeat(128), '0', 'a:b.c_d-9', 'ends-with-dash-']) assert.ok(isValidRegistrationId(ok), ok);
  for (const bad of ['', 'x'.repeat(129), 'dev 1', 'dev/1', 'dev.', 'dev_', 'dev:', 'dév', 'a+b', 'a%20', 'a#b', 5, null, undefined]) {
    assert.equal(isValidRegistrationId(bad), false, String(bad));
  }
  assert.throws(() => validateRegistrationId('bad id'), (e: unknown) => isHomingError(e) && e.code === 400008 && e.status === 400);
});

test('registration ids are case-insensitive', () => {
  assert.equal(registrationKey('Dev-A'), 'dev-a');
  assert.ok(sameRegistrationId('Dev-A', 'dev-a'));
  assert.equal(sameRegistrationId('dev-a', 'dev-b'), false);
});

test('device ids: group → registration id as presented; individual → deviceId ?? registration id', () => {
  assert.equal(assignedDeviceId({ kind: 'group', enrollmentGroupId: 'g' }, 'Sn-001'), 'Sn-001');
  assert.equal(assignedDeviceId({ kind: 'individual', enrollment: { registrationId: 'dev-1', deviceId: 'custom-7' } }, 'DEV-1'), 'custom-7');
  assert.equal(assignedDeviceId({ kind: 'individual', enrollment: { registrationId: 'dev-1' } }, 'dev-1'), 'dev-1');
  // A group device keeps the device id of its first registration through that group (hub ids are case-sensitive).
  const prior = { deviceId: 'Sn-001', enrollment: { kind: 'group' as const, enrollmentGroupId: 'G' } };
  assert.equal(assignedDeviceId({ kind: 'group', enrollmentGroupId: 'g' }, 'sn-001', prior), 'Sn-001');
  assert.equal(assignedDeviceId({ kind: 'group', enrollmentGroupId: 'other' }, 'sn-001', prior), 'sn-001');
});

test('device SAS: skn, expiry with 5 minutes of skew, sr of this scope and registration id', () => {
  const key = newKey();
  const now = 1_800_000_000;
  const sas = (o: { sr?: string; se?: number; skn?: string } = {}) =>
    buildSas({ sr: o.sr ?? '0neSCOPE/registrations/dev-1', keyBase64: key, expirySeconds: o.se ?? now + 3600, keyName: o.skn ?? 'registration' });
  assert.ok(parseDeviceSas(sas(), '0neSCOPE', 'dev-1', now));
  assert.ok(parseDeviceSas(sas({ sr: '0nescope/Registrations/DEV-1' }), '0neSCOPE', 'dev-1', now), 'case-insensitive sr');
  assert.ok(parseDeviceSas(sas({ sr: strictEncode('0neSCOPE/registrations/dev-1') }), '0neSCOPE', 'dev-1', now), 'URL-encoded sr');
  assert.ok(parseDeviceSas(sas({ se: now - 299 }), '0neSCOPE', 'dev-1', now), 'expired within the skew');
  assert.equal(parseDeviceSas(sas({ se: now - 301 }), '0neSCOPE', 'dev-1', now), undefined, 'expired');
  assert.equal(parseDeviceSas(sas({ skn: 'iothubowner' }), '0neSCOPE', 'dev-1', now), undefined, 'skn');
  assert.equal(parseDeviceSas(sas({ sr: '0neSCOPE/registrations/dev-2' }), '0neSCOPE', 'dev-1', now), undefined, 'other registration');
  assert.equal(parseDeviceSas(sas({ sr: '0neOTHER/registrations/dev-1' }), '0neSCOPE', 'dev-1', now), undefined, 'other scope');
  assert.equal(parseDeviceSas(sas({ sr: '0neSCOPE/registrations/dev-1/x' }), '0neSCOPE', 'dev-1', now), undefined, 'longer sr');
  assert.equal(parseDeviceSas('SharedAccessSignature garbage', '0neSCOPE', 'dev-1', now), undefined);
  assert.equal(parseDeviceSas(undefined, '0neSCOPE', 'dev-1', now), undefined);
});

async function expect401(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (e: unknown) => isHomingError(e) && e.status === 401 && e.code === 401000);
}

test('enrollment matching: individual first, groups by derived key, blocklisting, ambiguity', async () => {
  const f = await createRuntimeFixture();
  try {
    const inst = { name: f.instanceName, idScope: f.idScope };
    const now = Math.floor(f.clock.now() / 1000);
    const match = (id: string, key: string, record?: Parameters<typeof authenticateDevice>[5]) =>
      authenticateDevice(f.store.provisioning, inst, id, { kind: 'sas', authorization: f.deviceSas(id, key) }, now, record);
    const kind = (m: EnrollmentMatch) => (m.kind === 'group' ? `group:${m.group.enrollmentGroupId}` : `${m.kind}:${m.enrollment.registrationId}`);

    const g1 = await f.addGroup('G1');
    const ind = await f.addIndividual('dev-1');
    const sk = ind.attestation.symmetricKey!;

    // Individual: primary or secondary key.
    assert.equal(kind(await match('dev-1', sk.primaryKey)), 'individual:dev-1');
    assert.equal(kind(await match('dev-1', sk.secondaryKey)), 'individual:dev-1');
    assert.equal(kind(await match('DEV-1', sk.primaryKey)), 'individual:dev-1', 'case-insensitive lookup');
    // An individual enrollment is the only candidate: a valid group credential does not get past it.
    await expect401(match('dev-1', f.derivedKey(g1, 'dev-1')));
    await expect401(match('dev-1', newKey()));

    // Groups: derived primary or secondary key; never the group key itself.
    assert.equal(kind(await match('sn-001', f.derivedKey(g1, 'sn-001'))), 'group:G1');
    assert.equal(kind(await match('sn-001', f.derivedKey(g1, 'sn-001', 'secondary'))), 'group:G1');
    await expect401(match('sn-001', g1.attestation.symmetricKey!.primaryKey));
    await expect401(match('sn-001', f.derivedKey(g1, 'sn-002')));

    // Blocklist: a disabled individual enrollment (any keys) with the id of a group device.
    await f.addIndividual('dev-7', { status: 'disabled' });
    const blocked = await match('dev-7', f.derivedKey(g1, 'dev-7'));
    assert.equal(blocked.kind, 'blocked');
    // ... but a stranger without a group credential still gets 401.
    await expect401(match('dev-7', newKey()));

    // Two groups accepting one token (duplicated keys): 409.
    const g2 = await f.addGroup('G2', { attestation: { type: 'symmetricKey', symmetricKey: { ...g1.attestation.symmetricKey! } } });
    await assert.rejects(match('sn-009', f.derivedKey(g1, 'sn-009')), (e: unknown) => isHomingError(e) && e.status === 409);
    // The group of an existing record is tried first and wins.
    const record = {
      record: {
        registrationId: 'sn-009', createdDateTimeUtc: 'x', lastUpdatedDateTimeUtc: 'x', status: 'assigned' as const, etag: 'e',
        enrollment: { kind: 'group' as const, enrollmentGroupId: 'G2' }, attestationType: 'symmetricKey' as const,
      },
    };
    assert.equal(kind(await match('sn-009', f.derivedKey(g2, 'sn-009'), record)), 'group:G2');

    // Non-SAS credentials are refused.
    await expect401(authenticateDevice(f.store.provisioning, inst, 'sn-001', { kind: 'none' }, now));
    // The derived key is computed over the id as presented.
    assert.equal(f.derivedKey(g1, 'Sn-001'), deriveDeviceKey(g1.attestation.symmetricKey!.primaryKey, 'Sn-001'));
  } finally {
    await f.close();
  }
});

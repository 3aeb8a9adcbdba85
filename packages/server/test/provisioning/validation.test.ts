import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import {
  normalizeIfMatch,
  parseEnrollmentGroup,
  parseIndividualEnrollment,
  type ParseContext,
} from '../../src/provisioning/enrollments.ts';
import { certificateInfo } from '../../src/provisioning/enrollments/x509.ts';
import { certificateVersionOf } from '../../src/core/x509-chain.ts';
import type { LinkedHub } from '../../src/provisioning/model.ts';
import { HUB1, HUB2, hubConnectionString, key, testCertificate, throwsWith } from './fixtures.ts';

const hubs: LinkedHub[] = [
  { name: HUB1, connectionString: hubConnectionString(HUB1), location: 'west', allocationWeight: 1, applyAllocationPolicy: true },
  { name: HUB2, connectionString: hubConnectionString(HUB2), location: 'east', allocationWeight: 1, applyAllocationPolicy: true },
];
let generated = 0;
const ctx: ParseContext = {
  linkedHubs: hubs,
  newKey: () => {
    generated++;
    return Buffer.alloc(64, generated).toString('base64');
  },
};
const SYM = { type: 'symmetricKey' } as const;

function individual(over: Record<string, unknown> = {}, id = 'dev-1') {
  return parseIndividualEnrollment({ registrationId: id, attestation: SYM, ...over } as never, id, ctx);
}

describe('registration and group ids', () => {
  const valid = ['a', 'A', '0', 'dev-1', 'Dev.A_b:c-', 'x'.repeat(128), 'a:b:c', 'a.-'];
  const invalid = ['', 'a b', 'a/b', 'dev!', 'dev.', 'dev_', 'dev:', 'é', 'x'.repeat(129), 'a#b', 'a%2Fb'];

  it('accepts letters, digits and - . _ : ending alphanumeric or -, up to 128 characters', () => {
    for (const id of valid) {
      assert.equal(individual({}, id).registrationId, id);
      assert.equal(parseEnrollmentGroup({ attestation: SYM }, id, ctx).enrollmentGroupId, id);
    }
  });

  it('rejects every other id with 400 (InvalidRegistrationId for enrollments, ArgumentInvalid for groups)', () => {
    for (const id of invalid) {
      throwsWith(() => parseIndividualEnrollment({ attestation: SYM }, id, ctx), 'InvalidRegistrationId');
      throwsWith(() => parseEnrollmentGroup({ attestation: SYM }, id, ctx), 'ArgumentInvalid', /enrollmentGroupId/);
    }
  });

  it('takes the body id when it matches the path id case-insensitively, else 400', () => {
    assert.equal(parseIndividualEnrollment({ registrationId: 'Dev-A', attestation: SYM }, 'dev-a', ctx).registrationId, 'Dev-A');
    throwsWith(() => parseIndividualEnrollment({ registrationId: 'other', attestation: SYM }, 'dev-a', ctx), 'RegistrationIdMismatch');
    throwsWith(() => parseEnrollmentGroup({ enrollmentGroupId: 'other', attestation: SYM }, 'grp', ctx), 'ArgumentInvalid', /differs/);
  });

  it('accepts a valid hub device id only on individual enrollments', () => {
    assert.equal(individual({ deviceId: 'my-device@1' }).deviceId, 'my-device@1');
    assert.equal(individual({ deviceId: null }).deviceId, undefined);
    throwsWith(() => individual({ deviceId: 'has space' }), 'InvalidDeviceId');
    throwsWith(() => individual({ deviceId: 'x'.repeat(129) }), 'InvalidDeviceId');
    throwsWith(() => parseEnrollmentGroup({ attestation: SYM, deviceId: 'd' }, 'grp', ctx), 'ArgumentInvalid', /only be set on individual/);
  });

  it('rejects a body that is not an object', () => {
    throwsWith(() => parseIndividualEnrollment([1, 2], 'dev', ctx), 'InvalidJson');
    throwsWith(() => parseIndividualEnrollment('x', 'dev', ctx), 'InvalidJson');
    throwsWith(() => parseEnrollmentGroup(undefined, 'grp', ctx), 'InvalidJson');
  });
});

describe('attestation', () => {
  it('requires an attestation of an allowed type', () => {
    throwsWith(() => parseIndividualEnrollment({}, 'dev', ctx), 'ArgumentInvalid', /attestation is required/);
    throwsWith(() => individual({ attestation: { type: 'none' } }), 'ArgumentInvalid', /attestation.type/);
    throwsWith(() => individual({ attestation: 'symmetricKey' }), 'ArgumentInvalid', /attestation must be/);
    throwsWith(() => parseEnrollmentGroup({ attestation: { type: 'tpm', tpm: { endorsementKey: key() } } }, 'g', ctx), 'ArgumentInvalid', /TPM/);
  });

  it('generates 64-byte keys when they are omitted or empty, keeps given ones', () => {
    const a = individual().attestation.symmetricKey;
    assert.ok(a);
    assert.equal(Buffer.from(a.primaryKey, 'base64').length, 64);
    assert.equal(Buffer.from(a.secondaryKey, 'base64').length, 64);
    assert.notEqual(a.primaryKey, a.secondaryKey);
    const empty = individual({ attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: '', secondaryKey: null } } }).attestation.symmetricKey;
    assert.equal(Buffer.from(empty?.primaryKey ?? '', 'base64').length, 64);
    const k1 = key(16);
    const k2 = key(64);
    assert.deepEqual(individual({ attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: k1, secondaryKey: k2 } } }).attestation.symmetricKey, { primaryKey: k1, secondaryKey: k2 });
  });

  it('keeps the current keys on an update that leaves them out', () => {
    const current = { primaryKey: key(), secondaryKey: key() };
    const parsed = parseIndividualEnrollment({ attestation: SYM }, 'dev', { ...ctx, currentKeys: current });
    assert.deepEqual(parsed.attestation.symmetricKey, current);
  });

  it('rejects keys that are not base64 of 16 to 64 bytes, without echoing them', () => {
    const secret = 'not!base64$secret';
    for (const bad of [secret, key(8), key(15), key(65), 'QUJD', 12345, 'QUJDRA=']) {
      const e = throwsWith(
        () => individual({ attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key(), secondaryKey: bad } } }),
        'ArgumentInvalid',
        /secondaryKey must be base64 of 16 to 64 bytes/,
      );
      if (typeof bad === 'string') assert.ok(!e.message.includes(bad));
    }
  });

  it('validates TPM endorsement keys', () => {
    const ek = key(256);
    assert.deepEqual(individual({ attestation: { type: 'tpm', tpm: { endorsementKey: ek } } }).attestation, { type: 'tpm', tpm: { endorsementKey: ek } });
    throwsWith(() => individual({ attestation: { type: 'tpm', tpm: { endorsementKey: '***' } } }), 'ArgumentInvalid', /endorsementKey/);
    throwsWith(() => individual({ attestation: { type: 'tpm' } }), 'ArgumentInvalid', /attestation.tpm is required/);
  });

  describe('x509', () => {
    let cert: { pem: string; der: Buffer };
    before(async () => {
      cert = await testCertificate('x509-device-1');
    });

    it('parses a PEM client certificate and fills in its info', () => {
      const a = individual({ attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: cert.pem, info: { subjectName: 'ignored' } } } } } }).attestation;
      const primary = a.x509?.clientCertificates?.primary;
      assert.equal(primary?.certificate, cert.pem);
      const info = primary?.info;
      assert.ok(info);
      assert.equal(info.subjectName, 'CN=x509-device-1');
      assert.equal(info.issuerName, 'CN=x509-device-1');
      assert.equal(info.sha1Thumbprint, createHash('sha1').update(cert.der).digest('hex').toUpperCase());
      assert.equal(info.sha256Thumbprint, createHash('sha256').update(cert.der).digest('hex').toUpperCase());
      assert.equal(info.version, 3);
      assert.match(info.serialNumber, /^[0-9A-F]+$/);
      assert.match(info.notBeforeUtc, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.ok(info.notAfterUtc > info.notBeforeUtc);
    });

    it('accepts base64 of the PEM and base64 of the DER', () => {
      for (const certificate of [Buffer.from(cert.pem).toString('base64'), cert.der.toString('base64')]) {
        const info = individual({ attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate } } } } }).attestation.x509?.clientCertificates?.primary?.info;
        assert.equal(info?.sha256Thumbprint, createHash('sha256').update(cert.der).digest('hex').toUpperCase());
      }
    });

    it('rejects an unparsable certificate with 400', () => {
      const broken = cert.pem.replace(/[A-Za-z]{10}/, 'AAAAAAAAAA');
      for (const certificate of ['hello', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', broken, Buffer.from('junk').toString('base64')]) {
        throwsWith(
          () => individual({ attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate } } } } }),
          'ArgumentInvalid',
          /clientCertificates.primary.certificate is not a parsable X.509 certificate/,
        );
      }
    });

    it('asks individual enrollments for client certificates and groups for signing certificates or CA references', () => {
      throwsWith(() => individual({ attestation: { type: 'x509', x509: {} } }), 'ArgumentInvalid', /clientCertificates is required/);
      throwsWith(() => individual({ attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: cert.pem } } } } }), 'ArgumentInvalid');
      const signing = parseEnrollmentGroup({ attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: cert.pem } } } } }, 'g', ctx);
      assert.equal(signing.attestation.x509?.signingCertificates?.primary?.info?.subjectName, 'CN=x509-device-1');
      const ca = parseEnrollmentGroup({ attestation: { type: 'x509', x509: { caReferences: { primary: 'my-root' } } } }, 'g', ctx);
      assert.deepEqual(ca.attestation.x509, { caReferences: { primary: 'my-root' } });
      throwsWith(() => parseEnrollmentGroup({ attestation: { type: 'x509', x509: {} } }, 'g', ctx), 'ArgumentInvalid', /exactly one/);
      throwsWith(() => parseEnrollmentGroup({ attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: cert.pem } } } } }, 'g', ctx), 'ArgumentInvalid');
    });

    it('reads the X.509 version from the DER', () => {
      const parsed = new X509Certificate(cert.der);
      assert.equal(certificateVersionOf(parsed), 3);
      assert.equal(certificateInfo(parsed).version, 3);
    });
  });
});

describe('defaults and the other fields', () => {
  it('fills the documented defaults', () => {
    const e = individual();
    assert.equal(e.provisioningStatus, 'enabled');
    assert.deepEqual(e.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: true });
    assert.deepEqual(e.capabilities, { iotEdge: false });
    assert.equal(e.allocationPolicy, undefined);
    assert.equal(e.initialTwin, undefined);
    assert.equal(e.extra, undefined);
  });

  it('validates provisioningStatus, reprovisionPolicy and capabilities', () => {
    assert.equal(individual({ provisioningStatus: 'disabled' }).provisioningStatus, 'disabled');
    throwsWith(() => individual({ provisioningStatus: 'off' }), 'ArgumentInvalid', /provisioningStatus/);
    assert.deepEqual(individual({ reprovisionPolicy: { updateHubAssignment: false, migrateDeviceData: false } }).reprovisionPolicy, {
      updateHubAssignment: false,
      migrateDeviceData: false,
    });
    throwsWith(() => individual({ reprovisionPolicy: { updateHubAssignment: true } }), 'ArgumentInvalid', /both/);
    throwsWith(() => individual({ reprovisionPolicy: { updateHubAssignment: 'yes', migrateDeviceData: true } }), 'ArgumentInvalid');
    assert.deepEqual(individual({ capabilities: { iotEdge: true } }).capabilities, { iotEdge: true });
    throwsWith(() => individual({ capabilities: {} }), 'ArgumentInvalid', /iotEdge/);
  });

  it('validates the initial twin like a twin patch', () => {
    const t = individual({ initialTwin: { tags: { site: 'a' }, properties: { desired: { interval: 5, deep: { x: 1 } } } } }).initialTwin;
    assert.deepEqual(t, { tags: { site: 'a' }, properties: { desired: { interval: 5, deep: { x: 1 } } } });
    throwsWith(() => individual({ initialTwin: { tags: { 'bad.name': 1 } } }), 'InvalidTwinPropertyName');
    throwsWith(() => individual({ initialTwin: { properties: { desired: { $version: 1 } } } }), 'InvalidTwinPropertyName');
    throwsWith(() => individual({ initialTwin: { properties: { reported: { a: 1 } } } }), 'ArgumentInvalid', /reported/);
    throwsWith(() => individual({ initialTwin: { tags: 'x' } }), 'ArgumentInvalid');
    throwsWith(() => individual({ initialTwin: { tags: { big: 'x'.repeat(33 * 1024) } } }), 'TwinTooLarge');
  });

  it('keeps unknown fields in extra and drops read-only ones', () => {
    const e = individual({ futureField: { a: 1 }, credentialPolicyName: 'p', etag: 'x', createdDateTimeUtc: 'y', registrationState: { status: 'assigned' } });
    assert.deepEqual(e.extra, { futureField: { a: 1 }, credentialPolicyName: 'p' });
    const g = parseEnrollmentGroup({ attestation: SYM, optionalDeviceInformation: { a: 1 } }, 'g', ctx);
    assert.deepEqual(g.extra, { optionalDeviceInformation: { a: 1 } }, 'groups have no optionalDeviceInformation of their own');
  });
});

describe('allocation', () => {
  it('needs exactly one hub for static', () => {
    assert.deepEqual(individual({ allocationPolicy: 'static', iotHubs: [HUB1] }).iotHubs, [HUB1]);
    assert.equal(individual({ allocationPolicy: 'static', iotHubHostName: HUB2 }).iotHubHostName, HUB2);
    throwsWith(() => individual({ allocationPolicy: 'static' }), 'ArgumentInvalid', /exactly one hub/);
    throwsWith(() => individual({ allocationPolicy: 'static', iotHubs: [HUB1, HUB2] }), 'ArgumentInvalid', /exactly one hub/);
    throwsWith(() => individual({ allocationPolicy: 'static', iotHubs: [HUB1], iotHubHostName: HUB2 }), 'ArgumentInvalid', /exactly one hub/);
  });

  it('needs only linked hubs, matched case-insensitively and named as linked', () => {
    assert.deepEqual(individual({ iotHubs: ['HUB1.homing.test', 'hub2.homing.test', HUB1] }).iotHubs, [HUB1, HUB2]);
    throwsWith(() => individual({ iotHubs: ['unknown.hub'] }), 'ArgumentInvalid', /iotHubs\[0\] names a hub that is not linked/);
    throwsWith(() => individual({ iotHubHostName: 'unknown.hub' }), 'ArgumentInvalid', /not linked/);
    throwsWith(() => individual({ iotHubs: 'x' }), 'ArgumentInvalid', /array/);
    assert.deepEqual(individual({ iotHubs: [] }).iotHubs, []);
  });

  it('needs a custom allocation definition with an http(s) webhook for custom (400004)', () => {
    const def = { webhookUrl: 'https://fn.example/api/alloc?code=1', apiVersion: '2021-10-01' };
    assert.deepEqual(individual({ allocationPolicy: 'custom', customAllocationDefinition: def }).customAllocationDefinition, def);
    const e = throwsWith(() => individual({ allocationPolicy: 'custom' }), 'ArgumentInvalid', /customAllocationDefinition/);
    assert.equal(e.code, 400004);
    throwsWith(() => individual({ allocationPolicy: 'custom', customAllocationDefinition: { webhookUrl: 'ftp://x', apiVersion: '2021-10-01' } }), 'ArgumentInvalid', /http or https/);
    throwsWith(() => individual({ allocationPolicy: 'custom', customAllocationDefinition: { webhookUrl: 'not a url', apiVersion: '2021-10-01' } }), 'ArgumentInvalid');
    throwsWith(() => individual({ allocationPolicy: 'custom', customAllocationDefinition: { webhookUrl: def.webhookUrl } }), 'ArgumentInvalid', /both/);
    throwsWith(() => individual({ allocationPolicy: 'custom', customAllocationDefinition: { ...def, apiVersion: '2017-11-15' } }), 'ArgumentInvalid', /apiVersion/);
    throwsWith(() => individual({ allocationPolicy: 'round-robin' }), 'ArgumentInvalid', /allocationPolicy/);
  });
});

describe('If-Match', () => {
  it('drops quotes, weak prefixes and blanks', () => {
    assert.equal(normalizeIfMatch('IjEi'), 'IjEi');
    assert.equal(normalizeIfMatch('"IjEi"'), 'IjEi');
    assert.equal(normalizeIfMatch('W/"IjEi"'), 'IjEi');
    assert.equal(normalizeIfMatch(' * '), '*');
    assert.equal(normalizeIfMatch(''), undefined);
    assert.equal(normalizeIfMatch('""'), undefined);
    assert.equal(normalizeIfMatch(undefined), undefined);
    assert.equal(normalizeIfMatch(['"a"', 'b']), 'a');
  });
});

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { HomingError } from '../../../src/core/errors.ts';
import { certificateInfo } from '../../../src/provisioning/enrollments/x509.ts';
import type { RegistrationReply } from '../../../src/provisioning/registration.ts';
import { issueCertificate, type IssuedCert } from '../../../src/transport/tls/pki.ts';
import { createX509Fixture, der, HUB, leaf, makeChain, x509Individual, type Chain, type X509Fixture } from './fixture.ts';

/**
 * X.509 attestation in the registration use cases (dps-behavior.md §6.2, §6.4, §5; scenarios 8–11, 29, 31, 32):
 * chains are passed as the transports pass them (DER, leaf first). TLS and the SDKs: test/interop/dps-x509-sdk.test.ts.
 */

const DAY = 86_400_000;

type X509Crypto = Parameters<typeof x509.X509CrlGenerator.create>[1];

async function issueCrl(issuer: IssuedCert, revoked: readonly IssuedCert[]): Promise<string> {
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: issuer.cert.subject,
      thisUpdate: new Date(Date.now() - DAY),
      nextUpdate: new Date(Date.now() + 7 * DAY),
      entries: revoked.map((c) => ({ serialNumber: c.cert.serialNumber, revocationDate: new Date(Date.now() - DAY) })),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      signingKey: issuer.key,
    },
    webcrypto as unknown as X509Crypto,
  );
  return crl.toString('pem');
}

function invalidCertificate(e: unknown): boolean {
  return e instanceof HomingError && e.errorName === 'IotHubUnauthorizedAccess' && e.code === 401002 && e.message === 'Invalid certificate';
}

function state(r: RegistrationReply): Record<string, unknown> {
  assert.equal(r.httpStatus, 200);
  const s = r.body.registrationState as unknown as Record<string, unknown> | undefined;
  assert.ok(s);
  return s;
}

function sha1(c: IssuedCert): string {
  return certificateInfo(new X509Certificate(c.certPem)).sha1Thumbprint;
}

describe('X.509 registration (use cases)', () => {
  let f: X509Fixture;
  let c: Chain;

  before(async () => {
    f = await createX509Fixture();
    c = await makeChain('Reg');
    // Only the root is verified (proof of possession done elsewhere).
    await f.cas.upload(f.instanceName, 'reg-root', { certificate: c.root.certPem, isVerified: true });
  });
  after(async () => {
    await f.close();
  });

  it('individual enrollment: the leaf (self-signed, no verified CA needed) is assigned; hub identity is self-signed with its thumbprint; registration id ≠ CN is 401002', async () => {
    const l = await issueCertificate({ commonName: 'x509-dev', usages: ['client'] });
    await f.addIndividual('x509-dev', x509Individual(l));
    const s = state(await f.register('x509-dev', [l]));
    assert.equal(s.status, 'assigned');
    assert.equal(s.assignedHub, HUB);
    assert.equal(s.deviceId, 'x509-dev');
    const x = s.x509 as { certificateInfo: { sha1Thumbprint: string; subjectName: string }; enrollmentGroupId?: string };
    assert.equal(x.certificateInfo.sha1Thumbprint, sha1(l));
    assert.equal(x.certificateInfo.subjectName, 'CN=x509-dev');
    assert.equal(x.enrollmentGroupId, undefined);
    assert.equal(s.symmetricKey, undefined);
    const dev = await f.hub.getDevice('x509-dev');
    assert.equal(dev.authentication.type, 'selfSigned');
    assert.deepEqual(dev.authentication.x509Thumbprint, { primaryThumbprint: sha1(l), secondaryThumbprint: sha1(l) });
    // The device then connects to its hub with the same certificate.
    await f.hub.authenticateDevice('x509-dev', { certificate: new X509Certificate(l.certPem) });

    await f.addIndividual('x509-other', x509Individual(l));
    await assert.rejects(f.register('x509-other', [l]), invalidCertificate);
    // Another leaf with the right CN but not in the enrollment.
    const stranger = await issueCertificate({ commonName: 'x509-dev', usages: ['client'] });
    await assert.rejects(f.register('x509-dev', [stranger]), invalidCertificate);
    // No certificate at all, or garbage.
    await assert.rejects(f.service.register(f.idScope, 'x509-dev', { registrationId: 'x509-dev' }, { kind: 'x509', chain: [] }), invalidCertificate);
    await assert.rejects(f.service.register(f.idScope, 'x509-dev', { registrationId: 'x509-dev' }, { kind: 'x509', chain: [Buffer.from('nope')] }), invalidCertificate);
  });

  it('operation polls re-check the chain: the same chain sees the operation, a SAS or another device does not', async () => {
    const l = await issueCertificate({ commonName: 'poll-dev', usages: ['client'] });
    await f.addIndividual('poll-dev', x509Individual(l));
    const r = await f.service.register(f.idScope, 'poll-dev', { registrationId: 'poll-dev' }, { kind: 'x509', chain: [der(l)] });
    const opId = r.reply.body.operationId;
    await r.completion;
    const polled = await f.service.operationStatus(f.idScope, 'poll-dev', opId, { kind: 'x509', chain: [der(l)] });
    assert.equal(polled.reply.body.status, 'assigned');
    await assert.rejects(f.service.operationStatus(f.idScope, 'poll-dev', opId, { kind: 'sas', authorization: undefined }), (e: unknown) => e instanceof HomingError && e.status === 401);
    const other = await issueCertificate({ commonName: 'poll-dev', usages: ['client'] });
    await assert.rejects(f.service.operationStatus(f.idScope, 'poll-dev', opId, { kind: 'x509', chain: [der(other)] }), (e: unknown) => e instanceof HomingError && e.status === 401);
  });

  it('replacing the primary certificate (same CN): the new leaf registers, the hub thumbprint follows, the old leaf is refused (scenario 29)', async () => {
    const old = await leaf(c.i1, 'roll-dev');
    const e = await f.addIndividual('roll-dev', x509Individual(old));
    assert.equal(state(await f.register('roll-dev', [old])).status, 'assigned');
    const next = await leaf(c.i1, 'roll-dev');
    const updated = { ...e, attestation: x509Individual(next), etag: 'e2' };
    assert.equal(await f.store.provisioning.replaceIndividualEnrollment(f.instanceName, updated, e.etag), 'ok');
    const s = state(await f.register('roll-dev', [next]));
    assert.equal(s.status, 'assigned');
    assert.equal(s.assignedHub, HUB);
    const dev = await f.hub.getDevice('roll-dev');
    assert.equal(dev.authentication.type === 'selfSigned' ? dev.authentication.x509Thumbprint.primaryThumbprint : '', sha1(next));
    await assert.rejects(f.register('roll-dev', [old]), invalidCertificate);
  });

  it('group on an intermediate below the verified root: leaf+I2+I1 is assigned through it, leaf+I2 alone is 401 (scenario 9)', async () => {
    await f.addGroup('grp-i2', { signingCertificates: { primary: { certificate: c.i2.certPem } } });
    const l = await leaf(c.i2, 'grp-dev-1');
    await assert.rejects(f.register('grp-dev-1', [l, c.i2]), invalidCertificate);
    const s = state(await f.register('grp-dev-1', [l, c.i2, c.i1]));
    assert.equal(s.status, 'assigned');
    assert.equal(s.deviceId, 'grp-dev-1');
    const x = s.x509 as { enrollmentGroupId: string; signingCertificateInfo: { sha1Thumbprint: string } };
    assert.equal(x.enrollmentGroupId, 'grp-i2');
    assert.equal(x.signingCertificateInfo.sha1Thumbprint, sha1(c.i2));
    const dev = await f.hub.getDevice('grp-dev-1');
    assert.equal(dev.authentication.type, 'selfSigned');
    // Leaf only: nothing above the leaf to match.
    await assert.rejects(f.register('grp-dev-1', [l]), invalidCertificate);
    // CN must equal the registration id.
    await assert.rejects(f.register('grp-dev-2', [l, c.i2, c.i1]), invalidCertificate);
  });

  it('a group whose CA is uploaded but unverified, with no verified certificate in the chain, is 401 (scenario 10)', async () => {
    const other = await makeChain('Unverified');
    await f.cas.upload(f.instanceName, 'unverified-root', { certificate: other.root.certPem, isVerified: false });
    await f.addGroup('grp-unverified', { caReferences: { primary: 'unverified-root' } });
    const l = await leaf(other.i1, 'unv-dev');
    await assert.rejects(f.register('unv-dev', [l, other.i1, other.root]), invalidCertificate);
    // Verifying the CA (onChange drops the cached trust material) makes the same device acceptable.
    await f.cas.upload(f.instanceName, 'unverified-root', { certificate: other.root.certPem, isVerified: true }, '*');
    const s = state(await f.register('unv-dev', [l, other.i1]));
    assert.equal((s.x509 as { enrollmentGroupId: string }).enrollmentGroupId, 'grp-unverified');
  });

  it('enabled group on the root, disabled group on intermediate B: devices under B are disabled, devices under A register through the root group (scenario 11)', async () => {
    const g = await makeChain('Split');
    const b = await issueCertificate({ commonName: 'Split B', isCA: true, pathLength: 5, issuer: g.root });
    await f.cas.upload(f.instanceName, 'split-root', { certificate: g.root.certPem, isVerified: true });
    await f.addGroup('split-root-group', { caReferences: { primary: 'split-root' } });
    await f.addGroup('split-b-group', { signingCertificates: { primary: { certificate: b.certPem } } }, 'disabled');
    const underB = await leaf(b, 'split-b-1');
    const rb = await f.register('split-b-1', [underB, b]);
    assert.equal(rb.httpStatus, 200);
    assert.equal(rb.body.status, 'disabled');
    assert.equal(rb.body.registrationState?.assignedHub, undefined);
    assert.equal(await f.hub.findDevice('split-b-1'), undefined);
    const underA = await leaf(g.i1, 'split-a-1');
    const sa = state(await f.register('split-a-1', [underA, g.i1]));
    assert.equal(sa.status, 'assigned');
    assert.equal((sa.x509 as { enrollmentGroupId: string }).enrollmentGroupId, 'split-root-group');
  });

  it('a disabled symmetric-key individual enrollment blocklists one device of an X.509 group (scenario 31); deleting an X.509 individual lets the device in through the group (scenario 32)', async () => {
    const g = await makeChain('Block');
    await f.cas.upload(f.instanceName, 'block-root', { certificate: g.root.certPem, isVerified: true });
    await f.addGroup('block-group', { caReferences: { primary: 'block-root' } });
    await f.addIndividual('dev-7', { type: 'symmetricKey', symmetricKey: { primaryKey: Buffer.alloc(32, 1).toString('base64'), secondaryKey: Buffer.alloc(32, 2).toString('base64') } }, 'disabled');
    const l7 = await leaf(g.i1, 'dev-7');
    const l8 = await leaf(g.i1, 'dev-8');
    assert.equal((await f.register('dev-7', [l7, g.i1])).body.status, 'disabled');
    assert.equal(state(await f.register('dev-8', [l8, g.i1])).status, 'assigned');

    const l9 = await leaf(g.i1, 'dev-9');
    await f.addIndividual('dev-9', x509Individual(l9));
    const s1 = state(await f.register('dev-9', [l9, g.i1]));
    assert.equal((s1.x509 as { enrollmentGroupId?: string }).enrollmentGroupId, undefined);
    assert.equal(await f.store.provisioning.deleteIndividualEnrollment(f.instanceName, 'dev-9', '*'), 'ok');
    const s2 = state(await f.register('dev-9', [l9, g.i1]));
    assert.equal((s2.x509 as { enrollmentGroupId?: string }).enrollmentGroupId, 'block-group');
    // A disabled X.509 individual enrollment with the device's own certificate: disabled.
    const l10 = await leaf(g.i1, 'dev-10');
    await f.addIndividual('dev-10', x509Individual(l10), 'disabled');
    assert.equal((await f.register('dev-10', [l10, g.i1])).body.status, 'disabled');
  });

  it('refuses a revoked leaf (CRL uploaded), an expired leaf, a self-signed leaf pretending to be in a group, and a chain longer than 10', async () => {
    const g = await makeChain('Refuse');
    await f.cas.upload(f.instanceName, 'refuse-root', { certificate: g.root.certPem, isVerified: true });
    await f.addGroup('refuse-group', { caReferences: { primary: 'refuse-root' } });
    const ok = await leaf(g.i1, 'ref-ok');
    assert.equal(state(await f.register('ref-ok', [ok, g.i1])).status, 'assigned');

    // Revoked: the CRL of I1 (uploaded as a CA of its own, so the CRL can be checked and stored).
    const revoked = await leaf(g.i1, 'ref-revoked');
    assert.equal(state(await f.register('ref-revoked', [revoked, g.i1])).status, 'assigned');
    await f.cas.upload(f.instanceName, 'refuse-i1', { certificate: g.i1.certPem });
    await f.cas.putCrl(f.instanceName, 'refuse-i1', { crl: await issueCrl(g.i1, [revoked]) });
    await assert.rejects(f.register('ref-revoked', [revoked, g.i1]), invalidCertificate);
    assert.equal(state(await f.register('ref-ok', [ok, g.i1])).status, 'assigned');

    const expired = await leaf(g.i1, 'ref-expired', { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) });
    await assert.rejects(f.register('ref-expired', [expired, g.i1]), invalidCertificate);

    // Self-signed, with the issuer name of I1: not signed by I1.
    const fake = await issueCertificate({ commonName: 'ref-fake', usages: ['client'] });
    await assert.rejects(f.register('ref-fake', [fake, g.i1]), invalidCertificate);
    const pretender = await issueCertificate({ commonName: 'Refuse I1', isCA: true, pathLength: 3 });
    const fakeLeaf = await leaf(pretender, 'ref-fake2');
    await assert.rejects(f.register('ref-fake2', [fakeLeaf, pretender]), invalidCertificate);

    // 11 certificates: leaf + 9 intermediates + I1.
    let issuer = g.i1;
    const inters: IssuedCert[] = [];
    for (let i = 0; i < 9; i++) {
      issuer = await issueCertificate({ commonName: `Refuse Deep ${i}`, isCA: true, issuer, pathLength: 20 });
      inters.unshift(issuer);
    }
    const deep = await leaf(issuer, 'ref-deep');
    await assert.rejects(f.register('ref-deep', [deep, ...inters, g.i1]), invalidCertificate);
  });
});

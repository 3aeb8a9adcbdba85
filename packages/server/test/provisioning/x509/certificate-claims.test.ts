import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { JsonObject } from '../../../src/core/json.ts';
import { CaCertificateService } from '../../../src/provisioning/ca-certificates.ts';
import { EnrollmentService } from '../../../src/provisioning/enrollments.ts';
import { CertificateClaims } from '../../../src/provisioning/enrollments/certificate-claims.ts';
import type { ProvisioningInstance } from '../../../src/provisioning/model.ts';
import { KyselyCertificateClaimStore } from '../../../src/store/kysely/certificate-claim-store.ts';
import { openStore, type OpenedStore } from '../../../src/store/open.ts';
import { issueCertificate, type IssuedCert } from '../../../src/transport/tls/pki.ts';
import { ManualClock, realIds } from '../../helpers/ids.ts';
import { rejectsWith } from '../fixtures.ts';

/** One certificate in one enrollment entry only (dps-behavior.md §6.2, scenario 13): 409 on create and update. */

function individualBody(primary: IssuedCert, secondary?: IssuedCert): JsonObject {
  const clientCertificates: JsonObject = { primary: { certificate: primary.certPem } };
  if (secondary) clientCertificates.secondary = { certificate: secondary.certPem };
  return { attestation: { type: 'x509', x509: { clientCertificates } } };
}

function groupBody(x509: JsonObject): JsonObject {
  return { attestation: { type: 'x509', x509 } };
}

describe('certificate claims (409 for a certificate in a second enrollment entry)', () => {
  let store: OpenedStore;
  let clock: ManualClock;
  let svc: EnrollmentService;
  let cas: CaCertificateService;
  let instance: ProvisioningInstance;
  let claimStore: KyselyCertificateClaimStore;

  beforeEach(async () => {
    clock = new ManualClock(Date.now());
    store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
    instance = { name: 'claims-test', idScope: '0ne00C1A1B', serviceHostNames: ['claims.test'], allocationPolicy: 'hashed', policies: [], linkedHubs: [], etag: 'e1' };
    assert.equal(await store.provisioning.createInstance(instance), 'ok');
    claimStore = KyselyCertificateClaimStore.on(store.db);
    const claims = new CertificateClaims({ claims: claimStore, store: store.provisioning, caCertificates: store.caCertificates, clock });
    svc = new EnrollmentService({ store: store.provisioning, clock, ids: realIds, certificateClaims: claims });
    cas = new CaCertificateService({ store: store.caCertificates, clock, ids: realIds });
  });
  afterEach(async () => {
    await store.close();
  });

  it('individual enrollments: a leaf already in e1 cannot go into e2 (create or update); after e1 lets it go, it can', async () => {
    const l = await issueCertificate({ commonName: 'e1', usages: ['client'] });
    const other = await issueCertificate({ commonName: 'e2', usages: ['client'] });
    await svc.putIndividualEnrollment(instance, 'e1', individualBody(l), undefined);
    await rejectsWith(svc.putIndividualEnrollment(instance, 'e2', individualBody(l), undefined), 'DeviceAlreadyExists', /already in enrollment 'e1'/);
    assert.equal(await store.provisioning.getIndividualEnrollment(instance.name, 'e2'), undefined);
    // As secondary, too.
    await rejectsWith(svc.putIndividualEnrollment(instance, 'e2', individualBody(other, l), undefined), 'DeviceAlreadyExists');
    const e2 = await svc.putIndividualEnrollment(instance, 'e2', individualBody(other), undefined);
    await rejectsWith(svc.putIndividualEnrollment(instance, 'e2', individualBody(l), e2.etag), 'DeviceAlreadyExists');
    // e1 may keep (re-put) its own certificate.
    const e1 = await svc.putIndividualEnrollment(instance, 'e1', individualBody(l), '*');
    // e1 moves to another certificate: l is free.
    const l2 = await issueCertificate({ commonName: 'e1', usages: ['client'] });
    await svc.putIndividualEnrollment(instance, 'e1', individualBody(l2), e1.etag);
    const e2b = await svc.putIndividualEnrollment(instance, 'e2', individualBody(l), '*');
    assert.equal(e2b.registrationId, 'e2');
    // Deleting releases.
    await svc.deleteIndividualEnrollment(instance, 'e2', undefined);
    await svc.putIndividualEnrollment(instance, 'e3', individualBody(l), undefined);
  });

  it('groups: the same signing certificate or the same referenced CA in two groups is 409; a group and an individual cannot share a certificate', async () => {
    const root = await issueCertificate({ commonName: 'Claims Root', isCA: true, pathLength: 2 });
    await svc.putEnrollmentGroup(instance, 'g1', groupBody({ signingCertificates: { primary: { certificate: root.certPem } } }), undefined);
    await rejectsWith(svc.putEnrollmentGroup(instance, 'g2', groupBody({ signingCertificates: { primary: { certificate: root.certPem } } }), undefined), 'DeviceAlreadyExists', /enrollment group 'g1'/);
    await cas.upload(instance.name, 'claims-root', { certificate: root.certPem, isVerified: true });
    await rejectsWith(svc.putEnrollmentGroup(instance, 'g2', groupBody({ caReferences: { primary: 'claims-root' } }), undefined), 'DeviceAlreadyExists');
    const ca2 = await issueCertificate({ commonName: 'Claims Root 2', isCA: true, pathLength: 2 });
    await cas.upload(instance.name, 'claims-root-2', { certificate: ca2.certPem, isVerified: true });
    await svc.putEnrollmentGroup(instance, 'g2', groupBody({ caReferences: { primary: 'claims-root-2' } }), undefined);
    await rejectsWith(svc.putEnrollmentGroup(instance, 'g3', groupBody({ caReferences: { primary: 'claims-root-2' } }), undefined), 'DeviceAlreadyExists');
    // Bulk create reports the conflict per item.
    const bulk = await svc.bulkEnrollmentGroups(instance, { mode: 'create', enrollmentGroups: [{ enrollmentGroupId: 'g4', ...groupBody({ caReferences: { primary: 'claims-root-2' } }) }] });
    assert.equal(bulk.isSuccessful, false);
    assert.equal(bulk.errors[0]?.errorCode, 409001);
    await svc.deleteEnrollmentGroup(instance, 'g1', undefined);
    await svc.putEnrollmentGroup(instance, 'g5', groupBody({ signingCertificates: { primary: { certificate: root.certPem } } }), undefined);
  });

  it('a claim left by a write that died is taken over: at once when its entry no longer holds the certificate, after the grace time when the entry does not exist', async () => {
    const l = await issueCertificate({ commonName: 'ghost', usages: ['client'] });
    const { createHash, X509Certificate } = await import('node:crypto');
    const sha = createHash('sha256').update(new X509Certificate(l.certPem).raw).digest('hex').toUpperCase();
    // "ghost" claimed it and died before writing.
    await claimStore.claim(instance.name, [sha], { kind: 'individual', key: 'ghost' }, clock.now());
    await rejectsWith(svc.putIndividualEnrollment(instance, 'late', individualBody(l), undefined), 'DeviceAlreadyExists');
    clock.advance(61_000);
    await svc.putIndividualEnrollment(instance, 'late', individualBody(l), undefined);
    // "sym" exists and holds no certificate: its claim is stale at once.
    const l2 = await issueCertificate({ commonName: 'x', usages: ['client'] });
    const sha2 = createHash('sha256').update(new X509Certificate(l2.certPem).raw).digest('hex').toUpperCase();
    await svc.putIndividualEnrollment(instance, 'sym', { attestation: { type: 'symmetricKey' } }, undefined);
    await claimStore.claim(instance.name, [sha2], { kind: 'individual', key: 'sym' }, clock.now());
    await svc.putIndividualEnrollment(instance, 'x', individualBody(l2), undefined);
  });
});

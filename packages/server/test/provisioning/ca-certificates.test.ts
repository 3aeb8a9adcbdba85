import { afterEach, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { validateDeviceChain } from '../../src/core/x509-chain.ts';
import { CaCertificateService, MAX_CA_CERTIFICATES, caCertificateToJson, loadCaTrustMaterial } from '../../src/provisioning/ca-certificates.ts';
import { certificateInfo } from '../../src/provisioning/enrollments/x509.ts';
import { openStore, type OpenedStore } from '../../src/store/open.ts';
import { issueCertificate, type IssuedCert } from '../../src/transport/tls/pki.ts';
import { issueDeviceCert } from '../helpers/pki.ts';
import { ManualClock, realIds } from '../helpers/ids.ts';
import { closeAndDrop, openFreshPostgres, pgTestUrl } from '../helpers/store-harness.ts';
import { rejectsWith } from './fixtures.ts';

const DAY = 86_400_000;
const INSTANCE = 'homing-test';
const pgUrl = pgTestUrl;

type X509Crypto = Parameters<typeof x509.X509CrlGenerator.create>[1];

async function issueCrl(issuer: IssuedCert, revoked: readonly IssuedCert[], o: { signer?: IssuedCert; thisUpdate?: Date; nextUpdate?: Date } = {}): Promise<string> {
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: issuer.cert.subject,
      thisUpdate: o.thisUpdate ?? new Date(Date.now() - DAY),
      nextUpdate: o.nextUpdate ?? new Date(Date.now() + 7 * DAY),
      entries: revoked.map((c) => ({ serialNumber: c.cert.serialNumber, revocationDate: new Date(Date.now() - DAY) })),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      signingKey: (o.signer ?? issuer).key,
    },
    webcrypto as unknown as X509Crypto,
  );
  return crl.toString('pem');
}

interface Opened {
  store: OpenedStore;
  drop(): Promise<void>;
}

async function openSqlite(): Promise<Opened> {
  const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  return { store, drop: () => store.close() };
}

async function openPg(url: string): Promise<Opened> {
  const fresh = await openFreshPostgres(url);
  return { store: fresh.store, drop: () => closeAndDrop(fresh) };
}

const dialects: Array<[string, (() => Promise<Opened>) | undefined]> = [
  ['sqlite', openSqlite],
  ['postgres', pgUrl === undefined ? undefined : () => openPg(pgUrl)],
];

for (const [dialect, open] of dialects) {
  describe(`CaCertificateService (${dialect})`, { skip: open === undefined ? 'set HOMING_TEST_DATABASE_URL to run on PostgreSQL' : false }, () => {
    let root: IssuedCert;
    let other: IssuedCert;
    before(async () => {
      root = await issueCertificate({ commonName: 'Upload Root', organization: 'Homing', isCA: true });
      other = await issueCertificate({ commonName: 'Other Root', isCA: true });
    });

    let db: Opened;
    let clock: ManualClock;
    let svc: CaCertificateService;
    let changes: string[];
    beforeEach(async () => {
      db = await (open as () => Promise<Opened>)();
      clock = new ManualClock(Date.now());
      changes = [];
      svc = new CaCertificateService({ store: db.store.caCertificates, clock, ids: realIds, limits: { maxCaCertificates: 3 }, onChange: (i) => changes.push(i) });
    });
    afterEach(async () => {
      await db.drop();
    });
    const stored = () => db.store.caCertificates.listCaCertificates(INSTANCE);

    describe('upload', () => {
      it('stores a CA certificate unverified, with Azure-shaped properties', async () => {
        const c = await svc.upload(INSTANCE, 'Root-1', { certificate: root.certPem });
        const info = certificateInfo(new X509Certificate(root.certPem));
        assert.equal(c.isVerified, false);
        assert.equal(c.thumbprint, info.sha1Thumbprint);
        assert.equal(c.sha256Thumbprint, info.sha256Thumbprint);
        assert.equal(c.subject, 'CN=Upload Root, O=Homing');
        assert.equal(c.expiry, info.notAfterUtc);
        assert.deepEqual(await svc.get(INSTANCE, 'root-1'), c);
        const json = caCertificateToJson(c);
        assert.equal(json.name, 'Root-1');
        assert.equal(json.etag, c.etag);
        const props = json.properties as Record<string, unknown>;
        assert.equal(props.isVerified, false);
        assert.equal(props.thumbprint, info.sha1Thumbprint);
        assert.equal(props.expiry, new Date(Date.parse(info.notAfterUtc)).toUTCString());
        assert.match(String(props.created), /^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$/);
        assert.match(String(props.certificate), /^-----BEGIN CERTIFICATE-----/);
      });

      it('takes base64 of the DER, and the ARM body shape {properties: {...}}', async () => {
        const der = Buffer.from(root.cert.rawData).toString('base64');
        const c = await svc.upload(INSTANCE, 'der', { properties: { certificate: der, isVerified: true } });
        assert.equal(c.isVerified, true);
        assert.equal(new X509Certificate(c.certificate).fingerprint256, new X509Certificate(root.certPem).fingerprint256);
      });

      it('marks it verified on upload only when the admin says so', async () => {
        assert.equal((await svc.upload(INSTANCE, 'v', { certificate: root.certPem, isVerified: true })).isVerified, true);
        assert.equal((await svc.upload(INSTANCE, 'u', { certificate: other.certPem, isVerified: false })).isVerified, false);
      });

      it('refuses unparsable, non-CA and expired certificates and bad arguments with 400, storing nothing', async () => {
        const leaf = await issueDeviceCert(root, 'dev-1');
        const expired = await issueCertificate({ commonName: 'Old CA', isCA: true, notBefore: new Date(Date.now() - 20 * DAY), notAfter: new Date(Date.now() - DAY) });
        await rejectsWith(svc.upload(INSTANCE, 'x', { certificate: 'not a certificate' }), 'ArgumentInvalid', /parsable/);
        await rejectsWith(svc.upload(INSTANCE, 'x', { certificate: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }), 'ArgumentInvalid');
        await rejectsWith(svc.upload(INSTANCE, 'x', { certificate: leaf.certPem }), 'ArgumentInvalid', /not a CA/);
        await rejectsWith(svc.upload(INSTANCE, 'x', { certificate: expired.certPem }), 'ArgumentInvalid', /expired/);
        await rejectsWith(svc.upload(INSTANCE, 'x', {}), 'ArgumentInvalid', /certificate is required/);
        await rejectsWith(svc.upload(INSTANCE, 'x', { certificate: root.certPem, isVerified: 'yes' }), 'ArgumentInvalid', /isVerified/);
        await rejectsWith(svc.upload(INSTANCE, 'bad name!', { certificate: root.certPem }), 'ArgumentInvalid', /name/);
        await rejectsWith(svc.upload(INSTANCE, 'a'.repeat(65), { certificate: root.certPem }), 'ArgumentInvalid', /name/);
        await rejectsWith(svc.upload(INSTANCE, 'x', 'pem' as never), 'InvalidJson');
        assert.deepEqual(await stored(), []);
        assert.deepEqual(changes, [], 'no change reported for rejected uploads');
      });

      it('refuses a taken name and a certificate already uploaded under another name with 409', async () => {
        const first = await svc.upload(INSTANCE, 'root', { certificate: root.certPem });
        await rejectsWith(svc.upload(INSTANCE, 'ROOT', { certificate: other.certPem }), 'DeviceAlreadyExists', /exists/);
        await rejectsWith(svc.upload(INSTANCE, 'root-again', { certificate: root.certPem }), 'DeviceAlreadyExists', /another name/);
        assert.deepEqual(await stored(), [first]);
      });

      it('stops at the limit with 403 403002 (default limit 25)', async () => {
        assert.equal(MAX_CA_CERTIFICATES, 25);
        for (let n = 0; n < 3; n++) await svc.upload(INSTANCE, `ca${n}`, { certificate: (await issueCertificate({ commonName: `CA ${n}`, isCA: true })).certPem });
        await rejectsWith(svc.upload(INSTANCE, 'ca3', { certificate: root.certPem }), 'QuotaExceeded');
        assert.equal((await stored()).length, 3);
        await svc.delete(INSTANCE, 'ca0');
        await svc.upload(INSTANCE, 'ca3', { certificate: root.certPem });
      });

      it('replaces with If-Match: the same certificate keeps its verification, another one loses it', async () => {
        const c = await svc.upload(INSTANCE, 'rep', { certificate: root.certPem, isVerified: true });
        await rejectsWith(svc.upload(INSTANCE, 'rep', { certificate: root.certPem }, 'stale'), 'PreconditionFailed');
        await rejectsWith(svc.upload(INSTANCE, 'ghost', { certificate: other.certPem }, '*'), 'PreconditionFailed');
        const same = await svc.upload(INSTANCE, 'rep', { certificate: root.certPem }, `"${c.etag}"`);
        assert.equal(same.isVerified, true);
        assert.notEqual(same.etag, c.etag);
        assert.equal(same.created, c.created);
        const changed = await svc.upload(INSTANCE, 'rep', { certificate: other.certPem }, '*');
        assert.equal(changed.isVerified, false);
        assert.equal(changed.sha256Thumbprint, certificateInfo(new X509Certificate(other.certPem)).sha256Thumbprint);
        assert.deepEqual(await svc.get(INSTANCE, 'rep'), changed);
      });
    });

    describe('proof of possession', () => {
      async function proof(code: string, signer: IssuedCert = root, o: { notAfter?: Date; notBefore?: Date } = {}): Promise<string> {
        return (await issueCertificate({ commonName: code, issuer: signer, usages: ['client'], ...o })).certPem;
      }

      it('verifies with a certificate whose CN is the code, signed by the CA; the code works once', async () => {
        await svc.upload(INSTANCE, 'pop', { certificate: root.certPem });
        const { certificate, verificationCode } = await svc.generateVerificationCode(INSTANCE, 'pop');
        assert.match(verificationCode, /^[0-9A-F]{48}$/);
        assert.equal(certificate.verificationCode, verificationCode);
        const json = caCertificateToJson(certificate, { verificationCode });
        assert.equal((json.properties as Record<string, unknown>).verificationCode, verificationCode);
        changes.length = 0;
        const v = await svc.verify(INSTANCE, 'pop', { certificate: await proof(verificationCode) });
        assert.equal(v.isVerified, true);
        assert.deepEqual(changes, [INSTANCE], 'verification changes trust');
        assert.equal(v.verificationCode, undefined);
        assert.deepEqual(await svc.get(INSTANCE, 'pop'), v);
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: await proof(verificationCode) }), 'ArgumentInvalid', /generate one first/);
      });

      it('refuses a wrong CN, another signer, an expired proof, a replaced code; nothing changes', async () => {
        await svc.upload(INSTANCE, 'pop', { certificate: root.certPem });
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: await proof('ABCDEF') }), 'ArgumentInvalid', /generate one first/);
        const first = await svc.generateVerificationCode(INSTANCE, 'pop');
        const { verificationCode: code } = await svc.generateVerificationCode(INSTANCE, 'pop');
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: await proof(first.verificationCode) }), 'ArgumentInvalid', /CN/);
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: await proof('0'.repeat(48)) }), 'ArgumentInvalid', /CN/);
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: await proof(code, other) }), 'ArgumentInvalid', /not signed by this CA/);
        const expired = await proof(code, root, { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) });
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: expired }), 'ArgumentInvalid', /expired/);
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: 'junk' }), 'ArgumentInvalid');
        await rejectsWith(svc.verify(INSTANCE, 'pop', { certificate: await proof(code) }, 'stale-etag'), 'PreconditionFailed');
        await rejectsWith(svc.verify(INSTANCE, 'missing', { certificate: await proof(code) }), 'NotFound');
        const now = await svc.get(INSTANCE, 'pop');
        assert.equal(now.isVerified, false);
        assert.equal(now.verificationCode, code);
        assert.equal((await svc.verify(INSTANCE, 'pop', { certificate: await proof(code.toLowerCase()) })).isVerified, true, 'the code compares case-insensitively');
      });
    });

    describe('list, get, delete', () => {
      it('lists by name, gets case-insensitively, deletes under If-Match', async () => {
        const b = await svc.upload(INSTANCE, 'b-root', { certificate: other.certPem });
        const a = await svc.upload(INSTANCE, 'A-root', { certificate: root.certPem });
        assert.deepEqual((await svc.list(INSTANCE)).map((c) => c.name), ['A-root', 'b-root']);
        assert.deepEqual(await svc.get(INSTANCE, 'a-ROOT'), a);
        await rejectsWith(svc.get(INSTANCE, 'nope'), 'NotFound');
        await rejectsWith(svc.delete(INSTANCE, 'b-root', 'stale'), 'PreconditionFailed');
        await svc.delete(INSTANCE, 'b-root', b.etag);
        await rejectsWith(svc.delete(INSTANCE, 'b-root'), 'NotFound');
        assert.deepEqual(await svc.list(INSTANCE), [a]);
        assert.deepEqual(changes, [INSTANCE, INSTANCE, INSTANCE], 'two uploads and one delete; failed calls report nothing');
      });
    });

    describe('CRLs', () => {
      it('stores a CRL signed by the CA and replaces it with a newer one', async () => {
        await svc.upload(INSTANCE, 'crl', { certificate: root.certPem, isVerified: true });
        const d1 = await issueDeviceCert(root, 'd1');
        const c = await svc.putCrl(INSTANCE, 'crl', { crl: await issueCrl(root, [d1]) });
        assert.equal(c.crl?.revokedCount, 1);
        assert.match(String(c.crl?.crl), /^-----BEGIN X509 CRL-----/);
        assert.deepEqual(await svc.get(INSTANCE, 'crl'), c);
        const d2 = await issueDeviceCert(root, 'd2');
        const newer = await svc.putCrl(INSTANCE, 'crl', { crl: await issueCrl(root, [d1, d2], { thisUpdate: new Date(Date.now() - 1000) }) }, c.etag);
        assert.equal(newer.crl?.revokedCount, 2);
        assert.equal(((caCertificateToJson(newer).properties as Record<string, unknown>).crl as Record<string, unknown>).revokedCount, 2);
      });

      it('refuses garbage, another signer, a stale CRL and an older CRL with 400; nothing changes', async () => {
        const ca = await svc.upload(INSTANCE, 'crl', { certificate: root.certPem });
        await rejectsWith(svc.putCrl(INSTANCE, 'crl', { crl: 'garbage' }), 'ArgumentInvalid', /CRL/);
        await rejectsWith(svc.putCrl(INSTANCE, 'crl', {}), 'ArgumentInvalid', /crl is required/);
        const sameName = await issueCertificate({ commonName: 'Upload Root', organization: 'Homing', isCA: true });
        await rejectsWith(svc.putCrl(INSTANCE, 'crl', { crl: await issueCrl(root, [], { signer: sameName }) }), 'ArgumentInvalid', /not issued by this CA/);
        await rejectsWith(svc.putCrl(INSTANCE, 'crl', { crl: await issueCrl(other, []) }), 'ArgumentInvalid', /not issued by this CA/);
        const stale = await issueCrl(root, [], { thisUpdate: new Date(Date.now() - 10 * DAY), nextUpdate: new Date(Date.now() - DAY) });
        await rejectsWith(svc.putCrl(INSTANCE, 'crl', { crl: stale }), 'ArgumentInvalid', /stale/);
        await rejectsWith(svc.putCrl(INSTANCE, 'missing', { crl: await issueCrl(root, []) }), 'NotFound');
        assert.deepEqual(await svc.get(INSTANCE, 'crl'), ca);
        await svc.putCrl(INSTANCE, 'crl', { crl: await issueCrl(root, []) });
        const onFile = await svc.get(INSTANCE, 'crl');
        await rejectsWith(svc.putCrl(INSTANCE, 'crl', { crl: await issueCrl(root, [], { thisUpdate: new Date(Date.now() - 5 * DAY) }) }), 'ArgumentInvalid', /older/);
        assert.deepEqual(await svc.get(INSTANCE, 'crl'), onFile);
      });

      it('keeps the CRL when the CA is replaced by the same certificate, drops it for another one', async () => {
        const c = await svc.upload(INSTANCE, 'crl', { certificate: root.certPem });
        await svc.putCrl(INSTANCE, 'crl', { crl: await issueCrl(root, []) });
        assert.notEqual((await svc.upload(INSTANCE, 'crl', { certificate: root.certPem }, '*')).crl, undefined);
        assert.equal((await svc.upload(INSTANCE, 'crl', { certificate: other.certPem }, '*')).crl, undefined);
        assert.equal(c.crl, undefined);
      });
    });

    describe('trust material', () => {
      it('gives verified CAs as anchors, every CA by name, and the CRLs, which the chain logic then applies', async () => {
        const inter = await issueCertificate({ commonName: 'Upload Intermediate', isCA: true, issuer: root });
        const good = await issueDeviceCert(inter, 'good-dev');
        const revoked = await issueDeviceCert(inter, 'revoked-dev');
        await svc.upload(INSTANCE, 'root', { certificate: root.certPem, isVerified: true });
        await svc.upload(INSTANCE, 'inter', { certificate: inter.certPem });
        await svc.putCrl(INSTANCE, 'inter', { crl: await issueCrl(inter, [revoked]) });
        await svc.upload(INSTANCE, 'other', { certificate: other.certPem });

        const t = await loadCaTrustMaterial(db.store.caCertificates, INSTANCE);
        assert.deepEqual(t.anchors.map((a) => a.ref), [{ kind: 'caCertificate', name: 'root' }]);
        assert.deepEqual([...t.byName.keys()].sort(), ['inter', 'other', 'root']);
        assert.equal(t.crls.length, 1);
        assert.deepEqual(t.problems, []);

        const ok = validateDeviceChain({ presented: [good.certPem, inter.certPem], registrationId: 'good-dev', anchors: t.anchors, crls: t.crls, now: clock.now() });
        assert.ok(ok.ok);
        assert.equal(ok.verifiedAt, 2);
        assert.equal(ok.path[2]?.anchor?.ref.name, 'root');
        const no = validateDeviceChain({ presented: [revoked.certPem, inter.certPem], registrationId: 'revoked-dev', anchors: t.anchors, crls: t.crls, now: clock.now() });
        assert.equal(no.ok, false);
        assert.equal(no.ok ? '' : no.reason, 'revoked');
        assert.deepEqual((await svc.trustMaterial(INSTANCE)).anchors.length, 1);
      });
    });
  });
}


import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import {
  MAX_CHAIN_LENGTH,
  TrustAnchors,
  caProblem,
  certificateVersionOf,
  crlSignedBy,
  isVerifiedFrom,
  leafReadableThroughOpenSsl,
  parseCrl,
  subjectCommonNames,
  validateDeviceChain,
  type ChainAccepted,
  type ChainRefused,
  type ChainRequest,
  type ChainResult,
  type ParsedCrl,
  type TrustAnchor,
} from '../../src/core/x509-chain.ts';
import { certificateInfo } from '../../src/provisioning/enrollments/x509.ts';
import { issueCertificate, type IssuedCert } from '../../src/transport/tls/pki.ts';
import { issueDeviceCert } from '../helpers/pki.ts';

const DAY = 86_400_000;
const NOW = Date.now();
const REG = 'x509-dev';

type Ref = { name: string };

function x(c: IssuedCert): X509Certificate {
  return new X509Certificate(c.certPem);
}

function anchor(c: IssuedCert, name: string): TrustAnchor<Ref> {
  return { cert: x(c), ref: { name } };
}

/** What a result decides, for comparing two of them. */
function decision(r: ChainResult<Ref>): unknown {
  if (!r.ok) return { ok: false, reason: r.reason, index: r.index, message: r.message, warnings: r.warnings };
  return {
    ok: true,
    path: r.path.map((c) => ({ sha1: c.sha1Thumbprint, sha256: c.sha256Thumbprint, subject: c.subject, serial: c.serialNumber, presented: c.presented, anchor: c.anchor?.ref })),
    verifiedAt: r.verifiedAt,
    unverifiedReason: r.unverifiedReason,
    warnings: r.warnings,
    // The version of the leaf as certificateInfo reports it, against a fresh object parsed fully.
    leafVersion: certificateVersionOf(r.leaf.cert),
    leafVersionParsed: certificateVersionOf(new X509Certificate(r.leaf.cert.raw)),
  };
}

/**
 * validateDeviceChain, checked against itself with the leaf parsed fully: reading the leaf through OpenSSL must not
 * change any outcome (acceptance, path, reasons, messages, warnings, the leaf's version).
 */
function validate(req: ChainRequest<Ref>): ChainResult<Ref> {
  const quick = validateDeviceChain<Ref>(req);
  const full = validateDeviceChain<Ref>({ ...req, fullLeafParse: true });
  assert.deepEqual(decision(quick), decision(full), 'the quick leaf reading decided otherwise than the full parse');
  if (quick.ok) assert.equal(certificateVersionOf(quick.leaf.cert), certificateVersionOf(new X509Certificate(quick.leaf.cert.raw)));
  return quick;
}

function run(presented: readonly IssuedCert[], anchors: readonly TrustAnchor<Ref>[], over: Partial<ChainRequest<Ref>> = {}): ChainResult<Ref> {
  return validate({ presented: presented.map((c) => c.certPem), registrationId: REG, anchors, now: NOW, ...over });
}

function accepted(r: ChainResult<Ref>): ChainAccepted<Ref> {
  assert.equal(r.ok, true, r.ok ? '' : `refused: ${r.reason}: ${r.message}`);
  return r as ChainAccepted<Ref>;
}

function refused(r: ChainResult<Ref>, reason: ChainRefused['reason'], index?: number): ChainRefused {
  assert.equal(r.ok, false, 'expected a refusal');
  const f = r as ChainRefused;
  assert.equal(f.reason, reason, f.message);
  if (index !== undefined) assert.equal(f.index, index);
  assert.equal(typeof f.message, 'string');
  return f;
}

const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
type X509Crypto = Parameters<typeof x509.X509CrlGenerator.create>[1];

/** A CRL in the name of `issuer`, signed with `signer`'s key (default: the issuer's). */
async function issueCrl(
  issuer: IssuedCert,
  revoked: readonly IssuedCert[],
  o: { signer?: IssuedCert; thisUpdate?: Date; nextUpdate?: Date | null } = {},
): Promise<string> {
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: issuer.cert.subject,
      thisUpdate: o.thisUpdate ?? new Date(NOW - DAY),
      ...(o.nextUpdate === null ? {} : { nextUpdate: o.nextUpdate ?? new Date(NOW + 7 * DAY) }),
      entries: revoked.map((c) => ({ serialNumber: c.cert.serialNumber, revocationDate: new Date(NOW - DAY) })),
      signingAlgorithm: EC_ALG,
      signingKey: (o.signer ?? issuer).key,
    },
    webcrypto as unknown as X509Crypto,
  );
  return crl.toString('pem');
}

function crlOf(pem: string): ParsedCrl {
  const p = parseCrl(pem);
  assert.ok(p.ok, p.ok ? '' : p.reason);
  return p.crl;
}

describe('validateDeviceChain', () => {
  // R (root) → I1 → I2 → leaf (CN x509-dev)
  let R: IssuedCert;
  let I1: IssuedCert;
  let I2: IssuedCert;
  let leaf: IssuedCert;
  before(async () => {
    R = await issueCertificate({ commonName: 'Chain Root', isCA: true });
    I1 = await issueCertificate({ commonName: 'Chain Intermediate 1', isCA: true, issuer: R });
    I2 = await issueCertificate({ commonName: 'Chain Intermediate 2', isCA: true, issuer: I1 });
    leaf = await issueDeviceCert(I2, REG);
  });

  describe('paths and verified certificates', () => {
    it('accepts a self-signed leaf alone as unverified (enough for an individual enrollment, not for a group)', async () => {
      const self = await issueCertificate({ commonName: REG, usages: ['client'] });
      const r = accepted(run([self], []));
      assert.equal(r.path.length, 1);
      assert.equal(r.verifiedAt, undefined);
      assert.match(String(r.unverifiedReason), /self-signed/);
      assert.equal(r.leaf.sha256Thumbprint, certificateInfo(x(self)).sha256Thumbprint);
      assert.equal(r.leaf.presented, true);
    });

    it('accepts a leaf alone whose issuer is verified, with the anchor as the last (not presented) certificate', () => {
      const r = accepted(run([leaf], [anchor(I2, 'i2')]));
      assert.deepEqual(r.path.map((c) => c.presented), [true, false]);
      assert.equal(r.verifiedAt, 1);
      assert.deepEqual(r.path[1]?.anchor?.ref, { name: 'i2' });
      assert.equal(isVerifiedFrom(r, 1), true);
    });

    it('refuses to reach a verified root when an intermediate below it is missing (leaf + I2, only R verified)', () => {
      const r = accepted(run([leaf, I2], [anchor(R, 'root')]));
      assert.equal(r.verifiedAt, undefined, 'the chain must not count as verified');
      assert.equal(r.path.length, 2, 'the path stops at I2: I1 was not sent');
      assert.equal(isVerifiedFrom(r, 1), false, 'a group on I2 cannot be used');
      assert.match(String(r.unverifiedReason), /Chain Intermediate 1/);
    });

    it('builds the full path (leaf, I2, I1, R) with thumbprints in order when the device sends everything below R', () => {
      const r = accepted(run([leaf, I2, I1], [anchor(R, 'root')]));
      assert.equal(r.verifiedAt, 3);
      const expected = [leaf, I2, I1, R].map((c) => certificateInfo(x(c)));
      assert.deepEqual(r.path.map((c) => c.sha1Thumbprint), expected.map((i) => i.sha1Thumbprint));
      assert.deepEqual(r.path.map((c) => c.sha256Thumbprint), expected.map((i) => i.sha256Thumbprint));
      assert.deepEqual(r.path.map((c) => c.serialNumber), expected.map((i) => i.serialNumber.replace(/^0+/, '')));
      assert.deepEqual(r.path.map((c) => c.presented), [true, true, true, false]);
      assert.equal(r.path[3]?.subject, 'CN=Chain Root');
      assert.equal(isVerifiedFrom(r, 1), true);
      assert.equal(isVerifiedFrom(r, 3), true);
      assert.deepEqual(r.warnings, []);
    });

    it('takes intermediates in any order, ignores repeats and unrelated extras, and accepts the anchor when sent', async () => {
      const stranger = await issueCertificate({ commonName: 'Unrelated CA', isCA: true });
      const r = accepted(run([leaf, R, stranger, I1, I2, I2], [anchor(R, 'root')]));
      assert.deepEqual(r.path.map((c) => c.subject), ['CN=x509-dev', 'CN=Chain Intermediate 2', 'CN=Chain Intermediate 1', 'CN=Chain Root']);
      assert.equal(r.path[3]?.presented, true);
      assert.equal(r.verifiedAt, 3);
    });

    it('walks on above the first verified certificate, so a group higher up is still seen', () => {
      const r = accepted(run([leaf, I2, I1], [anchor(I1, 'i1'), anchor(R, 'root')]));
      assert.equal(r.verifiedAt, 2);
      assert.deepEqual(r.path.map((c) => c.anchor?.ref.name), [undefined, undefined, 'i1', 'root']);
      assert.equal(isVerifiedFrom(r, 3), true);
    });

    it('a certificate above the only verified one is not verified itself', () => {
      const r = accepted(run([leaf, I2, I1, R], [anchor(I2, 'i2')]));
      assert.equal(r.path.length, 4);
      assert.equal(r.verifiedAt, 1);
      assert.equal(isVerifiedFrom(r, 1), true);
      assert.equal(isVerifiedFrom(r, 2), false, 'a group on I1 is not backed by I2');
    });

    it('an unverified group CA does not verify anything (no anchors)', () => {
      const r = accepted(run([leaf, I2, I1, R], []));
      assert.equal(r.verifiedAt, undefined);
      assert.equal(isVerifiedFrom(r, 1), false);
    });
  });

  describe('leaf rules', () => {
    it('refuses a CN that is not the registration id, and compares case-insensitively', async () => {
      refused(run([leaf], [anchor(I2, 'i2')], { registrationId: 'other-dev' }), 'leaf-cn-mismatch', 0);
      accepted(run([leaf], [anchor(I2, 'i2')], { registrationId: 'X509-DEV' }));
    });

    it('refuses a CN longer than 64 characters or outside the registration-id charset', async () => {
      const long = 'a'.repeat(65);
      const l1 = await issueDeviceCert(I2, long);
      refused(validate({ presented: [l1.certPem], registrationId: long, anchors: [anchor(I2, 'i2')], now: NOW }), 'leaf-cn-invalid', 0);
      const l2 = await issueDeviceCert(I2, 'bad id!');
      refused(validate({ presented: [l2.certPem], registrationId: 'bad id!', anchors: [anchor(I2, 'i2')], now: NOW }), 'leaf-cn-invalid', 0);
    });

    it('refuses an expired leaf and a leaf that is not valid yet', async () => {
      const expired = await issueCertificate({ commonName: REG, issuer: I2, usages: ['client'], notBefore: new Date(NOW - 10 * DAY), notAfter: new Date(NOW - DAY) });
      refused(run([expired, I2, I1], [anchor(R, 'root')]), 'expired', 0);
      const future = await issueCertificate({ commonName: REG, issuer: I2, usages: ['client'], notBefore: new Date(NOW + DAY), days: 30 });
      refused(run([future, I2, I1], [anchor(R, 'root')]), 'not-yet-valid', 0);
    });

    it('uses the injected time, not the machine clock', () => {
      refused(run([leaf, I2, I1], [anchor(R, 'root')], { now: NOW + 900 * DAY }), 'expired', 0);
      refused(run([leaf, I2, I1], [anchor(R, 'root')], { now: NOW - DAY }), 'not-yet-valid', 0);
    });
  });

  describe('links', () => {
    it('refuses a self-issued leaf pretending to belong under a verified intermediate (wrong signature)', async () => {
      const impostorKey = await issueCertificate({ commonName: 'Impostor', isCA: true });
      const fake = await issueCertificate({ commonName: REG, usages: ['client'], issuer: { ...I2, key: impostorKey.key } });
      assert.equal(x(fake).issuer, x(I2).subject, 'the fake names I2 as its issuer');
      refused(run([fake], [anchor(I2, 'i2')]), 'signature-invalid', 0);
      refused(run([fake, I2, I1], [anchor(R, 'root')]), 'signature-invalid', 0);
    });

    it('refuses an expired intermediate below the verified certificate', async () => {
      const oldI = await issueCertificate({ commonName: 'Old Intermediate', isCA: true, issuer: R, notBefore: new Date(NOW - 20 * DAY), notAfter: new Date(NOW - DAY) });
      const dev = await issueCertificate({ commonName: REG, issuer: oldI, usages: ['client'], notBefore: new Date(NOW - 2 * DAY), days: 30 });
      refused(run([dev, oldI], [anchor(R, 'root')]), 'expired', 1);
    });

    it('refuses an issuer that is not a CA', async () => {
      const notCa = await issueCertificate({ commonName: 'Not A CA', issuer: R, usages: ['client'] });
      const dev = await issueDeviceCert(notCa, REG);
      refused(run([dev, notCa], [anchor(R, 'root')]), 'issuer-not-ca', 1);
    });

    it('enforces pathLenConstraint', async () => {
      const tight = await issueCertificate({ commonName: 'Tight Root', isCA: true, pathLength: 0 });
      const mid = await issueCertificate({ commonName: 'Tight Intermediate', isCA: true, issuer: tight });
      const dev = await issueDeviceCert(mid, REG);
      refused(run([dev, mid], [anchor(tight, 'tight')]), 'path-length-exceeded', 2);
      const direct = await issueDeviceCert(tight, REG);
      accepted(run([direct], [anchor(tight, 'tight')]));
    });

    it(`refuses more than ${MAX_CHAIN_LENGTH} certificates: presented, or in the path with the anchor`, async () => {
      const root = await issueCertificate({ commonName: 'Long Root', isCA: true });
      const cas: IssuedCert[] = [];
      let parent = root;
      for (let i = 0; i < 9; i++) {
        parent = await issueCertificate({ commonName: `Long CA ${i}`, isCA: true, issuer: parent });
        cas.push(parent);
      }
      const dev = await issueDeviceCert(parent, REG);
      const upward = [dev, ...cas.slice().reverse()]; // 10 certificates, leaf first
      // 10 presented + the root as anchor: a path of 11.
      refused(run(upward, [anchor(root, 'root')]), 'too-long');
      // 11 presented.
      refused(run([...upward, root], [anchor(root, 'root')]), 'too-long');
      // 9 presented + anchor = 10: accepted.
      const shorter = await issueDeviceCert(cas[7] as IssuedCert, REG);
      const r = accepted(run([shorter, ...cas.slice(0, 8).reverse()], [anchor(root, 'root')]));
      assert.equal(r.path.length, 10);
      assert.equal(r.verifiedAt, 9);
    });
  });

  describe('bad input', () => {
    it('never throws on unparsable input', () => {
      refused(validate({ presented: [], registrationId: REG, anchors: [], now: NOW }), 'no-certificate');
      refused(validate({ presented: ['not a certificate'], registrationId: REG, anchors: [], now: NOW }), 'unparsable', 0);
      refused(validate({ presented: [leaf.certPem, Buffer.from([0x30, 0x03, 0x02, 0x01])], registrationId: REG, anchors: [], now: NOW }), 'unparsable', 1);
      refused(validate({ presented: [`-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----`], registrationId: REG, anchors: [], now: NOW }), 'unparsable', 0);
      const junk = { presented: 'oops', registrationId: 7, anchors: 'none', now: NOW } as unknown as ChainRequest<Ref>;
      refused(validate(junk), 'no-certificate');
      refused(validate({ presented: [leaf.certPem], registrationId: REG, anchors: [], now: Number.NaN }), 'unparsable');
      const junk2 = { presented: [leaf.certPem], registrationId: REG, anchors: [{ cert: 'x', ref: {} }], now: NOW } as unknown as ChainRequest<Ref>;
      const r = accepted(validate(junk2));
      assert.equal(r.verifiedAt, undefined, 'an unreadable anchor is left out, not trusted');
    });

    it('accepts DER bytes and parsed certificates as well as PEM', () => {
      const r = accepted(validate({ presented: [Buffer.from(leaf.cert.rawData), x(I2), I1.certPem], registrationId: REG, anchors: [anchor(R, 'root')], now: NOW }));
      assert.equal(r.verifiedAt, 3);
    });

    it('leaves anchors that cannot issue certificates out of the trust store, and says so', async () => {
      const notCa = await issueCertificate({ commonName: 'Leafy', usages: ['client'] });
      const t = new TrustAnchors<Ref>([anchor(notCa, 'leafy'), anchor(R, 'root'), anchor(R, 'root-again')]);
      assert.equal(t.size, 1);
      assert.equal(t.problems.length, 1);
      assert.match(String(t.problems[0]), /Leafy/);
      const r = accepted(validate({ presented: [leaf.certPem, I2.certPem, I1.certPem], registrationId: REG, anchors: t, now: NOW }));
      assert.equal(r.path[3]?.anchor?.ref.name, 'root');
    });
  });

  describe('revocation', () => {
    it('refuses a revoked leaf', async () => {
      const crl = crlOf(await issueCrl(I2, [leaf]));
      refused(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [crl] }), 'revoked', 0);
    });

    it('refuses a revoked intermediate, also when the CRL comes from above the verified certificate', async () => {
      const crl = crlOf(await issueCrl(I1, [I2]));
      refused(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [crl] }), 'revoked', 1);
      const rootCrl = crlOf(await issueCrl(R, [I1]));
      refused(run([leaf, I2, I1], [anchor(I1, 'i1'), anchor(R, 'root')], { crls: [rootCrl] }), 'revoked', 2);
    });

    it('accepts certificates a current CRL does not list', async () => {
      const other = await issueDeviceCert(I2, 'someone-else');
      const crl = crlOf(await issueCrl(I2, [other]));
      const r = accepted(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [crl] }));
      assert.deepEqual(r.warnings, []);
    });

    it('ignores a CRL whose signature does not verify (documented rule), with a warning', async () => {
      const sameName = await issueCertificate({ commonName: 'Chain Intermediate 2', isCA: true });
      const forged = crlOf(await issueCrl(I2, [leaf], { signer: sameName }));
      assert.equal(crlSignedBy(forged, x(I2)), false);
      assert.equal(crlSignedBy(forged, x(sameName)), true);
      const r = accepted(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [forged] }));
      assert.equal(r.warnings.length, 1);
      assert.match(String(r.warnings[0]), /ignored/);
    });

    it('refuses when every applicable CRL is stale, unless told to ignore staleness; a revoked entry still refuses', async () => {
      const stale = crlOf(await issueCrl(I2, [], { thisUpdate: new Date(NOW - 10 * DAY), nextUpdate: new Date(NOW - DAY) }));
      refused(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [stale] }), 'crl-stale', 0);
      const r = accepted(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [stale], staleCrl: 'ignore' }));
      assert.match(String(r.warnings[0]), /outside its validity window/);
      const fresh = crlOf(await issueCrl(I2, []));
      accepted(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [stale, fresh] }));
      const staleRevoking = crlOf(await issueCrl(I2, [leaf], { thisUpdate: new Date(NOW - 10 * DAY), nextUpdate: new Date(NOW - DAY) }));
      refused(run([leaf, I2, I1], [anchor(R, 'root')], { crls: [staleRevoking], staleCrl: 'ignore' }), 'revoked', 0);
    });
  });
});

describe('the leaf read through OpenSSL', () => {
  let R: IssuedCert;
  let I: IssuedCert;
  before(async () => {
    R = await issueCertificate({ commonName: 'Quick Root', isCA: true });
    I = await issueCertificate({ commonName: 'Quick Intermediate', isCA: true, issuer: R });
  });

  /** A leaf under `issuer` with a subject and extensions of the test's choosing. */
  async function leafWith(issuer: IssuedCert, subject: string, extensions: x509.Extension[] = [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])]): Promise<X509Certificate> {
    const keys = (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const aki = await x509.AuthorityKeyIdentifierExtension.create(issuer.cert, false, webcrypto as unknown as X509Crypto);
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: '0a1b2c3d',
        subject,
        issuer: issuer.cert.subject,
        notBefore: new Date(NOW - DAY),
        notAfter: new Date(NOW + DAY),
        signingAlgorithm: EC_ALG,
        publicKey: keys.publicKey,
        signingKey: issuer.key,
        extensions: [...extensions, aki],
      } as unknown as Parameters<typeof x509.X509CertificateGenerator.create>[0],
      webcrypto as unknown as X509Crypto,
    );
    return new X509Certificate(cert.toString('pem'));
  }

  const req = (leaf: X509Certificate, registrationId = REG): ChainRequest<Ref> => ({ presented: [leaf, x(I)], registrationId, anchors: [anchor(R, 'root')], now: NOW });

  it('reads a usual device leaf without the ASN.1 parse, with the same path, facts and version as the full parse', async () => {
    const leaf = x(await issueDeviceCert(I, REG));
    assert.equal(leafReadableThroughOpenSsl(leaf), true);
    const r = accepted(validate(req(leaf)));
    assert.equal(r.verifiedAt, 2);
    assert.equal(r.leaf.subject, `CN=${REG}`);
    assert.equal(r.leaf.serialNumber, leaf.serialNumber.replace(/^0+/, ''));
    assert.equal(certificateInfo(leaf).version, 3);
  });

  it('leaves to the full parse what it cannot read exactly, and those decide as before', async () => {
    const cases: [string, X509Certificate, ChainRefused['reason'] | 'accepted'][] = [
      // CN and O in one RDN: Node prints them on one line.
      ['multi-valued RDN', await leafWith(I, `CN=${REG}+O=Homing`), 'accepted'],
      ['two CNs', await leafWith(I, `CN=${REG}, CN=other`), 'leaf-cn-invalid'],
      ['a CN that needs escaping', await leafWith(I, 'CN=x509\\,dev'), 'leaf-cn-invalid'],
      ['an O that holds CN=', await leafWith(I, `CN=${REG}, O=CN=x`), 'accepted'],
      ['no extension Node shows (version unknown)', await leafWith(I, `CN=${REG}`, []), 'accepted'],
    ];
    for (const [what, leaf, outcome] of cases) {
      assert.equal(leafReadableThroughOpenSsl(leaf), false, what);
      const r = validate(req(leaf));
      if (outcome === 'accepted') accepted(r);
      else refused(r, outcome);
    }
  });

  it('refuses through the full walk what the quick one cannot link (same reasons): wrong CN, foreign issuer, expired', async () => {
    const other = await issueCertificate({ commonName: 'Quick Intermediate', isCA: true, issuer: R });
    const stranger = x(await issueDeviceCert(other, REG));
    refused(validate({ ...req(stranger), presented: [stranger, x(I)] }), 'signature-invalid', 0);
    refused(validate(req(x(await issueDeviceCert(I, REG)), 'someone-else')), 'leaf-cn-mismatch', 0);
    const old = x(await issueDeviceCert(I, REG, { notBefore: new Date(NOW - 3 * DAY), notAfter: new Date(NOW - DAY) }));
    assert.equal(leafReadableThroughOpenSsl(old), true);
    refused(validate(req(old)), 'expired', 0);
  });
});

describe('parseCrl and helpers', () => {
  it('reads issuer, update times and serials from PEM, base64 and DER', async () => {
    const ca = await issueCertificate({ commonName: 'CRL CA', organization: 'Homing', isCA: true });
    const d1 = await issueDeviceCert(ca, 'd1');
    const d2 = await issueDeviceCert(ca, 'd2');
    const pem = await issueCrl(ca, [d1, d2], { thisUpdate: new Date(Date.UTC(2026, 0, 1)), nextUpdate: new Date(Date.UTC(2026, 1, 1)) });
    const crl = crlOf(pem);
    assert.equal(crl.issuer, 'CN=CRL CA, O=Homing');
    assert.equal(crl.thisUpdate, Date.UTC(2026, 0, 1));
    assert.equal(crl.nextUpdate, Date.UTC(2026, 1, 1));
    assert.deepEqual([...crl.revokedSerials].sort(), [x(d1).serialNumber, x(d2).serialNumber].map((s) => s.replace(/^0+/, '')).sort());
    assert.equal(crlSignedBy(crl, x(ca)), true);
    assert.equal(crlSignedBy(crl, x(d1)), false, 'another certificate did not sign it');
    const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    assert.equal(crlOf(b64).der.equals(crl.der), true);
    const der = parseCrl(Buffer.from(b64, 'base64'));
    assert.ok(der.ok);
    const noNext = crlOf(await issueCrl(ca, [], { nextUpdate: null }));
    assert.equal(noNext.nextUpdate, undefined);
    assert.equal(noNext.revokedSerials.size, 0);
  });

  it('rejects malformed CRLs without throwing', () => {
    for (const bad of ['', 'hello world', '-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----', Buffer.from([0x30, 0x82, 0xff])]) {
      const r = parseCrl(bad);
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(typeof r.reason, 'string');
    }
  });

  it('tells CA certificates from others and reads the subject CN from the DER', async () => {
    const ca = await issueCertificate({ commonName: 'A CA', isCA: true });
    const dev = await issueDeviceCert(ca, 'dev-1');
    assert.equal(caProblem(x(ca)), undefined);
    assert.match(String(caProblem(x(dev))), /CA:true/);
    assert.deepEqual(subjectCommonNames(x(dev)), ['dev-1']);
  });
});

import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { CaCertificateRecord, CaCertificateStore, CaCrlRecord } from '../../src/store/ca-ports.ts';

/** What a contract run needs from an adapter: a store on an empty, migrated database, and a way to dispose of it. */
export interface CaStoreHarness {
  store: CaCertificateStore;
  close(): Promise<void>;
}

const T0 = '2026-01-01T00:00:00.0000000Z';
const T1 = '2026-01-01T00:05:00.0000000Z';
const MAX = 25;

function hex(seed: string, algo: 'sha1' | 'sha256'): string {
  return createHash(algo).update(seed).digest('hex').toUpperCase();
}

/** A record as the use case writes it; the store never parses the certificate, so its text is a stand-in. */
export function sampleCa(name: string, over: Partial<CaCertificateRecord> = {}): CaCertificateRecord {
  const seed = over.sha256Thumbprint ?? name.toLowerCase();
  return {
    name,
    certificate: `-----BEGIN CERTIFICATE-----\n${Buffer.from(seed).toString('base64')}\n-----END CERTIFICATE-----\n`,
    subject: `CN=${name}, O=Homing`,
    thumbprint: hex(seed, 'sha1'),
    sha256Thumbprint: hex(seed, 'sha256'),
    expiry: '2036-01-01T00:00:00Z',
    isVerified: false,
    created: T0,
    updated: T0,
    etag: `etag-${name}-0`,
    ...over,
  };
}

export function sampleCrl(over: Partial<CaCrlRecord> = {}): CaCrlRecord {
  return { crl: '-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n', thisUpdate: '2026-01-01T00:00:00Z', nextUpdate: '2026-02-01T00:00:00Z', revokedCount: 2, uploaded: T1, ...over };
}

export function caStoreContract(name: string, open: () => Promise<CaStoreHarness>): void {
  describe(`CaCertificateStore contract: ${name}`, () => {
    let harness: CaStoreHarness | undefined;
    let seq = 0;
    const store = (): CaCertificateStore => {
      if (!harness) throw new Error('store not opened');
      return harness.store;
    };
    /** Every test works in an instance of its own. */
    const newInstance = (): string => `inst${++seq}`;

    before(async () => {
      harness = await open();
    });
    after(async () => {
      await harness?.close();
    });

    it('creates a certificate and reads it back by name (any case) and in the list, ordered by lower-cased name', async () => {
      const i = newInstance();
      const a = sampleCa('Root-A');
      const b = sampleCa('beta');
      assert.equal(await store().putCaCertificate(i, b, { kind: 'absent' }, MAX), 'ok');
      assert.equal(await store().putCaCertificate(i, a, { kind: 'absent' }, MAX), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'root-a'), a);
      assert.deepEqual(await store().getCaCertificate(i, 'ROOT-A'), a);
      assert.deepEqual(await store().listCaCertificates(i), [b, a].sort((x, y) => (x.name.toLowerCase() < y.name.toLowerCase() ? -1 : 1)));
      assert.equal(await store().getCaCertificate(i, 'nope'), undefined);
      assert.deepEqual(await store().listCaCertificates(newInstance()), [], 'instances are isolated');
    });

    it('round-trips optional fields: verified, pending code, CRL', async () => {
      const i = newInstance();
      const c = sampleCa('full', { isVerified: true, verificationCode: 'ABC123', crl: sampleCrl() });
      assert.equal(await store().putCaCertificate(i, c, { kind: 'absent' }, MAX), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'full'), c);
      const noNext = sampleCa('no-next', { crl: sampleCrl({ nextUpdate: undefined }) });
      delete noNext.crl?.nextUpdate;
      assert.equal(await store().putCaCertificate(i, noNext, { kind: 'absent' }, MAX), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'no-next'), noNext);
    });

    it('refuses a taken name (any case) and a certificate stored under another name, writing nothing', async () => {
      const i = newInstance();
      const a = sampleCa('ca-a');
      assert.equal(await store().putCaCertificate(i, a, { kind: 'absent' }, MAX), 'ok');
      assert.equal(await store().putCaCertificate(i, sampleCa('CA-A', { sha256Thumbprint: 'OTHER' }), { kind: 'absent' }, MAX), 'exists');
      assert.equal(await store().putCaCertificate(i, sampleCa('ca-b', { sha256Thumbprint: a.sha256Thumbprint }), { kind: 'absent' }, MAX), 'thumbprint-taken');
      assert.deepEqual(await store().listCaCertificates(i), [a]);
      // The same certificate in another instance is fine.
      assert.equal(await store().putCaCertificate(newInstance(), sampleCa('ca-b', { sha256Thumbprint: a.sha256Thumbprint }), { kind: 'absent' }, MAX), 'ok');
    });

    it('stops at the limit per instance, also under concurrent creates', async () => {
      const i = newInstance();
      const results = await Promise.all(Array.from({ length: 8 }, (_, n) => store().putCaCertificate(i, sampleCa(`c${n}`), { kind: 'absent' }, 5)));
      assert.equal(results.filter((r) => r === 'ok').length, 5);
      assert.equal(results.filter((r) => r === 'limit-reached').length, 3);
      assert.equal((await store().listCaCertificates(i)).length, 5);
      // Replacing one at the limit is not a creation.
      const first = (await store().listCaCertificates(i))[0] as CaCertificateRecord;
      assert.equal(await store().putCaCertificate(i, { ...first, isVerified: true, etag: 'e2' }, { kind: 'etag', etag: first.etag }, 5), 'ok');
      assert.equal(await store().putCaCertificate(newInstance(), sampleCa('c0'), { kind: 'absent' }, 5), 'ok', 'the limit counts one instance');
    });

    it('replaces under the etag rules', async () => {
      const i = newInstance();
      const a = sampleCa('rep');
      assert.equal(await store().putCaCertificate(i, a, { kind: 'absent' }, MAX), 'ok');
      const next = sampleCa('Rep', { sha256Thumbprint: 'NEWCERT', etag: 'etag-rep-1', updated: T1, crl: sampleCrl() });
      assert.equal(await store().putCaCertificate(i, next, { kind: 'etag', etag: 'stale' }, MAX), 'precondition-failed');
      assert.equal(await store().putCaCertificate(i, sampleCa('ghost'), { kind: 'etag', etag: '*' }, MAX), 'not-found');
      assert.deepEqual(await store().getCaCertificate(i, 'rep'), a);
      assert.equal(await store().putCaCertificate(i, next, { kind: 'etag', etag: a.etag }, MAX), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'rep'), next);
      const cleared = { ...next, etag: 'etag-rep-2' };
      delete cleared.crl;
      assert.equal(await store().putCaCertificate(i, cleared, { kind: 'etag', etag: '*' }, MAX), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'rep'), cleared, 'a replace writes every field, the CRL too');
      // Replacing with a certificate another name holds is refused.
      assert.equal(await store().putCaCertificate(i, sampleCa('other'), { kind: 'absent' }, MAX), 'ok');
      assert.equal(await store().putCaCertificate(i, { ...cleared, sha256Thumbprint: sampleCa('other').sha256Thumbprint }, { kind: 'etag', etag: '*' }, MAX), 'thumbprint-taken');
    });

    it('sets a verification code and marks verified only with the pending code', async () => {
      const i = newInstance();
      const a = sampleCa('pop');
      await store().putCaCertificate(i, a, { kind: 'absent' }, MAX);
      assert.equal(await store().markVerified(i, 'pop', 'NOCODE', { etag: 'x', updated: T1 }), 'precondition-failed', 'no code pending');
      assert.equal(await store().setVerificationCode(i, 'pop', 'CODE1', { expectedEtag: 'stale', etag: 'e1', updated: T1 }), 'precondition-failed');
      assert.equal(await store().setVerificationCode(i, 'ghost', 'CODE1', { etag: 'e1', updated: T1 }), 'not-found');
      assert.equal(await store().setVerificationCode(i, 'POP', 'CODE1', { expectedEtag: a.etag, etag: 'e1', updated: T1 }), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'pop'), { ...a, verificationCode: 'CODE1', etag: 'e1', updated: T1 });
      assert.equal(await store().setVerificationCode(i, 'pop', 'CODE2', { etag: 'e2', updated: T1 }), 'ok');
      assert.equal(await store().markVerified(i, 'pop', 'CODE1', { etag: 'e3', updated: T1 }), 'precondition-failed', 'a replaced code is spent');
      assert.equal(await store().markVerified(i, 'pop', 'CODE2', { expectedEtag: 'e1', etag: 'e3', updated: T1 }), 'precondition-failed', 'stale etag');
      assert.equal(await store().markVerified(i, 'pop', 'CODE2', { expectedEtag: 'e2', etag: 'e3', updated: T1 }), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'pop'), { ...a, isVerified: true, etag: 'e3', updated: T1 });
      assert.equal(await store().markVerified(i, 'pop', 'CODE2', { etag: 'e4', updated: T1 }), 'precondition-failed', 'a code works once');
      assert.equal(await store().markVerified(i, 'ghost', 'CODE2', { etag: 'e4', updated: T1 }), 'not-found');
    });

    it('stores a CRL only for the certificate it was checked against', async () => {
      const i = newInstance();
      const a = sampleCa('crl-ca');
      await store().putCaCertificate(i, a, { kind: 'absent' }, MAX);
      const crl = sampleCrl();
      assert.equal(await store().putCrl(i, 'crl-ca', crl, 'ANOTHER-CERT', { etag: 'e1', updated: T1 }), 'precondition-failed');
      assert.equal(await store().putCrl(i, 'crl-ca', crl, a.sha256Thumbprint, { expectedEtag: 'stale', etag: 'e1', updated: T1 }), 'precondition-failed');
      assert.equal(await store().putCrl(i, 'ghost', crl, a.sha256Thumbprint, { etag: 'e1', updated: T1 }), 'not-found');
      assert.equal(await store().getCaCertificate(i, 'crl-ca').then((c) => c?.crl), undefined);
      assert.equal(await store().putCrl(i, 'crl-ca', crl, a.sha256Thumbprint, { expectedEtag: a.etag, etag: 'e1', updated: T1 }), 'ok');
      assert.deepEqual(await store().getCaCertificate(i, 'crl-ca'), { ...a, crl, etag: 'e1', updated: T1 });
      const newer = sampleCrl({ thisUpdate: '2026-01-15T00:00:00Z', revokedCount: 3 });
      assert.equal(await store().putCrl(i, 'crl-ca', newer, a.sha256Thumbprint, { etag: 'e2', updated: T1 }), 'ok');
      assert.deepEqual((await store().getCaCertificate(i, 'crl-ca'))?.crl, newer);
    });

    it('deletes under the etag rules, freeing the name, the thumbprint and a place under the limit', async () => {
      const i = newInstance();
      const a = sampleCa('del', { crl: sampleCrl(), verificationCode: 'C' });
      await store().putCaCertificate(i, a, { kind: 'absent' }, 1);
      assert.equal(await store().putCaCertificate(i, sampleCa('second'), { kind: 'absent' }, 1), 'limit-reached');
      assert.equal(await store().deleteCaCertificate(i, 'del', 'stale'), 'precondition-failed');
      assert.equal(await store().deleteCaCertificate(i, 'ghost'), 'not-found');
      assert.equal(await store().deleteCaCertificate(i, 'DEL', a.etag), 'ok');
      assert.equal(await store().getCaCertificate(i, 'del'), undefined);
      assert.equal(await store().deleteCaCertificate(i, 'del'), 'not-found');
      assert.equal(await store().putCaCertificate(i, sampleCa('again', { sha256Thumbprint: a.sha256Thumbprint }), { kind: 'absent' }, 1), 'ok');
      assert.equal(await store().deleteCaCertificate(i, 'again', '*'), 'ok');
    });
  });
}

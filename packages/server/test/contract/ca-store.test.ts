import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openStore } from '../../src/store/open.ts';
import { runStoreContract, sqliteFiles } from '../helpers/store-harness.ts';
import { caStoreContract, sampleCa, sampleCrl } from './ca-store.contract.ts';

const sqliteFile = sqliteFiles('homing-ca-store-');

runStoreContract(caStoreContract, (s) => s.caCertificates, { title: 'CaCertificateStore contract', sqliteFile });

describe('CaCertificateStore: sqlite file', () => {
  it('keeps CA certificates, their verification and CRL when the file is closed and opened again', async () => {
    const path = sqliteFile();
    const first = await openStore({ dialect: 'sqlite', sqlitePath: path });
    const ca = sampleCa('Keep-Me', { isVerified: true, crl: sampleCrl() });
    assert.equal(await first.caCertificates.putCaCertificate('reopen', ca, { kind: 'absent' }, 25), 'ok');
    await first.close();

    const second = await openStore({ dialect: 'sqlite', sqlitePath: path });
    try {
      assert.deepEqual(await second.caCertificates.getCaCertificate('reopen', 'keep-me'), ca);
    } finally {
      await second.close();
    }
  });
});

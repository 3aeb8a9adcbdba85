import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openStore } from '../../src/store/open.ts';
import { runStoreContract, sqliteFiles } from '../helpers/store-harness.ts';
import { provisioningStoreContract, sampleEnrollment, sampleInstance } from './provisioning-store.contract.ts';

const sqliteFile = sqliteFiles('homing-prov-store-');

runStoreContract(provisioningStoreContract, (s) => s.provisioning, { title: 'ProvisioningStore contract', sqliteFile });

describe('ProvisioningStore: sqlite file', () => {
  it('keeps instances and enrollments when the file is closed and opened again', async () => {
    const path = sqliteFile();
    const first = await openStore({ dialect: 'sqlite', sqlitePath: path });
    const inst = sampleInstance('reopen');
    assert.equal(await first.provisioning.createInstance(inst), 'ok');
    assert.equal(await first.provisioning.createIndividualEnrollment(inst.name, sampleEnrollment('Keep-Me')), 'ok');
    await first.close();

    const second = await openStore({ dialect: 'sqlite', sqlitePath: path });
    try {
      assert.deepEqual(await second.provisioning.getInstance('reopen'), inst);
      assert.deepEqual(await second.provisioning.getIndividualEnrollment('reopen', 'keep-me'), sampleEnrollment('Keep-Me'));
    } finally {
      await second.close();
    }
  });
});

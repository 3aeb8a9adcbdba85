import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openStore, type OpenedStore } from '../../src/store/open.ts';
import type { StoreConfig } from '../../src/store/ports.ts';
import { provisioningStoreContract, sampleEnrollment, sampleInstance, type ProvisioningStoreHarness } from './provisioning-store.contract.ts';

const tmp = mkdtempSync(join(tmpdir(), 'homing-prov-store-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let fileSeq = 0;
const sqliteFile = (): string => join(tmp, `db${++fileSeq}`, 'homing.db');

const pgUrl = process.env.HOMING_TEST_DATABASE_URL || process.env.DATABASE_URL || undefined;
const PG_SKIP = 'PostgreSQL not configured: set HOMING_TEST_DATABASE_URL (or DATABASE_URL) to run this suite';

function harness(s: OpenedStore, dispose: () => Promise<void> = () => s.close()): ProvisioningStoreHarness {
  return { store: s.provisioning, close: dispose };
}

/** A fresh random schema per PostgreSQL run, dropped at the end (also when opening failed half-way). */
async function openPostgres(url: string): Promise<{ store: OpenedStore; drop(): Promise<void> }> {
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const cfg: StoreConfig = { dialect: 'postgres', postgresUrl: url, postgresSchema: schema, poolSize: 4 };
  const drop = async (): Promise<void> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query(`drop schema if exists "${schema}" cascade`);
    } finally {
      await client.end();
    }
  };
  try {
    return { store: await openStore(cfg), drop };
  } catch (err) {
    await drop();
    throw err;
  }
}

provisioningStoreContract('sqlite', async () => harness(await openStore({ dialect: 'sqlite', sqlitePath: sqliteFile() })));

provisioningStoreContract('sqlite :memory:', async () => harness(await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' })));

if (pgUrl !== undefined) {
  provisioningStoreContract('postgres', async () => {
    const { store, drop } = await openPostgres(pgUrl);
    return harness(store, async () => {
      try {
        await store.close();
      } finally {
        await drop();
      }
    });
  });
} else {
  describe('ProvisioningStore contract: postgres', { skip: PG_SKIP }, () => {
    it('runs the contract on PostgreSQL', () => {});
  });
}

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

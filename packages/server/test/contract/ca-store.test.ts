import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openStore, type OpenedStore } from '../../src/store/open.ts';
import type { StoreConfig } from '../../src/store/ports.ts';
import { caStoreContract, sampleCa, sampleCrl, type CaStoreHarness } from './ca-store.contract.ts';

const tmp = mkdtempSync(join(tmpdir(), 'homing-ca-store-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let fileSeq = 0;
const sqliteFile = (): string => join(tmp, `db${++fileSeq}`, 'homing.db');

const pgUrl = process.env.HOMING_TEST_DATABASE_URL || process.env.DATABASE_URL || undefined;
const PG_SKIP = 'PostgreSQL not configured: set HOMING_TEST_DATABASE_URL (or DATABASE_URL) to run this suite';

function harness(s: OpenedStore, dispose: () => Promise<void> = () => s.close()): CaStoreHarness {
  return { store: s.caCertificates, close: dispose };
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

caStoreContract('sqlite', async () => harness(await openStore({ dialect: 'sqlite', sqlitePath: sqliteFile() })));

caStoreContract('sqlite :memory:', async () => harness(await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' })));

if (pgUrl !== undefined) {
  caStoreContract('postgres', async () => {
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
  describe('CaCertificateStore contract: postgres', { skip: PG_SKIP }, () => {
    it('runs the contract on PostgreSQL', () => {});
  });
}

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

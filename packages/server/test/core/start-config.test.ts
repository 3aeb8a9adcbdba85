import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readEnv, validateConfig, type HomingConfig } from '../../src/config/config.ts';
import { loadStartConfig } from '../../src/config/load.ts';

const tmp = mkdtempSync(join(tmpdir(), 'homing-start-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const dir = (): string => join(tmp, `d${++seq}`);
const PG = 'postgres://postgres@127.0.0.1:5432/test';

describe('homing start: PostgreSQL pool size', () => {
  it('takes --database-pool-size, else HOMING_DATABASE_POOL_SIZE, for the PostgreSQL store only', async () => {
    const flag = await loadStartConfig({ dataDir: dir(), databaseUrl: PG, databasePoolSize: 16 }, { databaseUrl: undefined, logLevel: undefined, databasePoolSize: 4 });
    assert.deepEqual(flag.store, { dialect: 'postgres', postgresUrl: PG, poolSize: 16 });
    const fromEnv = await loadStartConfig({ dataDir: dir() }, readEnv({ HOMING_DATABASE_URL: PG, HOMING_DATABASE_POOL_SIZE: '12' }));
    assert.deepEqual(fromEnv.store, { dialect: 'postgres', postgresUrl: PG, poolSize: 12 });
    const dflt = await loadStartConfig({ dataDir: dir(), databaseUrl: PG }, { databaseUrl: undefined, logLevel: undefined });
    assert.deepEqual(dflt.store, { dialect: 'postgres', postgresUrl: PG });
    const sqlite = await loadStartConfig({ dataDir: dir(), databasePoolSize: 16 }, { databaseUrl: undefined, logLevel: undefined });
    assert.equal(sqlite.store.dialect, 'sqlite');
    assert.equal(sqlite.store.poolSize, undefined);
  });

  it('refuses a pool size that is not an integer from 1 to 1000, naming the setting', async () => {
    await assert.rejects(loadStartConfig({ dataDir: dir() }, readEnv({ HOMING_DATABASE_URL: PG, HOMING_DATABASE_POOL_SIZE: 'many' })), /config: store\.poolSize must be an integer from 1 to 1000/);
    const base = await loadStartConfig({ dataDir: dir(), databaseUrl: PG }, { databaseUrl: undefined, logLevel: undefined });
    const withPool = (poolSize: number): HomingConfig => ({ ...structuredClone(base), store: { ...base.store, poolSize } });
    for (const bad of [0, -1, 1.5, 1001]) assert.throws(() => validateConfig(withPool(bad)), /config: store\.poolSize/);
    assert.doesNotThrow(() => validateConfig(withPool(1)));
    assert.doesNotThrow(() => validateConfig(withPool(1000)));
  });
});

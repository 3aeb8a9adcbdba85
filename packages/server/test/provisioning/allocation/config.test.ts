import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig, type HomingConfig } from '../../../src/config/config.ts';
import { loadStartConfig } from '../../../src/config/load.ts';

const tmp = mkdtempSync(join(tmpdir(), 'homing-alloc-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const dir = (): string => join(tmp, `d${++seq}`);
const noEnv = { databaseUrl: undefined, logLevel: undefined };
const SECRET = 'a-signing-secret-that-is-long-enough';

describe('allocation configuration (dps.geoLatency, dps.customAllocation)', () => {
  it('validateConfig accepts good settings and names the bad field, never the secret', async () => {
    const base = await loadStartConfig({ dataDir: dir() }, noEnv);
    assert.equal(base.dps.geoLatency, undefined);
    assert.equal(base.dps.customAllocation, undefined);
    const withDps = (dps: Partial<HomingConfig['dps']>): HomingConfig => ({ ...structuredClone(base), dps: { ...structuredClone(base.dps), ...dps } });
    const good = validateConfig(
      withDps({
        geoLatency: { networks: [{ cidr: '127.0.1.0/24', location: 'east' }, { cidr: '::1/128', location: 'east' }], latencyMs: { east: { local: 3 } }, tieEpsilonMs: 2 },
        customAllocation: { timeoutMs: 5000, signingSecret: SECRET },
      }),
    );
    assert.equal(good.dps.customAllocation?.timeoutMs, 5000);
    assert.throws(() => validateConfig(withDps({ geoLatency: { networks: [{ cidr: '127.0.1.0/40', location: 'x' }], latencyMs: {} } })), /config: dps\.geoLatency: networks\[0\]/);
    assert.throws(() => validateConfig(withDps({ geoLatency: { networks: [], latencyMs: { a: { b: Number.NaN } } } })), /config: dps\.geoLatency: latencyMs\.a\.b/);
    assert.throws(() => validateConfig(withDps({ customAllocation: { timeoutMs: 0 } })), /config: dps\.customAllocation: timeoutMs/);
    let message = '';
    try {
      validateConfig(withDps({ customAllocation: { signingSecret: 'short-s3cr3t' } }));
    } catch (e) {
      message = (e as Error).message;
    }
    assert.match(message, /config: dps\.customAllocation: signingSecret/);
    assert.ok(!message.includes('short-s3cr3t'));
  });

  it('loadStartConfig reads them from a config file; caFile is relative to the file; bad files are named', async () => {
    const file = join(tmp, 'homing.json');
    writeFileSync(
      file,
      JSON.stringify({
        dps: {
          geoLatency: { networks: [{ cidr: '127.0.0.0/8', location: 'lab' }], latencyMs: { lab: { local: 1 } } },
          customAllocation: { timeoutMs: 2000, signingSecret: SECRET, caFile: 'certs/ca.pem' },
        },
      }),
    );
    const c = await loadStartConfig({ dataDir: dir(), configFile: file }, noEnv);
    assert.deepEqual(c.dps.geoLatency, { networks: [{ cidr: '127.0.0.0/8', location: 'lab' }], latencyMs: { lab: { local: 1 } } });
    assert.deepEqual(c.dps.customAllocation, { timeoutMs: 2000, signingSecret: SECRET, caFile: join(tmp, 'certs', 'ca.pem') });

    const bad = join(tmp, 'bad.json');
    writeFileSync(bad, `{"dps": {"customAllocation": {"signingSecret": "${SECRET}"}`);
    await assert.rejects(loadStartConfig({ dataDir: dir(), configFile: bad }, noEnv), (e: Error) => /bad\.json: not valid JSON/.test(e.message) && !e.message.includes(SECRET));
    writeFileSync(bad, JSON.stringify({ dps: { geoLatencies: {} } }));
    await assert.rejects(loadStartConfig({ dataDir: dir(), configFile: bad }, noEnv), /unknown setting "dps\.geoLatencies"/);
    writeFileSync(bad, JSON.stringify({ hubs: [] }));
    await assert.rejects(loadStartConfig({ dataDir: dir(), configFile: bad }, noEnv), /unknown setting "hubs"/);
    await assert.rejects(loadStartConfig({ dataDir: dir(), configFile: join(tmp, 'missing.json') }, noEnv), /missing\.json: ENOENT/);
    writeFileSync(bad, JSON.stringify({ dps: { geoLatency: { networks: [{ cidr: 'x', location: 'y' }], latencyMs: {} } } }));
    await assert.rejects(loadStartConfig({ dataDir: dir(), configFile: bad }, noEnv), /config: dps\.geoLatency: networks\[0\]/);
  });
});

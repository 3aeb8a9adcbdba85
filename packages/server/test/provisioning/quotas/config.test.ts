import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { parseQuota, startCommand } from '../../../../cli/src/commands/start.ts';
import { validateConfig, type HomingConfig } from '../../../src/config/config.ts';
import { loadStartConfig } from '../../../src/config/load.ts';
import { InstanceService } from '../../../src/provisioning/instances.ts';
import { openStore } from '../../../src/store/open.ts';
import { startHomingProcess } from '../../helpers/homing-process.ts';
import { httpsJson, type JsonAnswer } from '../../helpers/https-json.ts';
import { realIds } from '../../helpers/ids.ts';

const tmp = mkdtempSync(join(tmpdir(), 'homing-quota-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const dir = (): string => join(tmp, `d${++seq}`);

describe('quota configuration', () => {
  it('loadStartConfig: --registrations-per-minute and --quota-preset become dps.quotas; absent: no quotas', async () => {
    const c = await loadStartConfig({ dataDir: dir(), registrationsPerMinute: 120, quotaPreset: 'azure' }, { databaseUrl: undefined, logLevel: undefined });
    assert.deepEqual(c.dps.quotas, { preset: 'azure', registrationsPerMinute: 120 });
    const zero = await loadStartConfig({ dataDir: dir(), registrationsPerMinute: 0 }, { databaseUrl: undefined, logLevel: undefined });
    assert.deepEqual(zero.dps.quotas, { registrationsPerMinute: 0 });
    const none = await loadStartConfig({ dataDir: dir() }, { databaseUrl: undefined, logLevel: undefined });
    assert.equal(none.dps.quotas, undefined);
  });

  it('validateConfig refuses bad quota and overload values', async () => {
    const base = await loadStartConfig({ dataDir: dir() }, { databaseUrl: undefined, logLevel: undefined });
    const withDps = (dps: Partial<HomingConfig['dps']>): HomingConfig => ({ ...structuredClone(base), dps: { ...structuredClone(base.dps), ...dps } });
    assert.throws(() => validateConfig(withDps({ quotas: { registrationsPerMinute: -5 } })), /config: dps\.quotas: registrationsPerMinute/);
    assert.throws(() => validateConfig(withDps({ quotas: { registrationsPerMinute: 1.5 } })), /config: dps\.quotas/);
    assert.throws(() => validateConfig(withDps({ overload: { maxInFlightRegistrations: 0 } })), /config: dps\.overload\.maxInFlightRegistrations/);
    assert.doesNotThrow(() => validateConfig(withDps({ quotas: { preset: 'azure' }, overload: { maxInFlightRegistrations: 10, maxEventLoopLagMs: 50 } })));
  });

  it('the CLI flags: --registrations-per-minute takes an integer from 0; --quota-preset default|azure', () => {
    assert.equal(parseQuota('0'), 0);
    assert.equal(parseQuota('1000'), 1000);
    for (const bad of ['-1', '1.5', 'abc', '', '2000000000']) assert.throws(() => parseQuota(bad), InvalidArgumentError, bad);
    const flags = startCommand().options.map((o) => o.long);
    assert.ok(flags.includes('--registrations-per-minute'));
    assert.ok(flags.includes('--quota-preset'));
  });

  it('ensureInstance writes configured quotas over the stored ones at every start, keeping fields not configured', async () => {
    const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
    try {
      const admin = new InstanceService({ store: store.provisioning, ids: realIds });
      const spec = { name: 'homing', serviceHostNames: ['dps.cfg.test'] };
      const first = await admin.ensureInstance({ ...spec, quotas: { registrationsPerMinute: 10 } });
      assert.equal(first.created, true);
      assert.deepEqual(first.instance.quotas, { registrationsPerMinute: 10 });
      // The operator changes quotas at runtime.
      await admin.setQuotas('homing', { registrationsPerMinute: 50, operationsPerMinute: 500 });
      // A start without quota options keeps them.
      const plain = await admin.ensureInstance(spec);
      assert.deepEqual(plain.instance.quotas, { registrationsPerMinute: 50, operationsPerMinute: 500 });
      // A start with --registrations-per-minute sets that field only.
      const flagged = await admin.ensureInstance({ ...spec, quotas: { registrationsPerMinute: 20 } });
      assert.deepEqual(flagged.instance.quotas, { registrationsPerMinute: 20, operationsPerMinute: 500 });
      assert.deepEqual((await admin.getInstance('homing')).quotas, { registrationsPerMinute: 20, operationsPerMinute: 500 });
      // The same configuration again: nothing written (same etag).
      const again = await admin.ensureInstance({ ...spec, quotas: { registrationsPerMinute: 20 } });
      assert.equal(again.instance.etag, flagged.instance.etag);
      await assert.rejects(admin.ensureInstance({ ...spec, quotas: { registrationsPerMinute: -1 } }), /registrationsPerMinute/);
    } finally {
      await store.close();
    }
  });
});

function https(host: string, port: number, ca: string, method: string, path: string, o: { auth?: string; body?: unknown } = {}): Promise<JsonAnswer> {
  return httpsJson({ host, port, ca, method, path, headers: { 'content-type': 'application/json' } }, o);
}

function serviceSas(cs: string): string {
  const host = /HostName=([^;]+)/.exec(cs)?.[1] ?? '';
  const keyName = /SharedAccessKeyName=([^;]+)/.exec(cs)?.[1] ?? '';
  const key = /SharedAccessKey=([^;]+)/.exec(cs)?.[1] ?? '';
  const se = Math.floor(Date.now() / 1000) + 600;
  const sig = createHmac('sha256', Buffer.from(key, 'base64')).update(`${host}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${host}&sig=${encodeURIComponent(sig)}&skn=${keyName}&se=${se}`;
}

describe('homing start --registrations-per-minute', () => {
  it('stores the quota with the default instance; the admin API shows it and the 3rd registration in a minute gets 429', async () => {
    const homing = await startHomingProcess(['--registrations-per-minute', '2', '--https-port', '0', '--mqtt-port', '0']);
    try {
      const ca = readFileSync(homing.connection.caCertPath, 'utf8');
      const host = homing.connection.dps.deviceHost;
      const port = Number(/device endpoints\s*: https:\/\/[^:]+:(\d+)/.exec(homing.stdout())?.[1]);
      assert.ok(port > 0, homing.stdout());
      const auth = serviceSas(homing.connection.dps.serviceConnectionString);
      const q = await https(host, port, ca, 'GET', '/homing/instance/quotas?api-version=2021-10-01', { auth });
      assert.equal(q.status, 200, JSON.stringify(q.json));
      assert.deepEqual(q.json.settings, { registrationsPerMinute: 2 });
      assert.deepEqual(q.json.effective, { registrationsPerMinute: 2, operationsPerMinute: null, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });

      const idScope = homing.connection.dps.idScope;
      const register = (id: string) => https(host, port, ca, 'PUT', `/${idScope}/registrations/${id}/register?api-version=2021-06-01`, { body: { registrationId: id } });
      assert.equal((await register('cli-1')).status, 401);
      assert.equal((await register('cli-2')).status, 401);
      const r = await register('cli-3');
      assert.equal(r.status, 429);
      assert.equal(r.json.errorCode, 429001);
      // 2 per minute: a unit frees up 30 s after the first registration (less the real time since then).
      const ra = String(r.headers['retry-after']);
      assert.match(ra, /^[0-9]+$/);
      assert.ok(Number(ra) >= 1 && Number(ra) <= 30, ra);
    } finally {
      assert.equal(await homing.stop(), 0);
      homing.cleanup();
    }
  });
});

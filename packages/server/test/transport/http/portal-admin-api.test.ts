import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { buildSas } from '../../../src/core/sas.ts';
import { loadStartConfig } from '../../../src/config/load.ts';
import { createLogger, silentLogger } from '../../../src/observability/logger.ts';
import type { RegistrationRecord } from '../../../src/provisioning/model.ts';
import { startHoming, type RunningHoming } from '../../../src/server.ts';
import { RawClient } from '../mqtt/helpers.ts';
import { REGISTER, dpsUsername, registerBody, request as mqttRequest, type DpsAnswer } from '../mqtt/dps/helpers.ts';
import { createHttpsApp } from '../../../src/transport/http/app.ts';
import { registerPortal } from '../../../src/transport/http/portal.ts';
import { realIds, uniqueLoopback } from '../../helpers/ids.ts';
import { putRegistrationRecord } from '../../helpers/records.ts';

/**
 * The web portal's admin routes (`/homing/whoami`, `/homing/registrations`, `/homing/stats`, `/homing/events`) on a
 * real server (startHoming, real TLS), on SQLite and, when HOMING_TEST_DATABASE_URL is set, on PostgreSQL; and the
 * static serving of the built portal (portal.ts).
 */
const API = 'api-version=2021-10-01';
const DEVICE_API = 'api-version=2021-06-01';
const pgUrl = process.env.HOMING_TEST_DATABASE_URL || process.env.DATABASE_URL || undefined;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown>;
  text: string;
}

function suite(dialect: 'sqlite' | 'postgres'): void {
  describe(`portal admin API (${dialect})`, { skip: dialect === 'postgres' && !pgUrl ? 'PostgreSQL not configured: set HOMING_TEST_DATABASE_URL' : false }, () => {
    let homing: RunningHoming;
    let dataDir: string;
    let ca: string;
    let dpsHost: string;
    let hubA: string;
    let hubB: string;
    const schema = `portal_${realIds.uuid().replace(/-/g, '').slice(0, 12)}`;

    const policy = (keyName: string) => {
      const p = homing.dps.instance.policies.find((x) => x.keyName === keyName);
      assert.ok(p, keyName);
      return p;
    };
    const sas = (keyName = 'provisioningserviceowner', key?: string) =>
      buildSas({ sr: dpsHost, keyBase64: key ?? policy(keyName).primaryKey, keyName, expirySeconds: Math.floor(Date.now() / 1000) + 600 });

    function https(method: string, path: string, o: { auth?: string; body?: unknown } = {}): Promise<Answer> {
      const payload = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body));
      return new Promise((resolve, reject) => {
        const req = request(
          {
            host: dpsHost,
            port: homing.dps.httpsPort,
            ca,
            method,
            path,
            agent: false,
            headers: { ...(o.auth ? { authorization: o.auth } : {}), ...(payload ? { 'content-type': 'application/json' } : {}) },
          },
          (res) => {
            let t = '';
            res.on('data', (c: Buffer) => (t += c.toString()));
            res.on('end', () => {
              let json: Record<string, unknown> = {};
              try {
                json = t ? (JSON.parse(t) as Record<string, unknown>) : {};
              } catch {
                // not JSON
              }
              resolve({ status: res.statusCode ?? 0, headers: res.headers, json, text: t });
            });
          },
        );
        req.on('error', reject);
        if (payload) req.write(payload);
        req.end();
      });
    }

    /** Opens the event stream and resolves with the first event matching `match`. */
    function nextEvent(match: (e: Record<string, unknown>) => boolean, since?: string): { event: Promise<Record<string, unknown>>; close: () => void } {
      let close = (): void => undefined;
      const event = new Promise<Record<string, unknown>>((resolve, reject) => {
        const req = request(
          { host: dpsHost, port: homing.dps.httpsPort, ca, method: 'GET', path: `/homing/events${since ? `?since=${encodeURIComponent(since)}` : ''}`, agent: false, headers: { authorization: sas() } },
          (res) => {
            assert.equal(res.statusCode, 200);
            assert.match(String(res.headers['content-type']), /^text\/event-stream/);
            let buf = '';
            res.on('data', (c: Buffer) => {
              buf += c.toString();
              let i: number;
              while ((i = buf.indexOf('\n\n')) >= 0) {
                const block = buf.slice(0, i);
                buf = buf.slice(i + 2);
                const data = block.split('\n').find((l) => l.startsWith('data:'));
                if (block.includes('event: registration') && data) {
                  const e = JSON.parse(data.slice(5)) as Record<string, unknown>;
                  if (match(e)) resolve(e);
                }
              }
            });
            res.on('error', () => undefined);
          },
        );
        req.on('error', reject);
        req.end();
        close = () => req.destroy();
      });
      return { event, close };
    }

    const putRecord = (registrationId: string, over: Partial<RegistrationRecord>): Promise<void> => putRegistrationRecord(homing, registrationId, over);

    async function registerDevice(registrationId: string): Promise<Answer> {
      const put = await https('PUT', `/enrollments/${registrationId}?${API}`, { auth: sas(), body: { registrationId, attestation: { type: 'symmetricKey', symmetricKey: {} } } });
      assert.equal(put.status, 200, put.text);
      const key = String(((put.json.attestation as { symmetricKey: { primaryKey: string } }).symmetricKey).primaryKey);
      const idScope = homing.dps.instance.idScope;
      const auth = buildSas({ sr: `${idScope}/registrations/${registrationId}`, keyBase64: key, keyName: 'registration', expirySeconds: Math.floor(Date.now() / 1000) + 600 });
      return https('PUT', `/${idScope}/registrations/${registrationId}/register?${DEVICE_API}`, { auth, body: { registrationId } });
    }

    /** One register request over the DPS MQTT listener with a raw client; the answer's status. */
    async function registerOverMqtt(registrationId: string): Promise<DpsAnswer> {
      const put = await https('PUT', `/enrollments/${registrationId}?${API}`, { auth: sas(), body: { registrationId, attestation: { type: 'symmetricKey', symmetricKey: {} } } });
      assert.equal(put.status, 200, put.text);
      const key = String(((put.json.attestation as { symmetricKey: { primaryKey: string } }).symmetricKey).primaryKey);
      const idScope = homing.dps.instance.idScope;
      const c = await RawClient.connect(homing.dps.mqttPort, ca, { host: dpsHost, servername: dpsHost });
      try {
        const password = buildSas({ sr: `${idScope}/registrations/${registrationId}`, keyBase64: key, keyName: 'registration', expirySeconds: Math.floor(Date.now() / 1000) + 600 });
        const ack = await c.connect({ clientId: registrationId, username: dpsUsername(idScope, registrationId), password });
        assert.equal(ack.returnCode, 0);
        return await mqttRequest(c, `${REGISTER}?$rid=1`, registerBody(registrationId));
      } finally {
        c.end();
      }
    }

    before(async () => {
      dataDir = mkdtempSync(join(tmpdir(), 'homing-portal-api-'));
      dpsHost = uniqueLoopback();
      hubA = uniqueLoopback();
      hubB = uniqueLoopback();
      const base = await loadStartConfig({ dataDir, hubHosts: [hubA, hubB], dpsHost, httpsPort: 0, mqttPort: 0 }, { databaseUrl: undefined, logLevel: undefined });
      const store = dialect === 'postgres' ? { dialect: 'postgres' as const, postgresUrl: pgUrl ?? '', postgresSchema: schema, poolSize: 4 } : base.store;
      homing = await startHoming({ ...base, store, dps: { ...base.dps, responseBudgetMs: 30_000 } }, { logger: silentLogger() });
      ca = readFileSync(homing.pki.caCertPath, 'utf8');
    });

    after(async () => {
      await homing?.stop();
      rmSync(dataDir, { recursive: true, force: true });
      if (dialect === 'postgres' && pgUrl) {
        const c = new pg.Client({ connectionString: pgUrl });
        await c.connect();
        await c.query(`drop schema if exists "${schema}" cascade`);
        await c.end();
      }
    });

    test('connection info carries the portal URL', () => {
      assert.equal(homing.connectionInfo.portalUrl, `https://${dpsHost}:${homing.dps.httpsPort}/portal/`);
    });

    test('whoami: the policy and its rights; every authentication failure is the same 401', async () => {
      const owner = await https('GET', '/homing/whoami', { auth: sas() });
      assert.equal(owner.status, 200);
      assert.equal(owner.json.keyName, 'provisioningserviceowner');
      assert.ok((owner.json.rights as string[]).includes('EnrollmentWrite'));
      assert.equal(owner.json.idScope, homing.dps.instance.idScope);
      assert.equal(typeof (owner.json.features as { deprovision: unknown }).deprovision, 'boolean');
      const ro = await https('GET', '/homing/whoami', { auth: sas('enrollmentread') });
      assert.equal(ro.status, 200);
      assert.deepEqual(ro.json.rights, ['EnrollmentRead']);
      for (const auth of [undefined, 'SharedAccessSignature nope', sas('enrollmentread', Buffer.alloc(32, 7).toString('base64')), sas('nosuchpolicy', Buffer.alloc(32).toString('base64'))]) {
        const r = await https('GET', '/homing/whoami', auth === undefined ? {} : { auth });
        assert.equal(r.status, 401);
        assert.equal(r.json.errorCode, 401000);
      }
    });

    test('registrations: the whole instance, paged, filtered; rights and bad parameters refused', async () => {
      await putRecord('rec-a', { assignedHub: hubA, deviceId: 'rec-a' });
      await putRecord('rec-b', { assignedHub: hubB, deviceId: 'rec-b', enrollment: { kind: 'group', enrollmentGroupId: 'Grp-1' } });
      await putRecord('rec-c', { status: 'failed', errorCode: 401002, errorMessage: 'bad key' });
      await putRecord('rec-d', { assignedHub: hubA, deviceId: 'rec-d', enrollment: { kind: 'group', enrollmentGroupId: 'grp-1' } });
      await putRecord('rec-e', { status: 'disabled' });

      const seen: string[] = [];
      let after: string | undefined;
      for (let i = 0; i < 10; i++) {
        const r = await https('GET', `/homing/registrations?limit=2${after ? `&after=${encodeURIComponent(after)}` : ''}`, { auth: sas('registrationstatusread') });
        assert.equal(r.status, 200, r.text);
        const items = r.json.items as { registrationId: string }[];
        assert.ok(items.length <= 2);
        seen.push(...items.map((x) => x.registrationId));
        after = r.json.next as string | undefined;
        if (after === undefined) break;
      }
      assert.deepEqual(seen, ['rec-a', 'rec-b', 'rec-c', 'rec-d', 'rec-e']);

      const failed = await https('GET', '/homing/registrations?status=failed', { auth: sas() });
      assert.deepEqual((failed.json.items as { registrationId: string; errorCode: number }[]).map((x) => [x.registrationId, x.errorCode]), [['rec-c', 401002]]);
      const onA = await https('GET', `/homing/registrations?hub=${hubA.toUpperCase()}`, { auth: sas() });
      assert.deepEqual((onA.json.items as { registrationId: string }[]).map((x) => x.registrationId), ['rec-a', 'rec-d']);
      const group = await https('GET', '/homing/registrations?group=GRP-1', { auth: sas() });
      const gItems = group.json.items as { registrationId: string; enrollmentGroupId: string; etag: string }[];
      assert.deepEqual(gItems.map((x) => x.registrationId), ['rec-b', 'rec-d']);
      assert.ok(gItems.every((x) => typeof x.etag === 'string' && x.etag.length > 0));

      for (const q of ['limit=0', 'limit=501', 'limit=abc', 'status=bogus']) {
        const r = await https('GET', `/homing/registrations?${q}`, { auth: sas() });
        assert.equal(r.status, 400, q);
      }
      assert.equal((await https('GET', '/homing/registrations', { auth: sas('enrollmentread') })).status, 401);
    });

    test('stats: devices per hub from the records, statuses, a minute series and the quota', async () => {
      const r = await https('GET', '/homing/stats', { auth: sas() });
      assert.equal(r.status, 200, r.text);
      const hubs = r.json.hubs as { name: string; devices: number }[];
      const count = (h: string) => hubs.find((x) => x.name.toLowerCase() === h.toLowerCase())?.devices;
      assert.equal(count(hubA), 2);
      assert.equal(count(hubB), 1);
      assert.equal((r.json.statuses as Record<string, number>).failed, 1);
      assert.equal((r.json.perMinute as unknown[]).length, 60);
      assert.deepEqual(r.json.quota, { registrationsPerMinute: null });
      assert.ok((r.json.history as unknown[]).length >= 1);
      assert.equal((await https('GET', '/homing/stats', { auth: sas('serviceconfig') })).status, 401);
    });

    test('events: a device registration streams as an assigned event; 429s are counted', async () => {
      const since = new Date(Date.now() - 1000).toISOString();
      const stream = nextEvent((e) => e.registrationId === 'portal-dev-1', since);
      try {
        const reg = await registerDevice('portal-dev-1');
        assert.equal(reg.status, 200, reg.text);
        const e = await stream.event;
        assert.equal(e.type, 'assigned');
        assert.equal(e.deviceId, 'portal-dev-1');
        assert.ok([hubA, hubB].includes(String(e.assignedHub)));
      } finally {
        stream.close();
      }
      // One registration a minute: the second register call is throttled.
      assert.equal((await https('PUT', '/homing/instance/quotas', { auth: sas(), body: { registrationsPerMinute: 1 } })).status, 200);
      let throttledSeen = false;
      for (let i = 0; i < 5 && !throttledSeen; i++) throttledSeen = (await registerDevice(`portal-dev-t${i}`)).status === 429;
      assert.ok(throttledSeen, 'a register call was throttled');
      const stats = await https('GET', '/homing/stats', { auth: sas() });
      const minutes = stats.json.perMinute as { assigned: number; throttled: number; calls: number }[];
      const throttledOverHttps = minutes.reduce((s, m) => s + m.throttled, 0);
      assert.ok(throttledOverHttps >= 1);
      assert.ok(minutes.reduce((s, m) => s + m.assigned, 0) >= 1);
      assert.deepEqual(stats.json.quota, { registrationsPerMinute: 1 });
      // A register over MQTT in the same minute is throttled too, and counted with the HTTPS ones.
      const mqttAnswer = await registerOverMqtt('portal-dev-mqtt');
      assert.equal(mqttAnswer.status, 429);
      const after = (await https('GET', '/homing/stats', { auth: sas() })).json.perMinute as { throttled: number }[];
      assert.equal(after.reduce((s, m) => s + m.throttled, 0), throttledOverHttps + 1);
      assert.equal((await https('PUT', '/homing/instance/quotas', { auth: sas(), body: {} })).status, 200);
    });

    test('the event stream needs RegistrationStatusRead', async () => {
      const r = await https('GET', '/homing/events', { auth: sas('enrollmentread') });
      assert.equal(r.status, 401);
    });
  });
}

suite('sqlite');
suite('postgres');

describe('portal static serving', () => {
  test('serves the built files with security headers; index.html for app paths; 404 for a missing asset', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'homing-portal-dist-'));
    try {
      mkdirSync(join(dir, 'assets'));
      writeFileSync(join(dir, 'index.html'), '<!doctype html><div id="root"></div>');
      writeFileSync(join(dir, 'assets', 'index-AbC123.js'), 'console.log(1)');
      const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'test' });
      assert.deepEqual(registerPortal(app, { logger: silentLogger(), distDir: dir }), { mounted: true, distDir: dir });
      const redirect = await app.inject({ method: 'GET', url: '/portal' });
      assert.equal(redirect.statusCode, 302);
      assert.equal(redirect.headers.location, '/portal/');
      const index = await app.inject({ method: 'GET', url: '/portal/' });
      assert.equal(index.statusCode, 200);
      assert.match(String(index.headers['content-type']), /text\/html/);
      assert.match(String(index.headers['content-security-policy']), /frame-ancestors 'none'/);
      assert.equal(index.headers['cache-control'], 'no-store');
      const asset = await app.inject({ method: 'GET', url: '/portal/assets/index-AbC123.js' });
      assert.equal(asset.statusCode, 200);
      assert.match(String(asset.headers['content-type']), /javascript/);
      assert.match(String(asset.headers['cache-control']), /immutable/);
      assert.equal((await app.inject({ method: 'GET', url: '/portal/assets/nope.js' })).statusCode, 404);
      assert.equal((await app.inject({ method: 'GET', url: '/portal/some/app/path' })).body, '<!doctype html><div id="root"></div>');
      const traversal = await app.inject({ method: 'GET', url: '/portal/..%2F..%2Fetc%2Fpasswd' });
      assert.ok(traversal.statusCode === 404 || !traversal.body.includes('root:'), 'nothing outside dist is served');
      await app.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a portal that was not built: 503 with the command, and one log line', async () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'warn', destination: new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }) });
    const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'test' });
    assert.deepEqual(registerPortal(app, { logger, distDir: join(tmpdir(), 'homing-no-such-portal-dist') }), { mounted: false });
    const r = await app.inject({ method: 'GET', url: '/portal/' });
    assert.equal(r.statusCode, 503);
    assert.match(r.body, /npm run build/);
    assert.equal(lines.filter((l) => l.includes('web portal not built')).length, 1);
    await app.close();
  });
});

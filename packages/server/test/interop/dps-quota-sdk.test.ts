import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../src/provisioning/hub-client-inprocess.ts';
import { GuardedDeviceRuntime, OverloadGuard } from '../../src/provisioning/quotas/overload.ts';
import { QuotaService } from '../../src/provisioning/quotas/quota-service.ts';
import type { InstanceQuotaSettings } from '../../src/provisioning/model.ts';
import { RegistrationService } from '../../src/provisioning/registration.ts';
import { createHttpsApp } from '../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../src/transport/http/dps-device-api.ts';
import { createDpsRealm, type DpsMqttRuntime } from '../../src/transport/mqtt/dps/realm.ts';
import { startMqttListener, type MqttListener, type MqttRealm } from '../../src/transport/mqtt/listener.ts';
import { ManualClock, realIds, uniqueLoopback } from '../helpers/ids.ts';
import { createTestPki, type TestPki } from '../helpers/pki.ts';
import { createRuntimeFixture, type RuntimeFixture } from '../provisioning/runtime/fixture.ts';

/**
 * Quotas and overload protection as the official DPS device SDKs see them (protocol-device.md A.5 and B):
 * - over HTTPS every non-2xx is fatal to `register()`: a 429 is the SDK's `ThrottlingError`, at once (no hang);
 * - over MQTT a 429 is retried after `retry-after`: the device waits, registers again and is assigned.
 * Devices run in child processes trusting the test CA (NODE_EXTRA_CA_CERTS), with the SDK scripts the other interop
 * tests use. Quota clocks are manual (moved by the test or when a 429 is answered); the overload guard gets an
 * injected lag source. The SDKs' own waits (retry-after = 1 s) are the only real time spent.
 */
const HTTP_DEVICE = fileURLToPath(new URL('../provisioning/runtime/support/dps-sdk-device.cjs', import.meta.url));
const MQTT_DEVICE = fileURLToPath(new URL('./sdk/dps-mqtt-device.cjs', import.meta.url));

interface Step {
  name: string;
  host: string;
  idScope: string;
  registrationId: string;
  key: string;
}

interface StepResult {
  name: string;
  ok: boolean;
  result?: { assignedHub?: string; deviceId?: string; status?: string };
  error?: { name?: string; message?: string; ctor?: string };
}

function runDevice(script: string, steps: Step[], caFile: string, timeoutMs = 120_000): Promise<Map<string, StepResult>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, JSON.stringify(steps)], { env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`device process timed out\nstdout:\n${out}\nstderr:\n${err}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      const results = new Map<string, StepResult>();
      for (const line of out.split('\n').filter((l) => l.trim().length > 0)) {
        const r = JSON.parse(line) as StepResult;
        results.set(r.name, r);
      }
      if (code !== 0 || results.size !== steps.length) reject(new Error(`device process exited ${String(code)}\nstdout:\n${out}\nstderr:\n${err}`));
      else resolve(results);
    });
  });
}

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function rawPut(host: string, ca: string, path: string, body: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host, port: 443, ca, method: 'PUT', path, agent: false, headers: { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)) } },
      (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: t }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Wraps a realm so that the topics and payloads it publishes are recorded per client id. */
function spying(realm: MqttRealm, seen: Map<string, { topic: string; payload: string }[]>): MqttRealm {
  return {
    name: realm.name,
    claims: (req) => realm.claims(req),
    connect(req, link) {
      const list = seen.get(req.clientId) ?? [];
      seen.set(req.clientId, list);
      return realm.connect(req, {
        get id() {
          return link.id;
        },
        get log() {
          return link.log;
        },
        get metrics() {
          return link.metrics;
        },
        get closed() {
          return link.closed;
        },
        publish(topic, payload, qos) {
          list.push({ topic, payload: payload.toString() });
          link.publish(topic, payload, qos);
        },
        close: (reason) => link.close(reason),
      });
    },
  };
}

describe('quotas and overload protection with the official DPS device SDKs', () => {
  const dpsHost = uniqueLoopback();
  let pki: TestPki;
  let dir: string;
  let caFile: string;
  let f: RuntimeFixture;
  let http: FastifyInstance;
  const httpAnswers: number[] = [];
  const mqtt: MqttListener[] = [];
  const services: RegistrationService[] = [];
  const seen = new Map<string, { topic: string; payload: string }[]>();

  /** A registration service with its own quota buckets (service defaults `defaults`) on the fixture's instance. */
  function service(clock: ManualClock, defaults: InstanceQuotaSettings): RegistrationService {
    const s = new RegistrationService({
      store: f.store.provisioning,
      hubs: new InProcessHubClientFactory(f.hubs.values(), clock),
      clock,
      ids: realIds,
      logger: silentLogger(),
      readCacheMs: 0,
      quotas: new QuotaService({ clock, defaults }),
    });
    services.push(s);
    return s;
  }

  async function mqttListener(runtime: DpsMqttRuntime): Promise<string> {
    const realm = spying(createDpsRealm(runtime, { logger: silentLogger(), responseBudgetMs: 30_000 }), seen);
    const l = await startMqttListener({ host: '127.0.0.1', port: 0, tls: { cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true }, realms: [realm], logger: silentLogger() });
    mqtt.push(l);
    return `127.0.0.1:${l.address().port}`;
  }

  const answers = (clientId: string): string[] => (seen.get(clientId) ?? []).map((m) => m.topic.replace('$dps/registrations/', '').replace(/\$rid=[^&]*&?/, ''));
  const payloads = (clientId: string): Record<string, unknown>[] => (seen.get(clientId) ?? []).map((m) => JSON.parse(m.payload) as Record<string, unknown>);

  before(async () => {
    pki = await createTestPki([dpsHost]);
    dir = mkdtempSync(join(tmpdir(), 'homing-dps-quota-sdk-'));
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, pki.ca.certPem);
    f = await createRuntimeFixture({ hubNames: ['hub-q.test'], clock: systemClock });
  });

  after(async () => {
    await http?.close();
    for (const l of mqtt) await l.close();
    for (const s of services) await s.drain();
    await f?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('HTTPS: 429 with an integer Retry-After and errorCode 429001; the HTTP SDK fails at once with ThrottlingError', async () => {
    const clock = new ManualClock(Date.now());
    const s = service(clock, { registrationsPerMinute: 1 });
    http = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps', tls: { cert: pki.server.certPem, key: pki.server.keyPem } });
    registerDpsDeviceApi(http, { registration: new GuardedDeviceRuntime(s, new OverloadGuard({ clock, lag: () => 0 })), responseBudgetMs: 30_000 });
    http.addHook('onResponse', async (_req, reply) => void httpAnswers.push(reply.statusCode));
    await http.listen({ host: dpsHost, port: 443 });
    const g = await f.addGroup('G-http');

    // The one registration of this minute.
    const path = (id: string) => `/${f.idScope}/registrations/${id}/register?api-version=2021-06-01`;
    assert.equal((await rawPut(dpsHost, pki.ca.certPem, path('drain-1'), JSON.stringify({ registrationId: 'drain-1' }))).status, 401);
    // Raw HTTPS: the wire shape of a 429.
    const raw = await rawPut(dpsHost, pki.ca.certPem, path('raw-1'), JSON.stringify({ registrationId: 'raw-1' }));
    assert.equal(raw.status, 429);
    assert.match(String(raw.headers['content-type']), /application\/json/);
    assert.equal(raw.headers['retry-after'], '60');
    assert.equal(raw.headers['x-ms-error-code'], '429001');
    const b = JSON.parse(raw.body) as Record<string, unknown>;
    assert.equal(b.errorCode, 429001);
    assert.ok(typeof b.trackingId === 'string' && typeof b.timestampUtc === 'string' && typeof b.message === 'string');

    httpAnswers.length = 0;
    const r = (await runDevice(HTTP_DEVICE, [{ name: 'throttled', host: dpsHost, idScope: f.idScope, registrationId: 'thr-http-1', key: f.derivedKey(g, 'thr-http-1') }], caFile)).get('throttled')!;
    assert.equal(r.ok, false);
    assert.equal(r.error?.ctor, 'ThrottlingError', JSON.stringify(r.error));
    assert.deepEqual(httpAnswers, [429], 'one request, no retry');
    assert.equal(await f.store.provisioning.getRegistration(f.instanceName, 'thr-http-1'), undefined);
  });

  test('MQTT: the registrations quota answers 429 with retry-after; the SDK waits, registers again and is assigned', async () => {
    const clock = new ManualClock(Date.now());
    // 60 per minute: after the burst, one unit frees up every second (retry-after=1).
    const s = service(clock, { registrationsPerMinute: 60 });
    const runtime: DpsMqttRuntime = {
      async register(...args) {
        try {
          return await s.register(...args);
        } catch (e) {
          // The SDK retries a real second later; the quota clock moves that second on when the 429 is answered.
          if ((e as { status?: number }).status === 429) clock.advance(1000);
          throw e;
        }
      },
      operationStatus: (...args) => s.operationStatus(...args),
    };
    const host = await mqttListener(runtime);
    const g = await f.addGroup('G-mqtt-quota');
    for (let i = 0; i < 60; i++) await assert.rejects(s.register(f.idScope, 'drain-2', { registrationId: 'drain-2' }, { kind: 'none' }), { status: 401 });
    const r = (await runDevice(MQTT_DEVICE, [{ name: 'quota', host, idScope: f.idScope, registrationId: 'thr-mqtt-1', key: f.derivedKey(g, 'thr-mqtt-1') }], caFile)).get('quota')!;
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result?.status, 'assigned');
    assert.equal(r.result?.deviceId, 'thr-mqtt-1');
    assert.deepEqual(answers('thr-mqtt-1'), ['res/429/?retry-after=1', 'res/200/?']);
    const [busy] = payloads('thr-mqtt-1');
    assert.equal(busy?.errorCode, 429001);
    assert.match(String(busy?.message), /registrations/);
  });

  test('MQTT: overload protection answers 429 with retry-after; the SDK retries and is assigned', async () => {
    const clock = new ManualClock(Date.now());
    const s = service(clock, {});
    // The event loop looks saturated for the first registration only.
    let lagged = false;
    const guard = new OverloadGuard({
      clock,
      maxEventLoopLagMs: 500,
      lag: () => {
        if (lagged) return 0;
        lagged = true;
        return 900;
      },
    });
    const host = await mqttListener(new GuardedDeviceRuntime(s, guard));
    const g = await f.addGroup('G-mqtt-overload');
    const r = (await runDevice(MQTT_DEVICE, [{ name: 'overload', host, idScope: f.idScope, registrationId: 'ovl-mqtt-1', key: f.derivedKey(g, 'ovl-mqtt-1') }], caFile)).get('overload')!;
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result?.status, 'assigned');
    assert.deepEqual(answers('ovl-mqtt-1'), ['res/429/?retry-after=1', 'res/200/?']);
    const [busy] = payloads('ovl-mqtt-1');
    assert.equal(busy?.errorCode, 429001);
    assert.match(String(busy?.message), /overloaded/);
    assert.equal(guard.rejected, 1);
    assert.equal(guard.inFlight, 0);
  });
});

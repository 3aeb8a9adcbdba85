import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
import { createHttpsApp, observeAnswers } from '../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../src/transport/http/dps-device-api.ts';
import { createDpsRealm, type DpsMqttRuntime } from '../../src/transport/mqtt/dps/realm.ts';
import { startMqttListener, type MqttListener } from '../../src/transport/mqtt/listener.ts';
import { ManualClock, realIds, uniqueLoopback } from '../helpers/ids.ts';
import { createTestPki, type TestPki } from '../helpers/pki.ts';
import { advanceOnThrottle, answerPayloads, answerTopics, rawHttps, runDeviceScript, spyingRealm, type DeviceStepResult as StepResult, type PublishedMessage, type SymmetricKeyStep as Step } from '../helpers/sdk-steps.ts';
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

function runDevice(script: string, steps: Step[], caFile: string): Promise<Map<string, StepResult>> {
  return runDeviceScript<StepResult>(script, steps, caFile);
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
  const seen = new Map<string, PublishedMessage[]>();

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
    const realm = spyingRealm(createDpsRealm(runtime, { logger: silentLogger(), responseBudgetMs: 30_000 }), seen);
    const l = await startMqttListener({ host: '127.0.0.1', port: 0, tls: { cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true }, realms: [realm], logger: silentLogger() });
    mqtt.push(l);
    return `127.0.0.1:${l.address().port}`;
  }

  const answers = (clientId: string): string[] => answerTopics(seen, clientId);
  const payloads = (clientId: string): Record<string, unknown>[] => answerPayloads(seen, clientId);

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
    observeAnswers(http, (a) => void httpAnswers.push(a.status));
    await http.listen({ host: dpsHost, port: 443 });
    const g = await f.addGroup('G-http');

    // The one registration of this minute.
    const path = (id: string) => `/${f.idScope}/registrations/${id}/register?api-version=2021-06-01`;
    assert.equal((await rawHttps(dpsHost, pki.ca.certPem, 'PUT', path('drain-1'), { body: JSON.stringify({ registrationId: 'drain-1' }) })).status, 401);
    // Raw HTTPS: the wire shape of a 429.
    const raw = await rawHttps(dpsHost, pki.ca.certPem, 'PUT', path('raw-1'), { body: JSON.stringify({ registrationId: 'raw-1' }) });
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
    // The SDK retries a real second later; the quota clock moves that second on when the 429 is answered.
    const host = await mqttListener(advanceOnThrottle(s, clock));
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

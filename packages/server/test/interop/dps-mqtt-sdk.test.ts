import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../src/provisioning/hub-client-inprocess.ts';
import { RegistrationService } from '../../src/provisioning/registration.ts';
import { createHubRealm, startMqttListener, type MqttListener, type MqttRealm } from '../../src/transport/mqtt/listener.ts';
import { createDpsRealm } from '../../src/transport/mqtt/dps/realm.ts';
import { ManualClock, realIds, uniqueLoopback } from '../helpers/ids.ts';
import { createTestPki, type TestPki } from '../helpers/pki.ts';
import { advanceOnThrottle, answerPayloads, answerTopics, runDeviceScript, spyingRealm, type DeviceStepResult, type PublishedMessage as Sent, type SymmetricKeyStep as Step } from '../helpers/sdk-steps.ts';
import { createRuntimeFixture, newKey, type RuntimeFixture } from '../provisioning/runtime/fixture.ts';

/**
 * The official DPS device SDK over MQTT (azure-iot-provisioning-device + -mqtt + azure-iot-security-symmetric-key),
 * used exactly as a device application would, in a child process that trusts the test CA via NODE_EXTRA_CA_CERTS.
 * The MQTT transport accepts `host:port`, so the DPS listeners run on 127.0.0.1 port 0. A provisioned device then
 * connects to its assigned hub (a hub realm on <loopback>:8883) with azure-iot-device-mqtt.
 *
 * Three DPS listeners: A answers within a 30 s budget (an in-process assignment ends long before: 200 at once),
 * B never waits (202 assigning, then the SDK polls), C runs a second registration service whose throttle is
 * exhausted (429, the SDK retries). Every answer the realm publishes is recorded per client id (a spying realm).
 */
const DEVICE_SCRIPT = fileURLToPath(new URL('./sdk/dps-mqtt-device.cjs', import.meta.url));

type StepResult = DeviceStepResult & { ms: number };

function runDevice(steps: Step[], caFile: string): Promise<Map<string, StepResult>> {
  return runDeviceScript<StepResult>(DEVICE_SCRIPT, steps, caFile);
}

describe('DPS device SDK over MQTT (official packages)', () => {
  const hubAddr = uniqueLoopback();
  let pki: TestPki;
  let dir: string;
  let caFile: string;
  let f: RuntimeFixture;
  let hubMqtt: MqttListener;
  const dps: MqttListener[] = [];
  let hostA: string;
  let hostB: string;
  let hostC: string;
  const seen = new Map<string, Sent[]>();
  const throttleClock = new ManualClock(Date.now());
  let throttled: RegistrationService;

  async function dpsListener(realm: MqttRealm): Promise<string> {
    const l = await startMqttListener({ host: '127.0.0.1', port: 0, tls: { cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true }, realms: [spyingRealm(realm, seen)], logger: silentLogger() });
    dps.push(l);
    return `127.0.0.1:${l.address().port}`;
  }

  before(async () => {
    pki = await createTestPki([hubAddr]);
    dir = mkdtempSync(join(tmpdir(), 'homing-dps-mqtt-sdk-'));
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, pki.ca.certPem);
    f = await createRuntimeFixture({ hubNames: [hubAddr], clock: systemClock });
    const hub = f.hubs.get(hubAddr)!;
    hubMqtt = await startMqttListener({ host: hubAddr, port: 8883, tls: { cert: pki.server.certPem, key: pki.server.keyPem }, realms: [createHubRealm(hub)], logger: silentLogger() });
    hostA = await dpsListener(createDpsRealm(f.service, { logger: silentLogger(), responseBudgetMs: 30_000 }));
    hostB = await dpsListener(createDpsRealm(f.service, { logger: silentLogger(), responseBudgetMs: 0 }));

    // C: 60 registrations per minute on a clock that only moves when the test says so. The test drains the bucket,
    // so the device's first register is answered 429 with retry-after 1; the clock then moves a second on, so the
    // SDK's retry (a real second later) finds a token.
    throttled = new RegistrationService({
      store: f.store.provisioning,
      hubs: new InProcessHubClientFactory(f.hubs.values(), throttleClock),
      clock: throttleClock,
      ids: realIds,
      logger: silentLogger(),
      readCacheMs: 0,
      limits: { registrationsPerMinute: 60 },
    });
    hostC = await dpsListener(createDpsRealm(advanceOnThrottle(throttled, throttleClock), { logger: silentLogger(), responseBudgetMs: 30_000 }));
  });

  after(async () => {
    for (const l of dps) await l.close();
    await hubMqtt?.close();
    await throttled?.drain();
    await f?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const step = (name: string, host: string, registrationId: string, key: string, o: Partial<Step> = {}): Step => ({ name, host, idScope: f.idScope, registrationId, key, ...o });

  async function one(s: Step): Promise<StepResult> {
    const r = await runDevice([s], caFile);
    return r.get(s.name)!;
  }

  test('group enrollment, derived key: assigned in one answer (200 within the budget, no poll), then the device connects to its hub', async () => {
    const g = await f.addGroup('G1', { initialTwin: { tags: { site: 'A' }, properties: { desired: { mode: 'eco' } } } });
    const r = await one(step('group', hostA, 'grp-dev-1', f.derivedKey(g, 'grp-dev-1'), { connect: true, payload: { modelId: 'dtmi:homing:test;1' } }));
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.status, 'assigned');
    assert.equal(r.result!.assignedHub, hubAddr);
    assert.equal(r.result!.deviceId, 'grp-dev-1');
    assert.equal(r.result!.substatus, 'initialAssignment');
    assert.deepEqual(r.result!.symmetricKey, { enrollmentGroupId: 'G1' });
    assert.equal(r.twin!.desired.mode, 'eco');
    assert.deepEqual(answerTopics(seen, 'grp-dev-1'), ['res/200/?']);
    assert.deepEqual((await f.hubs.get(hubAddr)!.getTwinState('grp-dev-1')).twin.tags, { site: 'A' });
  });

  test('individual enrollment: assigned under its device id; the device connects with the enrollment key', async () => {
    const ind = await f.addIndividual('ind-1', { deviceId: 'custom-7' });
    const r = await one(step('individual', hostA, 'ind-1', ind.attestation.symmetricKey!.primaryKey, { connect: true }));
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.deviceId, 'custom-7');
    assert.equal(r.result!.assignedHub, hubAddr);
    assert.ok(r.twin);
    assert.deepEqual(answerTopics(seen, 'ind-1'), ['res/200/?']);
  });

  test('disabled enrollment: the SDK rejects ("status is disabled") and the hub has no device', async () => {
    const off = await f.addIndividual('ind-off', { status: 'disabled' });
    const r = await one(step('disabled', hostA, 'ind-off', off.attestation.symmetricKey!.primaryKey));
    assert.equal(r.ok, false);
    assert.match(r.error!.message!, /status is disabled/);
    assert.deepEqual(answerTopics(seen, 'ind-off'), ['res/200/?']);
    assert.equal(answerPayloads(seen, 'ind-off')[0]!.status, 'disabled');
    assert.equal(await f.hubs.get(hubAddr)!.findDevice('ind-off'), undefined);
  });

  test('wrong key: answered 401 on the response topic; the SDK fails at once with UnauthorizedError (no hang)', async () => {
    await f.addGroup('G-wrong');
    const before = await f.counts();
    const r = await one(step('wrong-key', hostA, 'grp-wrong-1', newKey()));
    assert.equal(r.ok, false);
    assert.equal(r.error!.ctor, 'UnauthorizedError', JSON.stringify(r.error));
    assert.ok(r.ms < 25_000, `took ${r.ms} ms`);
    assert.deepEqual(answerTopics(seen, 'grp-wrong-1'), ['res/401/?']);
    assert.equal(answerPayloads(seen, 'grp-wrong-1')[0]!.errorCode, 401000);
    assert.deepEqual(await f.counts(), before);
  });

  test('budget 0: 202 assigning with retry-after, the SDK polls the operation until it is assigned', async () => {
    const g = await f.addGroup('G-poll');
    const r = await one(step('polled', hostB, 'poll-1', f.derivedKey(g, 'poll-1')));
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.status, 'assigned');
    assert.equal(r.result!.deviceId, 'poll-1');
    const a = answerTopics(seen, 'poll-1');
    assert.equal(a[0], 'res/202/?retry-after=1');
    assert.equal(a.at(-1), 'res/200/?');
    assert.ok(a.length >= 2 && a.slice(1, -1).every((t) => t === 'res/202/?retry-after=1'), JSON.stringify(a));
  });

  test('throttled: 429 with retry-after and errorCode 429001; the SDK waits, registers again and is assigned', async () => {
    const g = await f.addGroup('G-throttle');
    // Empty the instance's registration bucket: calls without a credential take a token, then fail authentication.
    for (let i = 0; i < 60; i++) {
      await assert.rejects(throttled.register(f.idScope, 'drain-1', { registrationId: 'drain-1' }, { kind: 'none' }), { status: 401 });
    }
    await assert.rejects(throttled.register(f.idScope, 'drain-1', { registrationId: 'drain-1' }, { kind: 'none' }), { status: 429 });
    const r = await one(step('throttled', hostC, 'thr-1', f.derivedKey(g, 'thr-1')));
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.status, 'assigned');
    assert.equal(r.result!.deviceId, 'thr-1');
    assert.deepEqual(answerTopics(seen, 'thr-1'), ['res/429/?retry-after=1', 'res/200/?']);
    const [busy, done] = answerPayloads(seen, 'thr-1');
    assert.equal(busy!.errorCode, 429001);
    assert.ok(typeof busy!.trackingId === 'string' && typeof busy!.timestampUtc === 'string' && typeof busy!.message === 'string');
    assert.equal(done!.status, 'assigned');
  });
});

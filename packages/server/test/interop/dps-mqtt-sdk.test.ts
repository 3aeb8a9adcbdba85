import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../src/provisioning/hub-client-inprocess.ts';
import { RegistrationService } from '../../src/provisioning/registration.ts';
import { createHubRealm, startMqttListener, type MqttListener, type MqttRealm } from '../../src/transport/mqtt/listener.ts';
import { createDpsRealm, type DpsMqttRuntime } from '../../src/transport/mqtt/dps/realm.ts';
import { ManualClock, realIds, uniqueLoopback } from '../helpers/ids.ts';
import { createTestPki, type TestPki } from '../helpers/pki.ts';
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

interface StepResult {
  name: string;
  ok: boolean;
  ms: number;
  result?: { assignedHub?: string; deviceId?: string; status?: string; substatus?: string; symmetricKey?: { enrollmentGroupId?: string } };
  twin?: { desired: Record<string, unknown> };
  error?: { name?: string; message?: string; ctor?: string; result?: unknown };
}

interface Step {
  name: string;
  host: string;
  idScope: string;
  registrationId: string;
  key: string;
  connect?: boolean;
  payload?: Record<string, unknown>;
}

function runDevice(steps: Step[], caFile: string, timeoutMs = 120_000): Promise<Map<string, StepResult>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DEVICE_SCRIPT, JSON.stringify(steps)], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
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

interface Sent {
  topic: string;
  payload: string;
}

/** Wraps a realm so that every message it publishes is recorded under the connection's client id. */
function spying(realm: MqttRealm, seen: Map<string, Sent[]>): MqttRealm {
  return {
    name: realm.name,
    claims: (req) => realm.claims(req),
    connect(req, link) {
      const topics = seen.get(req.clientId) ?? [];
      seen.set(req.clientId, topics);
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
          topics.push({ topic, payload: payload.toString() });
          link.publish(topic, payload, qos);
        },
        close: (reason) => link.close(reason),
      });
    },
  };
}

/** The response topics a device got, without the (random) request ids: `res/202/?retry-after=1`, `res/200/?`. */
function answers(seen: Map<string, Sent[]>, clientId: string): string[] {
  return (seen.get(clientId) ?? []).map((m) => m.topic.replace('$dps/registrations/', '').replace(/\$rid=[^&]*&?/, ''));
}

/** The JSON payloads a device got (every one must parse). */
function payloads(seen: Map<string, Sent[]>, clientId: string): Record<string, unknown>[] {
  return (seen.get(clientId) ?? []).map((m) => JSON.parse(m.payload) as Record<string, unknown>);
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
    const l = await startMqttListener({ host: '127.0.0.1', port: 0, tls: { cert: pki.server.certPem, key: pki.server.keyPem, requestCert: true }, realms: [spying(realm, seen)], logger: silentLogger() });
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
    const runtimeC: DpsMqttRuntime = {
      async register(...args) {
        try {
          return await throttled.register(...args);
        } catch (e) {
          if ((e as { status?: number }).status === 429) throttleClock.advance(1000);
          throw e;
        }
      },
      operationStatus: (...args) => throttled.operationStatus(...args),
    };
    hostC = await dpsListener(createDpsRealm(runtimeC, { logger: silentLogger(), responseBudgetMs: 30_000 }));
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
    assert.deepEqual(answers(seen, 'grp-dev-1'), ['res/200/?']);
    assert.deepEqual((await f.hubs.get(hubAddr)!.getTwinState('grp-dev-1')).twin.tags, { site: 'A' });
  });

  test('individual enrollment: assigned under its device id; the device connects with the enrollment key', async () => {
    const ind = await f.addIndividual('ind-1', { deviceId: 'custom-7' });
    const r = await one(step('individual', hostA, 'ind-1', ind.attestation.symmetricKey!.primaryKey, { connect: true }));
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.deviceId, 'custom-7');
    assert.equal(r.result!.assignedHub, hubAddr);
    assert.ok(r.twin);
    assert.deepEqual(answers(seen, 'ind-1'), ['res/200/?']);
  });

  test('disabled enrollment: the SDK rejects ("status is disabled") and the hub has no device', async () => {
    const off = await f.addIndividual('ind-off', { status: 'disabled' });
    const r = await one(step('disabled', hostA, 'ind-off', off.attestation.symmetricKey!.primaryKey));
    assert.equal(r.ok, false);
    assert.match(r.error!.message!, /status is disabled/);
    assert.deepEqual(answers(seen, 'ind-off'), ['res/200/?']);
    assert.equal(payloads(seen, 'ind-off')[0]!.status, 'disabled');
    assert.equal(await f.hubs.get(hubAddr)!.findDevice('ind-off'), undefined);
  });

  test('wrong key: answered 401 on the response topic; the SDK fails at once with UnauthorizedError (no hang)', async () => {
    await f.addGroup('G-wrong');
    const before = await f.counts();
    const r = await one(step('wrong-key', hostA, 'grp-wrong-1', newKey()));
    assert.equal(r.ok, false);
    assert.equal(r.error!.ctor, 'UnauthorizedError', JSON.stringify(r.error));
    assert.ok(r.ms < 25_000, `took ${r.ms} ms`);
    assert.deepEqual(answers(seen, 'grp-wrong-1'), ['res/401/?']);
    assert.equal(payloads(seen, 'grp-wrong-1')[0]!.errorCode, 401000);
    assert.deepEqual(await f.counts(), before);
  });

  test('budget 0: 202 assigning with retry-after, the SDK polls the operation until it is assigned', async () => {
    const g = await f.addGroup('G-poll');
    const r = await one(step('polled', hostB, 'poll-1', f.derivedKey(g, 'poll-1')));
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.status, 'assigned');
    assert.equal(r.result!.deviceId, 'poll-1');
    const a = answers(seen, 'poll-1');
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
    assert.deepEqual(answers(seen, 'thr-1'), ['res/429/?retry-after=1', 'res/200/?']);
    const [busy, done] = payloads(seen, 'thr-1');
    assert.equal(busy!.errorCode, 429001);
    assert.ok(typeof busy!.trackingId === 'string' && typeof busy!.timestampUtc === 'string' && typeof busy!.message === 'string');
    assert.equal(done!.status, 'assigned');
  });
});

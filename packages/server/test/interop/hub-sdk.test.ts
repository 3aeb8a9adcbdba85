import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHomingProcess, runSdkScript, type HomingProcess, type ScriptLine } from '../helpers/homing-process.ts';
import { uniqueLoopback } from '../helpers/ids.ts';

const SCRIPT = fileURLToPath(new URL('./sdk/hub-scenario.cjs', import.meta.url));

/**
 * Issue 2 interop: a real `homing start` in its own process, and the official azure-iot-device(-mqtt) and azure-iothub
 * packages used as a user would (in a child process that trusts the dev CA through NODE_EXTRA_CA_CERTS).
 */
describe('hub interop with the official Azure IoT SDKs', () => {
  let homing: HomingProcess;
  let lines: ScriptLine[] = [];
  let stderr = '';

  before(async () => {
    const hubA = uniqueLoopback();
    let hubB = uniqueLoopback();
    while (hubB === hubA) hubB = uniqueLoopback();
    homing = await startHomingProcess(['--hub-hosts', `${hubA},${hubB}`]);
    const hub = homing.connection.hubs[0];
    assert.ok(hub);
    const r = await runSdkScript(SCRIPT, [hub.connectionString], homing.connection.caCertPath);
    lines = r.lines;
    stderr = r.stderr;
  });

  after(async () => {
    const code = await homing?.stop();
    assert.equal(code, 0, 'homing start exits 0 on SIGTERM');
    homing?.cleanup();
  });

  const stepResult = (name: string): ScriptLine => {
    const l = lines.find((x) => x.step === name);
    assert.ok(l, `step "${name}" did not run. Steps: ${JSON.stringify(lines)}\nstderr: ${stderr}`);
    assert.equal(l.ok, true, `step "${name}" failed: ${l.error}`);
    return l;
  };

  it('creates a device with generated keys', () => {
    const r = stepResult('create device');
    assert.equal(r.hasKey, true);
    assert.equal(r.status, 'enabled');
  });

  it('connects the device over MQTT', () => {
    stepResult('connect');
  });

  it('gets the twin', () => {
    const r = stepResult('get twin');
    assert.equal(r.desiredVersion, 1);
    assert.equal(r.reportedVersion, 1);
  });

  it('updates reported properties and the service sees them', () => {
    const r = stepResult('update reported properties');
    assert.equal(r.firmware, '1.2.3');
    assert.equal(r.nestedA, 1);
    assert.equal(r.reportedVersion, 2);
  });

  it('delivers desired properties updated through registry.updateTwin', () => {
    const r = stepResult('update desired properties');
    assert.equal(r.targetTemp, 21);
    assert.equal(r.version, 2);
  });

  it('invokes a direct method', () => {
    const r = stepResult('invoke direct method');
    assert.equal(r.status, 200);
    assert.deepEqual(r.payload, { rebooted: true, echo: { delay: 5 } });
  });

  it('accepts and counts telemetry', () => {
    const r = stepResult('send telemetry');
    assert.equal(r.messages, 2);
  });

  it('lets the device reconnect after a server-side close, with its subscriptions', () => {
    const r = stepResult('reconnect after a server-side close');
    assert.equal(r.connectionStateWhileDisabled, 'Disconnected');
    assert.equal(r.methodStatus, 200);
    assert.equal(r.targetTemp, 23);
  });

  it('deletes the device, which is then unknown and refused', () => {
    const r = stepResult('delete device');
    assert.equal(r.getError, 'DeviceNotFoundError');
    assert.equal(r.openError, 'UnauthorizedError');
  });
});

void join;

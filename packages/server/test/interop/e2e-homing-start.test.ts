import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { sdkScriptSteps } from '../helpers/sdk-steps.ts';

const SCRIPT = fileURLToPath(new URL('./sdk/e2e-provisioning.cjs', import.meta.url));

/**
 * The whole product as a user meets it: `homing start` in its own process, an operator using
 * azure-iot-provisioning-service, devices using azure-iot-provisioning-device-http and azure-iot-device-mqtt, a
 * back-end using azure-iothub. Only the host names (from connection.json) and the trusted CA differ from Azure.
 */
describe('homing start end to end with the official SDKs', () => {
  const sdk = sdkScriptSteps(SCRIPT, { serverLogOnFailure: false });
  const { stepResult } = sdk;

  it('the operator creates a symmetric-key enrollment group with generated keys', () => {
    const r = stepResult('create enrollment group');
    assert.equal(r.hasKey, true);
    assert.equal(r.etag, true);
  });

  it('devices register with derived keys and are spread over the linked hubs', () => {
    const r = stepResult('register devices');
    const hubs = sdk.homing.connection.hubs.map((h) => h.hostName);
    for (const h of r.hubs as string[]) assert.ok(hubs.includes(h), `${h} is a linked hub`);
    assert.deepEqual(r.substatuses, ['initialAssignment']);
    assert.equal((r.groups as string[]).length, 1);
  });

  it('a device connects to its assigned hub and gets the initial twin', () => {
    assert.equal(stepResult('connect to the assigned hub and read the initial twin').mode, 'eco');
  });

  it('the back-end sees the device and its tags on the hub', () => {
    const r = stepResult('the hub holds the device with its tags');
    assert.equal(r.fleet, 'e2e');
    assert.equal(r.mode, 'eco');
  });

  it('registration records are readable and queryable per group', () => {
    const r = stepResult('registration records');
    assert.equal(r.status, 'assigned');
    assert.equal(r.assignedHub, true);
    assert.equal(r.count, 6);
  });

  it('registering again keeps the device on its hub', () => {
    const r = stepResult('re-registration keeps the device on its hub');
    assert.equal(r.sameHub, true);
    assert.equal(r.substatus, 'initialAssignment');
  });

  it('a device registers over MQTT on the default port and connects to its hub', () => {
    const r = stepResult('register over MQTT');
    assert.match(String(r.deviceId), /-mqtt-0$/);
    assert.equal(r.linked, true);
    assert.equal(r.mode, 'eco');
  });

  it('the group key itself is not a device credential', () => {
    const r = stepResult('a wrong key is refused');
    assert.equal(r.refused, true);
    assert.equal(r.error, 'UnauthorizedError');
  });
});

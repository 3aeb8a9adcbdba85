import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import type { ScriptLine } from '../helpers/homing-process.ts';
import { sdkScriptSteps } from '../helpers/sdk-steps.ts';

const SCRIPT = fileURLToPath(new URL('./sdk/reprovision-scenarios.cjs', import.meta.url));

/**
 * Reprovisioning and deprovisioning with the official SDKs against `homing start` (scenarios 24, 25, 27, 28, 30,
 * 31, 33): groups on hub A move to hub B and their devices register again.
 */
describe('reprovisioning with the official SDKs', () => {
  const { stepResult } = sdkScriptSteps(SCRIPT);

  it('devices of three groups register on hub A and report state', () => {
    stepResult('create groups on hub A');
    const r = stepResult('devices register on hub A and report state') as ScriptLine & Record<string, { hub: boolean; substatus: string }>;
    for (const k of ['migrate', 'reset', 'never']) {
      assert.equal(r[k]!.hub, true);
      assert.equal(r[k]!.substatus, 'initialAssignment');
    }
    stepResult('operator moves every group to hub B');
  });

  it('migrate: the device moves to hub B with tags, desired and reported; hub A no longer has it; it reconnects there', () => {
    const r = stepResult('migrate: re-registration moves the device with its twin (scenario 24)');
    assert.equal(r.hubB, true);
    assert.equal(r.substatus, 'deviceDataMigrated');
    assert.equal(r.tagT, 1);
    assert.equal(r.site, 'A');
    assert.equal(r.reportedR, 1);
    assert.ok(Number(r.reportedVersion) >= 2);
    assert.equal(r.mode, 'eco');
    assert.equal(r.onA, false);
    assert.equal(r.reconnects, 1);
  });

  it('reset: hub B gets the initial twin with an empty reported ($version 1); hub A no longer has the device', () => {
    const r = stepResult('reset: the new hub gets the initial twin, reported empty (scenario 25)');
    assert.equal(r.hubB, true);
    assert.equal(r.substatus, 'deviceDataReset');
    assert.deepEqual(r.tags, { site: 'A' });
    assert.deepEqual(r.reportedKeys, []);
    assert.equal(r.reportedVersion, 1);
    assert.equal(r.onA, false);
  });

  it('never: the device stays on hub A with its twin', () => {
    const r = stepResult('never: the device stays with its twin (scenario 27)');
    assert.equal(r.hubA, true);
    assert.equal(r.substatus, 'initialAssignment');
    assert.equal(r.tagT, 1);
    assert.equal(r.reportedR, 1);
    assert.equal(r.onB, false);
  });

  it('a deleted record with the device still on its hub gives reprovisionedToInitialAssignment', () => {
    const r = stepResult('deleted record, device still on the hub: reprovisionedToInitialAssignment (scenario 28)');
    assert.equal(r.substatus, 'reprovisionedToInitialAssignment');
    assert.equal(r.hubB, true);
    assert.equal(r.reportedR, 1, 'the twin on the hub is kept');
  });

  it('a disabled individual enrollment blocks one device of a group; its sibling registers', () => {
    const r = stepResult('a disabled individual enrollment blocklists one device of a group (scenarios 30, 31)');
    assert.match(String(r.blockedOutcome), /disabled/i);
    assert.equal(r.blockedOnHub, false);
    assert.equal(r.siblingHubB, true);
  });

  it('deleting a group keeps its registration records', () => {
    const r = stepResult('deleting a group keeps its registration records (scenario 33)');
    assert.equal(r.status, 'assigned');
    assert.equal(r.assignedHub, true);
  });
});

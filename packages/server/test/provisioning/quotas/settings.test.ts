import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HomingError } from '../../../src/core/errors.ts';
import type { JsonObject } from '../../../src/core/json.ts';
import { effectiveQuotas, parseQuotaSettings, QUOTA_PRESETS } from '../../../src/provisioning/quotas/settings.ts';

describe('quota settings', () => {
  it('the built-in default: rate quotas off, 5 polls / 10 s per device, 1,000,000 registration records', () => {
    assert.deepEqual(effectiveQuotas(undefined), { registrationsPerMinute: undefined, operationsPerMinute: undefined, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
  });

  it('the azure preset holds the documented Azure DPS numbers', () => {
    assert.deepEqual(QUOTA_PRESETS.azure, { registrationsPerMinute: 1000, operationsPerMinute: 1000, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
    assert.deepEqual(effectiveQuotas({ preset: 'azure' }), { registrationsPerMinute: 1000, operationsPerMinute: 1000, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 });
  });

  it('resolution: instance field, instance preset, service default field, service default preset, built-in', () => {
    // The instance's field wins over everything.
    assert.equal(effectiveQuotas({ registrationsPerMinute: 7 }, { preset: 'azure', registrationsPerMinute: 9 }).registrationsPerMinute, 7);
    // An instance preset names every field: the service defaults no longer apply.
    assert.equal(effectiveQuotas({ preset: 'default' }, { registrationsPerMinute: 9 }).registrationsPerMinute, undefined);
    // Without an instance preset, missing fields come from the service defaults (field, then preset).
    assert.deepEqual(effectiveQuotas({ registrationsPerMinute: 7 }, { preset: 'azure', pollsPer10Seconds: 3 }), {
      registrationsPerMinute: 7,
      operationsPerMinute: 1000,
      pollsPer10Seconds: 3,
      maxRegistrations: 1_000_000,
    });
    // 0 is off.
    assert.equal(effectiveQuotas({ pollsPer10Seconds: 0 }).pollsPer10Seconds, undefined);
    assert.equal(effectiveQuotas({ maxRegistrations: 0 }).maxRegistrations, undefined);
  });

  it('parse: integers 0..1e9, a known preset, nulls dropped, unknown fields refused', () => {
    assert.deepEqual(parseQuotaSettings({ preset: 'azure', registrationsPerMinute: 0, operationsPerMinute: null, maxRegistrations: 5 }), { preset: 'azure', registrationsPerMinute: 0, maxRegistrations: 5 });
    const bads: JsonObject[] = [{ registrationsPerMinute: -1 }, { operationsPerMinute: 0.5 }, { pollsPer10Seconds: 1e10 }, { preset: 'x' }, { foo: 1 }];
    for (const bad of bads) {
      assert.throws(() => parseQuotaSettings(bad), (e: unknown) => e instanceof HomingError && e.errorName === 'ArgumentInvalid', JSON.stringify(bad));
    }
    assert.throws(() => parseQuotaSettings('x'), (e: unknown) => e instanceof HomingError && e.errorName === 'InvalidJson');
  });
});

import { HomingError } from '../../core/errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from '../../core/json.ts';
import type { InstanceQuotaSettings, QuotaPreset } from '../model.ts';

/**
 * Quota settings (docs/api/quotas.md): what an instance stores, the presets, and how the effective limits are
 * resolved. Pure functions; the buckets live in quota-service.ts.
 */
export type { InstanceQuotaSettings, QuotaPreset } from '../model.ts';

/** The limits in force for one instance. `undefined`: that quota is off. */
export interface EffectiveQuotas {
  registrationsPerMinute: number | undefined;
  operationsPerMinute: number | undefined;
  pollsPer10Seconds: number | undefined;
  maxRegistrations: number | undefined;
}

type QuotaField = Exclude<keyof InstanceQuotaSettings, 'preset'>;

export const QUOTA_FIELDS: readonly QuotaField[] = ['registrationsPerMinute', 'operationsPerMinute', 'pollsPer10Seconds', 'maxRegistrations'];

/** Largest value a quota field takes. */
export const MAX_QUOTA_VALUE = 1_000_000_000;

/**
 * The presets. `default` (a self-hosted service's capacity is its own): no rate quotas, but the per-device poll
 * limit of DPS (it only stops devices that ignore Retry-After) and DPS's registration-record limit. `azure`: the
 * current Azure DPS rates (dps-behavior.md §7.2; no S1 unit multiplier).
 */
export const QUOTA_PRESETS: Readonly<Record<QuotaPreset, Readonly<Required<Omit<InstanceQuotaSettings, 'preset'>>>>> = Object.freeze({
  default: Object.freeze({ registrationsPerMinute: 0, operationsPerMinute: 0, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 }),
  azure: Object.freeze({ registrationsPerMinute: 1000, operationsPerMinute: 1000, pollsPer10Seconds: 5, maxRegistrations: 1_000_000 }),
});

export const QUOTA_PRESET_NAMES = Object.keys(QUOTA_PRESETS) as QuotaPreset[];

function bad(message: string): HomingError {
  return new HomingError('ArgumentInvalid', message);
}

function isPreset(v: unknown): v is QuotaPreset {
  return typeof v === 'string' && (QUOTA_PRESET_NAMES as readonly string[]).includes(v);
}

/**
 * Validates quota settings (the admin API body, the configuration). `null` fields count as absent; unknown fields
 * are refused so a typo does not silently leave a quota off.
 */
export function parseQuotaSettings(body: JsonValue | undefined): InstanceQuotaSettings {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'Quota settings are a JSON object {preset, registrationsPerMinute, operationsPerMinute, pollsPer10Seconds, maxRegistrations}.');
  const out: InstanceQuotaSettings = {};
  for (const [k, v] of Object.entries(body)) {
    if (v === null || v === undefined) continue;
    if (k === 'preset') {
      if (!isPreset(v)) throw bad(`preset must be one of ${QUOTA_PRESET_NAMES.join(', ')}.`);
      out.preset = v;
    } else if ((QUOTA_FIELDS as readonly string[]).includes(k)) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_QUOTA_VALUE) {
        throw bad(`${k} must be an integer from 0 (off) to ${MAX_QUOTA_VALUE}.`);
      }
      out[k as QuotaField] = v;
    } else {
      throw bad(`Unknown quota setting '${k}'.`);
    }
  }
  return out;
}

/** The same settings as a plain JSON object (only the fields that are set). */
export function quotaSettingsToJson(s: InstanceQuotaSettings | undefined): JsonObject {
  const out: JsonObject = {};
  if (s?.preset !== undefined) out.preset = s.preset;
  for (const f of QUOTA_FIELDS) {
    const v = s?.[f];
    if (v !== undefined) out[f] = v;
  }
  return out;
}

function fieldOf(s: InstanceQuotaSettings | undefined, f: QuotaField, withPreset: boolean): number | undefined {
  if (s === undefined) return undefined;
  const v = s[f];
  if (v !== undefined) return v;
  return withPreset && s.preset !== undefined ? QUOTA_PRESETS[s.preset][f] : undefined;
}

/**
 * The limits in force. For each field, the first that is set wins: the instance's own value, the instance's preset
 * (a preset names every field, so an instance with a preset ignores the service defaults), the service default's
 * value, the service default's preset, and finally the `default` preset. `0` means off.
 */
export function effectiveQuotas(instance: InstanceQuotaSettings | undefined, defaults?: InstanceQuotaSettings): EffectiveQuotas {
  const pick = (f: QuotaField): number | undefined => {
    const v = fieldOf(instance, f, true) ?? fieldOf(defaults, f, true) ?? QUOTA_PRESETS.default[f];
    return v > 0 ? v : undefined;
  };
  return {
    registrationsPerMinute: pick('registrationsPerMinute'),
    operationsPerMinute: pick('operationsPerMinute'),
    pollsPer10Seconds: pick('pollsPer10Seconds'),
    maxRegistrations: pick('maxRegistrations'),
  };
}

export function effectiveQuotasToJson(e: EffectiveQuotas): JsonObject {
  return {
    registrationsPerMinute: e.registrationsPerMinute ?? null,
    operationsPerMinute: e.operationsPerMinute ?? null,
    pollsPer10Seconds: e.pollsPer10Seconds ?? null,
    maxRegistrations: e.maxRegistrations ?? null,
  };
}

/** Settings with `patch` written over `base` (fields of `patch` win; the rest of `base` is kept). */
export function mergeQuotaSettings(base: InstanceQuotaSettings | undefined, patch: InstanceQuotaSettings): InstanceQuotaSettings {
  return { ...(base ?? {}), ...patch };
}

export function sameQuotaSettings(a: InstanceQuotaSettings | undefined, b: InstanceQuotaSettings | undefined): boolean {
  const x = quotaSettingsToJson(a);
  const y = quotaSettingsToJson(b);
  const keys = new Set([...Object.keys(x), ...Object.keys(y)]);
  for (const k of keys) if (x[k] !== y[k]) return false;
  return true;
}

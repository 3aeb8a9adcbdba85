export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

export function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses JSON and returns undefined instead of throwing. */
export function tryParseJson(text: string): { ok: true; value: JsonValue } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as JsonValue };
  } catch {
    return { ok: false };
  }
}

/**
 * JSON merge patch (RFC 7396) as IoT Hub twins use it: objects merge recursively, `null` deletes a key,
 * anything else replaces. Returns a new object; inputs are not modified.
 */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...target };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) {
      delete out[k];
    } else if (isPlainObject(v)) {
      const cur = out[k];
      out[k] = mergePatch(isPlainObject(cur) ? cur : {}, v);
    } else {
      out[k] = v;
    }
  }
  return out;
}

/** Nesting depth of objects: {} is 1, {a:{}} is 2. Arrays count as a level too. */
export function jsonDepth(v: JsonValue): number {
  if (Array.isArray(v)) return 1 + Math.max(0, ...v.map(jsonDepth));
  if (isPlainObject(v)) return 1 + Math.max(0, ...Object.values(v).map(jsonDepth));
  return 0;
}

export function jsonByteLength(v: JsonValue): number {
  return Buffer.byteLength(JSON.stringify(v));
}

/** Stable deep clone of JSON data. */
export function cloneJson<T extends JsonValue>(v: T): T {
  return structuredClone(v);
}

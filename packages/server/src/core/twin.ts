import { isPlainObject, mergePatch, jsonDepth, type JsonObject, type JsonValue } from './json.ts';
import { HomingError } from './errors.ts';
import type { MetadataNode, PropertySection, TwinState } from '../hub/model.ts';

/** IoT Hub limits: each of tags, desired and reported is at most 32 KiB and 10 levels deep. */
export const TWIN_SECTION_MAX_BYTES = 32 * 1024;
export const TWIN_MAX_DEPTH = 10;
const MAX_KEY_LENGTH = 1024;

export function emptySection(nowIso: string, desired: boolean): PropertySection {
  const metadata: MetadataNode = { $lastUpdated: nowIso };
  if (desired) metadata.$lastUpdatedVersion = 1;
  return { props: {}, version: 1, metadata };
}

function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) < 0x20) return true;
  return false;
}

/** Validates property names: no '.', ' ', '$' anywhere, not empty, at most 1 KiB. Null values are allowed (deletes). */
export function validateTwinPatch(patch: JsonValue, what: string): asserts patch is JsonObject {
  if (!isPlainObject(patch)) throw new HomingError('InvalidJson', `${what} must be a JSON object.`);
  const walk = (o: JsonObject, depth: number): void => {
    if (depth > TWIN_MAX_DEPTH) throw new HomingError('TwinTooDeep', `${what} nests deeper than ${TWIN_MAX_DEPTH} levels.`);
    for (const [k, v] of Object.entries(o)) {
      if (k.length === 0 || k.length > MAX_KEY_LENGTH || /[.$ ]/.test(k) || hasControlChar(k)) {
        throw new HomingError('InvalidTwinPropertyName', `${what} has an invalid property name ${JSON.stringify(k.slice(0, 64))}.`);
      }
      if (isPlainObject(v)) walk(v, depth + 1);
    }
  };
  walk(patch, 1);
}

function checkSection(props: JsonObject, what: string): void {
  if (Buffer.byteLength(JSON.stringify(props)) > TWIN_SECTION_MAX_BYTES) {
    throw new HomingError('TwinTooLarge', `${what} would exceed ${TWIN_SECTION_MAX_BYTES} bytes.`);
  }
  if (jsonDepth(props) > TWIN_MAX_DEPTH) throw new HomingError('TwinTooDeep', `${what} nests deeper than ${TWIN_MAX_DEPTH} levels.`);
}

/** Updates the metadata tree for the keys a patch touched. */
function patchMetadata(meta: MetadataNode, patch: JsonObject, nowIso: string, version: number | undefined): MetadataNode {
  const out: MetadataNode = { ...meta, $lastUpdated: nowIso };
  if (version !== undefined) out.$lastUpdatedVersion = version;
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) {
      delete out[k];
    } else if (isPlainObject(v)) {
      const cur = out[k];
      const base: MetadataNode = typeof cur === 'object' && cur !== null ? cur : { $lastUpdated: nowIso };
      out[k] = patchMetadata(base, v, nowIso, version);
    } else {
      const leaf: MetadataNode = { $lastUpdated: nowIso };
      if (version !== undefined) leaf.$lastUpdatedVersion = version;
      out[k] = leaf;
    }
  }
  return out;
}

function patchSection(section: PropertySection, patch: JsonObject, nowIso: string, desired: boolean, what: string): PropertySection {
  validateTwinPatch(patch, what);
  const props = mergePatch(section.props, patch);
  checkSection(props, what);
  const version = section.version + 1;
  return { props, version, metadata: patchMetadata(section.metadata, patch, nowIso, desired ? version : undefined) };
}

export function newTwin(deviceId: string, nowIso: string, initial?: { tags?: JsonObject; desired?: JsonObject }): TwinState {
  let twin: TwinState = {
    deviceId,
    etag: twinEtag(1),
    version: 1,
    tags: {},
    desired: emptySection(nowIso, true),
    reported: emptySection(nowIso, false),
  };
  if (initial?.tags && Object.keys(initial.tags).length > 0) {
    validateTwinPatch(initial.tags, 'tags');
    checkSection(initial.tags, 'tags');
    twin = { ...twin, tags: initial.tags };
  }
  if (initial?.desired && Object.keys(initial.desired).length > 0) {
    validateTwinPatch(initial.desired, 'desired properties');
    const props = mergePatch({}, initial.desired);
    checkSection(props, 'desired properties');
    twin = { ...twin, desired: { props, version: 1, metadata: patchMetadata(twin.desired.metadata, props, nowIso, 1) } };
  }
  return twin;
}

export interface TwinPatch {
  tags?: JsonObject;
  desired?: JsonObject;
  reported?: JsonObject;
}

/**
 * Applies one change to a twin: merge patches on tags, desired and reported (null deletes a key). The twin version
 * goes up by one; the version of each touched property section goes up by one.
 */
export function applyTwinPatch(twin: TwinState, patch: TwinPatch, nowIso: string): TwinState {
  let next: TwinState = { ...twin, version: twin.version + 1 };
  if (patch.tags !== undefined) {
    validateTwinPatch(patch.tags, 'tags');
    const tags = mergePatch(twin.tags, patch.tags);
    checkSection(tags, 'tags');
    next = { ...next, tags };
  }
  if (patch.desired !== undefined) next = { ...next, desired: patchSection(twin.desired, patch.desired, nowIso, true, 'desired properties') };
  if (patch.reported !== undefined) next = { ...next, reported: patchSection(twin.reported, patch.reported, nowIso, false, 'reported properties') };
  return { ...next, etag: twinEtag(next.version) };
}

/** Twin etags are base64 of the 64-bit big-endian twin version, as IoT Hub shows them ("AAAAAAAAAAE="). */
export function twinEtag(version: number): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(version));
  return b.toString('base64');
}

/** The properties document a device gets from a twin GET. */
export function devicePropertiesDoc(twin: TwinState): { desired: JsonObject; reported: JsonObject } {
  return {
    desired: { ...twin.desired.props, $version: twin.desired.version },
    reported: { ...twin.reported.props, $version: twin.reported.version },
  };
}

/** The properties object of the service-side Twin JSON, with `$metadata` and `$version`. */
export function servicePropertiesDoc(twin: TwinState): { desired: JsonObject; reported: JsonObject } {
  return {
    desired: { ...twin.desired.props, $metadata: twin.desired.metadata as unknown as JsonObject, $version: twin.desired.version },
    reported: { ...twin.reported.props, $metadata: twin.reported.metadata as unknown as JsonObject, $version: twin.reported.version },
  };
}

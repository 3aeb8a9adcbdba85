import type { JsonObject } from '../../../core/json.ts';
import { servicePropertiesDoc } from '../../../core/twin.ts';
import type { DeviceIdentity, TwinState } from '../../../hub/model.ts';

/**
 * Wire shapes of the IoT Hub service API (protocol-service.md 4.2, 4.3). Both always carry `deviceId`: the SDK's
 * Device and Twin constructors throw inside the HTTP callback without it (T11).
 */

/** Device identity JSON. Etags are unquoted in the body. */
export function deviceJson(d: DeviceIdentity): JsonObject {
  return {
    deviceId: d.deviceId,
    generationId: d.generationId,
    etag: d.etag,
    connectionState: d.connectionState,
    status: d.status,
    statusReason: d.statusReason,
    connectionStateUpdatedTime: d.connectionStateUpdatedTime,
    statusUpdatedTime: d.statusUpdatedTime,
    lastActivityTime: d.lastActivityTime,
    cloudToDeviceMessageCount: d.cloudToDeviceMessageCount,
    authentication: {
      type: d.authentication.type,
      symmetricKey: { ...d.authentication.symmetricKey },
      x509Thumbprint: { ...d.authentication.x509Thumbprint },
    },
    capabilities: { iotEdge: d.capabilities.iotEdge },
  };
}

/** Service-side Twin JSON, with `$metadata` and `$version` in both property sections. */
export function twinJson(d: DeviceIdentity, t: TwinState): JsonObject {
  return {
    deviceId: d.deviceId,
    etag: t.etag,
    deviceEtag: d.etag,
    version: t.version,
    status: d.status,
    statusReason: d.statusReason,
    statusUpdateTime: d.statusUpdatedTime,
    connectionState: d.connectionState,
    lastActivityTime: d.lastActivityTime,
    cloudToDeviceMessageCount: d.cloudToDeviceMessageCount,
    authenticationType: d.authentication.type,
    x509Thumbprint: { ...d.authentication.x509Thumbprint },
    modelId: '',
    capabilities: { iotEdge: d.capabilities.iotEdge },
    tags: t.tags,
    properties: servicePropertiesDoc(t),
  };
}

/** Etag response header value: quoted, as HTTP wants it. */
export function etagHeader(etag: string): string {
  return `"${etag}"`;
}

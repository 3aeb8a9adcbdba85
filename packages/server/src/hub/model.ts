import type { JsonObject } from '../core/json.ts';

export type DeviceStatus = 'enabled' | 'disabled';
export type AuthType = 'sas' | 'selfSigned' | 'certificateAuthority' | 'none';
export type ConnectionState = 'Connected' | 'Disconnected';

export interface DeviceAuthentication {
  type: AuthType;
  symmetricKey: { primaryKey: string | null; secondaryKey: string | null };
  x509Thumbprint: { primaryThumbprint: string | null; secondaryThumbprint: string | null };
}

/** A device identity as the hub registry stores it (the IoT Hub Device JSON shape). */
export interface DeviceIdentity {
  deviceId: string;
  generationId: string;
  etag: string;
  status: DeviceStatus;
  statusReason: string | null;
  statusUpdatedTime: string;
  authentication: DeviceAuthentication;
  capabilities: { iotEdge: boolean };
  connectionState: ConnectionState;
  connectionStateUpdatedTime: string;
  lastActivityTime: string;
  cloudToDeviceMessageCount: number;
}

/** `$metadata` tree: every object level has `$lastUpdated` (and `$lastUpdatedVersion` in desired). */
export interface MetadataNode {
  $lastUpdated: string;
  $lastUpdatedVersion?: number;
  [key: string]: MetadataNode | string | number | undefined;
}

export interface PropertySection {
  /** The properties, without `$version` / `$metadata`. */
  props: JsonObject;
  version: number;
  metadata: MetadataNode;
}

/** The stored twin of one device. `version` counts every twin change; `etag` changes with it. */
export interface TwinState {
  deviceId: string;
  etag: string;
  version: number;
  tags: JsonObject;
  desired: PropertySection;
  reported: PropertySection;
}

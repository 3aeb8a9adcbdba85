/**
 * @homing/device: a device client for DPS-compatible provisioning services and IoT hubs (Homing or Azure).
 * It speaks the wire protocols itself and depends on no server code.
 */
export {
  HomingDevice,
  DEFAULT_REPROVISION_METHOD,
  type HomingDeviceOptions,
  type HomingDeviceEvents,
  type HubConnectionSettings,
  type ProvisioningReason,
  type ProvisionedEvent,
  type ReprovisionedEvent,
  type ConnectedEvent,
  type DisconnectedEvent,
  type RetryEvent,
} from './lifecycle/homing-device.ts';
export {
  FileAssignmentStore,
  MemoryAssignmentStore,
  parseAssignment,
  type Assignment,
  type AssignmentStore,
} from './lifecycle/assignment-store.ts';
export {
  DEFAULT_RETRY_POLICY,
  backoffDelay,
  classifyFailure,
  resolveRetryPolicy,
  type BackoffPolicy,
  type RetryPolicy,
  type RetryPolicyOverrides,
  type Failure,
  type FailureKind,
} from './lifecycle/policy.ts';

export {
  ProvisioningClient,
  type ProvisioningClientOptions,
  type RegisterOptions,
  type DpsProtocol,
} from './dps/provisioning-client.ts';
export { DEFAULT_DPS_API_VERSION, type DpsConnectionOptions } from './dps/config.ts';
export type { LatencyProbeOptions } from './dps/latency-probe.ts';
export type {
  AssignedRegistration,
  DeviceRegistrationRequest,
  DeviceRegistrationResult,
  RegistrationOperationStatus,
  RegistrationStatus,
  RegistrationSubstatus,
} from './dps/types.ts';
export {
  DPS_RESPONSE_SUBSCRIPTION,
  dpsMqttUsername,
  dpsRegisterTopic,
  dpsOperationStatusTopic,
  parseDpsResponseTopic,
  type DpsResponseTopic,
} from './dps/topics.ts';

export {
  HubClient,
  MAX_TELEMETRY_BYTES,
  type HubClientOptions,
  type HubClientEvents,
  type Twin,
  type TelemetryOptions,
  type CloudToDeviceMessage,
  type MethodHandler,
  type MethodRequest,
  type MethodResult,
} from './hub/hub-client.ts';
export {
  DEFAULT_HUB_API_VERSION,
  TWIN_RESPONSE_SUBSCRIPTION,
  DESIRED_SUBSCRIPTION,
  METHODS_SUBSCRIPTION,
  hubUsername,
  telemetryTopic,
  c2dSubscription,
  twinGetTopic,
  twinReportedTopic,
  methodResponseTopic,
  parseTwinResponseTopic,
  parseDesiredTopic,
  parseMethodTopic,
  type HubUsernameOptions,
  type TwinResponseTopic,
} from './hub/topics.ts';
export { encodePropertyBag, decodePropertyBag, type MessageProperties, type MessageSystemProperties } from './hub/property-bag.ts';

export {
  type DeviceCredential,
  type SymmetricKeyCredential,
  type GroupKeyCredential,
  type X509Credential,
  type HubCredential,
  type TlsOptions,
  resolveCredential,
} from './credentials.ts';
export { buildSas, dpsSas, hubSas, deriveDeviceKey, strictEncode, type SasOptions } from './sas.ts';
export {
  HomingDeviceError,
  DpsError,
  RegistrationFailedError,
  ConnectionRefusedError,
  HubRequestError,
  NetworkError,
  TimeoutError,
  ProtocolError,
  NotConnectedError,
  MessageTooLargeError,
  AbortedError,
  ConnackCode,
  type DeviceErrorCode,
  type DpsErrorBody,
  type DpsOperation,
  type HubOperation,
} from './errors.ts';
export { systemRuntime, type Runtime, type Clock, type Timers } from './runtime.ts';
export type { JsonValue, JsonObject, JsonPrimitive } from './json.ts';
export { CLIENT_VERSION } from './version.ts';

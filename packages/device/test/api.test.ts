import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as api from '../src/index.ts';
import type {
  AssignedRegistration,
  Assignment,
  AssignmentStore,
  ConnectedEvent,
  DeviceCredential,
  DeviceErrorCode,
  DisconnectedEvent,
  HomingDevice,
  HomingDeviceEvents,
  HomingDeviceOptions,
  HubClient,
  HubClientEvents,
  JsonObject,
  MethodHandler,
  MethodResult,
  ProvisionedEvent,
  ProvisioningClient,
  ProvisioningReason,
  ReprovisionedEvent,
  RetryEvent,
  Runtime,
  Twin,
  DeviceRegistrationResult,
  CloudToDeviceMessage,
  FailureKind,
} from '../src/index.ts';

/**
 * The public surface, checked twice: the runtime export list (a removed or renamed export fails here), and
 * compile-time assertions on the shapes users program against (checked by `npm run typecheck`).
 */

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Expect<T extends true> = T;
type Extends<A, B> = [A] extends [B] ? true : false;

// ---- compile-time shape checks (a failing one is a type error) ---------------------------------------------
export type Checks = [
  // Credentials: the three kinds, discriminated by `type`.
  Expect<Equal<DeviceCredential['type'], 'symmetricKey' | 'groupKey' | 'x509'>>,
  Expect<Extends<{ type: 'groupKey'; groupKey: string }, DeviceCredential>>,
  Expect<Extends<{ type: 'x509'; cert: string; key: Buffer }, DeviceCredential>>,
  // The store is pluggable, and a path string selects the JSON file store.
  Expect<Equal<HomingDeviceOptions['store'], AssignmentStore | string>>,
  Expect<Equal<ReturnType<AssignmentStore['load']>, Promise<Assignment | undefined>>>,
  // Injectable time: { clock: { now() }, timers: { setTimeout, clearTimeout }, random }.
  Expect<Extends<{ clock: { now(): number }; timers: { setTimeout(fn: () => void, ms: number): unknown; clearTimeout(h: unknown): void }; random: () => number }, Runtime>>,
  Expect<Equal<HomingDeviceOptions['runtime'], Partial<Runtime> | undefined>>,
  // Events and their payloads.
  Expect<Equal<HomingDeviceEvents['provisioned'], [event: ProvisionedEvent]>>,
  Expect<Equal<HomingDeviceEvents['reprovisioned'], [event: ReprovisionedEvent]>>,
  Expect<Equal<HomingDeviceEvents['connected'], [event: ConnectedEvent]>>,
  Expect<Equal<HomingDeviceEvents['disconnected'], [event: DisconnectedEvent]>>,
  Expect<Equal<HomingDeviceEvents['error'], [error: Error]>>,
  Expect<Equal<HomingDeviceEvents['retry'], [event: RetryEvent]>>,
  Expect<Equal<RetryEvent['kind'], 'throttled' | 'transient' | 'rejected'>>,
  Expect<Equal<Exclude<FailureKind, 'aborted'>, RetryEvent['kind']>>,
  Expect<Equal<ProvisioningReason, 'initial' | 'hub-rejected' | 'hub-unreachable' | 'method' | 'api'>>,
  Expect<Equal<ReprovisionedEvent['via'], 'register' | 'lookup'>>,
  Expect<Equal<DisconnectedEvent['reason'], 'lost' | 'moving' | 'stopped'>>,
  Expect<Equal<HubClientEvents['desired'], [patch: JsonObject, version: number | undefined]>>,
  Expect<Equal<HubClientEvents['message'], [message: CloudToDeviceMessage]>>,
  // The lifecycle API.
  Expect<Equal<ReturnType<HomingDevice['start']>, Promise<void>>>,
  Expect<Equal<ReturnType<HomingDevice['stop']>, Promise<void>>>,
  Expect<Equal<ReturnType<HomingDevice['reprovision']>, Promise<Assignment>>>,
  Expect<Equal<HomingDevice['assignment'], Assignment | undefined>>,
  Expect<Equal<ReturnType<HomingDevice['getTwin']>, Promise<Twin>>>,
  Expect<Equal<ReturnType<HomingDevice['updateReported']>, Promise<number | undefined>>>,
  Expect<Equal<HomingDevice['hubClient'], HubClient | undefined>>,
  // Provisioning results are typed; an assignment always has a hub and a device id.
  Expect<Equal<ReturnType<ProvisioningClient['register']>, Promise<AssignedRegistration>>>,
  Expect<Equal<ReturnType<ProvisioningClient['lookup']>, Promise<DeviceRegistrationResult>>>,
  Expect<Equal<AssignedRegistration['assignedHub'], string>>,
  Expect<Equal<AssignedRegistration['deviceId'], string>>,
  // Methods: a handler returns a status and an optional JSON payload, sync or async.
  Expect<Extends<() => MethodResult, MethodHandler>>,
  Expect<Extends<() => Promise<MethodResult>, MethodHandler>>,
  // Errors carry their discriminating code.
  Expect<Equal<api.DpsError['code'], 'DPS_REQUEST_FAILED'>>,
  Expect<Equal<api.DpsError['retryAfterMs'], number | undefined>>,
  Expect<Equal<api.DpsError['errorCode'], number | undefined>>,
  Expect<Equal<api.DpsError['status'], number>>,
  Expect<Extends<api.DpsError['code'] | api.ConnectionRefusedError['code'] | api.TimeoutError['code'], DeviceErrorCode>>,
];

const EXPECTED_EXPORTS = [
  'AbortedError',
  'CLIENT_VERSION',
  'ConnackCode',
  'ConnectionRefusedError',
  'DEFAULT_DPS_API_VERSION',
  'DEFAULT_HUB_API_VERSION',
  'DEFAULT_REPROVISION_METHOD',
  'DEFAULT_RETRY_POLICY',
  'DESIRED_SUBSCRIPTION',
  'DPS_RESPONSE_SUBSCRIPTION',
  'DpsError',
  'FileAssignmentStore',
  'HomingDevice',
  'HomingDeviceError',
  'HubClient',
  'HubRequestError',
  'MAX_TELEMETRY_BYTES',
  'METHODS_SUBSCRIPTION',
  'MemoryAssignmentStore',
  'MessageTooLargeError',
  'NetworkError',
  'NotConnectedError',
  'ProtocolError',
  'ProvisioningClient',
  'RegistrationFailedError',
  'TWIN_RESPONSE_SUBSCRIPTION',
  'TimeoutError',
  'backoffDelay',
  'buildSas',
  'c2dSubscription',
  'classifyFailure',
  'decodePropertyBag',
  'deriveDeviceKey',
  'dpsMqttUsername',
  'dpsOperationStatusTopic',
  'dpsRegisterTopic',
  'dpsSas',
  'encodePropertyBag',
  'hubSas',
  'hubUsername',
  'methodResponseTopic',
  'parseAssignment',
  'parseDesiredTopic',
  'parseDpsResponseTopic',
  'parseMethodTopic',
  'parseTwinResponseTopic',
  'resolveCredential',
  'resolveRetryPolicy',
  'strictEncode',
  'systemRuntime',
  'telemetryTopic',
  'twinGetTopic',
  'twinReportedTopic',
];

test('the runtime exports are exactly the documented ones', () => {
  assert.deepEqual(Object.keys(api).sort(), [...EXPECTED_EXPORTS].sort());
});

test('defaults documented in the README', () => {
  assert.equal(api.DEFAULT_DPS_API_VERSION, '2021-10-01');
  assert.equal(api.DEFAULT_HUB_API_VERSION, '2021-04-12');
  assert.equal(api.DEFAULT_REPROVISION_METHOD, 'homing.reprovision');
  assert.equal(api.DEFAULT_RETRY_POLICY.transient.initialDelayMs, 5000);
  assert.equal(api.DEFAULT_RETRY_POLICY.deadHubTimeoutMs, 15 * 60_000);
  assert.equal(api.MAX_TELEMETRY_BYTES, 256 * 1024);
  assert.ok(Object.isFrozen(api.DEFAULT_RETRY_POLICY));
});

test('every error is a HomingDeviceError with a code and its class name', () => {
  const errors: api.HomingDeviceError[] = [
    new api.DpsError({ operation: 'register', status: 429, retryAfterMs: 1000 }),
    new api.RegistrationFailedError({ status: 'disabled', result: {} }),
    new api.ConnectionRefusedError(5, 'hub', 'hub x'),
    new api.HubRequestError({ operation: 'twin.get', status: 500 }),
    new api.NetworkError('down'),
    new api.TimeoutError('op', 1),
    new api.ProtocolError('bad'),
    new api.NotConnectedError(),
    new api.MessageTooLargeError(2, 1),
    new api.AbortedError(),
  ];
  const codes = errors.map((e) => {
    assert.ok(e instanceof api.HomingDeviceError && e instanceof Error);
    assert.equal(e.name, e.constructor.name);
    return e.code;
  });
  assert.equal(new Set(codes).size, errors.length);
});

test('failure classification drives the lifecycle', () => {
  const c = api.classifyFailure;
  assert.deepEqual(c(new api.DpsError({ operation: 'register', status: 429, retryAfterMs: 3000 })), { kind: 'throttled', retryAfterMs: 3000 });
  assert.deepEqual(c(new api.DpsError({ operation: 'register', status: 503 })), { kind: 'transient' });
  for (const s of [400, 401, 403, 404]) assert.deepEqual(c(new api.DpsError({ operation: 'register', status: s })), { kind: 'rejected' });
  assert.deepEqual(c(new api.RegistrationFailedError({ status: 'failed', result: {} })), { kind: 'rejected' });
  assert.deepEqual(c(new api.ConnectionRefusedError(3, 'hub', 'h')), { kind: 'transient' });
  for (const rc of [2, 4, 5]) assert.deepEqual(c(new api.ConnectionRefusedError(rc, 'hub', 'h')), { kind: 'rejected' });
  assert.deepEqual(c(new api.NetworkError('x')), { kind: 'transient' });
  assert.deepEqual(c(new api.TimeoutError('x', 1)), { kind: 'transient' });
  assert.deepEqual(c(new api.AbortedError()), { kind: 'aborted' });
  assert.throws(() => api.resolveRetryPolicy({ transient: { initialDelayMs: 10, maxDelayMs: 5 } }), RangeError);
});

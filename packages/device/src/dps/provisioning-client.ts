import { DpsError, ProtocolError, RegistrationFailedError, TimeoutError, type DpsErrorBody, type DpsOperation } from '../errors.ts';
import { isJsonObject, type JsonObject, type JsonValue } from '../json.ts';
import { sleep } from '../runtime.ts';
import { resolveDpsConnection, type DpsConnectionOptions, type ResolvedDpsConnection } from './config.ts';
import { HttpsDpsTransport } from './https-transport.ts';
import { probeLatencies, withLatencies, type LatencyProbeOptions } from './latency-probe.ts';
import { MqttDpsTransport } from './mqtt-transport.ts';
import type {
  AssignedRegistration,
  DeviceRegistrationRequest,
  DeviceRegistrationResult,
  DpsResponse,
  DpsTransport,
  RegistrationOperationStatus,
} from './types.ts';

export type DpsProtocol = 'https' | 'mqtt';

export interface ProvisioningClientOptions extends DpsConnectionOptions {
  /** Default `https`. */
  protocol?: DpsProtocol;
  /**
   * HTTPS port for the registration status lookup when `protocol` is `mqtt` (DPS offers the lookup over HTTPS only).
   * Default 443.
   */
  lookupPort?: number;
  /** Custom JSON sent with every registration (`payload` of the register body); `register()` may override it. */
  payload?: JsonObject;
  /**
   * Before each registration, measure the TCP connect time to these hubs and send it as
   * `payload.homing.latencyMs` (`{ "<hub host>": ms }`), which Homing's geoLatency allocation prefers over its
   * network map. Unreachable hubs are left out; nothing is added when none answers.
   */
  latencyProbe?: LatencyProbeOptions;
  /** Wait between polls when DPS sends no Retry-After (ms). Default 2000. */
  pollIntervalMs?: number;
  /** Shortest wait between polls, whatever Retry-After says (ms). Default 1000. */
  minPollIntervalMs?: number;
  /** Bound on one registration: register, every poll and wait (ms). Default 300 000. */
  registrationTimeoutMs?: number;
  /** MQTT keepalive (s). Default 180. */
  keepaliveSeconds?: number;
}

export interface RegisterOptions {
  /** Overrides the client's `payload` for this registration. */
  payload?: JsonObject;
  signal?: AbortSignal;
}

/**
 * Registers a device with a DPS (or any DPS-compatible service) over HTTPS or MQTT, and looks its registration up.
 * `register()` follows one operation to its end: it polls while DPS answers `assigning`, waiting Retry-After (or
 * `pollIntervalMs`) between polls, and waits out a 429 on a poll. It does not retry a refused or failed
 * registration: that is the caller's policy (see HomingDevice). Errors: DpsError (status ≥ 300 with errorCode and
 * Retry-After), RegistrationFailedError (`failed`, `disabled`...), NetworkError, TimeoutError, ProtocolError,
 * AbortedError.
 */
export class ProvisioningClient {
  readonly registrationId: string;
  readonly idScope: string;
  private readonly c: ResolvedDpsConnection;
  private readonly transport: DpsTransport;
  private lookupTransport: HttpsDpsTransport | undefined;
  private readonly pollIntervalMs: number;
  private readonly minPollIntervalMs: number;
  private readonly registrationTimeoutMs: number;

  constructor(private readonly options: ProvisioningClientOptions) {
    const protocol = options.protocol ?? 'https';
    this.c = resolveDpsConnection(options, protocol === 'https' ? 443 : 8883);
    this.registrationId = options.registrationId;
    this.idScope = options.idScope;
    this.transport =
      protocol === 'https'
        ? (this.lookupTransport = new HttpsDpsTransport(this.c))
        : new MqttDpsTransport(this.c, options.keepaliveSeconds === undefined ? {} : { keepaliveSeconds: options.keepaliveSeconds });
    this.pollIntervalMs = options.pollIntervalMs ?? 2000;
    this.minPollIntervalMs = options.minPollIntervalMs ?? 1000;
    this.registrationTimeoutMs = options.registrationTimeoutMs ?? 300_000;
  }

  /** Registers (PUT register, then polls) and resolves with the assignment. */
  async register(options: RegisterOptions = {}): Promise<AssignedRegistration> {
    const { runtime } = this.c;
    const signal = options.signal;
    let payload = options.payload ?? this.options.payload;
    if (this.options.latencyProbe) {
      const latencies = await probeLatencies(this.options.latencyProbe, { timers: runtime.timers });
      if (Object.keys(latencies).length > 0) payload = withLatencies(payload, latencies);
    }
    const request: DeviceRegistrationRequest = { registrationId: this.registrationId, ...(payload !== undefined ? { payload } : {}) };
    const deadline = runtime.clock.now() + this.registrationTimeoutMs;
    const wait = async (ms: number): Promise<void> => {
      if (runtime.clock.now() + ms > deadline) throw new TimeoutError('DPS registration', this.registrationTimeoutMs);
      await sleep(runtime, ms, signal);
    };
    try {
      let res = await this.transport.register(request, signal);
      let operation: DpsOperation = 'register';
      let operationId: string | undefined;
      for (;;) {
        if (res.status === 429 && operation === 'operationStatus' && operationId !== undefined) {
          // A throttled poll: the operation is still valid, so wait and poll again (polls are not billed).
          await wait(Math.max(this.minPollIntervalMs, res.retryAfterMs ?? this.pollIntervalMs));
          res = await this.transport.operationStatus(operationId, signal);
          continue;
        }
        const op = operationStatusOf(res, operation);
        const status = op.status.toLowerCase();
        if (status === 'assigned') return assignedOf(op);
        if (status === 'assigning' || status === 'registering') {
          await wait(Math.max(this.minPollIntervalMs, res.retryAfterMs ?? this.pollIntervalMs));
          if (status === 'assigning' && op.operationId) {
            operationId = op.operationId;
            operation = 'operationStatus';
            res = await this.transport.operationStatus(operationId, signal);
          } else {
            // `registering`, or `assigning` without an operation id: start over (protocol-device.md §A.4).
            operation = 'register';
            res = await this.transport.register(request, signal);
          }
          continue;
        }
        const rs = op.registrationState;
        throw new RegistrationFailedError({ status: op.status, errorCode: rs?.errorCode, errorMessage: rs?.errorMessage, result: op });
      }
    } finally {
      if (this.transport instanceof MqttDpsTransport) await this.transport.close();
    }
  }

  /**
   * Registration status lookup (`POST /{idScope}/registrations/{registrationId}`): the result of the device's last
   * registration, without starting a new one. Always over HTTPS.
   */
  async lookup(options: { signal?: AbortSignal } = {}): Promise<DeviceRegistrationResult> {
    this.lookupTransport ??= new HttpsDpsTransport({ ...this.c, port: this.options.lookupPort ?? 443 });
    const res = await this.lookupTransport.lookup(options.signal);
    if (res.status >= 300) throw dpsErrorOf(res, 'lookup');
    if (!isJsonObject(res.body) || typeof res.body.status !== 'string') {
      throw new ProtocolError(`DPS lookup: answer ${res.status} is not a DeviceRegistrationResult`);
    }
    return res.body as unknown as DeviceRegistrationResult;
  }

  /** Releases connections (HTTPS keep-alive sockets, the DPS MQTT connection). */
  async close(): Promise<void> {
    await this.transport.close();
    if (this.lookupTransport && this.lookupTransport !== this.transport) await this.lookupTransport.close();
  }
}

function dpsErrorOf(res: DpsResponse, operation: DpsOperation): DpsError {
  const body: DpsErrorBody | undefined = isJsonObject(res.body) ? errorBodyOf(res.body) : undefined;
  return new DpsError({ operation, status: res.status, body, retryAfterMs: res.retryAfterMs });
}

function errorBodyOf(b: JsonObject): DpsErrorBody {
  const out: DpsErrorBody = {};
  const ec = b.errorCode;
  if (typeof ec === 'number') out.errorCode = ec;
  else if (typeof ec === 'string' && /^\d+$/.test(ec)) out.errorCode = Number(ec);
  if (typeof b.trackingId === 'string') out.trackingId = b.trackingId;
  const msg = b.message ?? b.Message;
  if (typeof msg === 'string') out.message = msg;
  if (typeof b.timestampUtc === 'string') out.timestampUtc = b.timestampUtc;
  if (b.info !== undefined) out.info = b.info;
  return out;
}

function operationStatusOf(res: DpsResponse, operation: DpsOperation): RegistrationOperationStatus {
  if (res.status >= 300) throw dpsErrorOf(res, operation);
  const b: JsonValue | undefined = res.body;
  if (!isJsonObject(b) || typeof b.status !== 'string') {
    throw new ProtocolError(`DPS ${operation}: answer ${res.status} is not a RegistrationOperationStatus`);
  }
  return b as unknown as RegistrationOperationStatus;
}

function assignedOf(op: RegistrationOperationStatus): AssignedRegistration {
  const rs = op.registrationState;
  if (!rs || typeof rs.assignedHub !== 'string' || rs.assignedHub === '' || typeof rs.deviceId !== 'string' || rs.deviceId === '') {
    throw new ProtocolError('DPS answered `assigned` without registrationState.assignedHub and deviceId');
  }
  return { ...rs, status: 'assigned', assignedHub: rs.assignedHub, deviceId: rs.deviceId };
}

/**
 * Typed errors. Match them with `instanceof` or on `code`, never on the message text.
 * No error ever carries a key, a SAS token or a password.
 */
export type DeviceErrorCode =
  | 'DPS_REQUEST_FAILED'
  | 'REGISTRATION_FAILED'
  | 'CONNECTION_REFUSED'
  | 'HUB_REQUEST_FAILED'
  | 'NETWORK'
  | 'TIMEOUT'
  | 'PROTOCOL'
  | 'NOT_CONNECTED'
  | 'MESSAGE_TOO_LARGE'
  | 'ABORTED';

export abstract class HomingDeviceError extends Error {
  abstract readonly code: DeviceErrorCode;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

export type DpsOperation = 'register' | 'operationStatus' | 'lookup';

/** The DPS error body (dps-behavior.md §8.1). */
export interface DpsErrorBody {
  errorCode?: number;
  trackingId?: string;
  message?: string;
  timestampUtc?: string;
  info?: unknown;
}

/** DPS answered a request with a status ≥ 300 (over HTTPS, or in the `$dps/registrations/res/{status}` topic). */
export class DpsError extends HomingDeviceError {
  readonly code = 'DPS_REQUEST_FAILED' as const;
  /** HTTP status (429, 401, 503...). */
  readonly status: number;
  /** The six-digit DPS error code from the body, when there is one (e.g. 401002, 429001). */
  readonly errorCode: number | undefined;
  /** The server's Retry-After, in milliseconds, when it sent one. */
  readonly retryAfterMs: number | undefined;
  readonly trackingId: string | undefined;
  readonly operation: DpsOperation;
  /** The parsed error body, if it was JSON. */
  readonly body: DpsErrorBody | undefined;

  constructor(init: { operation: DpsOperation; status: number; body?: DpsErrorBody | undefined; retryAfterMs?: number | undefined }) {
    const detail = init.body?.message ? `: ${init.body.message}` : '';
    const ec = init.body?.errorCode !== undefined ? ` (errorCode ${init.body.errorCode})` : '';
    super(`DPS ${init.operation} failed with status ${init.status}${ec}${detail}`);
    this.operation = init.operation;
    this.status = init.status;
    this.body = init.body;
    this.errorCode = typeof init.body?.errorCode === 'number' ? init.body.errorCode : undefined;
    this.trackingId = typeof init.body?.trackingId === 'string' ? init.body.trackingId : undefined;
    this.retryAfterMs = init.retryAfterMs;
  }
}

/**
 * The registration operation finished without an assignment: status `failed` (errorCode/errorMessage from
 * `registrationState`), `disabled` (the enrollment is disabled), or an unexpected status.
 */
export class RegistrationFailedError extends HomingDeviceError {
  readonly code = 'REGISTRATION_FAILED' as const;
  readonly status: string;
  readonly errorCode: number | undefined;
  readonly errorMessage: string | undefined;
  /** The whole operation status as DPS sent it. */
  readonly result: unknown;

  constructor(init: { status: string; errorCode?: number | undefined; errorMessage?: string | undefined; result: unknown }) {
    const ec = init.errorCode !== undefined ? ` (errorCode ${init.errorCode})` : '';
    super(`registration ended with status ${init.status}${ec}${init.errorMessage ? `: ${init.errorMessage}` : ''}`);
    this.status = init.status;
    this.errorCode = init.errorCode;
    this.errorMessage = init.errorMessage;
    this.result = init.result;
  }
}

/** MQTT 3.1.1 CONNACK return codes. */
export const ConnackCode = {
  unacceptableProtocolVersion: 1,
  identifierRejected: 2,
  serverUnavailable: 3,
  badUsernameOrPassword: 4,
  notAuthorized: 5,
} as const;

/** An MQTT server (the hub, or DPS over MQTT) refused the CONNECT with a CONNACK return code. */
export class ConnectionRefusedError extends HomingDeviceError {
  readonly code = 'CONNECTION_REFUSED' as const;
  /** CONNACK return code (1..5). */
  readonly returnCode: number;
  readonly endpoint: 'hub' | 'dps';
  constructor(returnCode: number, endpoint: 'hub' | 'dps', where: string) {
    super(`${where} refused the connection: CONNACK ${returnCode} (${connackText(returnCode)})`);
    this.returnCode = returnCode;
    this.endpoint = endpoint;
  }
  /** Credentials or identity refused (2, 4, 5): unknown, disabled, moved or deleted device, or a bad key. */
  get unauthorized(): boolean {
    return this.returnCode === ConnackCode.identifierRejected || this.returnCode === ConnackCode.badUsernameOrPassword || this.returnCode === ConnackCode.notAuthorized;
  }
}

function connackText(rc: number): string {
  switch (rc) {
    case 1: return 'unacceptable protocol version';
    case 2: return 'identifier rejected';
    case 3: return 'server unavailable';
    case 4: return 'bad username or password';
    case 5: return 'not authorized';
    default: return 'unknown';
  }
}

export type HubOperation = 'twin.get' | 'twin.reported' | 'telemetry' | 'subscribe';

/** A hub request answered with an error (twin response status ≥ 300 or a body with `errorCode`). */
export class HubRequestError extends HomingDeviceError {
  readonly code = 'HUB_REQUEST_FAILED' as const;
  readonly status: number;
  readonly errorCode: number | undefined;
  readonly operation: HubOperation;
  readonly body: unknown;
  constructor(init: { operation: HubOperation; status: number; errorCode?: number | undefined; message?: string | undefined; body?: unknown }) {
    super(`hub ${init.operation} failed with status ${init.status}${init.errorCode !== undefined ? ` (errorCode ${init.errorCode})` : ''}${init.message ? `: ${init.message}` : ''}`);
    this.operation = init.operation;
    this.status = init.status;
    this.errorCode = init.errorCode;
    this.body = init.body;
  }
}

/** The endpoint could not be reached or the connection broke (DNS, TCP, TLS, socket closed). */
export class NetworkError extends HomingDeviceError {
  readonly code = 'NETWORK' as const;
  /** The system or TLS error code, e.g. `ECONNREFUSED`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`. */
  readonly errno: string | undefined;
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    const c = (cause as { code?: unknown } | null | undefined)?.code;
    this.errno = typeof c === 'string' ? c : undefined;
  }
}

export class TimeoutError extends HomingDeviceError {
  readonly code = 'TIMEOUT' as const;
  readonly operation: string;
  readonly timeoutMs: number;
  constructor(operation: string, timeoutMs: number) {
    super(`${operation} timed out after ${timeoutMs} ms`);
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

/** The server answered something this client cannot interpret. */
export class ProtocolError extends HomingDeviceError {
  readonly code = 'PROTOCOL' as const;
}

export class NotConnectedError extends HomingDeviceError {
  readonly code = 'NOT_CONNECTED' as const;
  constructor(message = 'not connected to the hub') {
    super(message);
  }
}

export class MessageTooLargeError extends HomingDeviceError {
  readonly code = 'MESSAGE_TOO_LARGE' as const;
  readonly size: number;
  readonly limit: number;
  constructor(size: number, limit: number) {
    super(`message of ${size} bytes exceeds the limit of ${limit} bytes`);
    this.size = size;
    this.limit = limit;
  }
}

/** The operation was cancelled (AbortSignal, `close()` or `stop()`). */
export class AbortedError extends HomingDeviceError {
  readonly code = 'ABORTED' as const;
  constructor(message = 'operation aborted') {
    super(message);
  }
}

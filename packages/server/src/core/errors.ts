/**
 * The one error catalogue of Homing. Every error a client can see has a symbolic name, an HTTP status and a
 * six-digit code (HTTP status x 1000 + sub-code, the IoT Hub / DPS convention). Transports map a HomingError to
 * their wire shape in exactly one place each (transport/http/errors.ts, transport/mqtt/errors.ts).
 * docs/errors.md lists the same table; test/core/errors-doc.test.ts keeps the two in sync.
 */
export interface ErrorDef {
  readonly status: number;
  readonly code: number;
  readonly summary: string;
}

export const ERROR_CATALOGUE = {
  // 400: bad requests
  ArgumentInvalid: { status: 400, code: 400004, summary: 'A request argument or the body failed validation.' },
  InvalidJson: { status: 400, code: 400006, summary: 'The body is not valid JSON (or not the JSON type expected).' },
  InvalidRegistrationId: { status: 400, code: 400008, summary: 'The registration id is outside the allowed charset or length.' },
  RegistrationIdMismatch: { status: 400, code: 400009, summary: 'The body registrationId differs from the one in the path.' },
  InvalidDeviceId: { status: 400, code: 400010, summary: 'The device id is outside the allowed charset or length.' },
  TwinTooLarge: { status: 400, code: 400027, summary: 'A twin section (tags, desired or reported) would exceed 32 KiB.' },
  TwinTooDeep: { status: 400, code: 400028, summary: 'A twin section nests deeper than 10 levels.' },
  InvalidTwinPropertyName: { status: 400, code: 400029, summary: 'A twin property name is empty, too long or holds a forbidden character.' },
  CustomAllocationFailed: { status: 400, code: 400207, summary: 'The custom allocation webhook failed (inside a failed registration).' },
  NoEligibleHub: { status: 400, code: 400208, summary: 'No linked hub is eligible for the registration (inside a failed registration).' },
  HubWriteFailed: { status: 400, code: 400209, summary: 'Writing the device to its hub failed (inside a failed registration).' },
  // 401: authentication
  Unauthorized: { status: 401, code: 401000, summary: 'Missing, malformed, expired or wrong credentials; no hint of which part failed.' },
  IotHubUnauthorizedAccess: { status: 401, code: 401002, summary: 'The shared access signature or certificate is not valid for this resource.' },
  // 403: quotas and rights
  QuotaExceeded: { status: 403, code: 403002, summary: 'A resource limit (devices, enrollments, groups, CAs, registrations) is reached.' },
  // 404
  DeviceNotFound: { status: 404, code: 404001, summary: 'The device does not exist on this hub.' },
  DeviceNotOnline: { status: 404, code: 404103, summary: 'The device is not connected, so a direct method cannot reach it.' },
  EnrollmentNotFound: { status: 404, code: 404201, summary: 'The individual enrollment or enrollment group does not exist.' },
  RegistrationNotFound: { status: 404, code: 404202, summary: 'The registration record or operation does not exist.' },
  IdScopeNotFound: { status: 404, code: 404203, summary: 'The id scope is unknown (devices get 401 instead).' },
  NotFound: { status: 404, code: 404000, summary: 'No such resource or route.' },
  // 405, 409, 412, 413, 415
  MethodNotAllowed: { status: 405, code: 405000, summary: 'The method is not allowed on this path.' },
  DeviceAlreadyExists: { status: 409, code: 409001, summary: 'The entity already exists (device, enrollment, certificate in use).' },
  RegistrationInProgress: { status: 409, code: 409202, summary: 'The registration is being assigned or reprovisioned; retry.' },
  JobStateConflict: { status: 409, code: 409010, summary: 'The job is in a state that does not allow the action (resume a completed job...).' },
  PreconditionFailed: { status: 412, code: 412002, summary: 'The If-Match etag does not match the current entity.' },
  MessageTooLarge: { status: 413, code: 413001, summary: 'The message or body is larger than the limit.' },
  UnsupportedMediaType: { status: 415, code: 415001, summary: 'The Content-Type is not supported.' },
  // 429
  ThrottlingException: { status: 429, code: 429001, summary: 'Too many requests; retry after the Retry-After seconds.' },
  // 5xx
  ServerError: { status: 500, code: 500001, summary: 'An unexpected server error. Details are in the server log under the tracking id.' },
  LinkedHubFailed: { status: 502, code: 502001, summary: 'A linked IoT hub refused or failed the request (stale linked-hub credential, rejected input).' },
  ServiceUnavailable: { status: 503, code: 503001, summary: 'A dependency (hub, store) is unavailable.' },
  GatewayTimeout: { status: 504, code: 504101, summary: 'The device did not answer the direct method within its timeout.' },
} as const satisfies Record<string, ErrorDef>;

export type ErrorName = keyof typeof ERROR_CATALOGUE;

export class HomingError extends Error {
  readonly errorName: ErrorName;
  readonly info: Readonly<Record<string, string>> | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(errorName: ErrorName, message?: string, opts?: { info?: Record<string, string>; retryAfterSeconds?: number }) {
    super(message ?? ERROR_CATALOGUE[errorName].summary);
    this.name = 'HomingError';
    this.errorName = errorName;
    this.info = opts?.info;
    this.retryAfterSeconds = opts?.retryAfterSeconds;
  }

  get status(): number {
    return ERROR_CATALOGUE[this.errorName].status;
  }

  get code(): number {
    return ERROR_CATALOGUE[this.errorName].code;
  }
}

export function isHomingError(e: unknown): e is HomingError {
  return e instanceof HomingError;
}

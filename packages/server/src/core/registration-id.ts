import { HomingError } from './errors.ts';

/**
 * Registration ids (dps-behavior.md §1.3, §2.7): letters, digits and `- . _ :`; the last character is a letter, a
 * digit or `-`; 1 to 128 characters. They are case-insensitive: `Dev-A` and `dev-a` are the same registration, so
 * lookups use `registrationKey(id)` (lower case) while the id is kept as the device presented it.
 *
 * One implementation for the device runtime and the service API.
 */
export const REGISTRATION_ID_MAX_LENGTH = 128;

const REGISTRATION_ID_RE = /^[A-Za-z0-9\-._:]*[A-Za-z0-9-]$/;

export function isValidRegistrationId(id: unknown): id is string {
  return typeof id === 'string' && id.length >= 1 && id.length <= REGISTRATION_ID_MAX_LENGTH && REGISTRATION_ID_RE.test(id);
}

/** Throws 400 InvalidRegistrationId when `id` breaks the rules. */
export function validateRegistrationId(id: unknown, what = 'registrationId'): asserts id is string {
  if (!isValidRegistrationId(id)) {
    throw new HomingError(
      'InvalidRegistrationId',
      `${what} must be 1 to ${REGISTRATION_ID_MAX_LENGTH} characters of letters, digits and - . _ : ending with a letter, a digit or -.`,
    );
  }
}

/** The canonical (lookup) form of a registration id. */
export function registrationKey(id: string): string {
  return id.toLowerCase();
}

/** Case-insensitive equality of two registration ids. */
export function sameRegistrationId(a: string, b: string): boolean {
  return a.length === b.length && registrationKey(a) === registrationKey(b);
}

/**
 * The hub device id of an assignment (§2.7). A group device gets its registration id; an individual enrollment uses
 * its `deviceId`, else its registration id. Hub device ids are case-sensitive while registration ids are not, so a
 * group device keeps the device id of its earlier registration through the same group (`Dev-A` then `dev-a` stays
 * one hub device); on its first registration the id is taken as the device presented it.
 */
export function assignedDeviceId(
  match: { kind: 'group'; enrollmentGroupId: string } | { kind: 'individual'; enrollment: { registrationId: string; deviceId?: string | undefined } },
  presentedRegistrationId: string,
  prior?: { deviceId?: string | undefined; enrollment: { kind: 'individual'; registrationId: string } | { kind: 'group'; enrollmentGroupId: string } },
): string {
  if (match.kind === 'individual') {
    const d = match.enrollment.deviceId;
    return d !== undefined && d.length > 0 ? d : match.enrollment.registrationId;
  }
  const p = prior?.deviceId;
  if (
    p !== undefined &&
    prior?.enrollment.kind === 'group' &&
    registrationKey(prior.enrollment.enrollmentGroupId) === registrationKey(match.enrollmentGroupId) &&
    sameRegistrationId(p, presentedRegistrationId)
  ) {
    return p;
  }
  return presentedRegistrationId;
}

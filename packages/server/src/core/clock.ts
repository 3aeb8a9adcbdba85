/** Injected time and identity sources: core code never calls Date.now or Math.random directly. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export interface IdSource {
  /** A random UUID v4. */
  uuid(): string;
  /** `n` random bytes. */
  bytes(n: number): Buffer;
}

export const systemClock: Clock = { now: () => Date.now() };

/** Azure-style timestamp: ISO-8601 UTC with 7 fractional digits. */
export function isoTime(ms: number): string {
  const iso = new Date(ms).toISOString(); // 2024-01-01T00:00:00.000Z
  return `${iso.slice(0, 23)}0000Z`;
}

/** The value IoT Hub reports for times that were never set. */
export const NEVER = '0001-01-01T00:00:00Z';

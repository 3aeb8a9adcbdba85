import { randomBytes, randomUUID } from 'node:crypto';
import type { Clock, IdSource } from '../../src/core/clock.ts';

export const realIds: IdSource = { uuid: () => randomUUID(), bytes: (n) => randomBytes(n) };

/** A clock tests can move by hand. */
export class ManualClock implements Clock {
  constructor(public ms = Date.parse('2026-01-01T00:00:00Z')) {}
  now(): number {
    return this.ms;
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

/**
 * A random 127.x.y.z address for a test server (Linux routes the whole 127/8 block to loopback). The second octet
 * is 10..249, so these never collide with 127.0.0.x, which `homing start` uses by default.
 */
export function uniqueLoopback(): string {
  const b = randomBytes(3);
  return `127.${10 + ((b[0] ?? 0) % 240)}.${1 + ((b[1] ?? 0) % 254)}.${1 + ((b[2] ?? 0) % 254)}`;
}

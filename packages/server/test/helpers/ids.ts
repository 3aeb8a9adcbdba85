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

/** A unique 127.x.y.z address for a test server (Linux routes the whole 127/8 block to loopback). */
export function uniqueLoopback(): string {
  const n = (process.pid * 7919 + Math.floor(Math.random() * 1e6)) % (250 * 250);
  return `127.${10 + Math.floor(n / 250)}.${1 + (n % 250)}.${1 + Math.floor(Math.random() * 250)}`;
}

import { randomBytes, randomFillSync, randomUUID } from 'node:crypto';

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

/** Bytes read from the system CSPRNG at once by {@link systemIds}. */
const RANDOM_BLOCK_BYTES = 4096;

/**
 * Ids from the system CSPRNG. `bytes` hands out slices of a block read with one `randomFillSync` per 4 KiB, instead
 * of one call per id (a registration takes several: the operation id, the device's generation id and etags); every
 * byte is handed out once, as a copy, and requests larger than a block are read directly. `uuid` is node's
 * `randomUUID`, which buffers the same way.
 */
export function systemIds(): IdSource {
  const block = Buffer.alloc(RANDOM_BLOCK_BYTES);
  let used = RANDOM_BLOCK_BYTES;
  return {
    uuid: () => randomUUID(),
    bytes(n: number): Buffer {
      if (n > RANDOM_BLOCK_BYTES / 4) return randomBytes(n);
      if (used + n > RANDOM_BLOCK_BYTES) {
        randomFillSync(block);
        used = 0;
      }
      const out = Buffer.from(block.subarray(used, used + n));
      used += n;
      return out;
    },
  };
}

/** Azure-style timestamp: ISO-8601 UTC with 7 fractional digits. */
export function isoTime(ms: number): string {
  const iso = new Date(ms).toISOString(); // 2024-01-01T00:00:00.000Z
  return `${iso.slice(0, 23)}0000Z`;
}

/** The value IoT Hub reports for times that were never set. */
export const NEVER = '0001-01-01T00:00:00Z';

import { AbortedError, TimeoutError } from './errors.ts';

/** Wall-clock time in milliseconds since the epoch. */
export interface Clock {
  now(): number;
}

/** The timer functions the library uses for every wait and timeout it owns. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * Time, timers and randomness, injectable so that retry rules can be tested deterministically.
 * `random()` returns a number in [0, 1), like `Math.random`.
 */
export interface Runtime {
  clock: Clock;
  timers: Timers;
  random: () => number;
}

export const systemRuntime: Runtime = Object.freeze({
  clock: Object.freeze({ now: () => Date.now() }),
  timers: Object.freeze({
    setTimeout: (callback: () => void, ms: number): unknown => setTimeout(callback, ms),
    clearTimeout: (handle: unknown): void => clearTimeout(handle as ReturnType<typeof setTimeout>),
  }),
  random: () => Math.random(),
});

/** Fills the parts of a runtime the caller left out with the system's. */
export function resolveRuntime(partial: Partial<Runtime> | undefined): Runtime {
  return {
    clock: partial?.clock ?? systemRuntime.clock,
    timers: partial?.timers ?? systemRuntime.timers,
    random: partial?.random ?? systemRuntime.random,
  };
}

/** Waits `ms` on the runtime's timers; rejects with AbortedError when `signal` aborts. */
export function sleep(runtime: Runtime, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortedError());
      return;
    }
    const onAbort = (): void => {
      runtime.timers.clearTimeout(handle);
      reject(new AbortedError());
    };
    const handle = runtime.timers.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Settles with `work`, or rejects with TimeoutError after `ms` (runtime timers). `onTimeout` runs first, to cancel
 * the work. The timer never outlives the call.
 */
export async function withTimeout<T>(runtime: Runtime, work: Promise<T>, ms: number, operation: string, onTimeout?: () => void): Promise<T> {
  let handle: unknown;
  const timeout = new Promise<never>((_, reject) => {
    handle = runtime.timers.setTimeout(() => {
      onTimeout?.();
      reject(new TimeoutError(operation, ms));
    }, ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    runtime.timers.clearTimeout(handle);
  }
}

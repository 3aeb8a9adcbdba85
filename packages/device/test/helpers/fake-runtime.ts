import type { Runtime, Timers } from '../../src/index.ts';

export interface FakeTimer {
  id: number;
  /** The delay asked for. */
  ms: number;
  /** Fake time it was scheduled at, and is due at. */
  at: number;
  due: number;
  fn: () => void;
  state: 'pending' | 'fired' | 'cleared';
}

/** Fails with `label` when `p` does not settle within `ms` of real time. */
export async function within<T>(p: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A clock, timers and randomness under the test's control. Time moves only through `advance()`; timers fire in due
 * order as it passes them. `random()` returns the queued values (then `defaultRandom`).
 */
export class FakeRuntime implements Runtime {
  ms: number;
  readonly timers: Timers;
  readonly all: FakeTimer[] = [];
  private nextId = 0;
  private readonly randoms: number[] = [];
  defaultRandom = 0;
  private waiters: (() => void)[] = [];

  constructor(start = Date.parse('2026-01-01T00:00:00Z')) {
    this.ms = start;
    this.timers = {
      setTimeout: (fn: () => void, ms: number): unknown => {
        const t: FakeTimer = { id: ++this.nextId, ms, at: this.ms, due: this.ms + Math.max(0, ms), fn, state: 'pending' };
        this.all.push(t);
        this.wake();
        return t;
      },
      clearTimeout: (handle: unknown): void => {
        const t = handle as FakeTimer | undefined;
        if (t && t.state === 'pending') t.state = 'cleared';
      },
    };
  }

  readonly clock = { now: (): number => this.ms };

  readonly random = (): number => this.randoms.shift() ?? this.defaultRandom;

  /** Queues values for the next random() calls. */
  queueRandom(...values: number[]): void {
    this.randoms.push(...values);
  }

  pending(): FakeTimer[] {
    return this.all.filter((t) => t.state === 'pending');
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.ms + ms;
    for (;;) {
      const next = this.pending()
        .filter((t) => t.due <= end)
        .sort((a, b) => a.due - b.due || a.id - b.id)[0];
      if (!next) break;
      this.ms = Math.max(this.ms, next.due);
      next.state = 'fired';
      next.fn();
    }
    this.ms = end;
  }

  /** Resolves with the first pending timer (scheduled after `since`, matching `pred`); bounded in real time. */
  waitForTimer(pred: (t: FakeTimer) => boolean = () => true, realMs = 10_000, since = 0): Promise<FakeTimer> {
    return within(
      new Promise<FakeTimer>((resolve) => {
        const check = (): void => {
          const t = this.pending().find((x) => x.id > since && pred(x));
          if (t) resolve(t);
          else this.waiters.push(check);
        };
        check();
      }),
      realMs,
      'waiting for a timer',
    );
  }

  /** The id of the newest timer, to wait for later ones. */
  get lastTimerId(): number {
    return this.nextId;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }
}

/**
 * Records the events of an emitter from the moment it is created, so none is missed between two awaits.
 * `next(name)` takes the oldest unread one (or waits for it, bounded in real time).
 */
export class EventRecorder<E extends { [K in keyof E]: unknown[] }> {
  private readonly queues = new Map<string, unknown[]>();
  private readonly seen = new Map<string, unknown[]>();
  private waiters: (() => void)[] = [];

  constructor(emitter: { on(event: string, listener: (...args: never[]) => void): unknown }, names: readonly (keyof E & string)[]) {
    for (const name of names) {
      this.queues.set(name, []);
      this.seen.set(name, []);
      emitter.on(name, (...args: never[]) => {
        this.queues.get(name)?.push(args[0]);
        this.seen.get(name)?.push(args[0]);
        const w = this.waiters;
        this.waiters = [];
        for (const fn of w) fn();
      });
    }
  }

  next<K extends keyof E & string>(name: K, realMs = 10_000): Promise<E[K][0]> {
    return within(
      new Promise<E[K][0]>((resolve) => {
        const check = (): void => {
          const q = this.queues.get(name) ?? [];
          if (q.length > 0) resolve(q.shift() as E[K][0]);
          else this.waiters.push(check);
        };
        check();
      }),
      realMs,
      `waiting for event ${name}`,
    );
  }

  /** Every emission of `name` so far. */
  all<K extends keyof E & string>(name: K): E[K][0][] {
    return [...(this.seen.get(name) ?? [])] as E[K][0][];
  }

  /** Unread emissions of `name`. */
  unread<K extends keyof E & string>(name: K): number {
    return this.queues.get(name)?.length ?? 0;
  }
}

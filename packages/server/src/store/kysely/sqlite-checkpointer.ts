import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type BetterSqlite3 from 'better-sqlite3';
import { WAL_AUTOCHECKPOINT_PAGES } from './sqlite.ts';

/**
 * WAL frames after which the main connection checkpoints by itself while a checkpointer runs: a safety net for a
 * checkpointer that cannot keep up (or stopped). 4 × the usual threshold, about 128 MiB of log at 4 KiB pages.
 */
export const SAFETY_AUTOCHECKPOINT_PAGES = 4 * WAL_AUTOCHECKPOINT_PAGES;

/** Default pause between two checkpoint passes of the worker (ms). */
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 500;

/** Passes in a row while the log is not yet fully copied back (writes landed during the pass). */
const MAX_CATCH_UP_PASSES = 4;

export interface CheckpointPass {
  /** Frames in the log when the pass ended. */
  readonly log: number;
  /** Frames of the log copied back to the database file. */
  readonly checkpointed: number;
  /** 1 when the pass could not run to the end (a lock was held); it is retried at the next pass. */
  readonly busy: number;
}

export interface SqliteCheckpointerOptions {
  /** Pause between passes (ms). Default {@link DEFAULT_CHECKPOINT_INTERVAL_MS}. */
  intervalMs?: number;
  /** A problem of the worker (it failed or exited); the main connection has then taken checkpoints back. */
  onProblem?: (message: string) => void;
}

/**
 * The checkpointer's thread. CommonJS (an eval worker); the driver's path comes from the main thread, so the worker
 * loads the same better-sqlite3 build. A pass is a PASSIVE checkpoint: it copies the log back to the database file
 * and syncs it without taking the write lock, so the main connection keeps committing meanwhile. When frames were
 * appended during a pass, another pass follows at once (a few at most), so that the log is fully copied back and
 * the main connection's next transaction restarts it from the beginning.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true, timeout: 5000 });
let timer;
let stopped = false;
function pass() {
  const r = db.pragma('wal_checkpoint(PASSIVE)')[0];
  return { busy: Number(r.busy), log: Number(r.log), checkpointed: Number(r.checkpointed) };
}
function run() {
  timer = undefined;
  if (stopped) return;
  try {
    let r = pass();
    for (let i = 1; i < workerData.maxPasses && r.busy === 0 && r.checkpointed < r.log; i++) r = pass();
    parentPort.postMessage({ type: 'pass', pass: r });
  } catch (err) {
    parentPort.postMessage({ type: 'problem', message: String(err && err.message ? err.message : err) });
  }
  if (!stopped) timer = setTimeout(run, workerData.intervalMs);
}
parentPort.on('message', (m) => {
  if (m !== 'stop' || stopped) return;
  stopped = true;
  if (timer !== undefined) clearTimeout(timer);
  db.close();
  parentPort.close();
});
timer = setTimeout(run, workerData.intervalMs);
`;

const requireHere = createRequire(import.meta.url);

/**
 * Runs SQLite's WAL checkpoints on a worker thread with its own connection, instead of inside a commit on the event
 * loop.
 *
 * With automatic checkpoints, the commit that crosses the threshold copies the whole log back to the database file
 * and waits for its fsync: on the registration path that is a 20-30 ms stall of the event loop every few seconds,
 * which every request in flight waits out (it sets the p99). Here the main connection's automatic checkpoint is
 * raised to {@link SAFETY_AUTOCHECKPOINT_PAGES}, and the worker checkpoints every `intervalMs`.
 *
 * - Durability is unchanged: commits are durable as before (WAL, synchronous=NORMAL); a checkpoint only moves pages
 *   from the log to the database file, and SQLite's locks let it run beside a writer.
 * - If the worker fails or exits, the main connection takes checkpoints back at the usual threshold and `onProblem`
 *   is told. If the worker falls behind, the main connection checkpoints at the safety threshold, so the log stays
 *   bounded either way.
 * - `close()` stops the worker and closes its connection; close the main connection after it (the last connection
 *   to close checkpoints and removes the log).
 */
export class SqliteCheckpointer {
  /**
   * Passes that ended; those that left the log fully copied back (the next transaction restarts it); those that
   * found a lock held; and the last pass.
   */
  readonly stats = { passes: 0, caughtUp: 0, busy: 0, last: undefined as CheckpointPass | undefined };
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private stopping = false;
  private fellBack = false;
  private waiters: Array<(p: CheckpointPass) => void> = [];

  constructor(
    private readonly main: BetterSqlite3.Database,
    path: string,
    private readonly opts: SqliteCheckpointerOptions = {},
  ) {
    const intervalMs = opts.intervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS;
    if (!Number.isInteger(intervalMs) || intervalMs < 1) throw new Error(`store: checkpoint interval must be a positive integer (ms), got ${intervalMs}`);
    main.pragma(`wal_autocheckpoint = ${SAFETY_AUTOCHECKPOINT_PAGES}`);
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { driver: requireHere.resolve('better-sqlite3'), path, intervalMs, maxPasses: MAX_CATCH_UP_PASSES },
      // The worker needs none of the main thread's loader flags (tsx, conditions).
      execArgv: [],
    });
    // An open store must not keep the process alive by itself; close() stops the worker.
    this.worker.unref();
    this.worker.on('message', (m: { type?: string; pass?: CheckpointPass; message?: string }) => {
      if (m.type === 'pass' && m.pass !== undefined) this.record(m.pass);
      else if (m.type === 'problem') this.opts.onProblem?.(`checkpoint failed: ${m.message ?? 'unknown error'}`);
    });
    this.worker.on('error', (err: Error) => this.fallBack(`checkpointer failed: ${err.message}`));
    this.exited = new Promise<void>((resolve) => {
      this.worker.once('exit', (code: number) => {
        if (!this.stopping) this.fallBack(`checkpointer exited with code ${code}`);
        resolve();
      });
    });
  }

  /** True once the main connection has taken checkpoints back (the worker failed or exited). */
  get fallenBack(): boolean {
    return this.fellBack;
  }

  /** Resolves with the result of the next pass (tests). */
  nextPass(): Promise<CheckpointPass> {
    // Someone waits on the worker: it keeps the process alive until the pass arrives.
    this.worker.ref();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops the worker and closes its connection. Idempotent. */
  async close(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      // Held until the worker has closed its connection, so the main connection closes last.
      this.worker.ref();
      this.worker.postMessage('stop');
    }
    await this.exited;
  }

  /** Ends the worker at once, as a crash would (tests: the fallback). */
  async kill(): Promise<void> {
    await this.worker.terminate();
    await this.exited;
  }

  private record(p: CheckpointPass): void {
    this.stats.passes++;
    this.stats.last = p;
    if (p.busy !== 0) this.stats.busy++;
    if (p.busy === 0 && p.checkpointed === p.log) this.stats.caughtUp++;
    const waiting = this.waiters;
    this.waiters = [];
    if (waiting.length > 0 && !this.stopping) this.worker.unref();
    for (const w of waiting) w(p);
  }

  private fallBack(reason: string): void {
    if (this.fellBack) return;
    this.fellBack = true;
    try {
      if (this.main.open) this.main.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
    } catch {
      // The main connection is closing; it checkpoints by itself when it closes.
    }
    this.opts.onProblem?.(reason);
  }
}

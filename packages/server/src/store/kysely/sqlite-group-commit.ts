import type { CompiledQuery, Kysely, SqliteDatabase } from 'kysely';
import type { Database } from './schema.ts';

/** Synchronous statements for a {@link SqliteGroupCommit} unit: they run on the store's one connection, in its transaction. */
export interface SyncStatements {
  /** Runs a writing statement; `changes` is the number of rows it inserted, updated or deleted. */
  run(query: CompiledQuery): { changes: number };
  /** Runs a reading statement and returns its rows. */
  all<R>(query: CompiledQuery<R>): R[];
}

/**
 * Thrown by a unit to undo what it wrote and settle with `result` (not an error): the unit's savepoint is rolled
 * back, the other units of the transaction are kept.
 */
export class UndoUnit<R> {
  constructor(readonly result: R) {}
}

interface Unit {
  work: (s: SyncStatements) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** At most this many units share one transaction; the rest go into the next one, at once. */
export const MAX_UNITS_PER_COMMIT = 256;

/**
 * Group commit for the SQLite store: write units submitted in the same event-loop turn share one transaction, so
 * one COMMIT (one WAL append, with the b-tree pages the units have in common written once) serves them all.
 *
 * On the registration path a commit is the most expensive thing SQLite does: it appends every page the transaction
 * dirtied to the WAL, about 7 pages for a hub device with its twin and as many for an operation with its record,
 * and a page shared by several units (an index root, a leaf of neighbouring keys) is appended once per commit.
 *
 * - A unit is a synchronous function of {@link SyncStatements}. Its promise settles only after the COMMIT that holds
 *   it succeeded (or with the error that stopped it), so a caller sees the same durability as with its own
 *   transaction.
 * - Each unit runs inside a SAVEPOINT: a unit that throws (or throws {@link UndoUnit}) has its writes rolled back and
 *   only its own promise is rejected (or resolved with the undo result); the others commit.
 * - If BEGIN or COMMIT fails (another process holding the write lock past the busy timeout, a full disk), the whole
 *   transaction is rolled back and every unit in it is rejected with that error; nothing of it is stored.
 * - The units run while holding Kysely's connection (`db.connection()`), so they never land inside a Kysely
 *   transaction that is waiting between two of its statements.
 * - Units run in submission order. Compare-and-set units (etag/version in the WHERE clause) stay correct whatever
 *   else was committed between their read and their write.
 */
export class SqliteGroupCommit {
  private queue: Unit[] = [];
  private scheduled = false;
  /** Transactions committed and units in them (for tests and benches). */
  readonly stats = { commits: 0, units: 0 };

  constructor(
    private readonly db: Kysely<Database>,
    private readonly conn: SqliteDatabase,
  ) {}

  /** Runs `work` in the next group transaction; settles after its COMMIT. */
  submit<R>(work: (s: SyncStatements) => R): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ work, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate: the units of every request handled in this turn's I/O phase join the same transaction.
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    let batch: Unit[] = [];
    try {
      await this.db.connection().execute(async () => {
        // Taken once the connection is ours: units submitted while waiting for it join this transaction.
        batch = this.queue.splice(0, MAX_UNITS_PER_COMMIT);
        this.scheduled = false;
        if (this.queue.length > 0) this.schedule();
        this.runBatch(batch);
      });
    } catch (err) {
      // Acquiring the connection failed (the store is closing): nothing ran.
      this.scheduled = false;
      const rest = batch.length > 0 ? batch : this.queue.splice(0);
      for (const u of rest) u.reject(err);
    }
  }

  private runBatch(batch: Unit[]): void {
    if (batch.length === 0) return;
    const s = this.statements();
    const settled: Array<{ ok: true; value: unknown } | { ok: false; err: unknown }> = [];
    try {
      this.exec('begin immediate');
    } catch (err) {
      for (const u of batch) u.reject(err);
      return;
    }
    try {
      for (const u of batch) {
        this.exec('savepoint homing_unit');
        try {
          const value = u.work(s);
          // An async unit would run its statements after the COMMIT, outside the transaction: refuse it.
          if (typeof (value as { then?: unknown } | null)?.then === 'function') throw new TypeError('store: a group commit unit must be synchronous');
          this.exec('release homing_unit');
          settled.push({ ok: true, value });
        } catch (err) {
          // Throws itself when SQLite already rolled the whole transaction back (a full disk, an I/O error):
          // then the batch fails as a whole below.
          this.exec('rollback to homing_unit');
          this.exec('release homing_unit');
          settled.push(err instanceof UndoUnit ? { ok: true, value: err.result } : { ok: false, err });
        }
      }
      this.exec('commit');
    } catch (err) {
      try {
        this.exec('rollback');
      } catch {
        // The transaction is already gone.
      }
      for (const u of batch) u.reject(err);
      return;
    }
    this.stats.commits++;
    this.stats.units += batch.length;
    batch.forEach((u, i) => {
      const r = settled[i]!;
      if (r.ok) u.resolve(r.value);
      else u.reject(r.err);
    });
  }

  private exec(text: string): void {
    this.conn.prepare(text).run([]);
  }

  private statements(): SyncStatements {
    const conn = this.conn;
    return {
      run(query) {
        const r = conn.prepare(query.sql).run(query.parameters as unknown[]);
        return { changes: Number(r.changes) };
      },
      all<R>(query: CompiledQuery<R>): R[] {
        return conn.prepare(query.sql).all(query.parameters as unknown[]) as R[];
      },
    };
  }
}

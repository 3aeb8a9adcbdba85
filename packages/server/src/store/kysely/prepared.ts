import { CompiledQuery, type Compilable } from 'kysely';

const MARK = '\u0000homing-slot:';

/**
 * A placeholder for the `i`-th argument of a {@link PreparedQuery}. Typed as whatever the query builder wants at that
 * position; it is only ever compiled, never sent.
 */
export function slot<T = string>(i: number): T {
  return `${MARK}${i}` as unknown as T;
}

type Part = { arg: number } | { value: unknown };

/**
 * A query built and compiled once, then run with new arguments: for the per-message hot path, where building and
 * compiling a Kysely query costs more than SQLite takes to run it.
 *
 * Build the query with `slot(0)`, `slot(1)`, ... where the arguments go; `bind([a, b, ...])` returns a compiled query
 * for `db.executeQuery`. The SQL text stays the same, so the adapters' statement caches (SQLite prepared statements,
 * PostgreSQL named statements) keep hitting.
 */
export class PreparedQuery<R> {
  readonly sql: string;
  private readonly parts: readonly Part[];
  private readonly arity: number;

  constructor(query: Compilable<R>) {
    const compiled = query.compile();
    this.sql = compiled.sql;
    this.parts = compiled.parameters.map((p): Part => (typeof p === 'string' && p.startsWith(MARK) ? { arg: Number(p.slice(MARK.length)) } : { value: p }));
    const used = new Set(this.parts.flatMap((p) => ('arg' in p ? [p.arg] : [])));
    this.arity = used.size;
    for (let i = 0; i < this.arity; i++) {
      if (!used.has(i)) throw new Error(`store: prepared query does not use slot(${i}): ${this.sql}`);
    }
  }

  bind(args: readonly unknown[]): CompiledQuery<R> {
    if (args.length !== this.arity) throw new Error(`store: prepared query takes ${this.arity} arguments, got ${args.length}`);
    return CompiledQuery.raw(
      this.sql,
      this.parts.map((p) => ('arg' in p ? args[p.arg] : p.value)),
    ) as CompiledQuery<R>;
  }
}

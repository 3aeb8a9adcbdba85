import pg from 'pg';
import type { PostgresCursor, PostgresPool, PostgresPoolClient, PostgresQueryResult } from 'kysely';

/** Schema names we accept: plain identifiers, so they need no quoting in DDL or in the search_path option. */
const SCHEMA_RE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export function checkSchemaName(schema: string): void {
  if (!SCHEMA_RE.test(schema)) throw new Error(`store: postgresSchema must be a plain identifier (letters, digits, _), got ${JSON.stringify(schema)}`);
}

const INT8_OID = 20;

/**
 * BIGINT (and COUNT) values come back as JS numbers, as they do from SQLite, so both dialects share one code path.
 * Every BIGINT Homing stores (versions, counts) stays far below 2^53.
 */
const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

export interface PgPoolOptions {
  connectionString: string;
  /** Every connection of the pool gets `search_path=<schema>` in its startup packet (no extra round trip). */
  schema?: string;
  max: number;
  /** Errors of idle pool connections (e.g. the server restarted). The pool drops such a connection by itself. */
  onError?: (err: Error) => void;
}

/** A pg.Pool whose connections use `schema` as search_path and parse BIGINT as numbers. */
export function createPgPool(opts: PgPoolOptions): pg.Pool {
  let connectionString = opts.connectionString;
  if (opts.schema !== undefined) {
    checkSchemaName(opts.schema);
    // pg lets options from the URL override the config object, so the search_path goes into the URL itself.
    const url = new URL(connectionString);
    const prior = url.searchParams.get('options');
    url.searchParams.set('options', `${prior ? `${prior} ` : ''}-c search_path=${opts.schema}`);
    connectionString = url.toString();
  }
  const pool = new pg.Pool({ connectionString, max: opts.max, types: pgTypes });
  const onError = opts.onError;
  // An 'error' event without a listener would crash the process.
  pool.on('error', (err) => onError?.(err));
  return pool;
}

const STATEMENT_KEYWORD_RE = /^\s*(?:select|insert|update|delete|with)\b/i;

/**
 * Gives Kysely a pg pool whose repeated queries run as named prepared statements: PostgreSQL parses and plans them
 * once per connection instead of on every call (about a third less CPU per query on both sides, see
 * reference/perf-limits.md).
 *
 * - Only DML is named, and not text with a `*` outside `count(*)`: a cached `select *` plan fails with "cached plan
 *   must not change result type" once a later migration adds a column, while explicit column lists keep working.
 * - At most `maxNames` distinct SQL texts are named (the first ones seen, which are the steady hot set); any text
 *   after that runs unnamed, so queries with varying text cannot grow the server-side statement cache without bound.
 * - Streaming (cursors) is not configured; Kysely refuses `stream()` before it reaches this class.
 */
export class NamedStatementPool implements PostgresPool {
  readonly pool: pg.Pool;
  private readonly names = new Map<string, string>();
  private readonly clients = new WeakMap<pg.PoolClient, NamedStatementClient>();
  private readonly maxNames: number;

  constructor(pool: pg.Pool, opts: { maxNames?: number; enabled?: boolean } = {}) {
    this.pool = pool;
    this.maxNames = opts.enabled === false ? 0 : (opts.maxNames ?? 500);
  }

  async connect(): Promise<PostgresPoolClient> {
    const client = await this.pool.connect();
    let wrapped = this.clients.get(client);
    if (wrapped === undefined) {
      wrapped = new NamedStatementClient(client, (text) => this.nameFor(text));
      // Kysely keeps one connection object per client it sees, so the same client must map to the same wrapper.
      this.clients.set(client, wrapped);
    }
    return wrapped;
  }

  end(): Promise<void> {
    return this.pool.end();
  }

  private nameFor(text: string): string | undefined {
    const known = this.names.get(text);
    if (known !== undefined) return known;
    if (this.names.size >= this.maxNames) return undefined;
    if (!STATEMENT_KEYWORD_RE.test(text) || text.replace(/count\(\*\)/gi, '').includes('*')) return undefined;
    const name = `homing_${this.names.size.toString(36)}`;
    this.names.set(text, name);
    return name;
  }
}

class NamedStatementClient implements PostgresPoolClient {
  private readonly client: pg.PoolClient;
  private readonly nameFor: (text: string) => string | undefined;

  constructor(client: pg.PoolClient, nameFor: (text: string) => string | undefined) {
    this.client = client;
    this.nameFor = nameFor;
  }

  query<R>(sql: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>>;
  query<R>(cursor: PostgresCursor<R>): PostgresCursor<R>;
  query<R>(sqlOrCursor: string | PostgresCursor<R>, parameters?: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>> | PostgresCursor<R> {
    if (typeof sqlOrCursor !== 'string') throw new Error('store: streaming queries are not supported on this pool');
    return this.run<R>(sqlOrCursor, parameters ?? []);
  }

  private async run<R>(text: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>> {
    const name = this.nameFor(text);
    const values = [...parameters];
    const r = await this.client.query(name === undefined ? { text, values } : { name, text, values });
    return { command: r.command as PostgresQueryResult<R>['command'], rowCount: r.rowCount ?? 0, rows: r.rows as R[] };
  }

  release(): void {
    this.client.release();
  }
}

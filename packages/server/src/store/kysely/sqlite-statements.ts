import type BetterSqlite3 from 'better-sqlite3';
import type { SqliteDatabase, SqliteStatement } from 'kysely';

/**
 * Wraps a better-sqlite3 database for Kysely's SqliteDialect, keeping prepared statements by SQL text.
 *
 * Kysely prepares every query anew; preparing costs about as much as running a point read, and the hot path
 * (getDevice, getTwin, replaceTwin per MQTT message) runs the same few SQL texts over and over. The cache is bounded
 * (least recently used out), so queries with varying text cannot grow it without limit. A statement that is still
 * iterating (streaming) is never handed out twice.
 */
export function withStatementCache(db: BetterSqlite3.Database, maxStatements = 256): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement<unknown[]>>();
  return {
    close: () => {
      cache.clear();
      db.close();
    },
    prepare(sqlText: string): SqliteStatement {
      const hit = cache.get(sqlText);
      if (hit !== undefined && !hit.busy) {
        cache.delete(sqlText);
        cache.set(sqlText, hit);
        return hit;
      }
      const stmt = db.prepare<unknown[]>(sqlText);
      if (hit === undefined) {
        cache.set(sqlText, stmt);
        if (cache.size > maxStatements) {
          const oldest = cache.keys().next();
          if (oldest.done !== true) cache.delete(oldest.value);
        }
      }
      return stmt;
    },
  };
}

import type { Kysely } from 'kysely';
import type { Dialect } from './ports.ts';
import type { QuotaBucketStore } from './quota-ports.ts';
import { MemoryQuotaBuckets } from './quota-memory.ts';
import { KyselyQuotaBuckets } from './kysely/quota-store.ts';

/**
 * The shared quota buckets of an opened store: on PostgreSQL the `dps_quota_buckets` table (every process on the
 * database counts against the same limits); on the embedded SQLite store, memory (it serves one process, and a
 * table would turn every check into a write on the device hot path for nothing).
 */
export function openQuotaBuckets<DB>(store: { readonly dialect: Dialect; readonly db: Kysely<DB> }): QuotaBucketStore {
  if (store.dialect === 'postgres') return new KyselyQuotaBuckets(store.db, 'postgres');
  return new MemoryQuotaBuckets();
}

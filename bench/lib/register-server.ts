/**
 * Server child of bench/register.ts. argv[2] = JSON config:
 *   { mode: 'homing' | 'bare', store?: 'sqlite' | 'postgres', dir: string, postgresUrl?: string, poolSize?: number,
 *     budgetMs?: number }
 * - homing: the DPS device API (the real RegistrationService, 2 in-process hubs, hashed group enrollment) on TLS
 *   (ECDSA P-256) at 127.0.0.1:0, with a SQLite file in `dir` or a fresh PostgreSQL schema.
 * - bare: a plain node:https server on the same certificate answering every request with a fixed JSON body.
 * IPC: sends {type:'ready', port, ca, idScope, groupKey}; answers {type:'cpu'} with process.cpuUsage(), the event-loop
 * delay since the previous `cpu` (p99 and max, ms) and, on
 * PostgreSQL, the CPU of this server's database backends (pid → µs, found by the pool's application_name; read from
 * /proc, so only for a database on this machine), {type:'stats'} with stored counts and sizes, {type:'stop'} by
 * closing and exiting.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { sql } from 'kysely';
import { silentLogger } from '../../packages/server/src/observability/logger.ts';
import { openStore, type OpenedStore } from '../../packages/server/src/store/open.ts';
import { createRegisterWorld } from './register-world.ts';
import { createHttpsApp } from '../../packages/server/src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../packages/server/src/transport/http/dps-device-api.ts';
import { deviceListenerTls } from '../../packages/server/src/transport/tls/device-listener-tls.ts';
import { issueCertificate } from '../../packages/server/src/transport/tls/pki.ts';
import { processCpuMicros } from './register-stats.ts';

interface Config {
  mode: 'homing' | 'bare';
  store?: 'sqlite' | 'postgres';
  dir: string;
  postgresUrl?: string;
  poolSize?: number;
  budgetMs?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;
const send = (m: Record<string, unknown>) => process.send?.(m);

async function pki(): Promise<{ ca: string; cert: string; key: string }> {
  const ca = await issueCertificate({ commonName: 'Homing Register Bench CA', isCA: true, pathLength: 1 });
  const server = await issueCertificate({ commonName: 'localhost', sans: ['localhost', '127.0.0.1'], issuer: ca, usages: ['server'] });
  return { ca: ca.certPem, cert: server.certPem, key: server.keyPem };
}

const FIXED_BODY = JSON.stringify({
  operationId: '4.0123456789abcdef.00000000-0000-0000-0000-000000000000',
  status: 'assigned',
  registrationState: { registrationId: 'bench', assignedHub: 'hub-1.bench', deviceId: 'bench', status: 'assigned', substatus: 'initialAssignment' },
});

async function startBare(tls: { cert: string; key: string }): Promise<{ port: number; close: () => Promise<void> }> {
  const server: Server = createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(FIXED_BODY) });
      res.end(FIXED_BODY);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return { port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

interface Homing {
  port: number;
  idScope: string;
  groupKey: string;
  store: OpenedStore;
  instance: string;
  schema: string | undefined;
  close: () => Promise<void>;
}

async function startHoming(tls: { cert: string; key: string }): Promise<Homing> {
  const schema = cfg.store === 'postgres' ? `bench_register_${randomBytes(4).toString('hex')}` : undefined;
  const store =
    cfg.store === 'postgres'
      ? await openStore({ dialect: 'postgres', postgresUrl: withApplicationName(cfg.postgresUrl!, schema!), postgresSchema: schema!, poolSize: cfg.poolSize ?? 8 })
      : await openStore({ dialect: 'sqlite', sqlitePath: join(cfg.dir, 'homing.db') });
  const world = await createRegisterWorld(store);
  const { service, idScope, groupKey, instance } = world;
  const logger = silentLogger();
  // The DPS device listener's TLS settings of `homing start` (client certificate requested, no session tickets).
  const app = createHttpsApp({ logger, errorFlavor: 'dps', api: 'dps-device', tls: deviceListenerTls(tls) });
  registerDpsDeviceApi(app, { registration: service, ...(cfg.budgetMs === undefined ? {} : { responseBudgetMs: cfg.budgetMs }) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  return {
    port,
    idScope,
    groupKey,
    store,
    instance,
    schema,
    async close() {
      await app.close();
      await world.close();
      await store.close();
    },
  };
}

/** The pool's connections carry the schema name as application_name, so their backends can be found. */
function withApplicationName(url: string, name: string): string {
  const u = new URL(url);
  u.searchParams.set('application_name', name);
  return u.toString();
}

/** CPU of this server's PostgreSQL backends (pid → µs); empty on SQLite or when /proc does not show them. */
async function dbCpu(h: Homing | undefined): Promise<Record<string, number>> {
  if (!h || cfg.store !== 'postgres' || !h.schema) return {};
  const r = await sql<{ pid: number }>`select pid from pg_stat_activity where application_name = ${h.schema}`.execute(h.store.db);
  const out: Record<string, number> = {};
  for (const { pid } of r.rows) {
    const us = processCpuMicros(Number(pid));
    if (us !== undefined) out[String(pid)] = us;
  }
  return out;
}

async function stats(h: Homing | undefined): Promise<Record<string, unknown>> {
  if (!h) return {};
  const registrations = await h.store.provisioning.countRegistrations(h.instance);
  const byStatus = await sql<{ status: string; n: number }>`select status, count(*) as n from dps_operations group by status`.execute(h.store.db);
  const devices = await sql<{ hub_id: string; n: number }>`select hub_id, count(*) as n from hub_devices group by hub_id`.execute(h.store.db);
  let storeBytes = 0;
  if (cfg.store === 'postgres') {
    const r = await sql<{ bytes: string }>`select coalesce(sum(pg_total_relation_size(c.oid)), 0)::text as bytes
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = ${h.schema} and c.relkind in ('r', 'm')`.execute(h.store.db);
    storeBytes = Number(r.rows[0]?.bytes ?? 0);
  } else {
    for (const f of ['homing.db', 'homing.db-wal', 'homing.db-shm']) {
      const p = join(cfg.dir, f);
      if (existsSync(p)) storeBytes += statSync(p).size;
    }
  }
  return {
    registrations,
    operations: Object.fromEntries(byStatus.rows.map((r) => [r.status, Number(r.n)])),
    hubDevices: Object.fromEntries(devices.rows.map((r) => [r.hub_id, Number(r.n)])),
    storeBytes,
    ...(h.store.groupCommit ? { groupCommit: { ...h.store.groupCommit.stats } } : {}),
    ...(h.store.checkpointer ? { checkpointer: { passes: h.store.checkpointer.stats.passes, caughtUp: h.store.checkpointer.stats.caughtUp, busy: h.store.checkpointer.stats.busy } } : {}),
  };
}

const loopDelay = monitorEventLoopDelay({ resolution: 10 });

async function main(): Promise<void> {
  loopDelay.enable();
  const tls = await pki();
  let homing: Homing | undefined;
  let close: () => Promise<void>;
  let ready: Record<string, unknown>;
  if (cfg.mode === 'bare') {
    const b = await startBare(tls);
    close = b.close;
    ready = { port: b.port };
  } else {
    // The server context holds the leaf and its key only, as `homing start` and the ceiling have it (with `ca` in it,
    // OpenSSL sends the CA certificate in every handshake: about 10 % more server CPU per connection).
    homing = await startHoming({ cert: tls.cert, key: tls.key });
    close = homing.close;
    ready = { port: homing.port, idScope: homing.idScope, groupKey: homing.groupKey };
  }
  process.on('message', (m: unknown) => {
    const msg = m as { type?: string };
    if (msg.type === 'cpu') {
      const usage = process.cpuUsage();
      // Event-loop delay since the previous sample (a stall delays every request in flight).
      const loop = { p99Ms: loopDelay.percentile(99) / 1e6, maxMs: loopDelay.max / 1e6 };
      loopDelay.reset();
      dbCpu(homing).then(
        (db) => send({ type: 'cpu', usage, db, loop }),
        () => send({ type: 'cpu', usage, db: {}, loop }),
      );
    }
    else if (msg.type === 'stats') stats(homing).then((s) => send({ type: 'stats', ...s }), (e: unknown) => send({ type: 'stats', error: String(e) }));
    else if (msg.type === 'stop') {
      const drop = cfg.store === 'postgres' && homing?.schema ? sql`drop schema ${sql.id(homing.schema)} cascade`.execute(homing.store.db).then(() => undefined) : Promise.resolve();
      drop.catch(() => undefined).then(() => close()).finally(() => process.exit(0));
    }
  });
  send({ type: 'ready', ca: tls.ca, ...ready });
}

main().catch((e: unknown) => {
  send({ type: 'ready', error: e instanceof Error ? e.stack ?? e.message : String(e) });
  process.exit(1);
});

/**
 * Load child of bench/register.ts: simulated devices, each registration on a NEW TLS connection (agent: false, no
 * session reuse), PUT register with a device SAS derived from the group key, polling on 202 as the SDK does
 * (Retry-After seconds, bounded). argv[2] = JSON { host, port, ca, idScope, groupKey }.
 * IPC: {type:'run', prefix, mode:'closed'|'open', concurrency, count, durationMs, rate?} → {type:'run', ...figures}.
 * Every loop is bounded in count and time.
 */
import { request, type RequestOptions } from 'node:https';
import { createSecureContext, type ConnectionOptions } from 'node:tls';
import { buildSas, deriveDeviceKey } from '../../packages/server/src/core/sas.ts';
import { percentile } from './register-stats.ts';

interface Config {
  host: string;
  port: number;
  ca: string;
  idScope: string;
  groupKey: string;
}

interface Run {
  prefix: string;
  mode: 'closed' | 'open';
  concurrency: number;
  count: number;
  durationMs: number;
  rate?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;
const secureContext = createSecureContext({ ca: cfg.ca });
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_POLLS = 10;
const MAX_INFLIGHT_OPEN = 4096;

interface Answer {
  status: number;
  retryAfter: number;
  body: string;
}

function call(method: 'PUT' | 'GET', path: string, auth: string, body: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(body);
    const options: RequestOptions & ConnectionOptions = {
        host: cfg.host,
        port: cfg.port,
        method,
        path,
        agent: false,
        secureContext,
        headers: {
          accept: 'application/json',
          'content-type': 'application/json; charset=utf-8',
          authorization: auth,
          'content-length': String(payload.length),
        },
      };
    const req = request(
      options,
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: Number(res.headers['retry-after'] ?? 0), body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('request timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One device registration as the SDK does it. Returns the number of polls, or throws. */
async function register(registrationId: string): Promise<{ polls: number; firstStatus: number }> {
  const key = deriveDeviceKey(cfg.groupKey, registrationId);
  const auth = buildSas({ sr: `${cfg.idScope}/registrations/${registrationId}`, keyBase64: key, keyName: 'registration', expirySeconds: Math.floor(Date.now() / 1000) + 3600 });
  const base = `/${cfg.idScope}/registrations/${registrationId}`;
  let a = await call('PUT', `${base}/register?api-version=2019-03-31`, auth, JSON.stringify({ registrationId }));
  const firstStatus = a.status;
  let polls = 0;
  for (;;) {
    if (a.status !== 200 && a.status !== 202) throw new Error(`HTTP ${a.status}: ${a.body.slice(0, 200)}`);
    const b = JSON.parse(a.body) as { status?: string; operationId?: string };
    if (b.status === 'assigned') return { polls, firstStatus };
    if (b.status !== 'assigning' || !b.operationId) throw new Error(`status ${b.status}`);
    if (++polls > MAX_POLLS) throw new Error('too many polls');
    await sleep(Math.min(5, Math.max(1, a.retryAfter || 2)) * 1000);
    a = await call('GET', `${base}/operations/${b.operationId}?api-version=2019-03-31`, auth, '{}');
  }
}

interface Tally {
  latencies: number[];
  ok: number;
  failed: number;
  polls: number;
  firstStatus: Record<string, number>;
  errors: string[];
}

async function one(t: Tally, id: string, startedAt: number): Promise<void> {
  try {
    const r = await register(id);
    t.ok++;
    t.polls += r.polls;
    t.firstStatus[r.firstStatus] = (t.firstStatus[r.firstStatus] ?? 0) + 1;
    t.latencies.push(performance.now() - startedAt);
  } catch (e) {
    t.failed++;
    if (t.errors.length < 5) t.errors.push(e instanceof Error ? e.message : String(e));
  }
}

async function run(r: Run): Promise<Record<string, unknown>> {
  const t: Tally = { latencies: [], ok: 0, failed: 0, polls: 0, firstStatus: {}, errors: [] };
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const deadline = start + r.durationMs;
  if (r.mode === 'closed') {
    let next = 0;
    const worker = async () => {
      while (next < r.count && performance.now() < deadline) {
        const i = next++;
        await one(t, `${r.prefix}-${i}`, performance.now());
      }
    };
    await Promise.all(Array.from({ length: r.concurrency }, worker));
  } else {
    const interval = 1000 / (r.rate ?? 1);
    const inflight = new Set<Promise<void>>();
    let i = 0;
    let dropped = 0;
    while (i < r.count) {
      const now = performance.now();
      if (now > deadline) break;
      while (i < r.count && start + i * interval <= now) {
        const scheduled = start + i * interval;
        if (inflight.size >= MAX_INFLIGHT_OPEN) dropped++;
        else {
          const p = one(t, `${r.prefix}-${i}`, scheduled).finally(() => inflight.delete(p));
          inflight.add(p);
        }
        i++;
      }
      await sleep(Math.max(0, Math.min(50, start + i * interval - performance.now())));
    }
    await Promise.all(inflight);
    if (dropped > 0) t.errors.push(`${dropped} requests not sent (too many in flight)`);
    t.failed += dropped;
  }
  const elapsedMs = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  const sorted = t.latencies.sort((a, b) => a - b);
  return {
    ok: t.ok,
    failed: t.failed,
    polls: t.polls,
    firstStatus: t.firstStatus,
    errors: t.errors,
    elapsedMs,
    rate: (t.ok / elapsedMs) * 1000,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted.at(-1) ?? Number.NaN,
    clientCpuUsPerOp: t.ok + t.failed > 0 ? (cpu.user + cpu.system) / (t.ok + t.failed) : Number.NaN,
  };
}

process.on('message', (m: unknown) => {
  const msg = m as { type?: string } & Run;
  if (msg.type === 'run') run(msg).then((r) => process.send?.({ type: 'run', ...r }), (e: unknown) => process.send?.({ type: 'run', error: String(e) }));
  else if (msg.type === 'stop') process.exit(0);
});
process.send?.({ type: 'ready' });

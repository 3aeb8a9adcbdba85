/**
 * Two more device registration paths of the DPS device runtime, each next to its own ceiling measured in the same run:
 *
 * 1. MQTT symmetric key: every simulated device opens a NEW TLS connection to the DPS MQTT listener, CONNECTs
 *    (username `{idScope}/registrations/{id}/api-version=2019-03-31`, clientId = id, password = DPS SAS signed with
 *    the key derived from a group key), SUBSCRIBEs `$dps/registrations/res/#`, PUBLISHes the register request, waits
 *    for `res/200` (polls on 202 like the SDK), UNSUBSCRIBEs and DISCONNECTs. Ceiling: the same client against a bare
 *    TLS MQTT listener (mqtt-packet, same TLS settings) answering at once with a fixed JSON `res/200`.
 * 2. X.509 over HTTPS: every device opens a NEW mutual-TLS connection with its own pre-issued leaf (+ intermediate)
 *    under a verified CA with an X.509 enrollment group on it and PUTs the register request (no Authorization).
 *    Ceiling: the same client against a bare node:https server with requestCert (chain verified against the CA by TLS)
 *    answering a fixed JSON body.
 *
 * Server under test: real parts in a child process (bench/lib/variants-server.ts: SQLite store, 2 in-process hubs,
 * RegistrationService, DPS HTTPS app + DPS MQTT listener); ceilings in another child; servers pinned to CPU 0, the
 * load child to the last CPU (taskset, when there are 2+ CPUs). Per path: a warm-up on each target, then `--rounds`
 * closed-loop rounds per target, alternating ceiling/Homing in ABBA order; each round is bounded by `--count` and
 * `--seconds`. Printed: registrations/s, p50/p99, server CPU µs per registration (process.cpuUsage() deltas in the
 * server child; medians over rounds, the mean of the middle two for an even count), the ratio (median of per-round
 * Homing/ceiling rates) and the CPU ratio (ceiling CPU per request /
 * Homing CPU per registration = per-core capacity ratio). Target: ratio ≥ 0.6.
 *
 *   node --conditions=homing-source --import tsx bench/register-variants.ts [--count 1500] [--seconds 8]
 *        [--rounds 2] [--concurrency 16] [--warmup 1500] [--paths mqtt,x509]
 *
 * The last stdout line is one JSON object with the figures.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCertificate } from '../packages/server/src/transport/tls/pki.ts';
import { cpuCount, firstMessage, startRegisterChild, type RegisterChild } from './lib/register-proc.ts';
import { cpuDeltaMicros, flag, numberFlag, round, type CpuUsage } from './lib/register-stats.ts';

/** Median (mean of the two middle values for an even count, so 2 rounds give their mean, not the lower one). */
function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const TARGET_RATIO = 0.6;
const count = Math.floor(numberFlag('count', 1500));
const seconds = numberFlag('seconds', 8);
const rounds = Math.max(2, Math.floor(numberFlag('rounds', 2)));
const concurrency = Math.floor(numberFlag('concurrency', 16));
const warmup = Math.floor(numberFlag('warmup', 1500));
const paths = (flag('paths') ?? 'mqtt,x509').split(',').filter((p): p is 'mqtt' | 'x509' => p === 'mqtt' || p === 'x509');
/** Device certificates: enough for the warm-up and every Homing round to use fresh ones (capped). */
const certCount = Math.min(8000, warmup + rounds * count);

const cpus = cpuCount();
const serverCpu = cpus >= 2 ? '0' : undefined;
const loadCpu = cpus >= 2 ? String(cpus - 1) : undefined;

interface RunResult {
  ok: number;
  failed: number;
  polls: number;
  errors: string[];
  elapsedMs: number;
  rate: number;
  p50Ms: number;
  p99Ms: number;
  clientCpuUsPerOp: number;
}

interface Phase extends RunResult {
  serverCpuUsPerOp: number;
  serverBusy: number;
}

type Target = 'ceiling' | 'homing';

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'homing-bench-variants-'));
  const children: RegisterChild[] = [];
  try {
    // Server TLS (ECDSA P-256) and the device PKI: root (uploaded, verified) → intermediate → device leaves.
    const serverCa = await issueCertificate({ commonName: 'Homing Variants Bench CA', isCA: true, pathLength: 1 });
    const serverCert = await issueCertificate({ commonName: 'localhost', sans: ['localhost', '127.0.0.1'], issuer: serverCa, usages: ['server'] });
    const root = await issueCertificate({ commonName: 'Homing Variants Device Root', isCA: true, pathLength: 2 });
    const inter = await issueCertificate({ commonName: 'Homing Variants Device Intermediate', isCA: true, pathLength: 0, issuer: root });
    const serverCfg = { dir, cert: serverCert.certPem, key: serverCert.keyPem, rootCa: root.certPem };

    // HOMING_BENCH_PROFILE_DIR=<dir>: the server children write V8 CPU profiles there.
    const profileDir = process.env.HOMING_BENCH_PROFILE_DIR;
    const flags = [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), ...(process.env.HOMING_BENCH_PERF_MAP ? ['--perf-basic-prof'] : [])];
    const homing = startRegisterChild('./variants-server.ts', [JSON.stringify({ mode: 'homing', ...serverCfg })], serverCpu, 'homing server', flags);
    children.push(homing);
    const ceiling = startRegisterChild('./variants-server.ts', [JSON.stringify({ mode: 'bare', ...serverCfg })], serverCpu, 'ceiling server', flags);
    children.push(ceiling);
    type Ready = { httpsPort: number; mqttPort: number; idScope?: string; groupKey?: string };
    const [hReady, cReady] = await Promise.all([firstMessage<Ready>(homing, 'ready', 60_000), firstMessage<Ready>(ceiling, 'ready', 60_000)]);
    const load = startRegisterChild('./variants-load.ts', [JSON.stringify({ ca: serverCa.certPem, idScope: hReady.idScope, groupKey: hReady.groupKey })], loadCpu, 'load');
    children.push(load);
    await firstMessage(load, 'ready', 60_000);
    console.log(`# cpus ${cpus}; server pinned to ${homing.pinned ?? 'none'}, load to ${load.pinned ?? 'none'}; count ${count}/round, ${seconds} s bound, rounds ${rounds}, concurrency ${concurrency}, warm-up ${warmup}`);
    if (paths.includes('x509')) {
      const c = await load.request<{ issued: number; ms: number }>({ type: 'certs', issuerCert: inter.certPem, issuerKey: inter.keyPem, count: certCount }, 600_000);
      console.log(`# pre-issued ${c.issued} ECDSA P-256 device certificates in ${round(c.ms / 1000, 1)} s (not timed)`);
    }

    const servers: Record<Target, { child: RegisterChild; ready: Ready }> = { ceiling: { child: ceiling, ready: cReady }, homing: { child: homing, ready: hReady } };
    const cpuOf = async (t: Target) => (await servers[t].child.request<{ usage: CpuUsage }>({ type: 'cpu' }, 10_000)).usage;
    let prefixSeq = 0;
    let certNext = 0;
    const phase = async (path: 'mqtt' | 'x509', t: Target, n: number): Promise<Phase> => {
      const port = path === 'mqtt' ? servers[t].ready.mqttPort : servers[t].ready.httpsPort;
      const certFrom = t === 'homing' ? certNext : 0;
      if (t === 'homing' && path === 'x509') certNext += n;
      const c0 = await cpuOf(t);
      const r = await load.request<RunResult>({ type: 'run', kind: path, port, prefix: `${path}-${t}-${prefixSeq++}`, certFrom, concurrency, count: n, durationMs: seconds * 1000 }, seconds * 1000 + 120_000);
      const c1 = await cpuOf(t);
      const us = cpuDeltaMicros(c0, c1);
      const ops = r.ok + r.failed;
      return { ...r, serverCpuUsPerOp: ops > 0 ? us / ops : Number.NaN, serverBusy: us / (r.elapsedMs * 1000) };
    };
    const line = (path: string, t: Target, label: string, p: Phase) =>
      console.log(
        `${path.padEnd(4)} ${t.padEnd(7)} ${label.padEnd(8)} ${String(p.ok).padStart(5)} ok ${String(p.failed).padStart(3)} failed ${String(p.polls).padStart(3)} polls  ${round(p.rate).toString().padStart(6)}/s  p50 ${round(p.p50Ms)} ms  p99 ${round(p.p99Ms)} ms  server ${Math.round(p.serverCpuUsPerOp)} µs/op (busy ${Math.round(p.serverBusy * 100)} %)  client ${Math.round(p.clientCpuUsPerOp)} µs/op${p.errors.length ? `  errors: ${p.errors.join(' | ')}` : ''}`,
      );

    const results: Record<string, unknown> = {};
    for (const path of paths) {
      for (const t of ['ceiling', 'homing'] as const) line(path, t, 'warm-up', await phase(path, t, warmup));
      const per: Record<Target, Phase[]> = { ceiling: [], homing: [] };
      for (let i = 0; i < rounds; i++) {
        const order: Target[] = i % 2 === 0 ? ['ceiling', 'homing'] : ['homing', 'ceiling'];
        for (const t of order) {
          const p = await phase(path, t, count);
          per[t].push(p);
          line(path, t, `round ${i + 1}`, p);
        }
      }
      const sum = (t: Target) => {
        const ps = per[t];
        return {
          rate: round(median(ps.map((p) => p.rate))),
          p50Ms: round(median(ps.map((p) => p.p50Ms))),
          p99Ms: round(median(ps.map((p) => p.p99Ms))),
          serverCpuUsPerOp: Math.round(median(ps.map((p) => p.serverCpuUsPerOp))),
          perCoreCeiling: round(1e6 / median(ps.map((p) => p.serverCpuUsPerOp))),
          serverBusy: round(median(ps.map((p) => p.serverBusy)), 2),
          clientCpuUsPerOp: Math.round(median(ps.map((p) => p.clientCpuUsPerOp))),
          ok: ps.reduce((a, p) => a + p.ok, 0),
          failed: ps.reduce((a, p) => a + p.failed, 0),
          polls: ps.reduce((a, p) => a + p.polls, 0),
        };
      };
      const c = sum('ceiling');
      const h = sum('homing');
      const ratio = round(median(per.homing.map((p, i) => p.rate / per.ceiling[i]!.rate)), 2);
      const cpuRatio = round(c.serverCpuUsPerOp / h.serverCpuUsPerOp, 2);
      console.log(
        `${path}: ceiling ${c.rate}/s (p50 ${c.p50Ms} ms, p99 ${c.p99Ms} ms, ${c.serverCpuUsPerOp} µs server CPU/op) | Homing ${h.rate}/s (p50 ${h.p50Ms} ms, p99 ${h.p99Ms} ms, ${h.serverCpuUsPerOp} µs server CPU/registration) | ratio ${ratio} | CPU ratio ${cpuRatio} (target ≥ ${TARGET_RATIO}: ${ratio >= TARGET_RATIO ? 'met' : 'NOT met'} on rate, ${cpuRatio >= TARGET_RATIO ? 'met' : 'NOT met'} on CPU)`,
      );
      results[path] = { ceiling: c, homing: h, ratio, cpuRatio };
    }
    const stats = await homing.request<Record<string, unknown>>({ type: 'stats' }, 30_000);
    delete stats.type;
    console.log(`# homing store: ${JSON.stringify(stats)}`);
    console.log(
      JSON.stringify({
        bench: 'register-variants',
        cpus,
        pinned: { server: homing.pinned ?? null, load: load.pinned ?? null },
        count,
        seconds,
        rounds,
        concurrency,
        warmup,
        deviceCertificates: paths.includes('x509') ? certCount : 0,
        targetRatio: TARGET_RATIO,
        ...results,
        mqttRatio: (results.mqtt as { ratio?: number } | undefined)?.ratio ?? null,
        mqttCpuRatio: (results.mqtt as { cpuRatio?: number } | undefined)?.cpuRatio ?? null,
        x509Ratio: (results.x509 as { ratio?: number } | undefined)?.ratio ?? null,
        x509CpuRatio: (results.x509 as { cpuRatio?: number } | undefined)?.cpuRatio ?? null,
        store: stats,
      }),
    );
  } finally {
    await Promise.all(children.map((c) => c.stop().catch(() => undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);

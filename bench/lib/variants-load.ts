/**
 * Load child of bench/register-variants.ts. argv[2] = JSON { ca (server CA PEM), idScope, groupKey }.
 * IPC (register-proc.ts protocol):
 * - {type:'certs', issuerCert, issuerKey, count} pre-issues `count` ECDSA P-256 device leaves `x509-dev-<n>` under
 *   the intermediate (before any timing) → {type:'certs', issued, ms};
 * - {type:'run', kind:'mqtt'|'x509', port, prefix, certFrom, concurrency, count, durationMs} → {type:'run', ...}:
 *   closed loop, every registration on a NEW TLS connection (no session reuse), bounded in count and time.
 *   mqtt: CONNECT (DPS SAS from a key derived from the group key) → SUBSCRIBE → PUBLISH register (QoS 1) → res/200
 *   (or 202 and polls like the SDK, Retry-After bounded) → UNSUBSCRIBE → DISCONNECT.
 *   x509: mutual TLS with leaf + intermediate, PUT /{idScope}/registrations/{id}/register, no Authorization; polls
 *   on 202 over new connections.
 */
import { request, type RequestOptions } from 'node:https';
import { connect as tlsConnect, createSecureContext, type ConnectionOptions, type SecureContext } from 'node:tls';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';
import { buildSas, deriveDeviceKey } from '../../packages/server/src/core/sas.ts';
import { issueCertificate, loadIssuer } from '../../packages/server/src/transport/tls/pki.ts';
import { percentile } from './register-stats.ts';

interface Config {
  ca: string;
  idScope: string;
  groupKey: string;
}

interface Run {
  kind: 'mqtt' | 'x509';
  port: number;
  prefix: string;
  certFrom: number;
  concurrency: number;
  count: number;
  durationMs: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;
const serverCa = createSecureContext({ ca: cfg.ca });
const TIMEOUT_MS = 30_000;
const MAX_POLLS = 10;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Pre-issued device identities: registration id + a secure context with leaf + intermediate. */
const devices: { id: string; ctx: SecureContext }[] = [];

async function issueCerts(m: { issuerCert: string; issuerKey: string; count: number }): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const issuer = await loadIssuer(m.issuerCert, m.issuerKey);
  for (let i = devices.length; i < m.count; i++) {
    const id = `x509-dev-${i}`;
    const leaf = await issueCertificate({ commonName: id, issuer, usages: ['client'] });
    devices.push({ id, ctx: createSecureContext({ ca: cfg.ca, cert: `${leaf.certPem}\n${m.issuerCert}`, key: leaf.keyPem }) });
  }
  return { issued: devices.length, ms: performance.now() - t0 };
}

// ---- MQTT symmetric key ----

function mqttRegister(port: number, id: string): Promise<number> {
  const key = deriveDeviceKey(cfg.groupKey, id);
  const password = buildSas({ sr: `${cfg.idScope}/registrations/${id}`, keyBase64: key, keyName: 'registration', expirySeconds: Math.floor(Date.now() / 1000) + 3600 });
  return new Promise<number>((resolve, reject) => {
    let polls = 0;
    let rid = 1;
    let settled = false;
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', secureContext: serverCa }, () => {
      send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: id, clean: true, keepalive: 0, username: `${cfg.idScope}/registrations/${id}/api-version=2019-03-31&ClientVersion=homing-bench`, password: Buffer.from(password) });
    });
    socket.setNoDelay(true);
    const timer = setTimeout(() => fail(new Error('mqtt timeout')), TIMEOUT_MS);
    const parser = createParser();
    const send = (p: Packet) => socket.write(generate(p));
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    const publish = (topic: string, payload: string) => send({ cmd: 'publish', topic, payload, qos: 1, messageId: rid, dup: false, retain: false });
    parser.on('packet', (p: Packet) => {
      if (p.cmd === 'connack') {
        if (p.returnCode !== 0) return fail(new Error(`CONNACK ${p.returnCode}`));
        send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$dps/registrations/res/#', qos: 1 }] });
      } else if (p.cmd === 'suback') {
        publish(`$dps/registrations/PUT/iotdps-register/?$rid=${rid}`, JSON.stringify({ registrationId: id }));
      } else if (p.cmd === 'publish') {
        if (p.qos > 0) send({ cmd: 'puback', messageId: p.messageId ?? 0 });
        const m = /^\$dps\/registrations\/res\/(\d+)\/\?(.*)$/.exec(p.topic);
        if (!m) return;
        const q = new URLSearchParams(m[2]);
        if (q.get('$rid') !== String(rid)) return;
        const status = Number(m[1]);
        const body = JSON.parse(p.payload.toString()) as { status?: string; operationId?: string };
        if (status === 200 && body.status === 'assigned') {
          send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['$dps/registrations/res/#'] });
          return;
        }
        if ((status !== 200 && status !== 202) || body.status !== 'assigning' || !body.operationId) return fail(new Error(`res ${status}: ${p.payload.toString().slice(0, 200)}`));
        if (++polls > MAX_POLLS) return fail(new Error('too many polls'));
        const retryAfter = Number(q.get('retry-after') ?? 2);
        const op = body.operationId;
        setTimeout(() => {
          rid++;
          publish(`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=${rid}&operationId=${encodeURIComponent(op)}`, '');
        }, Math.min(5, Math.max(1, retryAfter || 2)) * 1000);
      } else if (p.cmd === 'unsuback') {
        send({ cmd: 'disconnect' });
        socket.end();
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          resolve(polls);
        }
      }
    });
    parser.on('error', fail);
    socket.on('data', (c: Buffer) => parser.parse(c));
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('closed before the end')));
  });
}

// ---- X.509 over HTTPS ----

interface Answer {
  status: number;
  retryAfter: number;
  body: string;
}

function call(port: number, ctx: SecureContext, method: 'PUT' | 'GET', path: string, body: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(body);
    const options: RequestOptions & ConnectionOptions = {
      host: '127.0.0.1',
      servername: 'localhost',
      port,
      method,
      path,
      agent: false,
      secureContext: ctx,
      headers: { accept: 'application/json', 'content-type': 'application/json; charset=utf-8', 'content-length': String(payload.length) },
    };
    const req = request(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: Number(res.headers['retry-after'] ?? 0), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error('request timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

async function x509Register(port: number, d: { id: string; ctx: SecureContext }): Promise<number> {
  const base = `/${cfg.idScope || '0neBARE'}/registrations/${d.id}`;
  let a = await call(port, d.ctx, 'PUT', `${base}/register?api-version=2019-03-31`, JSON.stringify({ registrationId: d.id }));
  let polls = 0;
  for (;;) {
    if (a.status !== 200 && a.status !== 202) throw new Error(`HTTP ${a.status}: ${a.body.slice(0, 200)}`);
    const b = JSON.parse(a.body) as { status?: string; operationId?: string };
    if (b.status === 'assigned') return polls;
    if (b.status !== 'assigning' || !b.operationId) throw new Error(`status ${b.status}`);
    if (++polls > MAX_POLLS) throw new Error('too many polls');
    await sleep(Math.min(5, Math.max(1, a.retryAfter || 2)) * 1000);
    a = await call(port, d.ctx, 'GET', `${base}/operations/${b.operationId}?api-version=2019-03-31`, '');
  }
}

async function run(r: Run): Promise<Record<string, unknown>> {
  if (r.kind === 'x509' && devices.length === 0) throw new Error('no device certificates issued');
  const lat: number[] = [];
  let ok = 0;
  let failed = 0;
  let polls = 0;
  const errors: string[] = [];
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const deadline = start + r.durationMs;
  let next = 0;
  const worker = async () => {
    while (next < r.count && performance.now() < deadline) {
      const i = next++;
      const t0 = performance.now();
      try {
        polls += r.kind === 'mqtt' ? await mqttRegister(r.port, `${r.prefix}-${i}`) : await x509Register(r.port, devices[(r.certFrom + i) % devices.length]!);
        ok++;
        lat.push(performance.now() - t0);
      } catch (e) {
        failed++;
        if (errors.length < 5) errors.push(e instanceof Error ? e.message : String(e));
      }
    }
  };
  await Promise.all(Array.from({ length: r.concurrency }, worker));
  const elapsedMs = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  lat.sort((a, b) => a - b);
  return {
    ok,
    failed,
    polls,
    errors,
    elapsedMs,
    rate: (ok / elapsedMs) * 1000,
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
    clientCpuUsPerOp: ok + failed > 0 ? (cpu.user + cpu.system) / (ok + failed) : Number.NaN,
  };
}

process.on('message', (m: unknown) => {
  const msg = m as { type?: string } & Record<string, unknown>;
  const reply = (p: Promise<Record<string, unknown>>) => p.then((r) => process.send?.({ type: msg.type, ...r }), (e: unknown) => process.send?.({ type: msg.type, error: String(e) }));
  if (msg.type === 'run') reply(run(msg as unknown as Run));
  else if (msg.type === 'certs') reply(issueCerts(msg as unknown as { issuerCert: string; issuerKey: string; count: number }));
  else if (msg.type === 'stop') process.exit(0);
});
process.send?.({ type: 'ready' });

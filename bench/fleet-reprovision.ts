/**
 * Phased fleet reprovisioning under a registration quota (issue 6): `--count` devices (default 10,000) on two hubs,
 * their enrollment group moved to a third hub (static, migrate), then one fleet job through the admin API at the
 * instance's quota (default 1,000 registrations per minute). Checks:
 * - the wave schedule keeps under the quota: zero 429s (DPS HTTPS API answers, and the devices' own count), and at
 *   most `rate` registrations in any 60 s window (from the devices' registration times);
 * - the total time (job start → job completed) is within 10 % of the quota's lower bound, count / rate.
 *
 * The server (startHoming: three hubs, the DPS, SQLite in a temp dir) runs in this process; the devices run in a child
 * process (the same file with `--devices`): lightweight devices, one raw MQTT/TLS connection each (mqtt-packet) to
 * their hub, answering the `homing.reprovision` direct method with 202, then re-registering over HTTPS (a new TLS
 * connection, PUT register + polls as the SDKs do) and connecting to the hub they were assigned. The devices first
 * register with the quota off (setup, not measured), then the quota is set through the admin API and the job runs.
 *
 *   node --conditions=homing-source --import tsx bench/fleet-reprovision.ts [--count 10000] [--rate 1000]
 *
 * Smoke run (about a minute): `--count 1000 --rate 1000`. The full 10,000 at 1,000/min takes 10 minutes by design.
 * The last stdout line is one JSON object with the figures.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request, type RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createSecureContext, type ConnectionOptions, type SecureContext, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';
import { loadStartConfig } from '../packages/server/src/config/load.ts';
import { buildSas, deriveDeviceKey, strictEncode } from '../packages/server/src/core/sas.ts';
import { silentLogger } from '../packages/server/src/observability/logger.ts';
import { startHoming } from '../packages/server/src/server.ts';
import { flag, numberFlag, round } from './lib/register-stats.ts';

const SELF = fileURLToPath(import.meta.url);
const GROUP = 'bench-fleet';
const MAX_COUNT = 20_000;
const TARGET_TIME_RATIO = 1.1;

interface DeviceConfig {
  dpsHost: string;
  dpsPort: number;
  hubPorts: Record<string, number>;
  ca: string;
  idScope: string;
  groupKey: string;
  count: number;
}

type ToChild = { type: 'boot' } | { type: 'report' } | { type: 'exit' };
type FromChild =
  | { type: 'booted'; ok: number; failed: number; errors: string[]; elapsedMs: number }
  | { type: 'report'; registrations: number[]; throttled: number; throttleCauses: Record<string, number>; methodCalls: number; reconnects: number; errors: string[]; hubs: Record<string, number> };

// ------------------------------------------------------------------------------------------------ device child

async function deviceMain(cfg: DeviceConfig): Promise<void> {
  const secureContext: SecureContext = createSecureContext({ ca: cfg.ca });
  const registrations: number[] = [];
  let throttled = 0;
  /** 429s by cause: the registration quota, the per-device poll limit, or the overload guard (docs/api/quotas.md). */
  let throttleCauses: Record<string, number> = {};
  const countThrottle = (what: 'register' | 'poll', body: string) => {
    throttled++;
    const cause = /overloaded/i.test(body) ? 'overload' : what === 'poll' ? 'poll limit' : 'registration quota';
    throttleCauses[cause] = (throttleCauses[cause] ?? 0) + 1;
  };
  let methodCalls = 0;
  let reconnects = 0;
  const errors: string[] = [];
  const note = (e: unknown) => {
    if (errors.length < 10) errors.push(e instanceof Error ? e.message : String(e));
  };

  function https(method: 'PUT' | 'GET', path: string, auth: string, body: string): Promise<{ status: number; retryAfter: number; body: string }> {
    return new Promise((resolve, reject) => {
      const payload = Buffer.from(body);
      const options: RequestOptions & ConnectionOptions = {
        host: cfg.dpsHost,
        port: cfg.dpsPort,
        method,
        path,
        agent: false,
        secureContext,
        headers: { accept: 'application/json', 'content-type': 'application/json; charset=utf-8', authorization: auth, 'content-length': String(payload.length) },
      };
      const req = request(options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: Number(res.headers['retry-after'] ?? 0), body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.setTimeout(30_000, () => req.destroy(new Error('request timeout')));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Register (PUT + polls); 429 → wait Retry-After and count it. Bounded: 20 attempts. */
  async function register(id: string, key: string): Promise<{ assignedHub: string; deviceId: string }> {
    const auth = buildSas({ sr: `${cfg.idScope}/registrations/${id}`, keyBase64: key, keyName: 'registration', expirySeconds: Math.floor(Date.now() / 1000) + 3600 });
    const base = `/${cfg.idScope}/registrations/${id}`;
    for (let attempt = 0; attempt < 20; attempt++) {
      let a = await https('PUT', `${base}/register?api-version=2021-06-01`, auth, JSON.stringify({ registrationId: id }));
      if (a.status === 429) {
        countThrottle('register', a.body);
        await new Promise((r) => setTimeout(r, Math.max(1, a.retryAfter) * 1000));
        continue;
      }
      registrations.push(Date.now());
      for (let polls = 0; polls < 30; polls++) {
        if (a.status !== 200 && a.status !== 202) throw new Error(`register ${id}: HTTP ${a.status} ${a.body.slice(0, 120)}`);
        const b = JSON.parse(a.body) as { status?: string; operationId?: string; registrationState?: { assignedHub?: string; deviceId?: string; status?: string } };
        const state = b.registrationState ?? (b as { assignedHub?: string; deviceId?: string; status?: string });
        if ((b.status ?? state.status) === 'assigned' && state.assignedHub && state.deviceId) return { assignedHub: state.assignedHub, deviceId: state.deviceId };
        if (b.status !== 'assigning' || !b.operationId) throw new Error(`register ${id}: status ${b.status}`);
        await new Promise((r) => setTimeout(r, Math.min(3, Math.max(1, a.retryAfter || 1)) * 1000));
        a = await https('GET', `${base}/operations/${b.operationId}?api-version=2021-06-01`, auth, '');
        if (a.status === 429) {
          countThrottle('poll', a.body);
          await new Promise((r) => setTimeout(r, Math.max(1, a.retryAfter) * 1000));
          a = await https('GET', `${base}/operations/${b.operationId}?api-version=2021-06-01`, auth, '');
        }
      }
      throw new Error(`register ${id}: too many polls`);
    }
    throw new Error(`register ${id}: throttled 20 times`);
  }

  /** A device: one MQTT connection to its hub, answering the reprovision method. */
  class Device {
    socket: TLSSocket | undefined;
    hub = '';
    moving = false;
    constructor(
      readonly id: string,
      readonly key: string,
    ) {}

    connect(hub: string, deviceId: string): Promise<void> {
      this.hub = hub;
      return new Promise((resolve, reject) => {
        const parser = createParser();
        const socket = tlsConnect({ host: hub, port: cfg.hubPorts[hub] ?? 8883, secureContext }, () => {
          const password = buildSas({ sr: strictEncode(`${hub}/devices/${deviceId}`), keyBase64: this.key, expirySeconds: Math.floor(Date.now() / 1000) + 7200 });
          socket.write(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: deviceId, clean: true, keepalive: 0, username: `${hub}/${deviceId}/?api-version=2021-04-12`, password: Buffer.from(password) }));
        });
        this.socket = socket;
        socket.on('data', (c: Buffer) => parser.parse(c));
        socket.on('error', (e) => {
          note(e);
          reject(e);
        });
        parser.on('packet', (p: Packet) => {
          if (p.cmd === 'connack') {
            if (p.returnCode !== 0) return reject(new Error(`CONNACK ${p.returnCode} for ${deviceId} on ${hub}`));
            socket.write(generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$iothub/methods/POST/#', qos: 0 }] }));
          } else if (p.cmd === 'suback') {
            resolve();
          } else if (p.cmd === 'publish' && p.topic.startsWith('$iothub/methods/POST/')) {
            const m = /^\$iothub\/methods\/POST\/([^/]+)\/\?\$rid=(.+)$/.exec(p.topic);
            if (!m) return;
            methodCalls++;
            socket.write(generate({ cmd: 'publish', topic: `$iothub/methods/res/202/?$rid=${m[2]}`, payload: Buffer.from('{"status":"reprovisioning"}'), qos: 0, retain: false, dup: false }));
            if (m[1] === 'homing.reprovision') void this.reprovision();
          }
        });
      });
    }

    async reprovision(): Promise<void> {
      if (this.moving) return;
      this.moving = true;
      try {
        const a = await register(this.id, this.key);
        if (a.assignedHub !== this.hub) {
          this.socket?.destroy();
          reconnects++;
          await this.connect(a.assignedHub, a.deviceId);
        }
      } catch (e) {
        note(e);
      } finally {
        this.moving = false;
      }
    }
  }

  const devices: Device[] = [];
  process.on('message', (msg: ToChild) => {
    void (async () => {
      if (msg.type === 'boot') {
        const t0 = Date.now();
        let ok = 0;
        let failed = 0;
        let next = 0;
        const worker = async () => {
          while (next < cfg.count) {
            const i = next++;
            const id = `fleet-${String(i).padStart(6, '0')}`;
            const d = new Device(id, deriveDeviceKey(cfg.groupKey, id));
            try {
              const a = await register(id, d.key);
              await d.connect(a.assignedHub, a.deviceId);
              devices.push(d);
              ok++;
            } catch (e) {
              failed++;
              note(e);
            }
          }
        };
        await Promise.all(Array.from({ length: 32 }, worker));
        registrations.length = 0;
        throttled = 0;
        throttleCauses = {};
        const out: FromChild = { type: 'booted', ok, failed, errors: errors.splice(0), elapsedMs: Date.now() - t0 };
        process.send?.(out);
      } else if (msg.type === 'report') {
        const hubs: Record<string, number> = {};
        for (const d of devices) hubs[d.hub] = (hubs[d.hub] ?? 0) + 1;
        const out: FromChild = { type: 'report', registrations, throttled, throttleCauses, methodCalls, reconnects, errors, hubs };
        process.send?.(out);
      } else if (msg.type === 'exit') {
        for (const d of devices) d.socket?.destroy();
        process.exit(0);
      }
    })();
  });
  process.send?.({ type: 'ready' });
}

// ------------------------------------------------------------------------------------------------ main

function ask<T extends FromChild['type']>(child: ChildProcess, msg: ToChild, type: T): Promise<Extract<FromChild, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: FromChild) => {
      if (m.type !== type) return;
      child.off('message', onMsg);
      child.off('exit', onExit);
      resolve(m as Extract<FromChild, { type: T }>);
    };
    const onExit = (code: number | null) => reject(new Error(`device child exited with ${code}`));
    child.on('message', onMsg);
    child.once('exit', onExit);
    child.send(msg);
  });
}

/** Most events in any window of `windowMs` (sorted timestamps). */
function maxInWindow(times: readonly number[], windowMs: number): number {
  let best = 0;
  let j = 0;
  for (let i = 0; i < times.length; i++) {
    while ((times[i] ?? 0) - (times[j] ?? 0) >= windowMs) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

async function main(): Promise<void> {
  const count = Math.floor(numberFlag('count', 10_000));
  const rate = Math.floor(numberFlag('rate', 1000));
  if (!(count >= 1 && count <= MAX_COUNT)) throw new Error(`--count from 1 to ${MAX_COUNT}`);
  if (!(rate >= 1 && rate <= 100_000)) throw new Error('--rate from 1 to 100000 per minute');
  const dataDir = mkdtempSync(join(tmpdir(), 'homing-bench-fleet-'));
  // Loopback addresses of our own (other servers on this machine use 127.0.0.x).
  const b = randomBytes(2);
  const net = `127.${200 + ((b[0] ?? 0) % 50)}.${1 + ((b[1] ?? 0) % 250)}`;
  const hubHosts = [`${net}.2`, `${net}.3`, `${net}.4`];
  const dpsHost = flag('dps-host') ?? `${net}.1`;
  const config = await loadStartConfig({ dataDir, hubHosts, dpsHost, httpsPort: 0, mqttPort: 0 }, { databaseUrl: undefined, logLevel: undefined });
  const homing = await startHoming(config, { logger: silentLogger() });
  let child: ChildProcess | undefined;
  try {
    const cs = Object.fromEntries(homing.connectionInfo.dps.serviceConnectionString.split(';').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const api = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown }> =>
      new Promise((resolve, reject) => {
        const sas = buildSas({ sr: dpsHost, keyBase64: cs.SharedAccessKey ?? '', keyName: cs.SharedAccessKeyName ?? '', expirySeconds: Math.floor(Date.now() / 1000) + 3600 });
        const payload = body === undefined ? undefined : JSON.stringify(body);
        const req = request(
          { host: dpsHost, port: homing.dps.httpsPort, method, path: `${path}?api-version=2021-10-01`, ca: homing.pki.caCertPem, headers: { authorization: sas, ...headers, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) } },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
          },
        );
        req.on('error', reject);
        req.end(payload);
      });
    const [hub1, hub2, hub3] = hubHosts as [string, string, string];
    const groupBody = (hubs: string[], policy: string, attestation: unknown) => ({
      enrollmentGroupId: GROUP,
      attestation,
      allocationPolicy: policy,
      iotHubs: hubs,
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    });
    const created = await api('PUT', `/enrollmentGroups/${GROUP}`, groupBody([hub1, hub2], 'hashed', { type: 'symmetricKey' }));
    if (created.status >= 300) throw new Error(`creating the group: ${created.status} ${JSON.stringify(created.body)}`);
    const attestation = (created.body as { attestation: { symmetricKey: { primaryKey: string } } }).attestation;

    const cfg: DeviceConfig = {
      dpsHost,
      dpsPort: homing.dps.httpsPort,
      hubPorts: Object.fromEntries(homing.hubs.map((h) => [h.config.hostName, h.mqttPort])),
      ca: homing.pki.caCertPem,
      idScope: homing.dps.instance.idScope,
      groupKey: attestation.symmetricKey.primaryKey,
      count,
    };
    child = fork(SELF, ['--devices', JSON.stringify(cfg)], { execArgv: ['--conditions=homing-source', '--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve) => child?.once('message', () => resolve()));
    process.stderr.write(`booting ${count} devices (registration with the quota off; not measured)...\n`);
    const booted = await ask(child, { type: 'boot' }, 'booted');
    process.stderr.write(`booted ${booted.ok} devices in ${round(booted.elapsedMs / 1000)} s (${booted.failed} failed${booted.errors.length ? `: ${booted.errors[0]}` : ''})\n`);
    if (booted.ok !== count) throw new Error(`only ${booted.ok} of ${count} devices booted`);

    // The quota under test, and the group moved to the third hub.
    const q = await api('PUT', '/homing/instance/quotas', { registrationsPerMinute: rate });
    if (q.status !== 200) throw new Error(`setting the quota: ${q.status} ${JSON.stringify(q.body)}`);
    const moved = await api('PUT', `/enrollmentGroups/${GROUP}`, groupBody([hub3], 'static', attestation), { 'if-match': '*' });
    if (moved.status >= 300) throw new Error(`moving the group: ${moved.status}`);
    const before429 = await dps429(homing.metrics.httpRequests);

    const job = await api('POST', '/homing/fleet/jobs', { selection: { enrollmentGroupId: GROUP } });
    if (job.status !== 201) throw new Error(`creating the job: ${job.status} ${JSON.stringify(job.body)}`);
    const id = (job.body as { id: string }).id;
    type JobJson = { state: string; startedDateTimeUtc?: string; finishedDateTimeUtc?: string; rate: { perMinute: number; waveSize: number; waveIntervalMs: number }; progress: Record<string, number> };
    let j = job.body as JobJson;
    process.stderr.write(`job ${id}: ${count} devices at ${j.rate.perMinute}/min (${j.rate.waveSize} every ${j.rate.waveIntervalMs / 1000} s)\n`);
    const deadline = Date.now() + ((count / rate) * 60_000) * 1.5 + 120_000;
    let lastPrint = 0;
    while (j.state === 'running' || j.state === 'pending') {
      if (Date.now() > deadline) throw new Error(`the job did not finish in time: ${JSON.stringify(j.progress)}`);
      await new Promise((r) => setTimeout(r, 500));
      j = (await api('GET', `/homing/fleet/jobs/${id}`)).body as JobJson;
      if (Date.now() - lastPrint > 10_000) {
        process.stderr.write(`  ${j.progress.done}/${count} done (moved ${j.progress.moved}, failed ${j.progress.failed})\n`);
        lastPrint = Date.now();
      }
    }
    const report = await ask(child, { type: 'report' }, 'report');
    const http429 = (await dps429(homing.metrics.httpRequests)) - before429;
    const startedMs = Date.parse(j.startedDateTimeUtc ?? '');
    const finishedMs = Date.parse(j.finishedDateTimeUtc ?? '');
    const totalS = (finishedMs - startedMs) / 1000;
    const lowerBoundS = (count / rate) * 60;
    const regs = [...report.registrations].sort((a, b) => a - b);
    const peakPerMinute = maxInWindow(regs, 60_000);
    const ratio = totalS / lowerBoundS;
    const ok = j.state === 'completed' && http429 === 0 && report.throttled === 0 && peakPerMinute <= rate && ratio <= TARGET_TIME_RATIO && j.progress.moved === count;
    const figures = {
      bench: 'fleet-reprovision',
      count,
      quotaPerMinute: rate,
      waveSize: j.rate.waveSize,
      waveIntervalMs: j.rate.waveIntervalMs,
      state: j.state,
      moved: j.progress.moved,
      unchanged: j.progress.unchanged,
      failed: j.progress.failed,
      totalSeconds: round(totalS, 1),
      lowerBoundSeconds: round(lowerBoundS, 1),
      timeRatio: round(ratio, 3),
      targetTimeRatio: TARGET_TIME_RATIO,
      http429,
      deviceThrottled: report.throttled,
      deviceThrottleCauses: report.throttleCauses,
      registrations: regs.length,
      peakRegistrationsPerMinute: peakPerMinute,
      methodCalls: report.methodCalls,
      devicesOnNewHub: report.hubs[hub3] ?? 0,
      deviceErrors: report.errors.slice(0, 3),
      ok,
    };
    process.stdout.write(
      [
        `fleet reprovisioning: ${count} devices, quota ${rate}/min, waves of ${j.rate.waveSize} every ${j.rate.waveIntervalMs / 1000} s`,
        `  result: ${j.state}; moved ${j.progress.moved}, unchanged ${j.progress.unchanged}, failed ${j.progress.failed}; ${report.hubs[hub3] ?? 0} devices connected to the new hub`,
        `  time: ${round(totalS, 1)} s; ceiling (the quota's lower bound, count / rate): ${round(lowerBoundS, 1)} s; ratio ${round(ratio, 3)} (target ≤ ${TARGET_TIME_RATIO})`,
        `  429s: ${http429} on the DPS HTTPS API, ${report.throttled} seen by devices ${JSON.stringify(report.throttleCauses)}; peak registrations in any 60 s: ${peakPerMinute} (quota ${rate})`,
        `  ${ok ? 'PASS' : 'FAIL'}`,
        JSON.stringify(figures),
      ].join('\n') + '\n',
    );
    if (!ok) process.exitCode = 1;
  } finally {
    if (child && child.exitCode === null) {
      child.send({ type: 'exit' } satisfies ToChild);
      await new Promise<void>((resolve) => child?.once('exit', () => resolve()));
    }
    await homing.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** 429 answers of the DPS HTTPS listener so far (the server's request counter). */
async function dps429(counter: { get(): Promise<{ values: { labels: Record<string, string | number>; value: number }[] }> }): Promise<number> {
  const { values } = await counter.get();
  return values.filter((v) => v.labels.api === 'dps' && String(v.labels.status) === '429').reduce((a, v) => a + v.value, 0);
}

const devicesArg = process.argv.indexOf('--devices');
if (devicesArg >= 0) {
  void deviceMain(JSON.parse(process.argv[devicesArg + 1] ?? '{}') as DeviceConfig);
} else {
  main().catch((e: unknown) => {
    process.stderr.write(`fleet-reprovision: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  });
}

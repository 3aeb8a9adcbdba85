import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'node:https';
import type { Clock } from '../../src/core/clock.ts';
import type { DpsMqttRuntime } from '../../src/transport/mqtt/dps/realm.ts';
import type { MqttRealm } from '../../src/transport/mqtt/listener.ts';
import { startHomingProcess, runSdkScript, type HomingProcess, type ScriptLine } from './homing-process.ts';

/** A `homing start` process and the step results of an SDK script run against it (see sdkScriptSteps). */
export interface SdkSteps {
  /** The running `homing start` (available once the `before` hook ran). */
  readonly homing: HomingProcess;
  /** The result of a step; fails the test when the step did not run or did not succeed. */
  stepResult(name: string): ScriptLine;
}

export interface SdkStepsOptions {
  /** Add the server's stderr to the message of a failed step (default true). */
  serverLogOnFailure?: boolean;
}

/**
 * Call inside a `describe`: its `before` starts `homing start` in its own process and runs `script` (a .cjs script of
 * test/interop/sdk printing one JSON line per step, with the connection.json contents as argv[2] and the dev CA
 * trusted); its `after` stops the process (exit code 0) and removes its data.
 */
export function sdkScriptSteps(script: string, opts: SdkStepsOptions = {}): SdkSteps {
  let homing: HomingProcess | undefined;
  let lines: ScriptLine[] = [];
  let stderr = '';

  before(async () => {
    homing = await startHomingProcess([]);
    const r = await runSdkScript(script, [JSON.stringify(homing.connection)], homing.connection.caCertPath);
    lines = r.lines;
    stderr = r.stderr;
  });

  after(async () => {
    assert.equal(await homing?.stop(), 0);
    homing?.cleanup();
  });

  const running = (): HomingProcess => {
    assert.ok(homing, 'homing start did not start');
    return homing;
  };

  return {
    get homing() {
      return running();
    },
    stepResult(name: string): ScriptLine {
      const h = running();
      const l = lines.find((x) => x.step === name);
      assert.ok(l, `step "${name}" did not run. Steps: ${JSON.stringify(lines)}\nstderr: ${stderr}\nserver: ${h.stderr()}`);
      assert.equal(l.ok, true, `step "${name}" failed: ${l.error}${opts.serverLogOnFailure === false ? '' : `\nserver: ${h.stderr()}`}`);
      return l;
    },
  };
}

/** What a device script (test/interop/sdk/dps-*-device.cjs, test/provisioning/runtime/support/dps-sdk-device.cjs) prints per step. */
export interface DeviceStepLine {
  name: string;
  ok: boolean;
}

/** A symmetric-key step of the device scripts (dps-sdk-device.cjs over HTTPS, dps-mqtt-device.cjs over MQTT). */
export interface SymmetricKeyStep {
  name: string;
  host: string;
  idScope: string;
  registrationId: string;
  key: string;
  /** Then connect to the assigned hub and read the twin. */
  connect?: boolean;
  payload?: Record<string, unknown>;
}

/** The line a device script prints for a step. */
export interface DeviceStepResult extends DeviceStepLine {
  /** How long the step took (dps-mqtt-device.cjs, dps-x509-device.cjs). */
  ms?: number;
  result?: { assignedHub?: string; deviceId?: string; status?: string; substatus?: string; symmetricKey?: { enrollmentGroupId?: string } };
  twin?: { desired: Record<string, unknown> };
  error?: { name?: string; message?: string; ctor?: string; result?: unknown };
}

export interface DeviceScriptOptions {
  /** Kill the script and fail after this long (default 120 s). */
  timeoutMs?: number;
  /** Pass the steps in this file (written with mode 0600) instead of as JSON on the command line. */
  stepsFile?: string;
}

/**
 * Runs a device script with `steps` (its argv[2]: the steps as JSON, or the path of `stepsFile`) in a child process
 * trusting `caFile` (NODE_EXTRA_CA_CERTS) and returns its JSON lines by step name; fails when the script did not exit
 * 0 or did not report every step.
 */
export async function runDeviceScript<R extends DeviceStepLine>(script: string, steps: readonly unknown[], caFile: string, opts: DeviceScriptOptions = {}): Promise<Map<string, R>> {
  let arg = JSON.stringify(steps);
  if (opts.stepsFile !== undefined) {
    writeFileSync(opts.stepsFile, arg, { mode: 0o600 });
    arg = opts.stepsFile;
  }
  const { lines, stderr, code } = await runSdkScript(script, [arg], caFile, opts.timeoutMs ?? 120_000);
  const results = new Map<string, R>();
  for (const line of lines as unknown as R[]) results.set(line.name, line);
  if (code !== 0 || results.size !== steps.length) throw new Error(`device process exited ${String(code)}\nstdout:\n${lines.map((l) => JSON.stringify(l)).join('\n')}\nstderr:\n${stderr}`);
  return results;
}

/** A message an MQTT realm published to a client. */
export interface PublishedMessage {
  topic: string;
  payload: string;
}

/** Wraps a realm so that every message it publishes is recorded under the connection's client id. */
export function spyingRealm(realm: MqttRealm, seen: Map<string, PublishedMessage[]>): MqttRealm {
  return {
    name: realm.name,
    claims: (req) => realm.claims(req),
    connect(req, link) {
      const topics = seen.get(req.clientId) ?? [];
      seen.set(req.clientId, topics);
      return realm.connect(req, {
        get id() {
          return link.id;
        },
        get log() {
          return link.log;
        },
        get metrics() {
          return link.metrics;
        },
        get closed() {
          return link.closed;
        },
        publish(topic, payload, qos) {
          topics.push({ topic, payload: payload.toString() });
          link.publish(topic, payload, qos);
        },
        close: (reason) => link.close(reason),
      });
    },
  };
}

/** The DPS response topics a client got, without the (random) request ids: `res/202/?retry-after=1`, `res/200/?`. */
export function answerTopics(seen: Map<string, PublishedMessage[]>, clientId: string): string[] {
  return (seen.get(clientId) ?? []).map((m) => m.topic.replace('$dps/registrations/', '').replace(/\$rid=[^&]*&?/, ''));
}

/** The JSON payloads a client got (every one must parse). */
export function answerPayloads(seen: Map<string, PublishedMessage[]>, clientId: string): Record<string, unknown>[] {
  return (seen.get(clientId) ?? []).map((m) => JSON.parse(m.payload) as Record<string, unknown>);
}

/**
 * A DPS MQTT runtime over `runtime` that moves the manual `clock` a second on whenever a register is refused with 429:
 * the SDK retries a real second later (retry-after 1) and then finds a unit free.
 */
export function advanceOnThrottle(runtime: DpsMqttRuntime, clock: Clock & { advance(ms: number): void }): DpsMqttRuntime {
  return {
    async register(...args) {
      try {
        return await runtime.register(...args);
      } catch (e) {
        if ((e as { status?: number }).status === 429) clock.advance(1000);
        throw e;
      }
    },
    operationStatus: (...args) => runtime.operationStatus(...args),
  };
}

/** An HTTPS answer with its body as text. */
export interface RawAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTPS request as it is given, on a new TLS connection (no agent). */
export interface HttpsOnce {
  host: string;
  port: number;
  ca: string;
  method: string;
  path: string;
  /** Sent as they are (`accept: application/json` unless overridden); Content-Length is added for `body`. */
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Written one by one instead of `body` (chunked encoding). A server that answers and closes mid-body is no error. */
  chunks?: Buffer[];
}

export function httpsOnce(o: HttpsOnce): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const body = o.body === undefined ? undefined : Buffer.isBuffer(o.body) ? o.body : Buffer.from(o.body);
    const req = request(
      {
        host: o.host,
        port: o.port,
        ca: o.ca,
        method: o.method,
        path: o.path,
        agent: false,
        timeout: 10_000,
        headers: { accept: 'application/json', ...(body ? { 'content-length': String(body.length) } : {}), ...o.headers },
      },
      (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: t }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => (o.chunks && (e.code === 'EPIPE' || e.code === 'ECONNRESET') ? undefined : reject(e)));
    if (o.chunks) {
      for (const c of o.chunks) req.write(c);
      req.end();
    } else req.end(body);
  });
}

/**
 * One HTTPS request to `host`:443 as a device sends it (JSON accept and content type, an optional Authorization),
 * without an agent; the body is sent as is.
 */
export function rawHttps(host: string, ca: string, method: string, path: string, o: { auth?: string; body?: string | Buffer } = {}): Promise<RawAnswer> {
  return httpsOnce({
    host,
    port: 443,
    ca,
    method,
    path,
    headers: { 'content-type': 'application/json; charset=utf-8', ...(o.auth ? { authorization: o.auth } : {}) },
    ...(o.body === undefined ? {} : { body: o.body }),
  });
}

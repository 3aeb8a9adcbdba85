import { connect as tcpConnect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { isJsonObject, type JsonObject } from '../json.ts';
import { systemRuntime, type Timers } from '../runtime.ts';

/**
 * Measures how far the candidate IoT hubs are before registering, for a provisioning service whose `geoLatency`
 * policy reads device-reported times (Homing: `payload.homing.latencyMs`, docs/api/allocation.md). Azure DPS ignores
 * the field (it is part of the custom payload, which Azure passes to custom allocation webhooks only).
 */
export interface LatencyProbeOptions {
  /** Hub host names, optionally `host:port` (`[v6]:port`); the key reported is the host name. */
  hosts: string[];
  /** Port probed when a host names none. Default 8883 (MQTT over TLS). */
  port?: number;
  /** Bound on each connect (all run in parallel), ms. Default 2000. A host that does not connect in time is left out. */
  timeoutMs?: number;
}

/** Opens a TCP connection and resolves once it is established (then closes it), or rejects. */
export type Connector = (host: string, port: number, signal: AbortSignal) => Promise<void>;

export interface ProbeDeps {
  connect?: Connector;
  /** Monotonic milliseconds. Default `performance.now`. */
  now?: () => number;
  timers?: Timers;
}

const tcpConnector: Connector = (host, port, signal) =>
  new Promise<void>((resolve, reject) => {
    const socket = tcpConnect({ host, port });
    const onAbort = (): void => {
      socket.destroy();
      reject(new Error('aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve();
    });
    socket.once('error', (e) => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(e);
    });
  });

/** `host`, `host:port`, `[v6]`, `[v6]:port` → host and port. */
export function parseProbeTarget(target: string, defaultPort: number): { host: string; port: number } {
  const t = target.trim();
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) return { host: v6[1] ?? '', port: v6[2] ? Number(v6[2]) : defaultPort };
  const hp = /^([^:]+):(\d+)$/.exec(t);
  if (hp) return { host: hp[1] ?? '', port: Number(hp[2]) };
  return { host: t, port: defaultPort };
}

/**
 * Connect time to each host (ms, rounded to 0.1), measured in parallel; hosts that fail or time out are left out.
 * Never rejects.
 */
export async function probeLatencies(options: LatencyProbeOptions, deps: ProbeDeps = {}): Promise<Record<string, number>> {
  const connect = deps.connect ?? tcpConnector;
  const now = deps.now ?? (() => performance.now());
  const timers = deps.timers ?? systemRuntime.timers;
  const timeoutMs = options.timeoutMs ?? 2000;
  const out: Record<string, number> = {};
  await Promise.all(
    options.hosts.map(async (target) => {
      const { host, port } = parseProbeTarget(target, options.port ?? 8883);
      if (host === '' || !Number.isInteger(port) || port < 1 || port > 65535) return;
      const ctl = new AbortController();
      let handle: unknown;
      const timeout = new Promise<'timeout'>((resolve) => {
        handle = timers.setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const start = now();
      try {
        const r = await Promise.race([connect(host, port, ctl.signal).then(() => 'ok' as const), timeout]);
        if (r === 'ok') out[host] = Math.round((now() - start) * 10) / 10;
        else ctl.abort();
      } catch {
        // Unreachable: no estimate for this hub.
      } finally {
        timers.clearTimeout(handle);
      }
    }),
  );
  return out;
}

/** The payload with `homing.latencyMs` set (other fields, and other `homing` fields, kept). */
export function withLatencies(payload: JsonObject | undefined, latencies: Record<string, number>): JsonObject {
  const base = payload ?? {};
  const homing = isJsonObject(base.homing) ? base.homing : {};
  return { ...base, homing: { ...homing, latencyMs: { ...latencies } } };
}

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Child processes for benches: the server part and the load part run in separate Node processes, pinned to
 * separate cores when `taskset` exists, with a raised fd limit (`prlimit`, root may raise the hard limit), and talk
 * to the parent over IPC with request/response messages.
 */
export interface ChildOptions {
  /** CPU list for taskset, e.g. '0'. */
  cpus?: string;
  /** RLIMIT_NOFILE for the child (soft = hard). */
  nofile?: number;
  nodeFlags?: string[];
  label: string;
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const HAS_TASKSET = has('taskset');
const HAS_PRLIMIT = has('prlimit');

/** The hard RLIMIT_NOFILE this process may give its children (raising it needs CAP_SYS_RESOURCE). */
export function hardFdLimit(): number {
  const r = spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' });
  const v = r.stdout.trim();
  return v === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(v) || 1024;
}

/** True when prlimit can raise the hard fd limit to `n` here (root with CAP_SYS_RESOURCE). */
export function canRaiseFdLimit(n: number): boolean {
  if (!HAS_PRLIMIT) return false;
  return spawnSync('prlimit', [`--nofile=${n}:${n}`, '--', 'true'], { stdio: 'ignore' }).status === 0;
}

/** The fd limit children get: `wanted` when it can be set, else the hard limit. */
export function childFdLimit(wanted: number): number {
  const hard = hardFdLimit();
  if (wanted <= hard) return wanted;
  return canRaiseFdLimit(wanted) ? wanted : hard;
}

export function cpuCount(): number {
  const r = spawnSync('nproc', [], { encoding: 'utf8' });
  return Number(r.stdout.trim()) || 1;
}

export interface BenchChild {
  child: ChildProcess;
  pinned: string | undefined;
  request<T>(msg: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  /** Messages the child sends on its own (progress). */
  onEvent(fn: (msg: Record<string, unknown>) => void): void;
  stop(): Promise<void>;
}

export function startChild(entry: string, o: ChildOptions): BenchChild {
  const script = fileURLToPath(new URL(entry, import.meta.url));
  const nodeArgs = ['--conditions=homing-source', '--import', 'tsx', ...(o.nodeFlags ?? []), script];
  let cmd = process.execPath;
  let args = nodeArgs;
  if (o.nofile !== undefined && HAS_PRLIMIT) {
    const n = childFdLimit(o.nofile);
    args = [`--nofile=${n}:${n}`, '--', cmd, ...args];
    cmd = 'prlimit';
  }
  const pinned = o.cpus !== undefined && HAS_TASKSET && cpuCount() > 1 ? o.cpus : undefined;
  if (pinned !== undefined) {
    args = ['-c', pinned, cmd, ...args];
    cmd = 'taskset';
  }
  const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let seq = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  const listeners: ((msg: Record<string, unknown>) => void)[] = [];
  child.on('message', (m: Record<string, unknown>) => {
    const id = typeof m.id === 'number' ? m.id : undefined;
    const p = id === undefined ? undefined : pending.get(id);
    if (p && id !== undefined) {
      pending.delete(id);
      clearTimeout(p.timer);
      if (typeof m.error === 'string') p.reject(new Error(`${o.label}: ${m.error}`));
      else p.resolve(m.result);
    } else {
      for (const l of listeners) l(m);
    }
  });
  child.on('error', (e) => {
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`${o.label}: ${e.message}`));
    }
    pending.clear();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', (code, signal) => {
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`${o.label} exited (code ${String(code)}, signal ${String(signal)})`));
    }
    pending.clear();
  });
  return {
    child,
    pinned,
    request<T>(msg: Record<string, unknown>, timeoutMs = 120_000): Promise<T> {
      const id = ++seq;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${o.label}: no answer to ${String(msg.cmd)} within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        child.send({ ...msg, id });
      });
    },
    onEvent(fn) {
      listeners.push(fn);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        // Closing the IPC channel makes the child exit by itself (profiles get written); signals only as a fallback.
        if (child.connected) child.disconnect();
        const term = setTimeout(() => child.kill('SIGTERM'), 5000);
        const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(term);
        clearTimeout(kill);
      }
    },
  };
}

type Handler = (msg: Record<string, unknown>) => Promise<unknown> | unknown;

/** Child side: answers requests from the parent with `handler`. */
export function serveParent(handler: Handler): void {
  process.on('message', (m: Record<string, unknown>) => {
    const id = m.id;
    Promise.resolve()
      .then(() => handler(m))
      .then(
        (result) => process.send?.({ id, result }),
        (e: unknown) => process.send?.({ id, error: e instanceof Error ? e.stack ?? e.message : String(e) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
}

export function emit(msg: Record<string, unknown>): void {
  process.send?.(msg);
}

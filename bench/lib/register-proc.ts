import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Child processes of the register bench: a server child and a load child, pinned to different cores with taskset
 * when it exists, talking to the parent over IPC (request → one reply of the same `type`). Every wait is bounded.
 */
export interface RegisterChild {
  child: ChildProcess;
  pinned: string | undefined;
  request<T>(msg: { type: string } & Record<string, unknown>, timeoutMs: number): Promise<T>;
  stop(): Promise<void>;
}

const HAS_TASKSET = spawnSync('sh', ['-c', 'command -v taskset'], { stdio: 'ignore' }).status === 0;

export function cpuCount(): number {
  const r = spawnSync('nproc', [], { encoding: 'utf8' });
  return Number(r.stdout.trim()) || 1;
}

export function startRegisterChild(entry: string, args: string[], cpus: string | undefined, label: string, nodeFlags: string[] = []): RegisterChild {
  const script = fileURLToPath(new URL(entry, import.meta.url));
  const node = [process.execPath, ...nodeFlags, '--conditions=homing-source', '--import', 'tsx', script, ...args];
  const pin = HAS_TASKSET && cpus !== undefined;
  const [cmd, ...rest] = pin ? ['taskset', '-c', cpus, ...node] : node;
  const child = spawn(cmd!, rest, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiters = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  child.on('message', (m: unknown) => {
    const msg = m as { type?: string; error?: string };
    const w = msg.type === undefined ? undefined : waiters.get(msg.type);
    if (!w) return;
    waiters.delete(msg.type!);
    clearTimeout(w.timer);
    if (msg.error !== undefined) w.reject(new Error(`${label}: ${msg.error}`));
    else w.resolve(msg);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', (code) => {
    for (const [k, w] of waiters) {
      clearTimeout(w.timer);
      w.reject(new Error(`${label} exited (${code}) while waiting for ${k}`));
    }
    waiters.clear();
  });
  return {
    child,
    pinned: pin ? cpus : undefined,
    request<T>(msg: { type: string } & Record<string, unknown>, timeoutMs: number): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(msg.type);
          reject(new Error(`${label}: no answer to ${msg.type} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.set(msg.type, { resolve: resolve as (v: unknown) => void, reject, timer });
        child.send(msg);
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (child.connected) child.send({ type: 'stop' });
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Waits for the first message of a type (the child's `ready`). */
export function firstMessage<T>(c: RegisterChild, type: string, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} within ${timeoutMs} ms`)), timeoutMs);
    const on = (m: unknown) => {
      const msg = m as { type?: string; error?: string };
      if (msg.type !== type) return;
      clearTimeout(timer);
      c.child.off('message', on);
      if (msg.error !== undefined) reject(new Error(msg.error));
      else resolve(msg as T);
    };
    c.child.on('message', on);
    c.child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`child exited (${code}) before ${type}`));
    });
  });
}

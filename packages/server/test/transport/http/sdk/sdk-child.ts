import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface SdkError {
  name: string;
  ctor: string;
  message: string;
  statusCode: number | null;
  responseBody: string | null;
}

export type SdkResult = { ok: true; value: unknown; ms: number } | { ok: false; error: SdkError; ms: number };

interface Reply {
  id?: number;
  ok?: boolean;
  value?: unknown;
  error?: SdkError;
  ms?: number;
  ready?: boolean;
  fatal?: SdkError;
}

/** The azure-iothub SDK in a child process that trusts `caPem` (NODE_EXTRA_CA_CERTS is read at start-up only). */
export class SdkChild {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: SdkResult) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  readonly fatal: SdkError[] = [];
  private stderr = '';

  private constructor(private readonly child: ChildProcess, private readonly dir: string) {
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      this.stderr += s;
    });
    child.on('message', (m: Reply) => {
      if (m.fatal) this.fatal.push(m.fatal);
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      p.resolve(m.ok ? { ok: true, value: m.value, ms: m.ms ?? 0 } : { ok: false, error: m.error as SdkError, ms: m.ms ?? 0 });
    });
    child.on('exit', (code) => {
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(new Error(`SDK child exited with ${String(code)}: ${this.stderr}`));
      }
    });
  }

  static async start(caPem: string): Promise<SdkChild> {
    const dir = mkdtempSync(join(tmpdir(), 'homing-sdk-'));
    const caPath = join(dir, 'ca.pem');
    writeFileSync(caPath, caPem);
    const script = fileURLToPath(new URL('./hub-sdk-child.ts', import.meta.url));
    const child = fork(script, [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, NODE_EXTRA_CA_CERTS: caPath },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    const sdk = new SdkChild(child, dir);
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: Reply) => {
        if (m.ready) {
          child.off('message', onMessage);
          resolve();
        }
      };
      child.on('message', onMessage);
      child.once('exit', (code) => reject(new Error(`SDK child exited with ${String(code)} before it was ready: ${sdk.stderr}`)));
    });
    return sdk;
  }

  /** Runs one SDK operation (see hub-sdk-child.ts); rejects when it does not settle within `timeoutMs`. */
  call(op: string, cs: string, ...args: unknown[]): Promise<SdkResult> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`SDK call ${op} did not settle within 20 s (fatal: ${JSON.stringify(this.fatal)})`));
      }, 20_000);
      this.pending.set(id, { resolve, reject, timer });
      this.child.send({ id, op, cs, args });
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.connected) {
      const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
      this.child.disconnect();
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Asserts success and returns the value. */
export function ok(r: SdkResult): unknown {
  if (!r.ok) throw new Error(`expected success, got ${JSON.stringify(r.error)}`);
  return r.value;
}

/** Asserts failure and returns the error. */
export function failed(r: SdkResult): SdkError {
  if (r.ok) throw new Error(`expected an error, got ${JSON.stringify(r.value)}`);
  return r.error;
}

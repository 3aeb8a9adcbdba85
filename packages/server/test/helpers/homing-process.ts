import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uniqueLoopback } from './ids.ts';

export const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const CLI_SOURCE = join(REPO_ROOT, 'packages/cli/src/run.ts');

export interface ConnectionJson {
  caCertPath: string;
  hubs: { hostName: string; mqttPort: number; httpsPort: number; connectionString: string }[];
  dps: { idScope: string; deviceHost: string; serviceConnectionString: string };
  [k: string]: unknown;
}

export interface HomingProcess {
  child: ChildProcess;
  dataDir: string;
  connection: ConnectionJson;
  stdout: () => string;
  stderr: () => string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** Removes the data directory. */
  cleanup(): void;
}

/** Runs `homing start` from source in a child process, exactly as a user would, and waits until it is ready. */
export async function startHomingProcess(args: string[], opts: { dataDir?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<HomingProcess> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'homing-test-'));
  // Every test server gets its own loopback addresses (ports 443/8883 are fixed by the SDKs).
  const full = [...args];
  if (!full.includes('--dps-host')) full.push('--dps-host', uniqueLoopback());
  if (!full.includes('--hub-hosts')) full.push('--hub-hosts', `${uniqueLoopback()},${uniqueLoopback()}`);
  const child = spawn(process.execPath, ['--conditions=homing-source', '--import', 'tsx', CLI_SOURCE, 'start', '--data-dir', dataDir, ...full], {
    cwd: REPO_ROOT,
    env: { ...process.env, HOMING_LOG_LEVEL: 'warn', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`homing start did not become ready in time.\nstdout:\n${out}\nstderr:\n${err}`)), opts.timeoutMs ?? 60_000);
    child.stdout?.on('data', () => {
      if (out.includes('Homing is running.')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`homing start exited with ${code}.\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
  await ready;
  const path = join(dataDir, 'connection.json');
  if (!existsSync(path)) throw new Error('connection.json missing');
  const connection = JSON.parse(readFileSync(path, 'utf8')) as ConnectionJson;
  return {
    child,
    dataDir,
    connection,
    stdout: () => out,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
    cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
  };
}

export interface ScriptLine {
  step: string;
  ok: boolean;
  error?: string;
  [k: string]: unknown;
}

/** Runs a Node script (plain JS using the official SDKs) with the CA trusted and collects its JSON lines. */
export function runSdkScript(script: string, args: string[], caCertPath: string, timeoutMs = 180_000): Promise<{ lines: ScriptLine[]; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: caCertPath },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`SDK script timed out.\nstdout:\n${out}\nstderr:\n${err}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      const lines = out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as ScriptLine);
      resolve({ lines, stderr: err, code });
    });
  });
}

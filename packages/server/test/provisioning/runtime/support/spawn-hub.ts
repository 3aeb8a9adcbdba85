import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface HubProcess {
  child: ChildProcess;
  port: number;
  hostName: string;
  caPem: string;
  connectionString: string;
  readOnlyConnectionString: string;
  stop(): Promise<void>;
}

const SCRIPT = fileURLToPath(new URL('./hub-process.ts', import.meta.url));

/** Starts support/hub-process.ts in a child process and waits (bounded) for its JSON line. */
export async function spawnHub(hostName: string, timeoutMs = 60_000): Promise<HubProcess> {
  const child = spawn(process.execPath, ['--conditions=homing-source', '--import', 'tsx', SCRIPT, hostName], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const info = await new Promise<Omit<HubProcess, 'child' | 'stop'>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hub process not ready in ${timeoutMs} ms: ${err}`));
    }, timeoutMs);
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(JSON.parse(out.slice(0, nl)) as Omit<HubProcess, 'child' | 'stop'>);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hub process exited with ${code}: ${err}`));
    });
  });
  return {
    ...info,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadStartConfig, silentLogger, startHoming, type RunningHoming } from '@homing/server';
import { main } from '../../src/main.ts';
import { setIo } from '../../src/lib/output.ts';
import { uniqueLoopback } from '../../../server/test/helpers/ids.ts';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

let queue: Promise<unknown> = Promise.resolve();

/**
 * Runs `homing <args>` in this process (main() exactly as bin/homing.js calls it) and captures what it writes.
 * Output goes to a sink (setIo), not process.stdout, which the test runner uses. Runs are serialized.
 */
export function runCli(args: readonly string[], env: Record<string, string | undefined> = {}): Promise<CliRun> {
  const run = async (): Promise<CliRun> => {
    let stdout = '';
    let stderr = '';
    const saved: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(env)) {
      saved[k] = process.env[k];
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    const restore = setIo({ out: (t) => (stdout += t), err: (t) => (stderr += t) });
    try {
      const code = await main(['node', 'homing', ...args]);
      return { code, stdout, stderr };
    } finally {
      restore();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  };
  const p = queue.then(run, run);
  queue = p.catch(() => undefined);
  return p;
}

export interface TestServer {
  run: RunningHoming;
  dataDir: string;
  hubs: [string, string];
  stop(): Promise<void>;
}

/** `homing start` in this process on fresh loopback addresses (ports 443/8883, as the SDKs need), embedded store. */
export async function startTestServer(): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'homing-cli-'));
  const a = uniqueLoopback();
  let b = uniqueLoopback();
  while (b === a) b = uniqueLoopback();
  const config = await loadStartConfig({ dataDir, hubHosts: [a, b], dpsHost: uniqueLoopback(), logLevel: 'silent' });
  const run = await startHoming(config, { logger: silentLogger() });
  return {
    run,
    dataDir,
    hubs: [a, b],
    stop: async () => {
      await run.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

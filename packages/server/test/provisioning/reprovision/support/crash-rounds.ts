import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { moveGroupToHubC, openWorld, setupWorld, type InvariantReport, type WorldSpec } from './move-world.ts';

const WORKER = fileURLToPath(new URL('./move-worker.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../../../../../../', import.meta.url));

export type KillPoint = { step: 'planned' | 'copied' | 'written' | 'removed'; nth: number } | { afterMs: number };

export interface WorkerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: Record<string, unknown> | undefined;
  stderr: string;
}

/** Runs the move worker in a child process (see move-worker.ts) and waits for it to end or be killed. */
export function runWorker(specFile: string, mode: 'move' | 'recover' | 'check' | 'flip', kill?: KillPoint, timeoutMs = 120_000): Promise<WorkerExit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=homing-source', '--import', 'tsx', WORKER, specFile, mode, ...(kill ? [JSON.stringify(kill)] : [])], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`move worker (${mode}) did not end within ${timeoutMs} ms: ${stderr.slice(-2000)}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').filter(Boolean).at(-1);
      resolve({ code, signal, out: line ? (JSON.parse(line) as Record<string, unknown>) : undefined, stderr });
    });
  });
}

/** Provisions the world's devices on hubs A and B, then points the group at hub C. Writes the spec file. */
export async function prepareWorld(spec: WorldSpec, dir: string): Promise<string> {
  const file = join(dir, 'world.json');
  writeFileSync(file, JSON.stringify(spec));
  const w = await openWorld(spec, { nodeId: 'setup' });
  try {
    await setupWorld(w);
    await moveGroupToHubC(w);
  } finally {
    await w.close();
  }
  return file;
}

export interface RoundResult {
  kill: KillPoint;
  killed: boolean;
  resumed: number;
  report: InvariantReport;
}

/**
 * One crash round: a worker moves devices and is SIGKILLed at `kill`; a restarted worker (same node id) resumes the
 * interrupted moves and reports the invariant.
 */
export async function crashRound(specFile: string, kill: KillPoint): Promise<RoundResult> {
  const m = await runWorker(specFile, 'move', kill);
  const killed = m.signal === 'SIGKILL';
  if (!killed && m.code !== 0) throw new Error(`move worker failed (${m.code}): ${m.stderr.slice(-2000)}`);
  const r = await runWorker(specFile, 'recover');
  if (r.code !== 0 || !r.out) throw new Error(`recover worker failed (${r.code}): ${r.stderr.slice(-2000)}`);
  const { resumed, ...report } = r.out as unknown as { resumed: number } & InvariantReport;
  return { kill, killed, resumed, report: report as InvariantReport };
}

/** Whether a report shows every device on exactly one hub, recorded there, with its data. */
export function invariantHolds(r: InvariantReport): boolean {
  return r.lost.length === 0 && r.duplicated.length === 0 && r.misrecorded.length === 0 && r.corrupted.length === 0 && r.pendingMoves === 0;
}

/** Small helpers for the register bench: flags, percentiles, CPU deltas. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
export function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = process.argv[i + 1];
  return v === undefined || v.startsWith('--') ? 'true' : v;
}

export function numberFlag(name: string, dflt: number): number {
  const v = flag(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${v}`);
  return n;
}

/** Percentile of an ascending array (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function median(xs: readonly number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 50);
}

export interface CpuUsage {
  user: number;
  system: number;
}

export function cpuDeltaMicros(a: CpuUsage, b: CpuUsage): number {
  return b.user - a.user + (b.system - a.system);
}

export function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

const CLOCK_TICK_US = (() => {
  try {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const hz = Number(r.stdout.trim());
    return hz > 0 ? 1e6 / hz : 10_000;
  } catch {
    return 10_000;
  }
})();

/** Busy CPU time of the whole machine (all cores), µs, from /proc/stat; undefined where there is no /proc. */
export function machineBusyMicros(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...: busy = everything but idle and iowait.
    const busy = f.reduce((a, b, i) => (i === 3 || i === 4 ? a : a + (Number.isFinite(b) ? b : 0)), 0);
    return busy * CLOCK_TICK_US;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) of another process, µs, from /proc/<pid>/stat; undefined when it is gone. */
export function processCpuMicros(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // After the command: state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(11) stime(12)
    return (Number(f[11]) + Number(f[12])) * CLOCK_TICK_US;
  } catch {
    return undefined;
  }
}

/** CPU used between two snapshots of per-process CPU (pid → µs): processes in both, plus new ones from zero. */
export function processSetDeltaMicros(a: Record<string, number>, b: Record<string, number>): number {
  let sum = 0;
  for (const [pid, v] of Object.entries(b)) sum += Math.max(0, v - (a[pid] ?? 0));
  return sum;
}

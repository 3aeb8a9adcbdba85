/** Small statistics and formatting helpers for bench output. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

export function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export interface CpuSnapshot {
  user: number;
  system: number;
  at: number;
}

/** Server CPU microseconds between two snapshots. */
export function cpuMicros(a: CpuSnapshot, b: CpuSnapshot): number {
  return b.user - a.user + (b.system - a.system);
}

export function cpuSnapshot(): CpuSnapshot {
  const u = process.cpuUsage();
  return { user: u.user, system: u.system, at: performance.now() };
}

export function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number`);
  return v;
}

import { setTimeout as delay } from 'node:timers/promises';
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import type { ConnectionFlags } from '../lib/connection.ts';
import { argumentError, CliError } from '../lib/errors.ts';
import { seg, type ServiceClient } from '../lib/http.ts';
import { printJson, renderObject, renderTable, writeErr, writeOut, type OutputFlags } from '../lib/output.ts';
import { withDps, withServiceConnection } from '../lib/service.ts';

/**
 * `homing fleet`: phased fleet reprovisioning through the provisioning service's admin API (docs/api/fleet.md).
 * The job runs on the server; this command starts it and watches it with a progress bar. Ctrl-C only detaches:
 * `homing fleet status JOB` (or `resume JOB` after a pause) attaches again.
 */

interface FleetFlags extends ConnectionFlags, OutputFlags {
  enrollmentGroup?: string;
  enrollment?: string;
  hub?: string;
  pattern?: string;
  query?: string;
  rate?: number;
  failureThreshold?: string;
  methodName?: string;
  dryRun?: boolean;
  wait?: boolean;
  watch?: boolean;
  top?: number;
}

export interface JobJson {
  id: string;
  state: 'pending' | 'running' | 'paused' | 'completed' | 'cancelled' | 'failed';
  selection: Record<string, string>;
  rate: { perMinute: number; source: string; waveSize: number; waveIntervalMs: number };
  progress: { total: number; done: number; pending: number; inFlight: number; moved: number; unchanged: number; failed: number; skipped: number };
  observedPerMinute: number;
  etaSeconds: number | null;
  pausedReason?: string;
  error?: string;
  [k: string]: unknown;
}

interface PlanJson {
  dryRun: true;
  total: number;
  skipped: number;
  summary: { total: number; move: number; stay: number; unknown: number; fail: number; byHub: Record<string, number> };
  devices: { registrationId: string; deviceId: string; fromHub: string; toHub?: string; outcome: string; reason?: string }[];
  truncated: boolean;
}

/** `600`, `600/min`, `600/m`, `10/s` → devices per minute. */
export function parseRate(v: string): number {
  const m = /^\s*(\d+)\s*(?:\/\s*(min|m|s|sec))?\s*$/i.exec(v);
  if (!m) throw argumentError(`--rate: expected devices per minute like 600 or 600/min (or 10/s), got "${v}"`);
  const n = Number(m[1]) * (m[2] && m[2].toLowerCase().startsWith('s') ? 60 : 1);
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw argumentError(`--rate: from 1 to 1000000 per minute, got "${v}"`);
  return n;
}

/** `10%` → "10%"; `25` → 25 (a count). */
export function parseThreshold(v: string): string | number {
  const s = v.trim();
  if (/^\d+(\.\d+)?%$/.test(s) && Number(s.slice(0, -1)) <= 100) return s;
  if (/^\d+$/.test(s)) return Number(s);
  throw argumentError(`--failure-threshold: a percentage like 10% or a count like 25, got "${v}"`);
}

function parseTop(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 1000) throw argumentError(`--top: from 1 to 1000, got "${v}"`);
  return n;
}

function selection(f: FleetFlags): Record<string, string> {
  const given = [
    ['enrollmentGroupId', f.enrollmentGroup],
    ['registrationId', f.enrollment],
    ['hub', f.hub],
    ['pattern', f.pattern],
    ['query', f.query],
  ].filter((e): e is [string, string] => e[1] !== undefined);
  if (given.length !== 1) throw argumentError('select the devices with exactly one of --enrollment-group, --enrollment, --hub, --pattern or --query');
  const [k, v] = given[0] as [string, string];
  return { [k]: v };
}

function eta(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 60) return `${seconds}s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m}m${String(seconds % 60).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

function summaryLine(j: JobJson): string {
  const p = j.progress;
  return `job ${j.id} ${j.state}${j.pausedReason ? ` (${j.pausedReason})` : ''}: ${p.done}/${p.total} done, moved ${p.moved}, unchanged ${p.unchanged}, failed ${p.failed}, in flight ${p.inFlight}, pending ${p.pending}; rate ${j.rate.perMinute}/min (${j.rate.source}), ${j.observedPerMinute}/min observed, ETA ${eta(j.etaSeconds)}`;
}

const ACTIVE = new Set(['pending', 'running']);

/**
 * Follows a job until it leaves pending/running (or Ctrl-C detaches). TTY: a progress bar on stderr; otherwise a
 * line on stderr whenever progress changes (at most every 5 s). Returns the last state seen and whether the user
 * detached.
 */
export async function watchJob(client: ServiceClient, id: string, opts: { quiet?: boolean; pollMs?: number } = {}): Promise<{ job: JobJson; detached: boolean }> {
  const abort = new AbortController();
  const onSigint = (): void => abort.abort();
  process.once('SIGINT', onSigint);
  const tty = !opts.quiet && process.stderr.isTTY === true;
  const bar = tty
    ? new cliProgress.SingleBar(
        {
          format: ' {bar} {percentage}% | {value}/{total} | {observed}/min (limit {limit}/min) | ETA {etaText} | moved {moved} unchanged {unchanged} failed {failed} | {state}',
          stream: process.stderr,
          hideCursor: true,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let job = (await client.call<JobJson>('GET', `/homing/fleet/jobs/${seg(id)}`)).body;
  const fields = (j: JobJson) => ({ observed: j.observedPerMinute, limit: j.rate.perMinute, etaText: eta(j.etaSeconds), moved: j.progress.moved, unchanged: j.progress.unchanged, failed: j.progress.failed, state: j.state });
  bar?.start(job.progress.total, job.progress.done, fields(job));
  let lastLine = '';
  let lastLineAt = 0;
  try {
    while (ACTIVE.has(job.state)) {
      try {
        await delay(opts.pollMs ?? 500, undefined, { signal: abort.signal });
      } catch {
        break;
      }
      job = (await client.call<JobJson>('GET', `/homing/fleet/jobs/${seg(id)}`)).body;
      if (bar) bar.update(job.progress.done, fields(job));
      else if (!opts.quiet) {
        const line = summaryLine(job);
        if (line !== lastLine && (Date.now() - lastLineAt >= 5000 || !ACTIVE.has(job.state))) {
          writeErr(line);
          lastLine = line;
          lastLineAt = Date.now();
        }
      }
    }
  } finally {
    process.removeListener('SIGINT', onSigint);
    bar?.stop();
  }
  return { job, detached: abort.signal.aborted };
}

/** The job as JSON (--json) or its summary line. */
function printJob(f: FleetFlags, job: JobJson): void {
  if (f.json) printJson(job);
  else writeOut(summaryLine(job));
}

/** Ends a watch: the summary (or JSON), and an error exit unless the job completed. */
function conclude(f: FleetFlags, job: JobJson, detached: boolean): void {
  printJob(f, job);
  if (detached) {
    writeErr(`detached: job ${job.id} keeps running on the server; \`homing fleet status ${job.id}\` attaches again`);
    return;
  }
  if (job.state === 'paused' && job.pausedReason === 'failureThreshold') {
    throw new CliError('FailureThresholdPassed', `job ${job.id} paused: ${job.progress.failed} devices failed; see \`homing fleet status ${job.id} --failed\`, then \`homing fleet resume ${job.id}\``, 3);
  }
  if (job.state === 'failed') throw new CliError('JobFailed', `job ${job.id} failed: ${job.error ?? 'unknown error'}`);
  if (job.state === 'cancelled') throw new CliError('JobCancelled', `job ${job.id} was cancelled`);
}

function printPlan(f: FleetFlags, plan: PlanJson): void {
  if (f.json) {
    printJson(plan);
    return;
  }
  const s = plan.summary;
  writeOut(`dry run: ${plan.total} devices: ${s.move} would move, ${s.stay} stay, ${s.unknown} unknown, ${s.fail} would fail${plan.skipped ? ` (${plan.skipped} skipped: not assigned)` : ''}`);
  for (const [hub, n] of Object.entries(s.byHub)) writeOut(`  → ${hub}: ${n}`);
  const rows = plan.devices.slice(0, f.top ?? 20).map((d) => [d.registrationId, d.fromHub, d.toHub ?? '-', d.outcome, d.reason ?? '']);
  if (rows.length > 0) writeOut(renderTable(['REGISTRATION ID', 'FROM', 'TO', 'OUTCOME', 'WHY'], rows));
  if (plan.devices.length > rows.length) writeOut(`(${plan.devices.length - rows.length} more; --top N or --json to see them)`);
}

const common = (cmd: Command): Command => withServiceConnection(cmd, 'dps', 'JSON output (no progress bar)');

/** `homing fleet pause|cancel JOB`: the action, then the job. */
function jobActionCommand(action: 'pause' | 'cancel', description: string): Command {
  return common(new Command(action).description(description))
    .argument('<job>', 'job id')
    .action(async (id: string, f: FleetFlags) => {
      const job = await withDps(f, async (c) => (await c.call<JobJson>('POST', `/homing/fleet/jobs/${seg(id)}/${action}`)).body);
      printJob(f, job);
    });
}

/** `homing fleet`: phased fleet reprovisioning jobs. */
export function fleetCommand(): Command {
  const cmd = new Command('fleet').description('phased fleet reprovisioning: re-register devices in waves under the registration quota');

  cmd.addCommand(
    common(new Command('reprovision').description('reprovision a selection of devices in waves (invokes their reprovision direct method)'))
      .option('--enrollment-group <id>', 'devices registered through this enrollment group')
      .option('--enrollment <registrationId>', 'the device of this individual enrollment')
      .option('--hub <host>', 'devices currently assigned to this hub')
      .option('--pattern <glob>', "registration ids matching a glob, e.g. 'sn-*'")
      .option('--query <sql>', 'devices whose hub twin matches, e.g. "SELECT * FROM devices WHERE tags.site = \'b\'"')
      .addOption(new Option('--rate <n>', "devices per minute, e.g. 600 or 600/min (default: the instance's registration quota)").argParser(parseRate))
      .addOption(new Option('--failure-threshold <t>', 'pause when failures pass this: 10% (of processed devices) or a count (default 10%)').argParser(parseThreshold))
      .option('--method-name <name>', 'the reprovision direct method (default homing.reprovision)')
      .option('--dry-run', 'show which devices would move where under the current allocation; changes nothing')
      .addOption(new Option('--top <n>', 'dry run: devices listed (default 20)').argParser(parseTop))
      .option('--no-wait', 'start the job and return at once (prints the job)')
      .action(async (f: FleetFlags) => {
        const body: Record<string, unknown> = { selection: selection(f) };
        if (f.rate !== undefined) body.rate = f.rate;
        if (f.failureThreshold !== undefined) body.failureThreshold = f.failureThreshold;
        if (f.methodName !== undefined) body.methodName = f.methodName;
        if (f.dryRun) body.dryRun = true;
        await withDps(f, async (c) => {
          const res = await c.call<JobJson | PlanJson>('POST', '/homing/fleet/jobs', { body });
          if (f.dryRun) return printPlan(f, res.body as PlanJson);
          const job = res.body as JobJson;
          if (f.wait === false) {
            if (f.json) printJson(job);
            else writeOut(`started job ${job.id}: ${job.progress.total} devices at ${job.rate.perMinute}/min (${job.rate.waveSize} every ${job.rate.waveIntervalMs / 1000} s)`);
            return;
          }
          if (!f.json) writeErr(`job ${job.id}: ${job.progress.total} devices at ${job.rate.perMinute}/min (${job.rate.waveSize} every ${job.rate.waveIntervalMs / 1000} s); Ctrl-C detaches`);
          const w = await watchJob(c, job.id, { quiet: f.json === true });
          conclude(f, w.job, w.detached);
        });
      }),
  );

  cmd.addCommand(
    common(new Command('status').description('show a job; attaches to a running one (Ctrl-C detaches)'))
      .argument('<job>', 'job id')
      .option('--no-watch', 'print the job once, do not attach')
      .option('--failed', 'also list the devices that failed')
      .action(async (id: string, f: FleetFlags & { failed?: boolean }) => {
        await withDps(f, async (c) => {
          let job = (await c.call<JobJson>('GET', `/homing/fleet/jobs/${seg(id)}`)).body;
          let detached = false;
          if (f.watch !== false && !f.json && ACTIVE.has(job.state)) ({ job, detached } = await watchJob(c, id));
          if (f.json) printJson(job);
          else writeOut(f.watch === false ? renderObject(job) : summaryLine(job));
          if (detached) writeErr(`detached: job ${id} keeps running on the server`);
          if (f.failed) {
            const failed = (await c.call<{ registrationId: string; fromHub: string; error?: string }[]>('GET', `/homing/fleet/jobs/${seg(id)}/devices?state=failed&top=1000`)).body;
            if (f.json) printJson(failed);
            else if (failed.length === 0) writeOut('(no failed devices)');
            else writeOut(renderTable(['REGISTRATION ID', 'HUB', 'ERROR'], failed.map((d) => [d.registrationId, d.fromHub, d.error ?? ''])));
          }
        });
      }),
  );

  cmd.addCommand(
    common(new Command('list').description('list the fleet jobs, newest first'))
      .addOption(new Option('--top <n>', 'at most this many (default 100)').argParser(parseTop))
      .action(async (f: FleetFlags) => {
        const jobs = await withDps(f, async (c) => (await c.call<JobJson[]>('GET', `/homing/fleet/jobs${f.top ? `?top=${f.top}` : ''}`)).body);
        if (f.json) return printJson(jobs);
        if (jobs.length === 0) return writeOut('(no fleet jobs)');
        writeOut(renderTable(['JOB', 'STATE', 'SELECTION', 'DONE', 'MOVED', 'UNCHANGED', 'FAILED', 'RATE'], jobs.map((j) => [j.id, j.state, Object.entries(j.selection).map(([k, v]) => `${k}=${v}`).join(' '), `${j.progress.done}/${j.progress.total}`, j.progress.moved, j.progress.unchanged, j.progress.failed, `${j.rate.perMinute}/min`])));
      }),
  );

  cmd.addCommand(jobActionCommand('pause', 'pause a job (devices in flight finish; no new wave starts)'));

  cmd.addCommand(
    common(new Command('resume').description('resume a paused job and attach to it (Ctrl-C detaches)'))
      .argument('<job>', 'job id')
      .option('--no-wait', 'resume and return at once')
      .action(async (id: string, f: FleetFlags) => {
        await withDps(f, async (c) => {
          const job = (await c.call<JobJson>('POST', `/homing/fleet/jobs/${seg(id)}/resume`)).body;
          if (f.wait === false) return printJob(f, job);
          const w = await watchJob(c, id, { quiet: f.json === true });
          conclude(f, w.job, w.detached);
        });
      }),
  );

  cmd.addCommand(jobActionCommand('cancel', 'cancel a job (pending devices are left as they are)'));

  return cmd;
}

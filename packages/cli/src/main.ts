import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { caCommand } from './commands/ca.ts';
import { deviceCommand } from './commands/device.ts';
import { enrollmentCommand } from './commands/enrollment.ts';
import { fleetCommand } from './commands/fleet.ts';
import { hubCommand } from './commands/hub.ts';
import { registrationCommand } from './commands/registration.ts';
import { simulateCommand } from './commands/simulate.ts';
import { tokenCommands } from './commands/token.ts';
import { startCommand } from './commands/start.ts';
import { CliError, scrubSecrets } from './lib/errors.ts';
import { writeErr } from './lib/output.ts';

export function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number from 0 to 65535');
  return n;
}

/** Every command exits through main (no process.exit) and reports usage errors as one line. */
function configureTree(cmd: Command): void {
  cmd.exitOverride();
  cmd.configureOutput({ outputError: () => undefined });
  for (const sub of cmd.commands) configureTree(sub);
}

export function buildProgram(): Command {
  const program = new Command('homing')
    .description('Homing: self-hosted IoT device provisioning (DPS-compatible) and IoT hubs')
    .version('0.1.0');
  program.addCommand(startCommand());
  program.addCommand(enrollmentCommand('individual'));
  program.addCommand(enrollmentCommand('group'));
  program.addCommand(hubCommand());
  program.addCommand(registrationCommand());
  program.addCommand(caCommand());
  program.addCommand(deviceCommand());
  program.addCommand(fleetCommand());
  program.addCommand(simulateCommand());
  program.addCommand(tokenCommands());
  configureTree(program);
  return program;
}

/** `homing: <code>: <message>`; commander codes lose their `commander.` prefix and `error: `. */
export function formatError(e: unknown): { line: string; exitCode: number } {
  if (e instanceof CliError) return { line: `homing: ${e.code}: ${scrubSecrets(e.message)}`, exitCode: e.exitCode };
  if (e instanceof CommanderError) {
    const code = e.code.replace(/^commander\./, '');
    const msg = e.message.replace(/^error: /, '');
    return { line: `homing: ${code}: ${scrubSecrets(msg)} (see --help)`, exitCode: e.exitCode === 0 ? 2 : e.exitCode };
  }
  const err = e as { code?: unknown; message?: unknown; name?: unknown };
  const code = typeof err.code === 'string' ? err.code : typeof err.name === 'string' ? err.name : 'Error';
  const msg = typeof err.message === 'string' ? err.message : String(e);
  return { line: `homing: ${code}: ${scrubSecrets(msg)}`, exitCode: 1 };
}

/** Runs the CLI; returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError && (e.code === 'commander.helpDisplayed' || e.code === 'commander.version')) return 0;
    if (e instanceof CommanderError && e.code === 'commander.help') return e.exitCode;
    if (e instanceof CommanderError && e.code === 'commander.executeSubCommandAsync') return e.exitCode;
    const { line, exitCode } = formatError(e);
    writeErr(`${line}\n`);
    return exitCode;
  }
}

import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { startCommand } from './commands/start.ts';

export function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number from 0 to 65535');
  return n;
}

export function buildProgram(): Command {
  const program = new Command('homing')
    .description('Homing: self-hosted IoT device provisioning (DPS-compatible) and IoT hubs')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  program.addCommand(startCommand());
  return program;
}

/** Runs the CLI; returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv]);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`homing: ${msg}\n`);
    return 1;
  }
}

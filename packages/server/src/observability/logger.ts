import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Paths whose values are secrets. pino replaces them before a line is written, so keys, SAS tokens and private keys
 * never reach a log even when an object holding them is logged by mistake.
 */
export const REDACT_PATHS = [
  'password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'req.headers.authorization',
  'primaryKey', 'secondaryKey', '*.primaryKey', '*.secondaryKey', '*.*.primaryKey', '*.*.secondaryKey',
  'symmetricKey', '*.symmetricKey', 'privateKey', '*.privateKey', 'key', '*.key', 'sas', '*.sas', 'token', '*.token',
  'connectionString', '*.connectionString', 'sharedAccessKey', '*.sharedAccessKey', 'signingSecret', '*.signingSecret',
  'credentials', '*.credentials',
];

export function createLogger(opts: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const options: LoggerOptions = {
    level: opts.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'homing' },
  };
  return opts.destination ? pino(options, opts.destination as unknown as pino.DestinationStream) : pino(options);
}

/** A logger that writes nothing, for tests and benches. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

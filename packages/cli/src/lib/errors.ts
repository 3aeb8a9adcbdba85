/**
 * The CLI's error: a code and a one-line message, printed as `homing: <code>: <message>` with a non-zero exit.
 * Messages never carry keys, tokens or connection strings.
 */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** An argument the user gave is wrong (exit code 2, as for commander's usage errors). */
export function argumentError(message: string): CliError {
  return new CliError('ArgumentInvalid', message, 2);
}

/** Removes anything that looks like a secret from a message (defence in depth for server or library texts). */
export function scrubSecrets(text: string): string {
  return text
    .replace(/SharedAccessKey=[^;\s"]+/gi, 'SharedAccessKey=***')
    .replace(/SharedAccessSignature\s+[^\s"]+/gi, 'SharedAccessSignature ***')
    .replace(/sig=[^&\s"]+/gi, 'sig=***')
    .replace(/\r?\n/g, ' ');
}

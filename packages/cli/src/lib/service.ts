import type { Command } from 'commander';
import { resolveDpsTarget, withConnectionOptions, type ConnectionFlags } from './connection.ts';
import { ServiceClient } from './http.ts';

/**
 * Adds the options every service command has: the connection options of the `kind` service (withConnectionOptions:
 * --connection-string, --data-dir, --ca-cert, --port, and --hub-name for hubs) and --json.
 */
export function withServiceConnection(cmd: Command, kind: 'dps' | 'hub' = 'dps', jsonHelp = 'JSON output'): Command {
  return withConnectionOptions(cmd, kind).option('--json', jsonHelp);
}

/** Runs `fn` with a client of the provisioning service API the connection flags name, and closes the client after. */
export async function withDps<T>(f: ConnectionFlags, fn: (c: ServiceClient) => Promise<T>): Promise<T> {
  const client = new ServiceClient(resolveDpsTarget(f), 'dps');
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

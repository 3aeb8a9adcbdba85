import { Command, InvalidArgumentError, Option } from 'commander';
import { buildSas, strictEncode } from '@homing/device';
import { resolveDpsTarget, resolveHubTarget, withConnectionOptions, type ConnectionFlags, type ServiceTarget } from '../lib/connection.ts';
import { printObject, writeOut, type OutputFlags } from '../lib/output.ts';

interface TokenFlags extends ConnectionFlags, OutputFlags {
  duration: number;
}

function parseDuration(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 60 || n > 365 * 24 * 3600) throw new InvalidArgumentError('expected seconds from 60 to 31536000');
  return n;
}

/** A SAS token of the connection's policy (sr = the service host name), valid for `duration` seconds. */
export function mintToken(target: ServiceTarget, durationSeconds: number, nowMs = Date.now()): { token: string; expiresUtc: string; policy: string; hostName: string } {
  const expiry = Math.floor(nowMs / 1000) + durationSeconds;
  const token = buildSas({ sr: strictEncode(target.hostName), keyBase64: target.key, keyName: target.keyName, expirySeconds: expiry });
  return { token, expiresUtc: new Date(expiry * 1000).toISOString(), policy: target.keyName, hostName: target.hostName };
}

function tokenCommand(kind: 'dps' | 'hub'): Command {
  const cmd = new Command(kind)
    .description(kind === 'dps' ? 'a token for the provisioning service API (and the web portal\'s "token" sign-in)' : 'a token for a hub service API')
    .addOption(new Option('--duration <seconds>', 'how long the token is valid').argParser(parseDuration).default(3600))
    .option('--json', 'JSON output ({token, expiresUtc, policy, hostName})')
    .action((f: TokenFlags) => {
      const target = kind === 'dps' ? resolveDpsTarget(f) : resolveHubTarget(f);
      const t = mintToken(target, f.duration);
      if (f.json) printObject(f, t);
      else writeOut(t.token);
    });
  return withConnectionOptions(cmd, kind);
}

/** `homing token dps|hub`: mints a shared access signature from the connection's policy key (az iot ... generate-sas-token). */
export function tokenCommands(): Command {
  return new Command('token')
    .description('mint a shared access signature (SAS) token from a policy key, e.g. for the web portal or curl')
    .addCommand(tokenCommand('dps'))
    .addCommand(tokenCommand('hub'));
}

import { Command, Option } from 'commander';
import { resolveHubTargets, type ConnectionFlags, type ServiceTarget } from '../lib/connection.ts';
import { CliError } from '../lib/errors.ts';
import { seg, ServiceClient } from '../lib/http.ts';
import { printList, printObject, type OutputFlags } from '../lib/output.ts';
import { withServiceConnection } from '../lib/service.ts';
import { maskKeys, parseJsonObject, parseTop } from './enrollment.ts';

type Json = Record<string, unknown>;

interface DeviceFlags extends ConnectionFlags, OutputFlags {
  deviceId: string;
  top?: number;
  showKeys?: boolean;
  tags?: string;
  desired?: string;
  etag?: string;
}

const common = (cmd: Command): Command => withServiceConnection(cmd, 'hub');

/** Without a connection string or --hub-name, commands look at every hub of connection.json. */
function targets(f: DeviceFlags): ServiceTarget[] {
  const explicit = f.connectionString !== undefined || f.hubName !== undefined || process.env.HOMING_HUB_CONNECTION_STRING !== undefined;
  return resolveHubTargets(f, process.env, !explicit);
}

/** Runs `fn` on each hub until one has the device (404 DeviceNotFound moves on). */
async function onHubWithDevice<T>(f: DeviceFlags, fn: (c: ServiceClient) => Promise<T>): Promise<{ hub: string; value: T }> {
  let notFound: CliError | undefined;
  for (const t of targets(f)) {
    const client = new ServiceClient(t, 'hub');
    try {
      return { hub: t.hostName, value: await fn(client) };
    } catch (e) {
      if (e instanceof CliError && e.code === 'DeviceNotFound') {
        notFound = e;
        continue;
      }
      throw e;
    } finally {
      client.close();
    }
  }
  throw notFound ?? new CliError('DeviceNotFound', `device ${f.deviceId} not found`);
}

/** `homing device`: devices and twins through the hub service API. */
export function deviceCommand(): Command {
  const cmd = new Command('device').description('devices on the hubs, through the hub service API (az iot hub device-identity / device-twin)');

  cmd.addCommand(
    common(new Command('list').description('list devices (every hub of connection.json unless --hub-name or a connection string)'))
      .addOption(new Option('--top <n>', 'at most this many per hub (max 1000)').argParser(parseTop))
      .action(async (f: DeviceFlags) => {
        const rows: Json[] = [];
        for (const t of targets(f)) {
          const client = new ServiceClient(t, 'hub');
          try {
            const res = await client.call<Json[]>('GET', `/devices?top=${Math.min(f.top ?? 1000, 1000)}`);
            for (const d of Array.isArray(res.body) ? res.body : []) rows.push({ hub: t.hostName, ...d });
          } finally {
            client.close();
          }
        }
        printList(
          f,
          maskKeys(rows, false),
          ['DEVICE ID', 'HUB', 'STATUS', 'CONNECTION', 'AUTH', 'LAST ACTIVITY'],
          (d: Json) => [d.deviceId, d.hub, d.status, d.connectionState, (d.authentication as Json | undefined)?.type, d.lastActivityTime],
          'no devices',
        );
      }),
  );

  cmd.addCommand(
    common(new Command('show').description('show a device identity'))
      .requiredOption('--device-id <id>', 'device id')
      .option('--show-keys', 'show the device keys')
      .action(async (f: DeviceFlags) => {
        const { hub, value } = await onHubWithDevice(f, (c) => c.call<Json>('GET', `/devices/${seg(f.deviceId)}`));
        printObject(f, maskKeys({ hub, ...value.body }, f.showKeys));
      }),
  );

  cmd.addCommand(
    common(new Command('twin').description('show a device twin; with --tags/--desired, patch it first (merge patch, null deletes)'))
      .requiredOption('--device-id <id>', 'device id')
      .option('--tags <json>', 'tags to merge, a JSON object')
      .option('--desired <json>', 'desired properties to merge, a JSON object')
      .option('--etag <etag>', 'patch only if the twin still has this etag')
      .action(async (f: DeviceFlags) => {
        const patch: Json = {};
        if (f.tags !== undefined) patch.tags = parseJsonObject(f.tags, '--tags');
        if (f.desired !== undefined) patch.properties = { desired: parseJsonObject(f.desired, '--desired') };
        const { hub, value } = await onHubWithDevice(f, async (c) => {
          if (Object.keys(patch).length > 0) return c.call<Json>('PATCH', `/twins/${seg(f.deviceId)}`, { body: patch, headers: { 'if-match': f.etag ?? '*' } });
          return c.call<Json>('GET', `/twins/${seg(f.deviceId)}`);
        });
        printObject(f, f.json ? value.body : { hub, ...value.body });
      }),
  );
  return cmd;
}

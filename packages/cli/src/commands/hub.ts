import { request } from 'node:https';
import { Command, Option } from 'commander';
import { parseServiceConnectionString, readConnectionFile, resolveHubTargets, withConnectionOptions, type ConnectionFlags } from '../lib/connection.ts';
import { argumentError, CliError } from '../lib/errors.ts';
import { networkError, seg, serviceError, ServiceClient } from '../lib/http.ts';
import { printDone, printList, printObject, writeErr, writeOut, type OutputFlags } from '../lib/output.ts';
import { withDps, withServiceConnection } from '../lib/service.ts';
import { parseBool } from './enrollment.ts';

type Json = Record<string, unknown>;

interface HubFlags extends ConnectionFlags, OutputFlags {
  hubHostName?: string;
  hubConnectionString?: string;
  location?: string;
  allocationWeight?: number;
  applyAllocationPolicy?: boolean;
}

interface MonitorFlags extends ConnectionFlags, OutputFlags {
  deviceId?: string;
  since?: number;
  count?: number;
  timeout?: number;
  properties?: boolean;
}

function parseWeight(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < 1 || n > 1000) throw argumentError(`--allocation-weight: expected an integer from 1 to 1000, got "${v}"`);
  return n;
}

function parseNonNegative(option: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw argumentError(`${option}: expected a non-negative number, got "${v}"`);
    return n;
  };
}

function hubName(f: HubFlags): string {
  const name = f.hubHostName ?? (f.hubConnectionString ? parseServiceConnectionString(f.hubConnectionString, 'hub').hostName : undefined);
  if (!name) throw argumentError('give --hub-host-name (or --hub-connection-string)');
  return name;
}

function linkOptions(cmd: Command): Command {
  return cmd
    .option('--location <name>', 'location used by geoLatency allocation (default local)')
    .addOption(new Option('--allocation-weight <n>', 'weight for hashed allocation, 1-1000 (default 1)').argParser(parseWeight))
    .addOption(new Option('--apply-allocation-policy <bool>', 'take part in hashed/geoLatency allocation (default true)').argParser(parseBool));
}

const LINKED_HUB_HEADERS = ['NAME', 'LOCATION', 'WEIGHT', 'APPLY ALLOCATION POLICY'];
const linkedHubRow = (h: Json): unknown[] => [h.name, h.location, h.allocationWeight, h.applyAllocationPolicy];

/** `homing hub`: linked hubs of the provisioning service (admin API), and `hub monitor` for live telemetry. */
export function hubCommand(): Command {
  const cmd = new Command('hub').description('hubs linked to the provisioning service (az iot dps linked-hub), and live telemetry');

  cmd.addCommand(
    linkOptions(withServiceConnection(new Command('link').description('link a hub to the provisioning service')))
      .option('--hub-host-name <host>', 'host name of the hub (default: from --hub-connection-string)')
      .option('--hub-connection-string <cs>', 'connection string of a hub policy with RegistryWrite and ServiceConnect (default: the hub\u2019s entry in connection.json)')
      .action(async (f: HubFlags) => {
        let cs = f.hubConnectionString;
        if (cs === undefined) {
          const name = f.hubHostName;
          if (!name) throw argumentError('give --hub-connection-string or --hub-host-name');
          const entry = readConnectionFile(f.dataDir)?.hubs?.find((h) => h.hostName.toLowerCase() === name.toLowerCase());
          if (!entry?.connectionString) throw argumentError(`--hub-connection-string is needed: hub "${name}" is not in connection.json`);
          cs = entry.connectionString;
        }
        const creds = parseServiceConnectionString(cs, 'hub');
        const name = f.hubHostName ?? creds.hostName;
        const body: Json = { connectionString: cs };
        if (f.location !== undefined) body.location = f.location;
        if (f.allocationWeight !== undefined) body.allocationWeight = f.allocationWeight;
        if (f.applyAllocationPolicy !== undefined) body.applyAllocationPolicy = f.applyAllocationPolicy;
        const res = await withDps(f, (c) => c.call<Json>('PUT', `/homing/linkedHubs/${seg(name)}`, { body }));
        printObject(f, res.body);
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('unlink').description('unlink a hub (enrollments that name it are left unchanged)'))
      .requiredOption('--hub-host-name <host>', 'host name of the linked hub')
      .action(async (f: HubFlags) => {
        const name = hubName(f);
        await withDps(f, (c) => c.call('DELETE', `/homing/linkedHubs/${seg(name)}`));
        printDone(f, `unlinked hub ${name}`, { unlinked: name });
      }),
  );

  cmd.addCommand(
    linkOptions(withServiceConnection(new Command('update').description('change a linked hub (weight, allocation, location, connection string)')))
      .requiredOption('--hub-host-name <host>', 'host name of the linked hub')
      .option('--hub-connection-string <cs>', 'new connection string of the hub policy')
      .action(async (f: HubFlags) => {
        const name = hubName(f);
        const body: Json = {};
        if (f.hubConnectionString !== undefined) {
          parseServiceConnectionString(f.hubConnectionString, 'hub');
          body.connectionString = f.hubConnectionString;
        }
        if (f.location !== undefined) body.location = f.location;
        if (f.allocationWeight !== undefined) body.allocationWeight = f.allocationWeight;
        if (f.applyAllocationPolicy !== undefined) body.applyAllocationPolicy = f.applyAllocationPolicy;
        if (Object.keys(body).length === 0) throw argumentError('nothing to update: give --allocation-weight, --apply-allocation-policy, --location or --hub-connection-string');
        const res = await withDps(f, (c) => c.call<Json>('PATCH', `/homing/linkedHubs/${seg(name)}`, { body }));
        printObject(f, res.body);
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('list').description('list the linked hubs')).action(async (f: HubFlags) => {
      const res = await withDps(f, (c) => c.call<Json[]>('GET', '/homing/linkedHubs'));
      printList(f, Array.isArray(res.body) ? res.body : [], LINKED_HUB_HEADERS, linkedHubRow, 'no linked hubs');
    }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('show').description('show one linked hub'))
      .requiredOption('--hub-host-name <host>', 'host name of the linked hub')
      .action(async (f: HubFlags) => {
        const name = hubName(f);
        const res = await withDps(f, (c) => c.call<Json>('GET', `/homing/linkedHubs/${seg(name)}`));
        printObject(f, res.body);
      }),
  );

  cmd.addCommand(monitorCommand());
  return cmd;
}

interface TelemetryEvent {
  seq: number;
  hubId: string;
  deviceId: string;
  receivedAt: string;
  properties: Record<string, string>;
  systemProperties: Record<string, string>;
  bodyEncoding: 'utf8' | 'base64';
  body: string;
}

function formatEvent(e: TelemetryEvent, withProps: boolean): string {
  const props = withProps && Object.keys(e.properties).length > 0 ? `  ${JSON.stringify(e.properties)}` : '';
  return `${e.receivedAt} ${e.hubId} ${e.deviceId}: ${e.bodyEncoding === 'utf8' ? e.body : `(base64) ${e.body}`}${props}`;
}

/**
 * `homing hub monitor`: reads the hubs' Server-Sent Events telemetry feed (`GET /homing/telemetry/stream`,
 * ServiceConnect) and prints each message. Without a connection string or --hub-name it follows every hub of
 * connection.json. Stops after --count messages, after --timeout seconds, or on Ctrl-C.
 */
function monitorCommand(): Command {
  return withConnectionOptions(new Command('monitor').description('print live telemetry of the hub\u2019s devices (az iot hub monitor-events)'), 'hub')
    .option('--device-id <id>', 'only this device')
    .addOption(new Option('--since <seq>', 'start with the recent messages after this sequence number (0: all recent ones)').argParser(parseNonNegative('--since')))
    .addOption(new Option('--count <n>', 'stop after this many messages').argParser(parseNonNegative('--count')))
    .addOption(new Option('--timeout <s>', 'stop after this many seconds (0: never)').argParser(parseNonNegative('--timeout')))
    .option('--properties', 'show application properties')
    .option('--json', 'one JSON object per message (JSON lines)')
    .action(async (f: MonitorFlags) => {
      const explicitHub = f.connectionString !== undefined || f.hubName !== undefined || process.env.HOMING_HUB_CONNECTION_STRING !== undefined;
      const targets = resolveHubTargets(f, process.env, !explicitHub);
      const clients = targets.map((t) => new ServiceClient(t, 'hub'));
      const controller = new AbortController();
      let received = 0;
      let timer: NodeJS.Timeout | undefined;
      const onSignal = (): void => controller.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      if (f.timeout !== undefined && f.timeout > 0) timer = setTimeout(() => controller.abort(), f.timeout * 1000);
      if (!f.json) writeErr(`monitoring telemetry of ${targets.map((t) => t.hostName).join(', ')} (Ctrl-C to stop)\n`);
      const onEvent = (e: TelemetryEvent): void => {
        if (controller.signal.aborted) return;
        received++;
        writeOut(f.json ? JSON.stringify(e) : formatEvent(e, f.properties === true));
        if (f.count !== undefined && received >= f.count) controller.abort();
      };
      try {
        await Promise.all(clients.map((c) => followStream(c, f, controller.signal, onEvent)));
      } finally {
        if (timer) clearTimeout(timer);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        for (const c of clients) c.close();
      }
    });
}

/** Follows one hub's SSE stream until the signal fires; reconnects with Last-Event-ID when the server ends it. */
async function followStream(client: ServiceClient, f: MonitorFlags, signal: AbortSignal, onEvent: (e: TelemetryEvent) => void): Promise<void> {
  let lastId: string | undefined = f.since === undefined ? undefined : String(Math.floor(f.since));
  let failures = 0;
  while (!signal.aborted) {
    const query = f.deviceId === undefined ? '' : `?deviceId=${encodeURIComponent(f.deviceId)}`;
    try {
      await new Promise<void>((resolvePromise, reject) => {
        const headers: Record<string, string> = { accept: 'text/event-stream' };
        if (lastId !== undefined) headers['last-event-id'] = lastId;
        const req = request(client.requestOptions('GET', `/homing/telemetry/stream${query}`, headers), (res) => {
          if (res.statusCode !== 200) {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => {
              let body: unknown = text;
              try {
                body = JSON.parse(text) as unknown;
              } catch {
                /* not JSON */
              }
              reject(serviceError(res.statusCode ?? 0, body, 'hub'));
            });
            return;
          }
          failures = 0;
          res.setEncoding('utf8');
          let buf = '';
          res.on('data', (chunk: string) => {
            buf += chunk;
            let idx: number;
            while ((idx = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, idx);
              buf = buf.slice(idx + 2);
              let data = '';
              let id: string | undefined;
              for (const line of block.split('\n')) {
                if (line.startsWith('data:')) data += line.slice(5).trimStart();
                else if (line.startsWith('id:')) id = line.slice(3).trim();
              }
              if (id !== undefined) lastId = id;
              if (data) onEvent(JSON.parse(data) as TelemetryEvent);
            }
          });
          res.on('end', resolvePromise);
          res.on('error', reject);
        });
        const abort = (): void => {
          req.destroy();
          resolvePromise();
        };
        signal.addEventListener('abort', abort, { once: true });
        req.on('close', () => signal.removeEventListener('abort', abort));
        req.on('error', (e) => (signal.aborted ? resolvePromise() : reject(networkError(e, client.target))));
        req.end();
      });
    } catch (e) {
      if (e instanceof CliError && /^(40\d|IotHubUnauthorizedAccess|ArgumentInvalid)/.test(e.code)) throw e;
      failures++;
      if (failures > 5) throw e;
    }
    if (signal.aborted) return;
    // The server ended the stream (restart): reconnect after a short pause, resuming after the last event seen.
    await new Promise<void>((r) => {
      const t = setTimeout(r, Math.min(30_000, 1000 * 2 ** failures));
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        r();
      }, { once: true });
    });
  }
}

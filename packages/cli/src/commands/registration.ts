import { Command, Option } from 'commander';
import type { ConnectionFlags } from '../lib/connection.ts';
import { argumentError } from '../lib/errors.ts';
import { queryAll, seg } from '../lib/http.ts';
import { printDone, printList, printObject, type OutputFlags } from '../lib/output.ts';
import { withDps, withServiceConnection } from '../lib/service.ts';
import { parseTop } from './enrollment.ts';

type Json = Record<string, unknown>;

interface RegistrationFlags extends ConnectionFlags, OutputFlags {
  registrationId?: string;
  groupId?: string;
  etag?: string;
  hubAction?: 'delete' | 'disable';
  top?: number;
  status?: string;
  hub?: string;
}

function rid(f: RegistrationFlags): string {
  if (!f.registrationId) throw argumentError('give --registration-id');
  return f.registrationId;
}

/** `homing registration`: device registration records of the provisioning service. */
export function registrationCommand(): Command {
  const cmd = new Command('registration').description('device registration records (az iot dps enrollment registration / enrollment-group registration)');

  cmd.addCommand(
    withServiceConnection(new Command('show').description('show the registration record of a device'))
      .requiredOption('--registration-id <id>', 'registration id')
      .action(async (f: RegistrationFlags) => {
        const res = await withDps(f, (c) => c.call<Json>('GET', `/registrations/${seg(rid(f))}`));
        printObject(f, res.body);
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('list').description('list registration records: of one enrollment group, or of the whole instance (filters --status, --hub)'))
      .option('--group-id <id>', 'enrollment group id (the DPS query API); without it, every record of the instance (Homing admin API)')
      .addOption(new Option('--status <status>', 'only records with this status (instance-wide listing)').choices(['assigned', 'assigning', 'failed', 'disabled', 'unassigned']))
      .option('--hub <host>', 'only records assigned to this hub (instance-wide listing)')
      .addOption(new Option('--top <n>', 'at most this many').argParser(parseTop))
      .action(async (f: RegistrationFlags) => {
        const items =
          f.groupId !== undefined
            ? await withDps(f, (c) => queryAll<Json>(c, `/registrations/${seg(f.groupId ?? '')}/query`, '*', f.top))
            : await withDps(f, async (c) => {
                const out: Json[] = [];
                let after: string | undefined;
                for (;;) {
                  const q = new URLSearchParams({ limit: String(Math.min(500, f.top ?? 500)) });
                  if (f.status) q.set('status', f.status);
                  if (f.hub) q.set('hub', f.hub);
                  if (after !== undefined) q.set('after', after);
                  const page = (await c.call<{ items?: Json[]; next?: string }>('GET', `/homing/registrations?${q.toString()}`)).body ?? {};
                  out.push(...(page.items ?? []));
                  if (page.next === undefined || (f.top !== undefined && out.length >= f.top)) break;
                  after = page.next;
                }
                return f.top === undefined ? out : out.slice(0, f.top);
              });
        printList(f, items, ['REGISTRATION ID', 'DEVICE ID', 'STATUS', 'ASSIGNED HUB', 'UPDATED'], (r: Json) => [r.registrationId, r.deviceId ?? '', r.status, r.assignedHub ?? '', r.lastUpdatedDateTimeUtc], 'no registrations');
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('delete').description('delete a registration record (the device stays on its hub; it re-registers as new)'))
      .requiredOption('--registration-id <id>', 'registration id')
      .option('--etag <etag>', 'delete only if the record still has this etag')
      .action(async (f: RegistrationFlags) => {
        const id = rid(f);
        await withDps(f, (c) => c.call('DELETE', `/registrations/${seg(id)}`, { headers: { 'if-match': f.etag } }));
        printDone(f, `deleted registration ${id}`, { deleted: id });
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('deprovision').description('deprovision a device completely: its registration record, and the device on its hub deleted or disabled'))
      .requiredOption('--registration-id <id>', 'registration id')
      .addOption(new Option('--hub-action <action>', 'what happens to the device on its hub').choices(['delete', 'disable']).default('delete'))
      .action(async (f: RegistrationFlags) => {
        const id = rid(f);
        const res = await withDps(f, (c) => c.call<Json>('POST', `/homing/registrations/${seg(id)}/deprovision`, { body: { hubAction: f.hubAction ?? 'delete' } }));
        const b = res.body ?? {};
        if (f.json) printObject(f, b);
        else {
          const hub = b.hubAction === 'deleted' || b.hubAction === 'disabled' ? `device ${String(b.deviceId)} ${String(b.hubAction)} on ${String(b.hub)}` : b.hubAction === 'absent' ? `the hub ${String(b.hub)} did not have device ${String(b.deviceId)}` : 'nothing to do on a hub';
          printDone(f, `deprovisioned ${id}: registration record deleted; ${hub}`);
        }
      }),
  );
  return cmd;
}

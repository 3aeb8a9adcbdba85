import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { deriveDeviceKey } from '@homing/device';
import type { ConnectionFlags } from '../lib/connection.ts';
import { argumentError, CliError } from '../lib/errors.ts';
import { queryAll, seg } from '../lib/http.ts';
import { printDone, printList, printObject, writeOut, type OutputFlags } from '../lib/output.ts';
import { withDps, withServiceConnection } from '../lib/service.ts';

type Kind = 'individual' | 'group';
type Json = Record<string, unknown>;

interface EnrollmentFlags extends ConnectionFlags, OutputFlags {
  enrollmentId?: string;
  groupId?: string;
  attestationType?: string;
  primaryKey?: string;
  secondaryKey?: string;
  certificatePath?: string;
  secondaryCertificatePath?: string;
  caName?: string;
  secondaryCaName?: string;
  deviceId?: string;
  iotHubs?: string;
  allocationPolicy?: string;
  webhookUrl?: string;
  apiVersion?: string;
  reprovisionPolicy?: string;
  initialTwinTags?: string;
  initialTwinProperties?: string;
  edgeEnabled?: boolean;
  provisioningStatus?: string;
  etag?: string;
  showKeys?: boolean;
  top?: number;
}

const ALLOCATION: Record<string, string> = { hashed: 'hashed', geolatency: 'geoLatency', static: 'static', custom: 'custom' };
/** `--reprovision-policy`: short names and the `az iot dps` names. */
const REPROVISION: Record<string, { updateHubAssignment: boolean; migrateDeviceData: boolean }> = {
  migrate: { updateHubAssignment: true, migrateDeviceData: true },
  reprovisionandmigratedata: { updateHubAssignment: true, migrateDeviceData: true },
  reset: { updateHubAssignment: true, migrateDeviceData: false },
  reprovisionandresetdata: { updateHubAssignment: true, migrateDeviceData: false },
  never: { updateHubAssignment: false, migrateDeviceData: false },
  neverreprovision: { updateHubAssignment: false, migrateDeviceData: false },
};

export function parseBool(v: string): boolean {
  const s = v.trim().toLowerCase();
  if (s === 'true' || s === 'yes' || s === '1') return true;
  if (s === 'false' || s === 'no' || s === '0') return false;
  throw argumentError(`expected true or false, got "${v}"`);
}

export function parseTop(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < 1) throw argumentError(`--top: expected a positive integer, got "${v}"`);
  return n;
}

/** A JSON object given on the command line. */
export function parseJsonObject(text: string, option: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text) as unknown;
  } catch (e) {
    throw argumentError(`${option} is not valid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw argumentError(`${option} must be a JSON object`);
  return v as Json;
}

export function readPem(path: string, option: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw argumentError(`${option}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----')) throw argumentError(`${option}: ${path} holds no PEM certificate`);
  return text;
}

function splitList(v: string): string[] {
  return v
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Hides symmetric keys ("***") unless --show-keys. */
export function maskKeys<T>(value: T, show: boolean | undefined): T {
  if (show || value === null || typeof value !== 'object') return value;
  const copy = JSON.parse(JSON.stringify(value)) as unknown;
  const walk = (o: unknown): void => {
    if (o === null || typeof o !== 'object') return;
    if (Array.isArray(o)) {
      o.forEach(walk);
      return;
    }
    const rec = o as Json;
    for (const k of Object.keys(rec)) {
      if ((k === 'primaryKey' || k === 'secondaryKey') && typeof rec[k] === 'string') rec[k] = '***';
      else walk(rec[k]);
    }
  };
  walk(copy);
  return copy as T;
}

function attestationFromFlags(kind: Kind, f: EnrollmentFlags, existingType: string | undefined): Json | undefined {
  const requested = f.attestationType?.toLowerCase();
  const wantsX509 = f.certificatePath !== undefined || f.secondaryCertificatePath !== undefined || f.caName !== undefined || f.secondaryCaName !== undefined;
  const wantsKey = f.primaryKey !== undefined || f.secondaryKey !== undefined;
  let type = requested === 'x509' ? 'x509' : requested === 'symmetrickey' ? 'symmetricKey' : undefined;
  if (type === undefined) type = existingType ?? (wantsX509 ? 'x509' : 'symmetricKey');
  if (type === 'symmetricKey' && wantsX509) throw argumentError('--certificate-path / --ca-name need --attestation-type x509');
  if (type === 'x509' && wantsKey) throw argumentError('--primary-key / --secondary-key need --attestation-type symmetrickey');
  if (existingType !== undefined && !wantsX509 && !wantsKey && requested === undefined) return undefined;
  if (type === 'symmetricKey') {
    // Omitted keys are generated by the service (and kept on update).
    return { type, symmetricKey: { ...(f.primaryKey !== undefined ? { primaryKey: f.primaryKey } : {}), ...(f.secondaryKey !== undefined ? { secondaryKey: f.secondaryKey } : {}) } };
  }
  const cert = (path: string | undefined, opt: string): Json | undefined => (path === undefined ? undefined : { certificate: readPem(path, opt) });
  const primary = cert(f.certificatePath, '--certificate-path');
  const secondary = cert(f.secondaryCertificatePath, '--secondary-certificate-path');
  if (kind === 'individual') {
    if (f.caName !== undefined || f.secondaryCaName !== undefined) throw argumentError('--ca-name is for enrollment groups; individual enrollments take --certificate-path');
    if (!primary && existingType === undefined) throw argumentError('an X.509 enrollment needs --certificate-path (the device certificate, PEM)');
    return { type, x509: { clientCertificates: { ...(primary ? { primary } : {}), ...(secondary ? { secondary } : {}) } } };
  }
  if (f.caName !== undefined || f.secondaryCaName !== undefined) {
    if (primary || secondary) throw argumentError('give either --ca-name or --certificate-path, not both');
    return { type, x509: { caReferences: { ...(f.caName ? { primary: f.caName } : {}), ...(f.secondaryCaName ? { secondary: f.secondaryCaName } : {}) } } };
  }
  if (!primary && existingType === undefined) throw argumentError('an X.509 enrollment group needs --ca-name (an uploaded CA) or --certificate-path (a signing certificate, PEM)');
  return { type, x509: { signingCertificates: { ...(primary ? { primary } : {}), ...(secondary ? { secondary } : {}) } } };
}

/** Applies the flags to a new or existing enrollment body. */
export function applyFlags(kind: Kind, body: Json, f: EnrollmentFlags, existing: boolean): Json {
  const out: Json = { ...body };
  const existingType = existing ? ((out.attestation as Json | undefined)?.type as string | undefined) : undefined;
  const att = attestationFromFlags(kind, f, existingType);
  if (att) {
    if (existing && att.type === existingType && att.type === 'symmetricKey') {
      const prev = ((out.attestation as Json | undefined)?.symmetricKey ?? {}) as Json;
      out.attestation = { type: att.type, symmetricKey: { ...prev, ...(att.symmetricKey as Json) } };
    } else if (existing && att.type === existingType && att.type === 'x509') {
      const prev = ((out.attestation as Json | undefined)?.x509 ?? {}) as Json;
      const next = att.x509 as Json;
      const merged: Json = { ...prev };
      for (const [k, v] of Object.entries(next)) merged[k] = { ...((prev[k] ?? {}) as Json), ...(v as Json) };
      // A CA reference replaces signing certificates and vice versa.
      if ('caReferences' in next) delete merged.signingCertificates;
      if ('signingCertificates' in next) delete merged.caReferences;
      out.attestation = { type: 'x509', x509: merged };
    } else {
      out.attestation = att;
    }
  }
  if (f.deviceId !== undefined) {
    if (kind === 'group') throw argumentError('--device-id is for individual enrollments (group members use their registration id)');
    out.deviceId = f.deviceId;
  }
  if (f.provisioningStatus !== undefined) out.provisioningStatus = f.provisioningStatus;
  if (f.edgeEnabled !== undefined) out.capabilities = { iotEdge: f.edgeEnabled };
  if (f.reprovisionPolicy !== undefined) {
    const p = REPROVISION[f.reprovisionPolicy.toLowerCase()];
    if (!p) throw argumentError(`--reprovision-policy: expected never, reset or migrate, got "${f.reprovisionPolicy}"`);
    out.reprovisionPolicy = p;
  }
  if (f.allocationPolicy !== undefined) {
    const p = ALLOCATION[f.allocationPolicy.toLowerCase()];
    if (!p) throw argumentError(`--allocation-policy: expected hashed, geolatency, static or custom, got "${f.allocationPolicy}"`);
    out.allocationPolicy = p;
    if (p !== 'custom') delete out.customAllocationDefinition;
  }
  if (f.iotHubs !== undefined) {
    const hubs = splitList(f.iotHubs);
    if (hubs.length === 0) delete out.iotHubs;
    else out.iotHubs = hubs;
    delete out.iotHubHostName;
  }
  if (f.webhookUrl !== undefined || f.apiVersion !== undefined) {
    const prev = (out.customAllocationDefinition ?? {}) as Json;
    out.customAllocationDefinition = { ...prev, ...(f.webhookUrl !== undefined ? { webhookUrl: f.webhookUrl } : {}), apiVersion: f.apiVersion ?? (prev.apiVersion as string | undefined) ?? '2021-10-01' };
    if (out.allocationPolicy === undefined) out.allocationPolicy = 'custom';
  }
  if (out.allocationPolicy === 'custom' && out.customAllocationDefinition === undefined) throw argumentError('--allocation-policy custom needs --webhook-url');
  if (out.allocationPolicy === 'static' && Array.isArray(out.iotHubs) && out.iotHubs.length !== 1) throw argumentError('--allocation-policy static needs exactly one hub in --iot-hubs');
  if (f.initialTwinTags !== undefined || f.initialTwinProperties !== undefined) {
    const prev = (out.initialTwin ?? {}) as Json;
    const twin: Json = { ...prev };
    if (f.initialTwinTags !== undefined) twin.tags = parseJsonObject(f.initialTwinTags, '--initial-twin-tags');
    if (f.initialTwinProperties !== undefined) twin.properties = { desired: parseJsonObject(f.initialTwinProperties, '--initial-twin-properties') };
    out.initialTwin = twin;
  }
  return out;
}

function addBodyOptions(cmd: Command, kind: Kind, create: boolean): Command {
  cmd
    .addOption(new Option('--attestation-type <type>', create ? 'attestation (default: x509 when a certificate or CA is given, else symmetrickey)' : 'attestation type (cannot change)').choices(['symmetrickey', 'x509']))
    .option('--primary-key <base64>', 'symmetric primary key (default: generated by the service)')
    .option('--secondary-key <base64>', 'symmetric secondary key (default: generated by the service)')
    .option('--certificate-path <pem>', kind === 'individual' ? 'device certificate (X.509 attestation)' : 'signing certificate of the group (X.509 attestation)')
    .option('--secondary-certificate-path <pem>', 'secondary certificate');
  if (kind === 'group') cmd.option('--ca-name <name>', 'an uploaded CA certificate (see `homing ca`) the devices chain to').option('--secondary-ca-name <name>', 'secondary CA reference');
  if (kind === 'individual') cmd.option('--device-id <id>', 'device id on the hub (default: the registration id)');
  cmd
    .option('--iot-hubs <hosts>', 'linked hubs to allocate from (comma- or space-separated host names)')
    .addOption(new Option('--allocation-policy <policy>', 'allocation policy (default: the instance\u2019s)').choices(['hashed', 'geolatency', 'static', 'custom']))
    .option('--webhook-url <url>', 'custom allocation webhook (with --allocation-policy custom)')
    .option('--api-version <version>', 'api-version sent to the custom allocation webhook (default 2021-10-01)')
    .option('--reprovision-policy <policy>', 'never | reset | migrate (az names accepted: neverreprovision, reprovisionandresetdata, reprovisionandmigratedata)')
    .option('--initial-twin-tags <json>', 'initial twin tags, a JSON object')
    .option('--initial-twin-properties <json>', 'initial desired properties, a JSON object')
    .addOption(new Option('--edge-enabled [bool]', 'IoT Edge device (true/false)').argParser(parseBool))
    .addOption(new Option('--provisioning-status <status>', 'enabled or disabled').choices(['enabled', 'disabled']));
  return cmd;
}

function idOf(kind: Kind, f: EnrollmentFlags): string {
  const id = kind === 'group' ? (f.groupId ?? f.enrollmentId) : f.enrollmentId;
  if (!id) throw argumentError(kind === 'group' ? 'give --enrollment-id (or --group-id)' : 'give --enrollment-id');
  return id;
}

function addIdOption(cmd: Command, kind: Kind): Command {
  if (kind === 'group') return cmd.option('--enrollment-id <id>', 'enrollment group id').option('--group-id <id>', 'enrollment group id (same as --enrollment-id)');
  return cmd.option('--enrollment-id <id>', 'registration id of the individual enrollment');
}

/** `homing enrollment` and `homing enrollment-group`. */
export function enrollmentCommand(kind: Kind): Command {
  const name = kind === 'individual' ? 'enrollment' : 'enrollment-group';
  const base = kind === 'individual' ? '/enrollments' : '/enrollmentGroups';
  const noun = kind === 'individual' ? 'individual enrollment' : 'enrollment group';
  const cmd = new Command(name).description(`manage ${noun}s of the provisioning service (az iot dps ${name})`);

  cmd.addCommand(
    withServiceConnection(addBodyOptions(addIdOption(new Command('create').description(`create an ${noun}`), kind), kind, true))
      .option('--show-keys', 'show the symmetric keys in the output')
      .action(async (f: EnrollmentFlags) => {
        const id = idOf(kind, f);
        const body = applyFlags(kind, kind === 'individual' ? { registrationId: id } : { enrollmentGroupId: id }, f, false);
        const res = await withDps(f, (c) => c.call<Json>('PUT', `${base}/${seg(id)}`, { body }));
        printObject(f, maskKeys(res.body, f.showKeys));
      }),
  );

  cmd.addCommand(
    withServiceConnection(addIdOption(new Command('show').description(`show an ${noun}`), kind))
      .option('--show-keys', 'show the symmetric keys')
      .action(async (f: EnrollmentFlags) => {
        const id = idOf(kind, f);
        const res = await withDps(f, (c) => c.call<Json>('GET', `${base}/${seg(id)}`));
        printObject(f, maskKeys(res.body, f.showKeys));
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('list').description(`list ${noun}s`))
      .addOption(new Option('--top <n>', 'at most this many').argParser(parseTop))
      .option('--show-keys', 'show the symmetric keys (with --json)')
      .action(async (f: EnrollmentFlags) => {
        const items = await withDps(f, (c) => queryAll<Json>(c, `${base}/query`, '*', f.top));
        const idKey = kind === 'individual' ? 'registrationId' : 'enrollmentGroupId';
        printList(
          f,
          maskKeys(items, f.showKeys),
          kind === 'individual' ? ['REGISTRATION ID', 'DEVICE ID', 'ATTESTATION', 'STATUS', 'ALLOCATION', 'HUBS'] : ['GROUP ID', 'ATTESTATION', 'STATUS', 'ALLOCATION', 'HUBS'],
          (e: Json) => {
            const att = (e.attestation as Json | undefined)?.type;
            const hubs = Array.isArray(e.iotHubs) ? e.iotHubs.join(',') : ((e.iotHubHostName as string | undefined) ?? '(all)');
            const common = [att, e.provisioningStatus, e.allocationPolicy ?? '(default)', hubs];
            return kind === 'individual' ? [e[idKey], e.deviceId ?? '', ...common] : [e[idKey], ...common];
          },
          `no ${noun}s`,
        );
      }),
  );

  cmd.addCommand(
    withServiceConnection(addBodyOptions(addIdOption(new Command('update').description(`change an ${noun}: only the options given change`), kind), kind, false))
      .option('--etag <etag>', 'update only if the entry still has this etag (default: the etag read just before)')
      .option('--show-keys', 'show the symmetric keys in the output')
      .action(async (f: EnrollmentFlags) => {
        const id = idOf(kind, f);
        const res = await withDps(f, async (c) => {
          const current = await c.call<Json>('GET', `${base}/${seg(id)}`);
          const { registrationState: _rs, ...stored } = current.body;
          const body = applyFlags(kind, stored, f, true);
          const etag = f.etag ?? (typeof stored.etag === 'string' ? stored.etag : '*');
          delete body.etag;
          return c.call<Json>('PUT', `${base}/${seg(id)}`, { body, headers: { 'if-match': etag } });
        });
        printObject(f, maskKeys(res.body, f.showKeys));
      }),
  );

  cmd.addCommand(
    withServiceConnection(addIdOption(new Command('delete').description(`delete an ${noun}`), kind))
      .option('--etag <etag>', 'delete only if the entry still has this etag')
      .action(async (f: EnrollmentFlags) => {
        const id = idOf(kind, f);
        await withDps(f, (c) => c.call('DELETE', `${base}/${seg(id)}`, { headers: { 'if-match': f.etag } }));
        printDone(f, `deleted ${noun} ${id}`, { deleted: id });
      }),
  );

  if (kind === 'group') {
    cmd.addCommand(
      withServiceConnection(addIdOption(new Command('compute-device-key').description('derive a member device key from the group key (as devices do)'), kind))
        .requiredOption('--registration-id <id>', 'registration id of the device')
        .action(async (f: EnrollmentFlags & { registrationId: string }) => {
          const id = idOf(kind, f);
          const res = await withDps(f, (c) => c.call<Json>('POST', `${base}/${seg(id)}/attestationmechanism`));
          const key = ((res.body.symmetricKey as Json | undefined)?.primaryKey as string | undefined) ?? undefined;
          if (!key) throw new CliError('NotSymmetricKey', `enrollment group ${id} does not use symmetric keys`);
          const derived = deriveDeviceKey(key, f.registrationId);
          if (f.json) printObject(f, { registrationId: f.registrationId, key: derived });
          else writeOut(`${derived}\n`);
        }),
    );
  }
  return cmd;
}

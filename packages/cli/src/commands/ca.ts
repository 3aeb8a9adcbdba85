import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import type { ConnectionFlags } from '../lib/connection.ts';
import { argumentError, CliError } from '../lib/errors.ts';
import { seg } from '../lib/http.ts';
import { printDone, printList, printObject, writeOut, type OutputFlags } from '../lib/output.ts';
import { withDps, withServiceConnection } from '../lib/service.ts';
import { readPem } from './enrollment.ts';

type Json = Record<string, unknown>;

interface CaFlags extends ConnectionFlags, OutputFlags {
  name: string;
  certificatePath?: string;
  verified?: boolean;
  caKeyPath?: string;
  etag?: string;
}

/** Hides the PEM body in human output (it is in --json). */
function brief(c: Json): Json {
  const props = { ...((c.properties ?? {}) as Json) };
  if (typeof props.certificate === 'string') props.certificate = '(PEM, see --json)';
  return { ...c, properties: props };
}

/** `homing ca`: CA certificates of the provisioning instance (docs/api/ca-certificates.md). */
export function caCommand(): Command {
  const cmd = new Command('ca').description('CA certificates of the provisioning service (az iot dps certificate)');

  cmd.addCommand(
    withServiceConnection(new Command('upload').description('upload a root or intermediate CA certificate'))
      .requiredOption('--name <name>', 'certificate name (enrollment groups reference it with --ca-name)')
      .requiredOption('--certificate-path <pem>', 'the CA certificate, PEM')
      .option('--verified', 'mark it verified without proof of possession (an explicit admin choice)')
      .option('--etag <etag>', 'replace the certificate stored under this name when it still has this etag (* for any)')
      .action(async (f: CaFlags) => {
        const certificate = readPem(f.certificatePath ?? '', '--certificate-path');
        const body: Json = { certificate, ...(f.verified ? { isVerified: true } : {}) };
        const res = await withDps(f, (c) => c.call<Json>('PUT', `/homing/certificates/${seg(f.name)}`, { body, headers: { 'if-match': f.etag } }));
        printObject(f, f.json ? res.body : brief(res.body));
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('generate-verification-code').description('start a proof of possession: print a verification code'))
      .requiredOption('--name <name>', 'certificate name')
      .action(async (f: CaFlags) => {
        const res = await withDps(f, (c) => c.call<Json>('POST', `/homing/certificates/${seg(f.name)}/generateVerificationCode`));
        const code = (res.body.properties as Json | undefined)?.verificationCode;
        if (f.json) printObject(f, res.body);
        else writeOut(`${String(code)}\n`);
      }),
  );

  cmd.addCommand(
    withServiceConnection(
      new Command('verify').description(
        'prove possession of the CA key. With --ca-key-path: generate a code, sign a certificate with CN=<code> using the key, verify. With --certificate-path: send a verification certificate made elsewhere (after generate-verification-code).',
      ),
    )
      .requiredOption('--name <name>', 'certificate name')
      .option('--ca-key-path <pem>', 'private key of the CA (PEM); it never leaves this machine')
      .option('--certificate-path <pem>', 'a verification certificate (subject CN = the pending code) signed by the CA')
      .action(async (f: CaFlags) => {
        if ((f.caKeyPath === undefined) === (f.certificatePath === undefined)) throw argumentError('give either --ca-key-path or --certificate-path');
        const res = await withDps(f, async (c) => {
          let proof: string;
          if (f.certificatePath !== undefined) {
            proof = readPem(f.certificatePath, '--certificate-path');
          } else {
            let keyPem: string;
            try {
              keyPem = readFileSync(f.caKeyPath ?? '', 'utf8');
            } catch (e) {
              throw argumentError(`--ca-key-path: cannot read ${f.caKeyPath} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
            }
            const stored = await c.call<Json>('GET', `/homing/certificates/${seg(f.name)}`);
            const caPem = (stored.body.properties as Json | undefined)?.certificate;
            if (typeof caPem !== 'string') throw new CliError('ProtocolError', 'the service did not return the CA certificate');
            const { loadIssuer, issueLeaf } = await import('../lib/x509.ts');
            const issuer = await loadIssuer(caPem, keyPem);
            const gen = await c.call<Json>('POST', `/homing/certificates/${seg(f.name)}/generateVerificationCode`);
            const code = (gen.body.properties as Json | undefined)?.verificationCode;
            if (typeof code !== 'string') throw new CliError('ProtocolError', 'the service returned no verification code');
            proof = (await issueLeaf(issuer, code, { days: 1 })).certPem;
          }
          return c.call<Json>('POST', `/homing/certificates/${seg(f.name)}/verify`, { body: { certificate: proof } });
        });
        if (f.json) printObject(f, res.body);
        else writeOut(`verified CA certificate ${f.name} (isVerified: ${String((res.body.properties as Json | undefined)?.isVerified)})\n`);
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('list').description('list the CA certificates')).action(async (f: CaFlags) => {
      const res = await withDps(f, (c) => c.call<{ value?: Json[] }>('GET', '/homing/certificates'));
      const items = res.body.value ?? [];
      printList(
        f,
        items,
        ['NAME', 'SUBJECT', 'VERIFIED', 'EXPIRY', 'THUMBPRINT'],
        (c: Json) => {
          const p = (c.properties ?? {}) as Json;
          return [c.name, p.subject, p.isVerified, p.expiry, p.thumbprint];
        },
        'no CA certificates',
      );
    }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('show').description('show a CA certificate'))
      .requiredOption('--name <name>', 'certificate name')
      .action(async (f: CaFlags) => {
        const res = await withDps(f, (c) => c.call<Json>('GET', `/homing/certificates/${seg(f.name)}`));
        printObject(f, f.json ? res.body : brief(res.body));
      }),
  );

  cmd.addCommand(
    withServiceConnection(new Command('delete').description('delete a CA certificate'))
      .requiredOption('--name <name>', 'certificate name')
      .option('--etag <etag>', 'delete only if it still has this etag')
      .action(async (f: CaFlags) => {
        await withDps(f, (c) => c.call('DELETE', `/homing/certificates/${seg(f.name)}`, { headers: { 'if-match': f.etag } }));
        printDone(f, `deleted CA certificate ${f.name}`, { deleted: f.name });
      }),
  );
  return cmd;
}

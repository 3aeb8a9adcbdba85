import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request } from 'node:https';
import { join } from 'node:path';
import { issueCertificate } from '../../server/src/transport/tls/pki.ts';
import { startSimulation, type Simulation } from '../src/simulator/fleet.ts';
import { runCli, startTestServer, type CliRun, type TestServer } from './helpers/cli.ts';

type Json = Record<string, unknown>;

function json<T = Json>(r: CliRun): T {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** A failed run: non-zero exit, one line `homing: <code>: <message>` on stderr, nothing on stdout. */
function failed(r: CliRun, code: RegExp): void {
  assert.notEqual(r.code, 0, `expected a failure, got: ${r.stdout}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0] ?? '', /^homing: [A-Za-z0-9]+: \S/);
  assert.match(lines[0] ?? '', code);
  assert.equal(r.stdout, '');
  assert.doesNotMatch(r.stderr, /SharedAccessKey=[^*]|sig=[^*]/, 'no secret in errors');
}

describe('homing CLI commands against a real server', () => {
  let server: TestServer;
  let d: string[];
  let work: string;
  before(async () => {
    server = await startTestServer();
    d = ['--data-dir', server.dataDir];
    work = mkdtempSync(join(tmpdir(), 'homing-cli-work-'));
  });
  after(async () => {
    await server?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('enrollment create / show / list / update (etag) / delete, keys hidden unless --show-keys', async () => {
    const [hubA] = server.hubs;
    const created = json(
      await runCli([
        'enrollment', 'create', '--enrollment-id', 'cli-dev-1', '--device-id', 'cli-device-1', '--initial-twin-tags', '{"site":"A"}', '--initial-twin-properties', '{"interval":30}',
        '--reprovision-policy', 'reset', '--allocation-policy', 'static', '--iot-hubs', hubA, '--edge-enabled', '--json', ...d,
      ]),
    );
    assert.equal(created.registrationId, 'cli-dev-1');
    assert.equal(created.deviceId, 'cli-device-1');
    assert.deepEqual(created.attestation, { type: 'symmetricKey', symmetricKey: { primaryKey: '***', secondaryKey: '***' } });
    assert.deepEqual(created.reprovisionPolicy, { updateHubAssignment: true, migrateDeviceData: false });
    assert.deepEqual(created.iotHubs, [hubA]);
    assert.equal(created.allocationPolicy, 'static');
    assert.deepEqual(created.capabilities, { iotEdge: true });
    assert.deepEqual(created.initialTwin, { tags: { site: 'A' }, properties: { desired: { interval: 30 } } });

    const human = await runCli(['enrollment', 'show', '--enrollment-id', 'cli-dev-1', ...d]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /registrationId: cli-dev-1/);
    assert.match(human.stdout, /primaryKey: \*\*\*/);

    const withKeys = json<{ attestation: { symmetricKey: { primaryKey: string } }; etag: string }>(await runCli(['enrollment', 'show', '--enrollment-id', 'cli-dev-1', '--show-keys', '--json', ...d]));
    assert.equal(Buffer.from(withKeys.attestation.symmetricKey.primaryKey, 'base64').length, 64, 'a generated key');

    const given = randomBytes(32).toString('base64');
    json(await runCli(['enrollment', 'create', '--enrollment-id', 'cli-dev-2', '--primary-key', given, '--secondary-key', given, '--json', ...d]));
    const list = json<Json[]>(await runCli(['enrollment', 'list', '--json', '--show-keys', ...d]));
    assert.deepEqual(list.map((e) => e.registrationId).sort(), ['cli-dev-1', 'cli-dev-2']);
    assert.equal((list.find((e) => e.registrationId === 'cli-dev-2')?.attestation as { symmetricKey: { primaryKey: string } }).symmetricKey.primaryKey, given);
    const table = await runCli(['enrollment', 'list', ...d]);
    assert.match(table.stdout, /^REGISTRATION ID\s+DEVICE ID/);
    assert.match(table.stdout, /cli-dev-1\s+cli-device-1\s+symmetricKey/);

    const updated = json<{ provisioningStatus: string; etag: string; initialTwin: unknown; attestation: { symmetricKey: { primaryKey: string } } }>(
      await runCli(['enrollment', 'update', '--enrollment-id', 'cli-dev-1', '--provisioning-status', 'disabled', '--etag', withKeys.etag, '--json', '--show-keys', ...d]),
    );
    assert.equal(updated.provisioningStatus, 'disabled');
    assert.notEqual(updated.etag, withKeys.etag);
    assert.deepEqual(updated.initialTwin, created.initialTwin, 'what the flags do not name is kept');
    assert.equal(updated.attestation.symmetricKey.primaryKey, withKeys.attestation.symmetricKey.primaryKey, 'keys are kept');
    failed(await runCli(['enrollment', 'update', '--enrollment-id', 'cli-dev-1', '--provisioning-status', 'enabled', '--etag', withKeys.etag, ...d]), /^homing: 412\d{3}: /);

    failed(await runCli(['enrollment', 'delete', '--enrollment-id', 'cli-dev-2', '--etag', withKeys.etag, ...d]), /^homing: 412\d{3}: /);
    const del = await runCli(['enrollment', 'delete', '--enrollment-id', 'cli-dev-2', ...d]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, /deleted individual enrollment cli-dev-2/);
    failed(await runCli(['enrollment', 'show', '--enrollment-id', 'cli-dev-2', ...d]), /^homing: 404\d{3}: /);
  });

  it('enrollment-group with a given key, an X.509 CA reference, and the device key derivation', async () => {
    const key = randomBytes(32).toString('base64');
    const g = json<{ enrollmentGroupId: string; attestation: { symmetricKey: { primaryKey: string } } }>(
      await runCli(['enrollment-group', 'create', '--enrollment-id', 'cli-group', '--primary-key', key, '--json', ...d]),
    );
    assert.equal(g.enrollmentGroupId, 'cli-group');
    assert.equal(g.attestation.symmetricKey.primaryKey, '***');
    const shown = json<{ attestation: { symmetricKey: { primaryKey: string } } }>(await runCli(['enrollment-group', 'show', '--group-id', 'cli-group', '--show-keys', '--json', ...d]));
    assert.equal(shown.attestation.symmetricKey.primaryKey, key);
    const derived = await runCli(['enrollment-group', 'compute-device-key', '--enrollment-id', 'cli-group', '--registration-id', 'member-1', ...d]);
    assert.equal(derived.code, 0, derived.stderr);
    const { deriveDeviceKey } = await import('@homing/device');
    assert.equal(derived.stdout.trim(), deriveDeviceKey(key, 'member-1'));
    const updated = json<{ reprovisionPolicy: unknown }>(await runCli(['enrollment-group', 'update', '--enrollment-id', 'cli-group', '--reprovision-policy', 'never', '--json', ...d]));
    assert.deepEqual(updated.reprovisionPolicy, { updateHubAssignment: false, migrateDeviceData: false });

    const ca = await issueCertificate({ commonName: 'CLI Test Root', isCA: true });
    const caPath = join(work, 'ca.pem');
    writeFileSync(caPath, ca.certPem);
    const x = json<{ attestation: { type: string; x509: { signingCertificates: { primary: { info: { subjectName: string } } } } } }>(
      await runCli(['enrollment-group', 'create', '--enrollment-id', 'cli-x509-group', '--certificate-path', caPath, '--json', ...d]),
    );
    assert.equal(x.attestation.type, 'x509');
    assert.match(x.attestation.x509.signingCertificates.primary.info.subjectName, /CLI Test Root/);
    const list = json<Json[]>(await runCli(['enrollment-group', 'list', '--json', ...d]));
    assert.deepEqual(list.map((e) => e.enrollmentGroupId).sort(), ['cli-group', 'cli-x509-group']);
    // A round trip through update keeps the certificate (the server's computed `info` comes back unchanged).
    const xu = json<{ provisioningStatus: string; attestation: { x509: { signingCertificates: { primary: { info: { subjectName: string } } } } } }>(
      await runCli(['enrollment-group', 'update', '--enrollment-id', 'cli-x509-group', '--provisioning-status', 'disabled', '--json', ...d]),
    );
    assert.equal(xu.provisioningStatus, 'disabled');
    assert.match(xu.attestation.x509.signingCertificates.primary.info.subjectName, /CLI Test Root/);
    assert.equal((await runCli(['enrollment-group', 'delete', '--enrollment-id', 'cli-x509-group', ...d])).code, 0);

    // An individual X.509 enrollment with the device's own certificate.
    const leaf = await issueCertificate({ commonName: 'cli-x509-dev', issuer: ca, usages: ['client'] });
    const leafPath = join(work, 'leaf.pem');
    writeFileSync(leafPath, leaf.certPem);
    const ind = json<{ attestation: { type: string; x509: { clientCertificates: { primary: { info: { subjectName: string } } } } } }>(
      await runCli(['enrollment', 'create', '--enrollment-id', 'cli-x509-dev', '--certificate-path', leafPath, '--json', ...d]),
    );
    assert.equal(ind.attestation.type, 'x509');
    assert.match(ind.attestation.x509.clientCertificates.primary.info.subjectName, /cli-x509-dev/);
    failed(await runCli(['enrollment', 'update', '--enrollment-id', 'cli-x509-dev', '--primary-key', key, ...d]), /^homing: ArgumentInvalid: --primary-key/);
    failed(await runCli(['enrollment', 'create', '--enrollment-id', 'cli-x509-dev2', '--certificate-path', join(work, 'missing.pem'), ...d]), /^homing: ArgumentInvalid: --certificate-path: cannot read/);
    assert.equal((await runCli(['enrollment', 'delete', '--enrollment-id', 'cli-x509-dev', ...d])).code, 0);
  });

  it('hub list / update / unlink / link through the admin API', async () => {
    const [, hubB] = server.hubs;
    const hubs = json<{ name: string; allocationWeight: number; connectionString: string }[]>(await runCli(['hub', 'list', '--json', ...d]));
    assert.deepEqual(hubs.map((h) => h.name).sort(), [...server.hubs].sort());
    for (const h of hubs) assert.match(h.connectionString, /SharedAccessKey=\*\*\*\*$/);
    const upd = json<{ allocationWeight: number; applyAllocationPolicy: boolean; location: string }>(
      await runCli(['hub', 'update', '--hub-host-name', hubB, '--allocation-weight', '5', '--apply-allocation-policy', 'false', '--location', 'west', '--json', ...d]),
    );
    assert.deepEqual([upd.allocationWeight, upd.applyAllocationPolicy, upd.location], [5, false, 'west']);
    const un = await runCli(['hub', 'unlink', '--hub-host-name', hubB, ...d]);
    assert.equal(un.code, 0, un.stderr);
    assert.equal(json<unknown[]>(await runCli(['hub', 'list', '--json', ...d])).length, 1);
    // Linking again takes the hub's connection string from connection.json.
    const linked = json<{ name: string; allocationWeight: number }>(await runCli(['hub', 'link', '--hub-host-name', hubB, '--allocation-weight', '2', '--json', ...d]));
    assert.equal(linked.name, hubB);
    assert.equal(linked.allocationWeight, 2);
    failed(await runCli(['hub', 'link', '--hub-host-name', hubB, ...d]), /^homing: 409\d{3}: /);
    failed(await runCli(['hub', 'update', '--hub-host-name', hubB, '--allocation-weight', '0', ...d]), /^homing: ArgumentInvalid: --allocation-weight/);
    json(await runCli(['hub', 'update', '--hub-host-name', hubB, '--apply-allocation-policy', 'true', '--allocation-weight', '1', '--json', ...d]));
  });

  it('ca upload / verify (proof of possession with the CA key) / list', async () => {
    const empty = await runCli(['ca', 'list', ...d]);
    assert.equal(empty.code, 0, empty.stderr);
    const ca = await issueCertificate({ commonName: 'CLI Upload Root', isCA: true });
    const certPath = join(work, 'upload-ca.pem');
    const keyPath = join(work, 'upload-ca.key');
    writeFileSync(certPath, ca.certPem);
    writeFileSync(keyPath, ca.keyPem, { mode: 0o600 });
    const up = json<{ name: string; properties: { isVerified: boolean } }>(await runCli(['ca', 'upload', '--name', 'cli-root', '--certificate-path', certPath, '--json', ...d]));
    assert.equal(up.properties.isVerified, false);
    const ver = await runCli(['ca', 'verify', '--name', 'cli-root', '--ca-key-path', keyPath, ...d]);
    assert.equal(ver.code, 0, ver.stderr);
    assert.match(ver.stdout, /verified CA certificate cli-root \(isVerified: true\)/);
    const list = json<{ value?: unknown; name?: string; properties: { isVerified: boolean; subject: string } }[]>(await runCli(['ca', 'list', '--json', ...d]));
    assert.equal(list.length, 1);
    assert.equal(list[0]?.name, 'cli-root');
    assert.equal(list[0]?.properties.isVerified, true);
    const table = await runCli(['ca', 'list', ...d]);
    assert.match(table.stdout, /cli-root\s+CN=CLI Upload Root\s+true/);
    // A key that is not the CA's is refused before anything is sent.
    const other = await issueCertificate({ commonName: 'Other', isCA: true });
    const otherKey = join(work, 'other.key');
    writeFileSync(otherKey, other.keyPem);
    failed(await runCli(['ca', 'verify', '--name', 'cli-root', '--ca-key-path', otherKey, ...d]), /^homing: ArgumentInvalid: the CA private key does not belong/);
  });

  describe('with simulated devices', () => {
    let sim: Simulation;
    const key = randomBytes(32).toString('base64');
    before(async () => {
      json(await runCli(['enrollment-group', 'create', '--enrollment-id', 'reg-group', '--primary-key', key, '--initial-twin-tags', '{"kind":"sensor"}', '--json', ...d]));
      const conn = JSON.parse(readFileSync(join(server.dataDir, 'connection.json'), 'utf8')) as { caCertPath: string; dps: { idScope: string; deviceHost: string }; hubs: { hostName: string; mqttPort: number; httpsPort: number }[] };
      sim = startSimulation({
        count: 3,
        idPrefix: 'reg-dev-',
        credential: { type: 'groupKey', groupKey: key },
        provisioning: { host: conn.dps.deviceHost, port: conn.hubs[0]?.httpsPort ?? 443, idScope: conn.dps.idScope },
        ca: readFileSync(conn.caCertPath, 'utf8'),
        hubPorts: Object.fromEntries(conn.hubs.map((h) => [h.hostName, h.mqttPort])),
        telemetryIntervalMs: 100,
      });
      await sim.allConnected();
    });
    after(async () => {
      await sim?.stop();
    });

    it('registration show / list / delete', async () => {
      const list = json<{ registrationId: string; status: string; assignedHub: string }[]>(await runCli(['registration', 'list', '--group-id', 'reg-group', '--json', ...d]));
      assert.deepEqual(list.map((r) => r.registrationId).sort(), ['reg-dev-0', 'reg-dev-1', 'reg-dev-2']);
      for (const r of list) assert.equal(r.status, 'assigned');
      const one = json<{ registrationId: string; assignedHub: string; deviceId: string; etag: string }>(await runCli(['registration', 'show', '--registration-id', 'reg-dev-1', '--json', ...d]));
      assert.equal(one.deviceId, 'reg-dev-1');
      assert.ok(server.hubs.includes(one.assignedHub));
      const all = json<{ registrationId: string; status: string; assignedHub: string }[]>(await runCli(['registration', 'list', '--status', 'assigned', '--json', ...d]));
      assert.ok(['reg-dev-0', 'reg-dev-1', 'reg-dev-2'].every((id) => all.some((r) => r.registrationId === id)), 'the instance-wide listing holds the group devices');
      assert.ok(all.every((r) => r.status === 'assigned'));
      const top = json<unknown[]>(await runCli(['registration', 'list', '--top', '2', '--json', ...d]));
      assert.equal(top.length, 2);
      const human = await runCli(['registration', 'list', '--group-id', 'reg-group', ...d]);
      assert.match(human.stdout, /reg-dev-0\s+reg-dev-0\s+assigned/);
      const del = await runCli(['registration', 'delete', '--registration-id', 'reg-dev-2', '--etag', one.etag, ...d]);
      failed(del, /^homing: 412\d{3}: /);
      assert.equal((await runCli(['registration', 'delete', '--registration-id', 'reg-dev-2', ...d])).code, 0);
      failed(await runCli(['registration', 'show', '--registration-id', 'reg-dev-2', ...d]), /^homing: 404\d{3}: /);
    });

    it('registration deprovision: the record goes, the hub device is disabled or deleted', async () => {
      await sim.device(1)?.stop(); // a live device would re-register at once
      const shown = json<{ assignedHub: string }>(await runCli(['registration', 'show', '--registration-id', 'reg-dev-1', '--json', ...d]));
      const r = json<{ registrationId: string; hub: string; deviceId: string; hubAction: string; recordDeleted: boolean }>(
        await runCli(['registration', 'deprovision', '--registration-id', 'reg-dev-1', '--hub-action', 'disable', '--json', ...d]),
      );
      assert.deepEqual(r, { registrationId: 'reg-dev-1', hub: shown.assignedHub, deviceId: 'reg-dev-1', hubAction: 'disabled', recordDeleted: true });
      failed(await runCli(['registration', 'show', '--registration-id', 'reg-dev-1', ...d]), /^homing: 404\d{3}: /);
      const dev = json<{ status: string }>(await runCli(['device', 'show', '--device-id', 'reg-dev-1', '--json', ...d]));
      assert.equal(dev.status, 'disabled');
    });

    it('device list / show / twin through the hub service API', async () => {
      const list = json<{ deviceId: string; hub: string; connectionState: string }[]>(await runCli(['device', 'list', '--json', ...d]));
      const ours = list.filter((x) => x.deviceId.startsWith('reg-dev-'));
      assert.equal(ours.length, 3); // reg-dev-1 disabled, still listed
      const shown = json<{ deviceId: string; hub: string; authentication: { symmetricKey: { primaryKey: string } } }>(await runCli(['device', 'show', '--device-id', 'reg-dev-0', '--json', ...d]));
      assert.equal(shown.deviceId, 'reg-dev-0');
      assert.equal(shown.authentication.symmetricKey.primaryKey, '***');
      const twin = json<{ tags: { kind: string }; properties: { reported: { firmware?: string } } }>(await runCli(['device', 'twin', '--device-id', 'reg-dev-0', '--json', ...d]));
      assert.equal(twin.tags.kind, 'sensor');
      const patched = json<{ tags: { kind: string; room: string } }>(await runCli(['device', 'twin', '--device-id', 'reg-dev-0', '--tags', '{"room":"101"}', '--json', ...d]));
      assert.deepEqual(patched.tags, { kind: 'sensor', room: '101' });
      const oneHub = await runCli(['device', 'list', '--hub-name', shown.hub, ...d]);
      assert.equal(oneHub.code, 0, oneHub.stderr);
      assert.match(oneHub.stdout, /^DEVICE ID\s+HUB\s+STATUS/);
      failed(await runCli(['device', 'show', '--device-id', 'no-such-device', ...d]), /^homing: DeviceNotFound: /);
    });

    it('hub monitor prints live telemetry and stops after --count', async () => {
      const r = await runCli(['hub', 'monitor', '--device-id', 'reg-dev-0', '--count', '2', '--timeout', '60', '--json', ...d]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { deviceId: string; body: string; properties: Record<string, string> });
      assert.equal(lines.length, 2);
      for (const l of lines) {
        assert.equal(l.deviceId, 'reg-dev-0');
        assert.equal(typeof (JSON.parse(l.body) as { seq: number }).seq, 'number');
        assert.equal(l.properties.simulated, 'true');
      }
    });
  });

  it('token dps|hub mints a SAS the services accept (the portal\'s token sign-in); a bad duration is refused', async () => {
    const out = json<{ token: string; expiresUtc: string; policy: string; hostName: string }>(await runCli(['token', 'dps', '--duration', '600', '--json', ...d]));
    assert.match(out.token, /^SharedAccessSignature sr=[^&]+&sig=[^&]+&(skn=[^&]+&se=\d+|se=\d+&skn=[^&]+)$/);
    assert.ok(Date.parse(out.expiresUtc) > Date.now() + 500_000 && Date.parse(out.expiresUtc) <= Date.now() + 601_000);
    const conn = JSON.parse(readFileSync(join(server.dataDir, 'connection.json'), 'utf8')) as { caCertPath: string; dps: { deviceHost: string } };
    const whoami = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: conn.dps.deviceHost, port: server.run.dps.httpsPort, path: '/homing/whoami?api-version=2021-10-01', method: 'GET', ca: readFileSync(conn.caCertPath), servername: out.hostName.includes(':') ? undefined : out.hostName, headers: { authorization: out.token, host: out.hostName } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(whoami.status, 200, whoami.body);
    assert.equal((JSON.parse(whoami.body) as { keyName: string }).keyName, out.policy);
    const hub = await runCli(['token', 'hub', ...d]);
    assert.equal(hub.code, 0);
    assert.match(hub.stdout.trim(), /^SharedAccessSignature sr=/);
    failed(await runCli(['token', 'dps', '--duration', '5', ...d]), /^homing: invalidArgument: /);
  });

  it('bad arguments: one line with a code, non-zero exit', async () => {
    failed(await runCli(['enrollment', 'create', '--enrollment-id', 'x', '--nope', ...d]), /^homing: unknownOption: unknown option '--nope'/);
    failed(await runCli(['enrollment', 'create', '--enrollment-id', 'x', '--initial-twin-tags', '{not json', ...d]), /^homing: ArgumentInvalid: --initial-twin-tags is not valid JSON/);
    failed(await runCli(['enrollment', 'create', '--enrollment-id', 'x', '--initial-twin-tags', '[1]', ...d]), /^homing: ArgumentInvalid: --initial-twin-tags must be a JSON object/);
    failed(await runCli(['enrollment', 'create', '--enrollment-id', 'x', '--reprovision-policy', 'sometimes', ...d]), /^homing: ArgumentInvalid: --reprovision-policy/);
    failed(await runCli(['enrollment', 'create', '--enrollment-id', 'x', '--allocation-policy', 'random', ...d]), /^homing: invalidArgument: /);
    failed(await runCli(['enrollment', 'show', '--enrollment-id', 'x', '--connection-string', 'HostName=h;SharedAccessKeyName=k', ...d]), /^homing: ConnectionStringInvalid: /);
    failed(await runCli(['enrollment', 'show', '--enrollment-id', 'x', '--connection-string', 'HostName=h;SharedAccessKeyName=k;SharedAccessKey=not base64!', ...d]), /^homing: ConnectionStringInvalid: /);
    failed(await runCli(['device', 'list', '--connection-string', 'garbage', ...d]), /^homing: ConnectionStringInvalid: /);
    failed(await runCli(['enrollment', 'list'], { HOMING_DPS_CONNECTION_STRING: undefined }), /^homing: NoConnection: /);
    // A wrong key: the service says 401, and the key is not echoed.
    const conn = JSON.parse(readFileSync(join(server.dataDir, 'connection.json'), 'utf8')) as { dps: { serviceConnectionString: string } };
    const wrong = conn.dps.serviceConnectionString.replace(/SharedAccessKey=.*$/, `SharedAccessKey=${randomBytes(32).toString('base64')}`);
    failed(await runCli(['enrollment', 'list', ...d], { HOMING_DPS_CONNECTION_STRING: wrong }), /^homing: 401000: /);
    failed(await runCli(['hub', 'update', '--hub-host-name', server.hubs[0], ...d]), /^homing: ArgumentInvalid: nothing to update/);
    failed(await runCli(['registration', 'deprovision', '--registration-id', 'x', '--hub-action', 'explode', ...d]), /^homing: invalidArgument: /);
    failed(await runCli(['frobnicate']), /^homing: unknownCommand: /);
    const help = await runCli(['--help']);
    assert.equal(help.code, 0);
  });

  it('--json output of every list parses, and the env var connection string works', async () => {
    const conn = JSON.parse(readFileSync(join(server.dataDir, 'connection.json'), 'utf8')) as { dps: { serviceConnectionString: string }; hubs: { connectionString: string }[] };
    for (const args of [['enrollment', 'list'], ['enrollment-group', 'list'], ['hub', 'list'], ['ca', 'list'], ['device', 'list']]) {
      const r = await runCli([...args, '--json', ...d]);
      assert.ok(Array.isArray(json(r)), `${args.join(' ')}: ${r.stdout}`);
    }
    // From the environment, with the CA from --ca-cert, in a directory without connection.json.
    const caCert = (JSON.parse(readFileSync(join(server.dataDir, 'connection.json'), 'utf8')) as { caCertPath: string }).caCertPath;
    const port = String(server.run.dps.httpsPort);
    const viaEnv = await runCli(['hub', 'list', '--json', '--data-dir', work, '--ca-cert', caCert, '--port', port], { HOMING_DPS_CONNECTION_STRING: conn.dps.serviceConnectionString });
    assert.equal(json<unknown[]>(viaEnv).length, 2);
    const hubCs = conn.hubs[0]?.connectionString ?? '';
    const devices = await runCli(['device', 'list', '--json', '--data-dir', work, '--ca-cert', caCert, '--port', String(server.run.hubs[0]?.httpsPort)], { HOMING_HUB_CONNECTION_STRING: hubCs });
    assert.ok(Array.isArray(json(devices)));
  });
});

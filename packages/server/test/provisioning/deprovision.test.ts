import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { generate, parser as createParser, type Packet } from 'mqtt-packet';
import { buildSas } from '../../src/core/sas.ts';
import { loadStartConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import type { RegistrationRecord } from '../../src/provisioning/model.ts';
import { startHoming, type RunningHoming } from '../../src/server.ts';
import { httpsJson, type JsonAnswer, type JsonRequestBody } from '../helpers/https-json.ts';
import { realIds, uniqueLoopback } from '../helpers/ids.ts';
import { putRegistrationRecord } from '../helpers/records.ts';
import { deviceSas, deviceUsername, within } from '../transport/mqtt/helpers.ts';

/**
 * The complete-deprovision admin action (`POST /homing/registrations/{id}/deprovision`) on a real server
 * (startHoming: DPS HTTPS listener, a hub with its MQTT listener, SQLite store): a device registered through the DPS
 * device API and connected over MQTT to its hub.
 */
const API = 'api-version=2021-10-01';
const DEVICE_API = 'api-version=2021-06-01';

/** A device's MQTT connection to its hub (TLS + mqtt-packet), resolving `closed` when the hub closes it. */
interface DeviceConnection {
  returnCode: number;
  closed: Promise<void>;
  end(): void;
}

describe('POST /homing/registrations/{id}/deprovision', () => {
  let homing: RunningHoming;
  let dataDir: string;
  let ca: string;
  let dpsHost: string;
  let hubHost: string;
  const keys = new Map<string, string>();

  const dpsPort = () => homing.dps.httpsPort;
  const hub = () => {
    const h = homing.hubs[0];
    assert.ok(h);
    return h;
  };
  const policy = (keyName: string) => {
    const p = homing.dps.instance.policies.find((x) => x.keyName === keyName);
    assert.ok(p, keyName);
    return p;
  };
  const serviceSas = (keyName = 'provisioningserviceowner') =>
    buildSas({ sr: dpsHost, keyBase64: policy(keyName).primaryKey, keyName, expirySeconds: Math.floor(Date.now() / 1000) + 600 });

  const https = (method: string, path: string, o: JsonRequestBody = {}): Promise<JsonAnswer> =>
    httpsJson({ host: dpsHost, port: dpsPort(), ca, method, path, timeout: 30_000 }, o);

  const deprovision = (id: string, body?: unknown, auth = serviceSas(), raw?: string) =>
    https('POST', `/homing/registrations/${encodeURIComponent(id)}/deprovision?${API}`, { auth, ...(raw === undefined ? { body } : { raw }) });

  async function enroll(registrationId: string): Promise<void> {
    const key = realIds.bytes(32).toString('base64');
    keys.set(registrationId, key);
    const r = await https('PUT', `/enrollments/${registrationId}?${API}`, {
      auth: serviceSas(),
      body: { registrationId, attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: realIds.bytes(32).toString('base64') } } },
    });
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }

  /** Registers through the DPS device API (the response budget is long enough for the final answer). */
  async function register(registrationId: string): Promise<{ assignedHub: string; deviceId: string; substatus: string }> {
    const idScope = homing.dps.instance.idScope;
    const key = keys.get(registrationId) ?? '';
    const auth = buildSas({ sr: `${idScope}/registrations/${registrationId}`, keyBase64: key, keyName: 'registration', expirySeconds: Math.floor(Date.now() / 1000) + 600 });
    const r = await https('PUT', `/${idScope}/registrations/${registrationId}/register?${DEVICE_API}`, { auth, body: { registrationId } });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.status, 'assigned', JSON.stringify(r.json));
    return r.json.registrationState as { assignedHub: string; deviceId: string; substatus: string };
  }

  /** Connects the device to its hub over MQTT with its SAS key (CONNACK return code). */
  async function connectDevice(deviceId: string, key: string): Promise<DeviceConnection> {
    const socket: TLSSocket = await new Promise((resolve, reject) => {
      const s = tlsConnect({ host: hubHost, port: hub().mqttPort, ca }, () => resolve(s));
      s.once('error', reject);
    });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const p = createParser();
    const connack = new Promise<number>((resolve, reject) => {
      p.on('packet', (pk: Packet) => {
        if (pk.cmd === 'connack') resolve(pk.returnCode ?? -1);
      });
      void closed.then(() => reject(new Error('closed before CONNACK')));
    });
    socket.on('data', (c: Buffer) => p.parse(c));
    socket.write(
      generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clientId: deviceId,
        clean: true,
        keepalive: 0,
        username: deviceUsername(deviceId, hubHost),
        password: Buffer.from(deviceSas(deviceId, key, { host: hubHost })),
      }),
    );
    const returnCode = await within(connack, 10_000, 'CONNACK');
    return { returnCode, closed, end: () => socket.destroy() };
  }

  async function registeredAndConnected(registrationId: string): Promise<{ deviceId: string; conn: DeviceConnection }> {
    await enroll(registrationId);
    const st = await register(registrationId);
    assert.equal(st.assignedHub, hubHost);
    const conn = await connectDevice(st.deviceId, keys.get(registrationId) ?? '');
    assert.equal(conn.returnCode, 0, 'the device connects to its hub');
    return { deviceId: st.deviceId, conn };
  }

  const record = (registrationId: string) => homing.store.provisioning.getRegistration(homing.dps.instance.name, registrationId);

  const putRecord = (registrationId: string, over: Partial<RegistrationRecord>): Promise<void> => putRegistrationRecord(homing, registrationId, over);

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'homing-deprovision-'));
    dpsHost = uniqueLoopback();
    hubHost = uniqueLoopback();
    while (hubHost === dpsHost) hubHost = uniqueLoopback();
    const base = await loadStartConfig({ dataDir, hubHosts: [hubHost], dpsHost, httpsPort: 0, mqttPort: 0 }, { databaseUrl: undefined, logLevel: undefined });
    homing = await startHoming({ ...base, dps: { ...base.dps, responseBudgetMs: 30_000 } }, { logger: silentLogger() });
    ca = readFileSync(homing.pki.caCertPath, 'utf8');
  });

  after(async () => {
    await homing?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('deletes the device on its hub (its MQTT connection closes) and the record; the next registration is initial', async () => {
    const { deviceId, conn } = await registeredAndConnected('dep-delete');
    const r = await deprovision('dep-delete');
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.deepEqual(r.json, { registrationId: 'dep-delete', hub: hubHost, deviceId, hubAction: 'deleted', recordDeleted: true });
    await within(conn.closed, 10_000, 'the hub closes the device connection');
    assert.equal(await hub().service.findDevice(deviceId), undefined);
    assert.equal(await record('dep-delete'), undefined);
    const status = await https('GET', `/registrations/dep-delete?${API}`, { auth: serviceSas() });
    assert.equal(status.status, 404);

    // Registering again is an initial assignment: a new device on the hub, a new record.
    const again = await register('dep-delete');
    assert.equal(again.substatus, 'initialAssignment');
    assert.equal((await hub().service.findDevice(deviceId))?.status, 'enabled');
    const next = await connectDevice(deviceId, keys.get('dep-delete') ?? '');
    assert.equal(next.returnCode, 0);
    next.end();
  });

  test('hubAction disable: the device is disabled (connection closed, refused after) and the record deleted', async () => {
    const { deviceId, conn } = await registeredAndConnected('dep-disable');
    const r = await deprovision('dep-disable', { hubAction: 'disable' });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.deepEqual(r.json, { registrationId: 'dep-disable', hub: hubHost, deviceId, hubAction: 'disabled', recordDeleted: true });
    await within(conn.closed, 10_000, 'the hub closes the device connection');
    assert.equal((await hub().service.findDevice(deviceId))?.status, 'disabled');
    assert.equal(await record('dep-disable'), undefined);
    const refused = await connectDevice(deviceId, keys.get('dep-disable') ?? '');
    refused.end();
    assert.notEqual(refused.returnCode, 0, 'a disabled device is refused');
  });

  test('a device already gone from the hub is `absent`; a record naming no hub is `none`; both records deleted', async () => {
    await enroll('dep-absent');
    const st = await register('dep-absent');
    await hub().service.deleteDevice(st.deviceId, undefined);
    const r = await deprovision('dep-absent');
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.hubAction, 'absent');
    assert.equal(await record('dep-absent'), undefined);

    await putRecord('dep-failed', { status: 'failed', errorCode: 400208, errorMessage: 'no hub' });
    const none = await deprovision('dep-failed');
    assert.equal(none.status, 200, JSON.stringify(none.json));
    assert.deepEqual(none.json, { registrationId: 'dep-failed', hubAction: 'none', recordDeleted: true });
    assert.equal(await record('dep-failed'), undefined);
  });

  test('unknown registration: 404 with the DPS error body', async () => {
    const r = await deprovision('nobody-here');
    assert.equal(r.status, 404);
    assert.equal(r.json.errorCode, 404202);
    assert.equal(r.headers['x-ms-error-code'], '404202');
    assert.equal(typeof r.json.trackingId, 'string');
  });

  test('a policy without RegistrationStatusWrite, or no token: 401, nothing done', async () => {
    const { deviceId, conn } = await registeredAndConnected('dep-auth');
    for (const auth of [serviceSas('registrationstatusread'), serviceSas('enrollmentwrite'), serviceSas('serviceconfig'), '']) {
      const r = await deprovision('dep-auth', undefined, auth);
      assert.equal(r.status, 401, auth);
      assert.equal(r.json.errorCode, 401000);
    }
    // registrationstatuswrite is enough.
    assert.ok(await record('dep-auth'));
    assert.equal((await hub().service.findDevice(deviceId))?.status, 'enabled');
    const ok = await deprovision('dep-auth', {}, serviceSas('registrationstatuswrite'));
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    await within(conn.closed, 10_000, 'the hub closes the device connection');
  });

  test('bad input: 400 with the DPS error body, nothing done', async () => {
    await putRecord('dep-bad', { assignedHub: hubHost, deviceId: 'dep-bad' });
    const cases: [unknown, string | undefined, number][] = [
      [{ hubAction: 'nuke' }, undefined, 400004],
      [{ hubAction: 'delete', extra: 1 }, undefined, 400004],
      [[1], undefined, 400006],
      ['delete', undefined, 400006],
      [undefined, '{"hubAction":', 400],
    ];
    for (const [body, raw, code] of cases) {
      const r = await deprovision('dep-bad', body, serviceSas(), raw);
      assert.equal(r.status, 400, JSON.stringify(r.json));
      if (code > 1000) assert.equal(r.json.errorCode, code, JSON.stringify(body));
    }
    const badId = await deprovision('bad id!');
    assert.equal(badId.status, 400);
    assert.equal(badId.json.errorCode, 400008);
    assert.ok(await record('dep-bad'), 'the record is kept');
  });

  test('a registration being reprovisioned (record assigning): 409, retry later', async () => {
    await putRecord('dep-busy', { status: 'assigning', assignedHub: hubHost, deviceId: 'dep-busy' });
    const r = await deprovision('dep-busy');
    assert.equal(r.status, 409, JSON.stringify(r.json));
    assert.equal(r.json.errorCode, 409202);
    assert.match(String(r.json.message), /registration .* is being reprovisioned; retry/i);
    assert.ok(await record('dep-busy'));
  });

  test('hub unreachable: 503, the record kept; once the hub is unlinked the action deletes the record only', async () => {
    const down = uniqueLoopback();
    // A linked hub nobody listens for (REST adapter, port 443 on an unused loopback address), outside allocation.
    await homing.dps.admin.linkHub(homing.dps.instance.name, down, {
      connectionString: `HostName=${down};SharedAccessKeyName=iothubowner;SharedAccessKey=${realIds.bytes(32).toString('base64')}`,
      location: 'local',
      applyAllocationPolicy: false,
    });
    await putRecord('dep-down', { assignedHub: down, deviceId: 'dep-down' });
    const r = await deprovision('dep-down');
    assert.equal(r.status, 503, JSON.stringify(r.json));
    assert.equal(r.json.errorCode, 503001);
    assert.match(String(r.json.message), /record is kept; retry/);
    assert.doesNotMatch(String(r.json.message), /SharedAccessKey/);
    assert.ok(await record('dep-down'), 'the record is kept for a retry');

    await homing.dps.admin.unlinkHub(homing.dps.instance.name, down);
    const after = await deprovision('dep-down', { hubAction: 'disable' });
    assert.equal(after.status, 200, JSON.stringify(after.json));
    assert.deepEqual(after.json, { registrationId: 'dep-down', hub: down, deviceId: 'dep-down', hubAction: 'none', recordDeleted: true });
    assert.equal(await record('dep-down'), undefined);
  });
});

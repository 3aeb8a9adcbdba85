import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LightMyRequestResponse } from 'fastify';
import mqtt from 'mqtt';
import type { JsonObject } from '../../../src/core/json.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { createAllocators } from '../../../src/provisioning/allocation/index.ts';
import type { EnrollmentGroup } from '../../../src/provisioning/model.ts';
import type { MqttListener } from '../../../src/transport/mqtt/listener.ts';
import { createDpsRealm } from '../../../src/transport/mqtt/dps/realm.ts';
import { createTestPki, type TestPki } from '../../helpers/pki.ts';
import { startDpsListener, dpsUsername } from '../../transport/mqtt/dps/helpers.ts';
import { createRuntimeFixture, type RuntimeFixture } from '../runtime/fixture.ts';

/**
 * geoLatency and custom allocation through a real RegistrationService and the DPS device API (scenarios 19–23, 26):
 * in-memory SQLite, in-process hubs, a real HTTPS webhook on 127.0.0.1 (test PKI, trusted through caFile).
 */

const API = 'api-version=2021-10-01';

interface OpBody {
  status: string;
  registrationState?: JsonObject & { status: string; assignedHub?: string; deviceId?: string; substatus?: string; errorCode?: number; errorMessage?: string; payload?: JsonObject };
}

interface Call {
  path: string;
  body: { enrollmentGroup?: JsonObject; individualEnrollment?: JsonObject; deviceRuntimeContext: JsonObject & { payload?: JsonObject }; linkedHubs: string[] };
  raw: string;
}

describe('custom and geoLatency allocation through the registration service', () => {
  let pki: TestPki;
  let dir: string;
  let server: https.Server;
  let base: string;
  const calls: Call[] = [];
  const held: http.ServerResponse[] = [];
  /** What /choose answers next (per registration id). */
  const answers = new Map<string, { status?: number; body: unknown }>();
  let f: RuntimeFixture;

  before(async () => {
    pki = await createTestPki();
    dir = await mkdtemp(join(tmpdir(), 'homing-alloc-'));
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, pki.ca.certPem);
    server = https.createServer({ cert: pki.server.certPem, key: pki.server.keyPem }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const path = new URL(req.url ?? '/', 'https://x').pathname;
        const body = JSON.parse(raw) as Call['body'];
        calls.push({ path, body, raw });
        if (path === '/never') {
          held.push(res);
          return;
        }
        if (path === '/invalid') {
          res.writeHead(200, { 'content-type': 'application/json' }).end('not json');
          return;
        }
        const id = String(body.deviceRuntimeContext.registrationId);
        const a = answers.get(id) ?? { body: { iotHubHostName: body.linkedHubs[0] } };
        res.writeHead(a.status ?? 200, { 'content-type': 'application/json' }).end(JSON.stringify(a.body));
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    f = await createRuntimeFixture({
      allocators: createAllocators(
        {
          geoLatency: {
            networks: [
              { cidr: '127.0.1.0/24', location: 'east' },
              { cidr: '127.0.2.0/24', location: 'west' },
            ],
            latencyMs: { east: { eu: 80, us: 20 }, west: { eu: 10, us: 90 } },
          },
          customAllocation: { caFile, timeoutMs: 500 },
        },
        { logger: silentLogger() },
      ),
    });
    await f.setLinkedHubs([f.linkedHub('hub-a.test', { location: 'eu' }), f.linkedHub('hub-b.test', { location: 'us' })]);
  });

  after(async () => {
    for (const r of held) r.destroy();
    await f?.close();
    server?.closeAllConnections();
    if (server) await new Promise((r) => server.close(r));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function put(id: string, key: string, payload?: JsonObject, remoteAddress = '127.0.0.1'): Promise<LightMyRequestResponse> {
    return f.app.inject({
      method: 'PUT',
      url: `/${f.idScope}/registrations/${id}/register?${API}`,
      headers: { 'content-type': 'application/json; charset=utf-8', authorization: f.deviceSas(id, key) },
      payload: JSON.stringify({ registrationId: id, ...(payload ? { payload } : {}) }),
      remoteAddress,
    });
  }

  async function register(g: EnrollmentGroup, id: string, payload?: JsonObject, remoteAddress?: string): Promise<NonNullable<OpBody['registrationState']>> {
    const r = await put(id, f.derivedKey(g, id), payload, remoteAddress);
    assert.equal(r.statusCode, 200, r.body);
    const b = r.json<OpBody>();
    assert.ok(b.registrationState, r.body);
    return b.registrationState;
  }

  const customGroup = (id: string, path: string, o: { updateHubAssignment?: boolean; migrateDeviceData?: boolean; initialTwin?: EnrollmentGroup['initialTwin'] } = {}) =>
    f.addGroup(id, { allocationPolicy: 'custom', iotHubs: ['hub-a.test', 'hub-b.test'], customAllocationDefinition: { webhookUrl: `${base}${path}?code=fn-key`, apiVersion: '2021-10-01' }, ...o });

  it('scenario 19: geoLatency by the network map of the source address; device-reported times win', async () => {
    const g = await f.addGroup('G-geo', { allocationPolicy: 'geoLatency' });
    assert.equal((await register(g, 'geo-east', undefined, '127.0.1.9')).assignedHub, 'hub-b.test');
    assert.equal((await register(g, 'geo-west', undefined, '::ffff:127.0.2.9')).assignedHub, 'hub-a.test');
    // An east device that measured hub-a at 5 ms.
    assert.equal((await register(g, 'geo-probe', { homing: { latencyMs: { 'hub-a.test': 5, 'hub-b.test': 40 } } }, '127.0.1.10')).assignedHub, 'hub-a.test');
    // Unknown network, nothing reported: the weighted hash (both hubs used over a few devices).
    const on = new Set<string>();
    for (let i = 0; i < 12; i++) on.add(String((await register(g, `geo-any-${i}`, undefined, '127.0.9.9')).assignedHub));
    assert.deepEqual([...on].sort(), ['hub-a.test', 'hub-b.test']);
  });

  it('MQTT: the source address of the device connection reaches geoLatency (and the budget gives a final answer)', async () => {
    const g = await f.addGroup('G-geo-mqtt', { allocationPolicy: 'geoLatency' });
    const listener: MqttListener = await startDpsListener(createDpsRealm(f.service, { logger: silentLogger(), responseBudgetMs: 30_000 }), { cert: pki.server.certPem, key: pki.server.keyPem });
    try {
      const viaMqtt = async (id: string, localAddress: string): Promise<OpBody> => {
        const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${listener.address().port}`, {
          ca: pki.ca.certPem,
          servername: 'localhost',
          localAddress,
          clientId: id,
          username: dpsUsername(f.idScope, id),
          password: f.deviceSas(id, f.derivedKey(g, id)),
          protocolVersion: 4,
          reconnectPeriod: 0,
        } as mqtt.IClientOptions);
        try {
          await client.subscribeAsync('$dps/registrations/res/#', { qos: 1 });
          const answer = new Promise<{ topic: string; body: OpBody }>((resolve) => client.once('message', (topic, payload) => resolve({ topic, body: JSON.parse(payload.toString()) as OpBody })));
          await client.publishAsync('$dps/registrations/PUT/iotdps-register/?$rid=1', JSON.stringify({ registrationId: id }), { qos: 1 });
          const a = await answer;
          assert.match(a.topic, /^\$dps\/registrations\/res\/200\//, 'final within the budget: one 200 answer');
          return a.body;
        } finally {
          await client.endAsync();
        }
      };
      assert.equal((await viaMqtt('mqtt-east', '127.0.1.21')).registrationState?.assignedHub, 'hub-b.test');
      assert.equal((await viaMqtt('mqtt-west', '127.0.2.21')).registrationState?.assignedHub, 'hub-a.test');
    } finally {
      await listener.close();
    }
  });

  it('scenario 20: the webhook gets the group (no keys) and the payload, its hub/initialTwin/payload are honoured; a re-registration names the current hub', async () => {
    const g = await customGroup('G-custom', '/choose', { initialTwin: { tags: { from: 'enrollment' } } });
    answers.set('t-007', { body: { iotHubHostName: 'hub-b.test', initialTwin: { tags: { site: 'webhook' }, properties: { desired: { x: 9 } } }, payload: { hello: 'device' } } });
    const s = await register(g, 't-007', { model: 'toaster' });
    assert.equal(s.status, 'assigned');
    assert.equal(s.assignedHub, 'hub-b.test');
    assert.deepEqual(s.payload, { hello: 'device' });
    const first = calls.at(-1);
    assert.ok(first);
    assert.equal(first.body.enrollmentGroup?.enrollmentGroupId, 'G-custom');
    assert.deepEqual(first.body.enrollmentGroup?.attestation, { type: 'symmetricKey' });
    assert.equal(first.body.individualEnrollment, undefined);
    assert.equal(first.body.deviceRuntimeContext.registrationId, 't-007');
    assert.deepEqual(first.body.deviceRuntimeContext.payload, { model: 'toaster' });
    assert.equal(first.body.deviceRuntimeContext.currentIotHubHostName, undefined);
    assert.deepEqual(first.body.linkedHubs, ['hub-a.test', 'hub-b.test']);
    const sk = g.attestation.symmetricKey;
    assert.ok(sk);
    for (const secret of [sk.primaryKey, sk.secondaryKey, f.derivedKey(g, 't-007')]) assert.ok(!first.raw.includes(secret), 'no key material in the webhook request');
    const { twin } = await f.hubs.get('hub-b.test')!.getTwinState('t-007');
    assert.deepEqual(twin.tags, { site: 'webhook' }, 'the webhook initialTwin wins over the enrollment one');
    assert.deepEqual(twin.desired.props, { x: 9 });

    answers.set('t-007', { body: { iotHubHostName: 'hub-b.test', payload: { again: true } } });
    const again = await register(g, 't-007');
    assert.equal(again.assignedHub, 'hub-b.test');
    assert.deepEqual(again.payload, { again: true });
    const second = calls.at(-1);
    assert.equal(second?.body.deviceRuntimeContext.currentIotHubHostName, 'hub-b.test');
    assert.equal(second?.body.deviceRuntimeContext.currentDeviceId, 't-007');
  });

  it('scenario 21: the webhook answers 400 → failed 400207 "status code: 400", no hub device', async () => {
    const g = await customGroup('G-400', '/choose');
    answers.set('t-400', { status: 400, body: { error: 'no' } });
    const s = await register(g, 't-400');
    assert.equal(s.status, 'failed');
    assert.equal(s.errorCode, 400207);
    assert.equal(s.errorMessage, 'Custom allocation failed with status code: 400');
    for (const h of f.hubs.values()) assert.equal(await h.getDevice('t-400').catch(() => undefined), undefined);
  });

  it('scenario 22: a hub not offered, invalid JSON, no answer within the timeout → failed 400207, no hub changes', async () => {
    const before = (await f.counts()).hub_devices;
    const g = await customGroup('G-bad', '/choose');
    answers.set('t-evil', { body: { iotHubHostName: 'evil.example' } });
    const evil = await register(g, 't-evil');
    assert.equal(evil.errorCode, 400207);
    assert.match(String(evil.errorMessage), /evil\.example/);
    const invalid = await register(await customGroup('G-invalid', '/invalid'), 't-invalid');
    assert.equal(invalid.errorCode, 400207);
    assert.match(String(invalid.errorMessage), /not valid JSON/);
    const slow = await register(await customGroup('G-never', '/never'), 't-never');
    assert.equal(slow.status, 'failed');
    assert.equal(slow.errorCode, 400207);
    assert.equal(slow.errorMessage, 'Custom allocation failed: timeout');
    assert.equal((await f.counts()).hub_devices, before);
  });

  it('scenario 23: never reprovision — the webhook is offered only the current hub; the device stays; the payload is delivered', async () => {
    const g = await customGroup('G-never-move', '/choose', { updateHubAssignment: false });
    answers.set('t-stay', { body: { iotHubHostName: 'hub-a.test' } });
    assert.equal((await register(g, 't-stay')).assignedHub, 'hub-a.test');
    answers.set('t-stay', { body: { iotHubHostName: 'hub-a.test', payload: { still: 'here' } } });
    const s = await register(g, 't-stay');
    assert.equal(s.assignedHub, 'hub-a.test');
    assert.deepEqual(s.payload, { still: 'here' });
    assert.deepEqual(calls.at(-1)?.body.linkedHubs, ['hub-a.test']);
    assert.equal(calls.at(-1)?.body.deviceRuntimeContext.currentIotHubHostName, 'hub-a.test');
    // A webhook that insists on the other hub fails the registration (it was not offered); the device stays put.
    answers.set('t-stay', { body: { iotHubHostName: 'hub-b.test' } });
    const refused = await register(g, 't-stay');
    assert.equal(refused.errorCode, 400207);
    assert.equal(await f.hubs.get('hub-b.test')!.getDevice('t-stay').catch(() => undefined), undefined);
  });

  it('scenario 26: reset policy — the webhook initialTwin applies when the hub changes, and is ignored when it does not', async () => {
    const g = await customGroup('G-reset', '/choose', { updateHubAssignment: true, migrateDeviceData: false, initialTwin: { properties: { desired: { x: 1 } } } });
    answers.set('t-reset', { body: { iotHubHostName: 'hub-a.test' } });
    assert.equal((await register(g, 't-reset')).assignedHub, 'hub-a.test');
    answers.set('t-reset', { body: { iotHubHostName: 'hub-a.test', initialTwin: { properties: { desired: { x: 5 } } } } });
    assert.equal((await register(g, 't-reset')).assignedHub, 'hub-a.test');
    assert.deepEqual((await f.hubs.get('hub-a.test')!.getTwinState('t-reset')).twin.desired.props, { x: 1 }, 'same hub: webhook initialTwin ignored');
    answers.set('t-reset', { body: { iotHubHostName: 'hub-b.test', initialTwin: { properties: { desired: { x: 9 } } } } });
    const moved = await register(g, 't-reset');
    assert.equal(moved.assignedHub, 'hub-b.test');
    assert.equal(moved.substatus, 'deviceDataReset');
    assert.deepEqual((await f.hubs.get('hub-b.test')!.getTwinState('t-reset')).twin.desired.props, { x: 9 }, 'new hub: the webhook initialTwin wins');
  });
});

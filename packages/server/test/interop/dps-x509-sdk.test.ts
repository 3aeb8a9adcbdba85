import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { certificateInfo } from '../../src/provisioning/enrollments/x509.ts';
import { createHttpsApp } from '../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../src/transport/http/dps-device-api.ts';
import { createHubRealm, startMqttListener, type MqttListener } from '../../src/transport/mqtt/listener.ts';
import { createDpsRealm } from '../../src/transport/mqtt/dps/realm.ts';
import { deviceListenerTls } from '../../src/transport/tls/device-listener-tls.ts';
import { issueCertificate, type IssuedCert } from '../../src/transport/tls/pki.ts';
import { uniqueLoopback } from '../helpers/ids.ts';
import { createTestPki, type TestPki } from '../helpers/pki.ts';
import { runDeviceScript } from '../helpers/sdk-steps.ts';
import { createX509Fixture, leaf, makeChain, x509Individual, type Chain, type X509Fixture } from '../provisioning/x509/fixture.ts';

/**
 * X.509 attestation with the official device SDK (azure-iot-provisioning-device + -http / -mqtt +
 * azure-iot-security-x509), in a child process trusting the test CA via NODE_EXTRA_CA_CERTS: over HTTPS the DPS app
 * requests the client certificate (no Authorization header), over MQTT the CONNECT has no password and the
 * certificate is in TLS. A provisioned device then connects to its hub (<loopback>:8883) with the same certificate.
 * HTTPS listens on <unique loopback>:443 (the HTTP transport dials 443 only); MQTT on 127.0.0.1:0.
 */
const DEVICE_SCRIPT = fileURLToPath(new URL('./sdk/dps-x509-device.cjs', import.meta.url));

interface StepResult {
  name: string;
  ok: boolean;
  ms: number;
  result?: { assignedHub?: string; deviceId?: string; status?: string; x509?: { enrollmentGroupId?: string; certificateInfo?: { sha1Thumbprint?: string } } };
  twin?: { desired: Record<string, unknown> };
  error?: { name?: string; message?: string; ctor?: string; result?: unknown };
}

interface Step {
  name: string;
  transport: 'http' | 'mqtt';
  host: string;
  idScope: string;
  registrationId: string;
  cert: string;
  key: string;
  connect?: boolean;
}

describe('DPS device SDK with X.509 attestation (official packages)', () => {
  const hubAddr = uniqueLoopback();
  const dpsAddr = uniqueLoopback();
  let pki: TestPki;
  let dir: string;
  let caFile: string;
  let f: X509Fixture;
  let app: FastifyInstance;
  let hubMqtt: MqttListener;
  let dpsMqtt: MqttListener;
  let mqttHost: string;
  let chain: Chain;
  let stepNo = 0;

  function runDevice(steps: Step[]): Promise<Map<string, StepResult>> {
    return runDeviceScript<StepResult>(DEVICE_SCRIPT, steps, caFile, { stepsFile: join(dir, `steps-${++stepNo}.json`) });
  }

  async function one(s: Omit<Step, 'idScope'>): Promise<StepResult> {
    const r = await runDevice([{ ...s, idScope: f.idScope }]);
    return r.get(s.name)!;
  }

  const certs = (leafCert: IssuedCert, ...up: IssuedCert[]) => ({ cert: [leafCert, ...up].map((c) => c.certPem.trim()).join('\n') + '\n', key: leafCert.keyPem });
  const sha1 = (c: IssuedCert) => certificateInfo(new X509Certificate(c.certPem)).sha1Thumbprint;

  /** A raw register PUT over HTTPS: the client certificate chain (PEM), an Authorization header, a session-caching agent. */
  const rawPut = (registrationId: string, o: { cert?: { cert: string; key: string }; auth?: string; agent?: Agent }) =>
    new Promise<{ status: number; body: string; reused: boolean }>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: dpsAddr,
          port: 443,
          method: 'PUT',
          path: `/${f.idScope}/registrations/${registrationId}/register?api-version=2019-03-31`,
          ca: pki.ca.certPem,
          servername: 'localhost',
          headers: { 'content-type': 'application/json', ...(o.auth ? { authorization: o.auth } : {}) },
          ...(o.agent ? { agent: o.agent } : {}),
          ...(o.cert ?? {}),
        },
        (res) => {
          const reused = (res.socket as TLSSocket).isSessionReused();
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body, reused }));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ registrationId }));
    });

  before(async () => {
    pki = await createTestPki([hubAddr, dpsAddr]);
    dir = mkdtempSync(join(tmpdir(), 'homing-dps-x509-sdk-'));
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, pki.ca.certPem);
    f = await createX509Fixture({ hubName: hubAddr, clock: systemClock });
    const tls = { cert: pki.server.certPem, key: pki.server.keyPem };
    // The device listeners' TLS settings of `homing start`.
    app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps-device', tls: deviceListenerTls(tls) });
    registerDpsDeviceApi(app, { registration: f.service, responseBudgetMs: 30_000 });
    await app.listen({ host: dpsAddr, port: 443 });
    dpsMqtt = await startMqttListener({ host: '127.0.0.1', port: 0, tls: deviceListenerTls(tls), realms: [createDpsRealm(f.service, { logger: silentLogger(), responseBudgetMs: 30_000 })], logger: silentLogger() });
    mqttHost = `127.0.0.1:${dpsMqtt.address().port}`;
    hubMqtt = await startMqttListener({ host: hubAddr, port: 8883, tls: { ...tls, requestCert: true }, realms: [createHubRealm(f.hub)], logger: silentLogger() });
    chain = await makeChain('Interop');
    await f.cas.upload(f.instanceName, 'interop-root', { certificate: chain.root.certPem, isVerified: true });
    await f.addGroup('interop-i2', { signingCertificates: { primary: { certificate: chain.i2.certPem } } });
  });

  after(async () => {
    await app?.close();
    await dpsMqtt?.close();
    await hubMqtt?.close();
    await f?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('HTTPS, individual enrollment: assigned with the leaf as x509.certificateInfo; the device connects to its hub with the same certificate', async () => {
    const l = await issueCertificate({ commonName: 'x509-http-1', usages: ['client'] });
    await f.addIndividual('x509-http-1', x509Individual(l));
    const r = await one({ name: 'http-ind', transport: 'http', host: dpsAddr, registrationId: 'x509-http-1', ...certs(l), connect: true });
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.status, 'assigned');
    assert.equal(r.result!.assignedHub, hubAddr);
    assert.equal(r.result!.deviceId, 'x509-http-1');
    assert.equal(r.result!.x509?.certificateInfo?.sha1Thumbprint, sha1(l));
    assert.ok(r.twin, 'twin read over the hub connection');
    const dev = await f.hub.getDevice('x509-http-1');
    assert.equal(dev.authentication.type, 'selfSigned');
  });

  test('MQTT, individual enrollment: assigned (no password, certificate in TLS), then the hub connection with the same certificate', async () => {
    const l = await issueCertificate({ commonName: 'x509-mqtt-1', usages: ['client'] });
    await f.addIndividual('x509-mqtt-1', x509Individual(l));
    const r = await one({ name: 'mqtt-ind', transport: 'mqtt', host: mqttHost, registrationId: 'x509-mqtt-1', ...certs(l), connect: true });
    assert.ok(r.ok, JSON.stringify(r.error));
    assert.equal(r.result!.status, 'assigned');
    assert.equal(r.result!.deviceId, 'x509-mqtt-1');
    assert.ok(r.twin);
  });

  test('group on intermediate I2 under a verified root: leaf+I2+I1 is assigned over HTTPS and MQTT; leaf+I2 is refused (401)', async () => {
    const l1 = await leaf(chain.i2, 'x509-grp-1');
    const ok = await one({ name: 'grp-http', transport: 'http', host: dpsAddr, registrationId: 'x509-grp-1', ...certs(l1, chain.i2, chain.i1), connect: true });
    assert.ok(ok.ok, JSON.stringify(ok.error));
    assert.equal(ok.result!.x509?.enrollmentGroupId, 'interop-i2');
    assert.ok(ok.twin);

    const l2 = await leaf(chain.i2, 'x509-grp-2');
    const okMqtt = await one({ name: 'grp-mqtt', transport: 'mqtt', host: mqttHost, registrationId: 'x509-grp-2', ...certs(l2, chain.i2, chain.i1) });
    assert.ok(okMqtt.ok, JSON.stringify(okMqtt.error));
    assert.equal(okMqtt.result!.x509?.enrollmentGroupId, 'interop-i2');

    const l3 = await leaf(chain.i2, 'x509-grp-3');
    const short = await one({ name: 'grp-short', transport: 'http', host: dpsAddr, registrationId: 'x509-grp-3', ...certs(l3, chain.i2) });
    assert.equal(short.ok, false);
    assert.match(JSON.stringify(short.error), /401|Unauthorized/i);
    const shortMqtt = await one({ name: 'grp-short-mqtt', transport: 'mqtt', host: mqttHost, registrationId: 'x509-grp-3', ...certs(l3, chain.i2) });
    assert.equal(shortMqtt.ok, false);
    assert.equal(shortMqtt.error!.ctor, 'UnauthorizedError', JSON.stringify(shortMqtt.error));
    assert.equal(await f.hub.findDevice('x509-grp-3'), undefined);
  });

  test('raw HTTPS: a client certificate without Authorization is X.509 (401002 "Invalid certificate" when unknown); an Authorization header is the SAS path', async () => {
    const l = await issueCertificate({ commonName: 'x509-raw', usages: ['client'] });
    const put = (o: { cert?: IssuedCert; auth?: string }) => rawPut('x509-raw', { ...(o.cert ? { cert: certs(o.cert) } : {}), ...(o.auth ? { auth: o.auth } : {}) });
    const unknown = await put({ cert: l });
    assert.equal(unknown.status, 401);
    const b = JSON.parse(unknown.body) as { errorCode: number; message: string };
    assert.equal(b.errorCode, 401002);
    assert.equal(b.message, 'Invalid certificate');
    // No certificate, no Authorization: the SAS path's 401000.
    assert.equal((JSON.parse((await put({})).body) as { errorCode: number }).errorCode, 401000);
    // An Authorization header wins over the certificate.
    await f.addIndividual('x509-raw', x509Individual(l));
    assert.equal((JSON.parse((await put({ cert: l, auth: 'SharedAccessSignature sr=x&sig=y&se=1&skn=registration' })).body) as { errorCode: number }).errorCode, 401000);
    const ok = await put({ cert: l });
    assert.equal(ok.status, 200, ok.body);
    assert.equal((JSON.parse(ok.body) as { registrationState: { x509: { certificateInfo: { sha1Thumbprint: string } } } }).registrationState.x509.certificateInfo.sha1Thumbprint, sha1(l));
  });

  test('a certificate from an unknown CA is refused over HTTPS with 401', async () => {
    const stranger = await makeChain('Stranger');
    const l = await leaf(stranger.i1, 'x509-stranger');
    const r = await one({ name: 'stranger', transport: 'http', host: dpsAddr, registrationId: 'x509-stranger', ...certs(l, stranger.i1, stranger.root) });
    assert.equal(r.ok, false);
    assert.match(JSON.stringify(r.error), /401|Unauthorized/i);
  });
  test('a device whose TLS client keeps sessions (Node\'s https agent) gets a full handshake on its next connection, so its intermediates are there again', async () => {
    // A resumed TLS session keeps the client's leaf but not the intermediates it sent: a group device under I2 would
    // be refused on a resumed connection. The device listeners send no resumable tickets (deviceListenerTls).
    const l = await leaf(chain.i2, 'x509-resume');
    const agent = new Agent({ keepAlive: false, maxCachedSessions: 10 });
    const put = () => rawPut('x509-resume', { cert: certs(l, chain.i2, chain.i1), agent });
    try {
      const first = await put();
      assert.equal(first.status, 200, first.body);
      const second = await put();
      assert.equal(second.reused, false, 'the second connection resumed the first one\'s TLS session');
      assert.equal(second.status, 200, second.body);
      assert.equal((JSON.parse(second.body) as { registrationState?: { x509?: { enrollmentGroupId?: string } } }).registrationState?.x509?.enrollmentGroupId, 'interop-i2');
    } finally {
      agent.destroy();
    }
    // The DPS MQTT listener alike: a client offering the session of its previous connection gets a full handshake.
    const mqtt = (session?: Buffer) => tlsConnect({ host: '127.0.0.1', port: dpsMqtt.address().port, ca: pki.ca.certPem, servername: 'localhost', ...certs(l, chain.i2, chain.i1), ...(session ? { session } : {}) });
    const c1 = mqtt();
    c1.on('error', () => undefined);
    // A full handshake always ends with tickets (stateful ones here, which nothing can resume).
    const [session] = (await once(c1, 'session')) as [Buffer];
    c1.destroy();
    const c2 = mqtt(session);
    c2.on('error', () => undefined);
    await once(c2, 'secureConnect');
    const resumed = c2.isSessionReused();
    c2.destroy();
    assert.equal(resumed, false, 'the MQTT connection resumed the previous TLS session');
  });
});

import { afterEach, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildSas } from '../../../src/core/sas.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { CaCertificateService } from '../../../src/provisioning/ca-certificates.ts';
import { createHttpsApp } from '../../../src/transport/http/app.ts';
import { registerCaApi } from '../../../src/transport/http/ca-api.ts';
import { registerDpsServiceApi } from '../../../src/transport/http/dps-service-api.ts';
import { issueCertificate, type IssuedCert } from '../../../src/transport/tls/pki.ts';
import { createFixture, type Fixture } from '../../provisioning/fixtures.ts';
import { realIds } from '../../helpers/ids.ts';
import { issueDeviceCert } from '../../helpers/pki.ts';

const HOST = 'dps.homing.test';
const JSON_CT = 'application/json; charset=utf-8';
const DAY = 86_400_000;

type Json = Record<string, unknown>;

interface Harness {
  f: Fixture;
  app: FastifyInstance;
  call(method: InjectOptions['method'], url: string, opts?: { body?: unknown; raw?: string; headers?: Record<string, string>; policy?: string; sas?: string | null }): Promise<LightMyRequestResponse>;
}

async function harness(): Promise<Harness> {
  const f = await createFixture({ hostNames: [HOST] });
  // Certificates are issued at the real time; the fixture's clock starts in 2026-01-01.
  f.clock.ms = Date.now();
  const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps-service' });
  registerDpsServiceApi(app, { instances: f.resolver, enrollments: f.enrollments, registrations: f.registrations, admin: f.instances, clock: f.clock });
  const certificates = new CaCertificateService({ store: f.store.caCertificates, clock: f.clock, ids: realIds });
  registerCaApi(app, { instances: f.resolver, certificates, clock: f.clock });
  await app.ready();
  const sas = (policy: string): string => {
    const p = f.instance.policies.find((x) => x.keyName === policy);
    if (!p) throw new Error(`no policy ${policy}`);
    return buildSas({ sr: HOST, keyBase64: p.primaryKey, expirySeconds: Math.floor(f.clock.now() / 1000) + 3600, keyName: policy });
  };
  const call: Harness['call'] = (method, url, o = {}) => {
    const headers: Record<string, string> = { host: HOST, ...o.headers };
    const token = o.sas === undefined ? sas(o.policy ?? 'provisioningserviceowner') : o.sas;
    if (token !== null) headers.authorization = token;
    let payload: string | undefined;
    if (o.raw !== undefined) payload = o.raw;
    else if (o.body !== undefined) payload = JSON.stringify(o.body);
    if (payload !== undefined) headers['content-type'] ??= JSON_CT;
    return app.inject({ method, url, headers, ...(payload !== undefined ? { payload } : {}) });
  };
  return { f, app, call };
}

function json(r: LightMyRequestResponse): Json {
  assert.equal(r.headers['content-type'], JSON_CT);
  return r.json<Json>();
}

function props(r: LightMyRequestResponse): Json {
  return json(r).properties as Json;
}

function assertDpsError(r: LightMyRequestResponse, status: number, code: number): Json {
  assert.equal(r.statusCode, status, r.body);
  const body = json(r);
  assert.equal(body.errorCode, code);
  assert.equal(r.headers['x-ms-error-code'], String(code));
  assert.equal(typeof body.trackingId, 'string');
  return body;
}

type X509Crypto = Parameters<typeof x509.X509CrlGenerator.create>[1];

async function issueCrl(issuer: IssuedCert, revoked: readonly IssuedCert[]): Promise<string> {
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: issuer.cert.subject,
      thisUpdate: new Date(Date.now() - DAY),
      nextUpdate: new Date(Date.now() + 7 * DAY),
      entries: revoked.map((c) => ({ serialNumber: c.cert.serialNumber })),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      signingKey: issuer.key,
    },
    webcrypto as unknown as X509Crypto,
  );
  return crl.toString('pem');
}

describe('CA certificates admin API', () => {
  let root: IssuedCert;
  let other: IssuedCert;
  before(async () => {
    root = await issueCertificate({ commonName: 'Api Root', isCA: true });
    other = await issueCertificate({ commonName: 'Api Other', isCA: true });
  });

  let h: Harness;
  beforeEach(async () => {
    h = await harness();
  });
  afterEach(async () => {
    await h.app.close();
    await h.f.close();
  });
  const listBody = async (): Promise<string> => {
    const r = await h.call('GET', '/homing/certificates');
    assert.equal(r.statusCode, 200);
    return r.body;
  };

  it('uploads, lists, gets and deletes a CA certificate in the Azure shape', async () => {
    const put = await h.call('PUT', '/homing/certificates/root-1?api-version=2022-02-05', { body: { certificate: root.certPem } });
    assert.equal(put.statusCode, 200, put.body);
    const c = json(put);
    assert.equal(c.name, 'root-1');
    assert.equal(typeof c.etag, 'string');
    const p = c.properties as Json;
    assert.deepEqual(Object.keys(p).sort(), ['certificate', 'created', 'expiry', 'isVerified', 'sha256Thumbprint', 'subject', 'thumbprint', 'updated']);
    assert.equal(p.subject, 'CN=Api Root');
    assert.equal(p.isVerified, false);
    assert.match(String(p.thumbprint), /^[0-9A-F]{40}$/);
    assert.match(String(p.expiry), /GMT$/);

    const list = json(await h.call('GET', '/homing/certificates'));
    assert.deepEqual(list, { value: [c] });
    assert.deepEqual(json(await h.call('GET', '/HOMING/Certificates/ROOT-1/')), c);

    assertDpsError(await h.call('DELETE', '/homing/certificates/root-1', { headers: { 'if-match': 'stale' } }), 412, 412002);
    const del = await h.call('DELETE', '/homing/certificates/root-1', { headers: { 'if-match': `"${String(c.etag)}"` } });
    assert.equal(del.statusCode, 204);
    assertDpsError(await h.call('GET', '/homing/certificates/root-1'), 404, 404000);
    assertDpsError(await h.call('DELETE', '/homing/certificates/root-1'), 404, 404000);
  });

  it('runs proof of possession end to end: code, signed proof, verified', async () => {
    await h.call('PUT', '/homing/certificates/pop', { body: { certificate: root.certPem } });
    const gen = await h.call('POST', '/homing/certificates/pop/generateVerificationCode', { headers: { 'content-length': '0' } });
    assert.equal(gen.statusCode, 200, gen.body);
    const code = String(props(gen).verificationCode);
    assert.match(code, /^[0-9A-F]{48}$/);
    assert.equal(props(gen).isVerified, false);

    const wrong = await issueDeviceCert(other, code);
    assertDpsError(await h.call('POST', '/homing/certificates/pop/verify', { body: { certificate: wrong.certPem } }), 400, 400004);
    assert.equal(props(await h.call('GET', '/homing/certificates/pop')).isVerified, false);

    const proof = await issueDeviceCert(root, code);
    const ver = await h.call('POST', '/homing/certificates/pop/verify', { body: { certificate: proof.certPem } });
    assert.equal(ver.statusCode, 200, ver.body);
    assert.equal(props(ver).isVerified, true);
    assert.equal(props(ver).verificationCode, undefined);
    assert.deepEqual(json(await h.call('GET', '/homing/certificates/pop')), json(ver));
  });

  it('accepts "verified on upload" as an explicit choice', async () => {
    const r = await h.call('PUT', '/homing/certificates/trusted', { body: { certificate: root.certPem, isVerified: true } });
    assert.equal(props(r).isVerified, true);
  });

  it('refuses the 26th CA certificate with 403 403002 and stores nothing', async () => {
    for (let n = 0; n < 25; n++) {
      const ca = await issueCertificate({ commonName: `Quota CA ${n}`, isCA: true });
      assert.equal((await h.call('PUT', `/homing/certificates/ca-${n}`, { body: { certificate: ca.certPem } })).statusCode, 200);
    }
    const before = await listBody();
    assertDpsError(await h.call('PUT', '/homing/certificates/ca-25', { body: { certificate: root.certPem } }), 403, 403002);
    assert.equal(await listBody(), before);
    assert.equal((json(await h.call('GET', '/homing/certificates')).value as unknown[]).length, 25);
  });

  it('rejects bad requests with the DPS error body and changes nothing', async () => {
    const first = await h.call('PUT', '/homing/certificates/root', { body: { certificate: root.certPem } });
    assert.equal(first.statusCode, 200);
    const before = await listBody();
    const leaf = await issueDeviceCert(root, 'dev-1');
    assertDpsError(await h.call('PUT', '/homing/certificates/x', { body: { certificate: '-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----' } }), 400, 400004);
    assertDpsError(await h.call('PUT', '/homing/certificates/x', { body: { certificate: 'garbage' } }), 400, 400004);
    assertDpsError(await h.call('PUT', '/homing/certificates/x', { body: { certificate: leaf.certPem } }), 400, 400004);
    assertDpsError(await h.call('PUT', '/homing/certificates/x', { raw: '{not json' }), 400, 400006);
    assertDpsError(await h.call('PUT', '/homing/certificates/root', { body: { certificate: other.certPem } }), 409, 409001);
    assertDpsError(await h.call('PUT', '/homing/certificates/copy', { body: { certificate: root.certPem } }), 409, 409001);
    assertDpsError(await h.call('PUT', '/homing/certificates/root', { body: { certificate: other.certPem }, headers: { 'if-match': 'stale' } }), 412, 412002);
    assertDpsError(await h.call('POST', '/homing/certificates/root/verify', { body: { certificate: leaf.certPem } }), 400, 400004);
    assertDpsError(await h.call('PUT', '/homing/certificates/root/crl', { body: { crl: 'nope' } }), 400, 400004);
    assertDpsError(await h.call('PUT', '/homing/certificates/root/crl', { body: { crl: await issueCrl(other, []) } }), 400, 400004);
    assertDpsError(await h.call('PUT', '/homing/certificates/bad%20name', { body: { certificate: other.certPem } }), 400, 400004);
    assert.equal(await listBody(), before);
  });

  it('stores a CRL for a CA and shows its summary', async () => {
    await h.call('PUT', '/homing/certificates/root', { body: { certificate: root.certPem } });
    const d = await issueDeviceCert(root, 'dev-1');
    const r = await h.call('PUT', '/homing/certificates/root/crl', { body: { crl: await issueCrl(root, [d]) } });
    assert.equal(r.statusCode, 200, r.body);
    const crl = props(r).crl as Json;
    assert.equal(crl.revokedCount, 1);
    assert.equal(typeof crl.thisUpdate, 'string');
    assert.deepEqual(json(await h.call('GET', '/homing/certificates/root')), json(r));
  });

  it('requires the ServiceConfig right, authenticating before reading the body', async () => {
    await h.call('PUT', '/homing/certificates/root', { body: { certificate: root.certPem } });
    const before = await listBody();
    for (const policy of ['enrollmentread', 'enrollmentwrite', 'registrationstatuswrite', 'deviceconnect']) {
      assertDpsError(await h.call('GET', '/homing/certificates', { policy }), 401, 401000);
      assertDpsError(await h.call('PUT', '/homing/certificates/other', { policy, body: { certificate: other.certPem } }), 401, 401000);
      assertDpsError(await h.call('DELETE', '/homing/certificates/root', { policy }), 401, 401000);
      assertDpsError(await h.call('POST', '/homing/certificates/root/generateVerificationCode', { policy }), 401, 401000);
    }
    assertDpsError(await h.call('GET', '/homing/certificates', { sas: null }), 401, 401000);
    assertDpsError(await h.call('PUT', '/homing/certificates/x', { sas: null, raw: '{not json' }), 401, 401000);
    assertDpsError(await h.call('GET', '/homing/certificates', { headers: { host: 'elsewhere.test' }, sas: 'SharedAccessSignature sr=elsewhere.test&sig=x&se=9999999999&skn=serviceconfig' }), 401, 401000);
    assert.equal(await listBody(), before);
    const ok = await h.call('GET', '/homing/certificates', { policy: 'serviceconfig' });
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.body, before);
  });
});

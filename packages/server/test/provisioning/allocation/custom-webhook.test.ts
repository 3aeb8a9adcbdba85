import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { AllocationContext, AllocationDecision, AllocationDevice } from '../../../src/core/allocation.ts';
import { ERROR_CATALOGUE } from '../../../src/core/errors.ts';
import type { JsonObject } from '../../../src/core/json.ts';
import { createLogger } from '../../../src/observability/logger.ts';
import {
  buildAllocationRequest,
  createCustomWebhookAllocator,
  parseAllocationResponse,
  redactUrl,
  signWebhookBody,
  type CustomWebhookAllocator,
  type WebhookRequest,
} from '../../../src/provisioning/allocation/custom-webhook.ts';
import { createAllocators } from '../../../src/provisioning/allocation/index.ts';
import type { EnrollmentGroup, IndividualEnrollment, LinkedHub } from '../../../src/provisioning/model.ts';
import { ManualClock } from '../../helpers/ids.ts';
import { createTestPki, type TestPki } from '../../helpers/pki.ts';

/**
 * The custom allocation webhook client (dps-behavior.md §3.5, scenarios 20–23) against real local webhook servers:
 * HTTPS with the test PKI (trusted through `caFile`) and plain HTTP, on 127.0.0.1 port 0.
 */

const SECRET = 'webhook-signing-secret-0123456789';
const FUNCTION_KEY = 'fn-key-Zm9vYmFyYmF6';

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: JsonObject;
}

function hub(name: string, o: Partial<LinkedHub> = {}): LinkedHub {
  return { name, connectionString: `HostName=${name};SharedAccessKeyName=iothubowner;SharedAccessKey=${randomBytes(32).toString('base64')}`, location: 'local', allocationWeight: 1, applyAllocationPolicy: true, ...o };
}

const HUBS = [hub('hub-a.test'), hub('hub-b.test')];
const KEYS = { primaryKey: randomBytes(32).toString('base64'), secondaryKey: randomBytes(32).toString('base64') };

function group(webhookUrl: string): EnrollmentGroup {
  return {
    enrollmentGroupId: 'G-custom',
    attestation: { type: 'symmetricKey', symmetricKey: KEYS },
    capabilities: { iotEdge: false },
    initialTwin: { tags: { from: 'enrollment' } },
    provisioningStatus: 'enabled',
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    allocationPolicy: 'custom',
    iotHubs: HUBS.map((h) => h.name),
    customAllocationDefinition: { webhookUrl, apiVersion: '2021-10-01' },
    etag: 'etag-1',
    createdDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
    lastUpdatedDateTimeUtc: '2026-01-01T00:00:00.0000000Z',
  };
}

function individual(webhookUrl: string): IndividualEnrollment {
  const { enrollmentGroupId: _, ...common } = group(webhookUrl);
  return { ...common, registrationId: 'ind-1', deviceId: 'ind-device' };
}

function ctx(webhookUrl: string, o: { payload?: JsonObject; currentHub?: string; currentDeviceId?: string; hubs?: LinkedHub[]; enrollment?: AllocationDevice['enrollment']; attestation?: AllocationDevice['attestation'] } = {}): AllocationContext {
  const device: AllocationDevice = {
    sourceAddress: '127.0.0.1',
    attestation: o.attestation ?? { type: 'symmetricKey' },
    enrollment: o.enrollment ?? { kind: 'group', value: group(webhookUrl) },
    ...(o.payload ? { payload: o.payload } : {}),
    ...(o.currentHub ? { currentHub: o.currentHub } : {}),
    ...(o.currentDeviceId ? { currentDeviceId: o.currentDeviceId } : {}),
  };
  return { registrationId: 't-007', policy: 'custom', hubs: o.hubs ?? HUBS, unlinked: [], listed: true, device };
}

function failure(d: AllocationDecision): { code: number; message: string } {
  assert.equal(d.kind, 'failed', 'expected a failed decision');
  return d.kind === 'failed' ? { code: ERROR_CATALOGUE[d.errorName].code, message: d.message } : { code: 0, message: '' };
}

describe('custom allocation webhook', () => {
  let pki: TestPki;
  let dir: string;
  let caFile: string;
  let httpsServer: https.Server;
  let httpServer: http.Server;
  let base: string;
  let plainBase: string;
  const received: Received[] = [];
  /** Requests held without an answer (the timeout case), released at the end. */
  const held: http.ServerResponse[] = [];
  const logLines: string[] = [];
  let allocator: CustomWebhookAllocator;
  const clock = new ManualClock(Date.parse('2026-03-01T12:00:00Z'));

  /** What the webhook answers, by path. */
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://x');
      received.push({ path: url.pathname, headers: req.headers, raw, body: JSON.parse(raw) as JsonObject });
      const json = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      };
      switch (url.pathname) {
        case '/api/allocate': {
          // Functions-style key check: no key, 401.
          if (url.searchParams.get('code') !== FUNCTION_KEY) return json(401, { error: 'no key' });
          const body = JSON.parse(raw) as { deviceRuntimeContext: { payload?: JsonObject }; linkedHubs: string[] };
          const model = body.deviceRuntimeContext.payload?.model;
          return json(200, {
            iotHubHostName: model === 'toaster' ? 'HUB-B.test' : body.linkedHubs[0],
            initialTwin: { tags: { model: model ?? null, via: 'webhook' }, properties: { desired: { x: 9 }, reported: { ignored: true } } },
            payload: { greeting: 'hello', hub: 'b' },
          });
        }
        case '/minimal':
          return json(200, { iotHubHostName: 'hub-a.test' });
        case '/status400':
          return json(400, { error: 'bad' });
        case '/status500':
          return json(503, { error: 'down' });
        case '/invalid-json':
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"iotHubHostName": "hub-a.test"');
          return;
        case '/unknown-hub':
          return json(200, { iotHubHostName: 'evil.example' });
        case '/no-hub':
          return json(200, { payload: { a: 1 } });
        case '/bad-twin':
          return json(200, { iotHubHostName: 'hub-a.test', initialTwin: { tags: 'nope' } });
        case '/bad-payload':
          return json(200, { iotHubHostName: 'hub-a.test', payload: [1, 2] });
        case '/proto':
          res.writeHead(200).end('{"iotHubHostName":"hub-a.test","payload":{"__proto__":{"polluted":true}}}');
          return;
        case '/big':
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ iotHubHostName: 'hub-a.test', payload: { blob: 'x'.repeat(200 * 1024) } }));
          return;
        case '/never':
          held.push(res);
          return;
        default:
          return json(404, {});
      }
    });
  };

  before(async () => {
    pki = await createTestPki();
    dir = await mkdtemp(join(tmpdir(), 'homing-webhook-'));
    caFile = join(dir, 'ca.pem');
    await writeFile(caFile, pki.ca.certPem);
    httpsServer = https.createServer({ cert: pki.server.certPem, key: pki.server.keyPem }, handler);
    httpsServer.listen(0, '127.0.0.1');
    await once(httpsServer, 'listening');
    base = `https://127.0.0.1:${(httpsServer.address() as AddressInfo).port}`;
    httpServer = http.createServer(handler);
    httpServer.listen(0, '127.0.0.1');
    await once(httpServer, 'listening');
    plainBase = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString());
        cb();
      },
    });
    allocator = createCustomWebhookAllocator({ config: { caFile, signingSecret: SECRET }, logger: createLogger({ level: 'debug', destination: sink }), clock });
  });

  after(async () => {
    for (const r of held) r.destroy();
    httpsServer.closeAllConnections();
    httpServer.closeAllConnections();
    await Promise.all([new Promise((r) => httpsServer.close(r)), new Promise((r) => httpServer.close(r))]);
    await rm(dir, { recursive: true, force: true });
  });

  const lastReceived = (): Received => {
    const r = received.at(-1);
    assert.ok(r, 'the webhook received a request');
    return r;
  };

  it('scenario 20: first registration — AllocationRequest shape, no key material, the webhook decision honoured', async () => {
    const url = `${base}/api/allocate?code=${FUNCTION_KEY}`;
    const d = await allocator(ctx(url, { payload: { model: 'toaster' } }));
    assert.equal(d.kind, 'assigned', d.kind === 'failed' ? d.message : '');
    if (d.kind !== 'assigned') return;
    assert.equal(d.hub.name, 'hub-b.test', 'the linked hub, matched case-insensitively');
    assert.equal(d.policy, 'custom');
    assert.deepEqual(d.initialTwin, { tags: { model: 'toaster', via: 'webhook' }, properties: { desired: { x: 9 } } });
    assert.deepEqual(d.payload, { greeting: 'hello', hub: 'b' });

    const r = lastReceived();
    assert.equal(r.path, '/api/allocate');
    assert.match(String(r.headers['content-type']), /^application\/json/);
    const body = r.body as { enrollmentGroup: JsonObject; deviceRuntimeContext: JsonObject; linkedHubs: string[]; individualEnrollment?: unknown };
    assert.equal(body.individualEnrollment, undefined);
    assert.equal(body.enrollmentGroup.enrollmentGroupId, 'G-custom');
    assert.deepEqual(body.enrollmentGroup.attestation, { type: 'symmetricKey' });
    assert.equal(body.enrollmentGroup.allocationPolicy, 'custom');
    assert.deepEqual(body.enrollmentGroup.iotHubs, ['hub-a.test', 'hub-b.test']);
    assert.deepEqual(body.enrollmentGroup.initialTwin, { tags: { from: 'enrollment' } });
    assert.deepEqual(body.deviceRuntimeContext, { registrationId: 't-007', symmetricKey: {}, payload: { model: 'toaster' } });
    assert.deepEqual(body.linkedHubs, ['hub-a.test', 'hub-b.test']);
    for (const secret of [KEYS.primaryKey, KEYS.secondaryKey, ...HUBS.map((h) => h.connectionString), 'SharedAccessKey', 'primaryKey']) {
      assert.ok(!r.raw.includes(secret), `the request body must not contain ${secret.slice(0, 12)}...`);
    }
  });

  it('scenario 20: re-registration carries currentIotHubHostName and currentDeviceId; linkedHubs is ctx.hubs (scenario 23)', async () => {
    const url = `${base}/api/allocate?code=${FUNCTION_KEY}`;
    const d = await allocator(ctx(url, { currentHub: 'hub-a.test', currentDeviceId: 't-007-dev', hubs: [HUBS[0]!] }));
    assert.equal(d.kind, 'assigned');
    const body = lastReceived().body as { deviceRuntimeContext: JsonObject; linkedHubs: string[] };
    assert.equal(body.deviceRuntimeContext.currentIotHubHostName, 'hub-a.test');
    assert.equal(body.deviceRuntimeContext.currentDeviceId, 't-007-dev');
    assert.deepEqual(body.linkedHubs, ['hub-a.test']);
    assert.ok(!('payload' in body.deviceRuntimeContext), 'no payload when the device sent none');
  });

  it('individual enrollment and X.509: individualEnrollment (no certificates) and the x509 details', async () => {
    const url = `${base}/minimal`;
    const x509 = { certificateInfo: { subjectName: 'CN=ind-1', sha1Thumbprint: 'AB', sha256Thumbprint: 'CD' } };
    const enr = individual(url);
    enr.attestation = { type: 'x509', x509: { clientCertificates: { primary: { certificate: pki.server.certPem } } } };
    const d = await allocator(ctx(url, { enrollment: { kind: 'individual', value: enr }, attestation: { type: 'x509', x509 } }));
    assert.equal(d.kind, 'assigned');
    const r = lastReceived();
    const body = r.body as { individualEnrollment: JsonObject; deviceRuntimeContext: JsonObject; enrollmentGroup?: unknown };
    assert.equal(body.enrollmentGroup, undefined);
    assert.equal(body.individualEnrollment.registrationId, 'ind-1');
    assert.equal(body.individualEnrollment.deviceId, 'ind-device');
    assert.deepEqual(body.individualEnrollment.attestation, { type: 'x509' });
    assert.deepEqual(body.deviceRuntimeContext.x509, x509);
    assert.equal(body.deviceRuntimeContext.symmetricKey, undefined);
    assert.ok(!r.raw.includes('BEGIN CERTIFICATE'));
    // A minimal answer: no initialTwin (the enrollment's applies), no payload.
    if (d.kind === 'assigned') {
      assert.equal(d.initialTwin, undefined);
      assert.equal(d.payload, undefined);
    }
  });

  it('HMAC signature: x-homing-timestamp (injected clock) and x-homing-signature over timestamp.body verify', async () => {
    await allocator(ctx(`${base}/minimal`));
    const r = lastReceived();
    assert.equal(r.headers['x-homing-timestamp'], String(Date.parse('2026-03-01T12:00:00Z') / 1000));
    const expected = `sha256=${createHmac('sha256', SECRET).update(`${r.headers['x-homing-timestamp']}.${r.raw}`).digest('hex')}`;
    assert.equal(r.headers['x-homing-signature'], expected);
    assert.equal(signWebhookBody(SECRET, 1, '{}'), `sha256=${createHmac('sha256', SECRET).update('1.{}').digest('hex')}`);
    // Without a secret: no signature headers.
    const unsigned = createCustomWebhookAllocator({ config: { caFile }, logger: createLogger({ level: 'silent' }) });
    await unsigned(ctx(`${base}/minimal`));
    assert.equal(lastReceived().headers['x-homing-signature'], undefined);
    assert.equal(lastReceived().headers['x-homing-timestamp'], undefined);
  });

  it('scenario 21: non-2xx → 400207 "Custom allocation failed with status code: N"; the key-less Functions URL gets 401', async () => {
    assert.deepEqual(failure(await allocator(ctx(`${base}/status400`))), { code: 400207, message: 'Custom allocation failed with status code: 400' });
    assert.deepEqual(failure(await allocator(ctx(`${base}/status500`))), { code: 400207, message: 'Custom allocation failed with status code: 503' });
    assert.deepEqual(failure(await allocator(ctx(`${base}/api/allocate?code=wrong`))), { code: 400207, message: 'Custom allocation failed with status code: 401' });
  });

  it('scenario 22: invalid JSON, a hub not offered, no hub, a bad initialTwin or payload, __proto__, an oversized body → 400207', async () => {
    const cases: [string, RegExp][] = [
      ['/invalid-json', /not valid JSON/],
      ['/unknown-hub', /"evil\.example", which is not one of the linked hubs offered \(hub-a\.test, hub-b\.test\)/],
      ['/no-hub', /no iotHubHostName/],
      ['/bad-twin', /initialTwin is invalid: initialTwin\.tags must be a JSON object/],
      ['/bad-payload', /payload must be a JSON object/],
      ['/proto', /not valid JSON/],
      ['/big', /larger than 98304 bytes/],
    ];
    for (const [path, re] of cases) {
      const f = failure(await allocator(ctx(`${base}${path}`)));
      assert.equal(f.code, 400207, path);
      assert.match(f.message, /^Custom allocation failed: /, path);
      assert.match(f.message, re, path);
    }
    // A hub the webhook names that is linked but not offered (never-reprovision: only the current hub is offered).
    const f = failure(await allocator(ctx(`${base}/api/allocate?code=${FUNCTION_KEY}`, { payload: { model: 'toaster' }, hubs: [HUBS[0]!] })));
    assert.match(f.message, /HUB-B\.test.*not one of the linked hubs offered \(hub-a\.test\)/);
  });

  it('scenario 22: a webhook that never answers → 400207 "Custom allocation failed: timeout" within the configured bound', async () => {
    const quick = createCustomWebhookAllocator({ config: { caFile, timeoutMs: 300 }, logger: createLogger({ level: 'silent' }) });
    const before = received.length;
    const d = await quick(ctx(`${base}/never?code=${FUNCTION_KEY}`));
    assert.deepEqual(failure(d), { code: 400207, message: 'Custom allocation failed: timeout' });
    assert.equal(received.length, before + 1, 'the request did reach the webhook');
  });

  it('connection errors and untrusted certificates → 400207 with the reason', async () => {
    // A port nobody listens on: bind one, close it, use it.
    const s = http.createServer();
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    const port = (s.address() as AddressInfo).port;
    await new Promise((r) => s.close(r));
    const refused = failure(await allocator(ctx(`http://127.0.0.1:${port}/x?code=${FUNCTION_KEY}`)));
    assert.equal(refused.code, 400207);
    assert.match(refused.message, /^Custom allocation failed: .*ECONNREFUSED/);
    // Without the test CA, the HTTPS webhook's certificate is not trusted.
    const noCa = createCustomWebhookAllocator({ config: {}, logger: createLogger({ level: 'silent' }) });
    const untrusted = failure(await noCa(ctx(`${base}/minimal`)));
    assert.equal(untrusted.code, 400207);
    assert.match(untrusted.message, /^Custom allocation failed: .*(certificate|self.signed)/i);
  });

  it('plain HTTP webhooks work too', async () => {
    const d = await allocator(ctx(`${plainBase}/api/allocate?code=${FUNCTION_KEY}`, { payload: { model: 'kettle' } }));
    assert.equal(d.kind === 'assigned' && d.hub.name, 'hub-a.test');
  });

  it('secrets stay out of logs and messages: no function key, no signing secret', async () => {
    await allocator(ctx(`${base}/status400?code=${FUNCTION_KEY}`));
    await allocator(ctx(`http://127.0.0.1:1/x?code=${FUNCTION_KEY}`));
    const logs = logLines.join('');
    assert.match(logs, /custom allocation webhook/);
    assert.match(logs, /status400\?<redacted>/);
    assert.ok(!logs.includes(FUNCTION_KEY), 'function key in logs');
    assert.ok(!logs.includes(SECRET), 'signing secret in logs');
    assert.equal(redactUrl(`https://user:pw@h.example:8443/api/f?code=${FUNCTION_KEY}`), 'https://h.example:8443/api/f?<redacted>');
  });

  it('no context, no definition, an empty hub list: clear failures without a call', async () => {
    const before = received.length;
    const noDevice: AllocationContext = { registrationId: 'x', policy: 'custom', hubs: HUBS, unlinked: [], listed: true };
    assert.equal(failure(await allocator(noDevice)).code, 400207);
    const g = group(`${base}/minimal`);
    delete g.customAllocationDefinition;
    assert.match(failure(await allocator(ctx('', { enrollment: { kind: 'group', value: g } }))).message, /no customAllocationDefinition/);
    const none = failure(await allocator({ ...ctx(`${base}/minimal`, { hubs: [] }), unlinked: ['gone.test'] }));
    assert.equal(none.code, 400208);
    assert.match(none.message, /gone\.test/);
    assert.equal(received.length, before);
  });

  it('injected transport: the request it gets, and createAllocators wires custom and geoLatency', async () => {
    const seen: WebhookRequest[] = [];
    const allocators = createAllocators({ customAllocation: { timeoutMs: 1234 } }, {
      logger: createLogger({ level: 'silent' }),
      webhookTransport: (req) => {
        seen.push(req);
        return Promise.resolve({ status: 200, body: Buffer.from(JSON.stringify({ iotHubHostName: 'hub-b.test', payload: { ok: true } })) });
      },
    });
    const custom = allocators.custom;
    assert.ok(custom && allocators.geoLatency);
    const d = await custom(ctx(`${base}/never?code=${FUNCTION_KEY}`, { payload: { p: 1 } }));
    assert.equal(d.kind === 'assigned' && d.hub.name, 'hub-b.test');
    const req = seen[0];
    assert.ok(req);
    assert.equal(req.timeoutMs, 1234);
    assert.equal(req.maxResponseBytes, 96 * 1024);
    assert.equal(req.url.searchParams.get('code'), FUNCTION_KEY, 'the query string is kept');
    assert.deepEqual(JSON.parse(req.body), buildAllocationRequest(ctx(`${base}/never?code=${FUNCTION_KEY}`, { payload: { p: 1 } }), ctx(`${base}/never?code=${FUNCTION_KEY}`, { payload: { p: 1 } }).device!));
  });

  it('parseAllocationResponse: null initialTwin/payload mean none; properties without desired', () => {
    const ok = parseAllocationResponse(Buffer.from('{"iotHubHostName":"hub-a.test","initialTwin":null,"payload":null}'), HUBS);
    assert.deepEqual(ok, { ok: true, hub: HUBS[0] });
    const props = parseAllocationResponse(Buffer.from('{"iotHubHostName":"hub-a.test","initialTwin":{"properties":{}}}'), HUBS);
    assert.deepEqual(props.ok && props.initialTwin, { properties: {} });
    assert.equal(parseAllocationResponse(Buffer.from('[]'), HUBS).ok, false);
    assert.equal(parseAllocationResponse(Buffer.from(''), HUBS).ok, false);
  });
});

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { systemClock } from '../../../src/core/clock.ts';
import { Metrics } from '../../../src/observability/metrics.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import type { EnrollmentGroup } from '../../../src/provisioning/model.ts';
import { createHttpsApp, directRoutesOf, observeAnswers } from '../../../src/transport/http/app.ts';
import { DPS_DEVICE_BODY_LIMIT, registerDpsDeviceApi } from '../../../src/transport/http/dps-device-api.ts';
import { createRuntimeFixture, newKey, type RuntimeFixture } from '../../provisioning/runtime/fixture.ts';
import { createTestPki, type TestPki } from '../../helpers/pki.ts';
import { httpsOnce } from '../../helpers/sdk-steps.ts';

/**
 * The direct routes of the DPS device runtime (direct-routes.ts): on a real TLS listener they answer exactly what the
 * fastify routes answer under inject(), without going through fastify; requests off their happy path, and routes
 * fastify matches first, go to fastify.
 */
interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

const JSON_TYPE = 'application/json; charset=utf-8';
const API = 'api-version=2019-03-31';

let pki: TestPki;
let f: RuntimeFixture;
let port: number;
let group: EnrollmentGroup;
/** Request URLs fastify's own pipeline saw (onRequest), over the socket and under inject(). */
const fastifySaw: string[] = [];
/** Request URLs the direct routes answered. */
const directSaw: string[] = [];
const observed: { method: string; url: string; status: number }[] = [];

before(async () => {
  pki = await createTestPki();
  f = await createRuntimeFixture({
    hubNames: ['hub-a.test'],
    clock: systemClock,
    tls: { cert: pki.server.certPem, key: pki.server.keyPem },
    configureApp: (app) => {
      app.addHook('onRequest', async (req) => void fastifySaw.push(req.url));
      // A service route fastify matches before the device status lookup pattern (`POST /{x}/registrations/{y}`)
      // would: `/registrations/registrations/query` is this route, with id "registrations".
      app.post('/registrations/:id/query', async (_req, reply) => reply.code(200).header('content-type', JSON_TYPE).send('{"route":"query"}'));
      observeAnswers(app, (a) => void observed.push(a));
      directRoutesOf(app)!.onAnswer((a) => void directSaw.push(a.url));
    },
  });
  group = await f.addGroup('G-direct', { initialTwin: { tags: { t: 1 } } });
  await f.app.listen({ host: '127.0.0.1', port: 0 });
  port = (f.app.server.address() as { port: number }).port;
});

after(async () => {
  await f?.close();
});

/** One request on a new TLS connection, as a device sends it. `chunks` are written one by one (chunked encoding). */
function send(method: string, path: string, o: { headers?: Record<string, string>; body?: string | Buffer; chunks?: Buffer[] } = {}): Promise<Answer> {
  return httpsOnce({ host: '127.0.0.1', port, ca: pki.ca.certPem, method, path, ...o });
}

async function inject(method: string, path: string, o: { headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const r = await f.app.inject({ method: method as 'GET', url: path, headers: { accept: 'application/json', ...o.headers }, ...(o.body === undefined ? {} : { payload: o.body }) });
  return { status: r.statusCode, headers: r.headers as IncomingHttpHeaders, body: r.body };
}

/** What must be equal between the two answers: volatile values (ids, times, etags) replaced, the device id folded. */
function normalized(a: Answer, id: string): Record<string, unknown> {
  const body = a.body.length > 0 ? (JSON.parse(a.body) as unknown) : null;
  const text = JSON.stringify(body)
    .replaceAll(id, '<id>')
    .replace(/"(operationId|trackingId|etag)":"[^"]*"/g, '"$1":"<x>"')
    .replace(/"(createdDateTimeUtc|lastUpdatedDateTimeUtc|timestampUtc)":"[^"]*"/g, '"$1":"<t>"')
    .replace(/Tracking id [0-9a-f]+/g, 'Tracking id <x>');
  return {
    status: a.status,
    contentType: a.headers['content-type'],
    errorCode: a.headers['x-ms-error-code'],
    retryAfter: a.headers['retry-after'] === undefined ? undefined : 'set',
    body: JSON.parse(text) as unknown,
  };
}

const json = (id: string) => ({ 'content-type': JSON_TYPE, authorization: f.deviceSas(id, f.derivedKey(group, id)) });

interface Case {
  name: string;
  method: string;
  path: (id: string) => string;
  headers?: (id: string) => Record<string, string>;
  body?: (id: string) => string;
  /** The listener hands it to fastify (not a direct route). */
  viaFastify?: boolean;
}

const register = (id: string) => `/${f.idScope}/registrations/${id}/register?${API}`;

const cases: Case[] = [
  { name: 'register', method: 'PUT', path: register, headers: json, body: (id) => JSON.stringify({ registrationId: id }) },
  { name: 'register, unknown api-version, upper-case path, trailing and doubled slashes', method: 'PUT', path: (id) => `//${f.idScope}/REGISTRATIONS/${id}/Register/?api-version=2099-01-01`, headers: json, body: (id) => JSON.stringify({ registrationId: id }) },
  { name: 'register with a payload and a bare application/json', method: 'PUT', path: register, headers: (id) => ({ ...json(id), 'content-type': 'application/json' }), body: (id) => JSON.stringify({ registrationId: id, payload: { a: 1 } }) },
  { name: 'status lookup', method: 'POST', path: (id) => `/${f.idScope}/registrations/${id}?${API}`, headers: json, body: (id) => JSON.stringify({ registrationId: id }) },
  { name: 'malformed JSON', method: 'PUT', path: register, headers: json, body: () => '{"registrationId":' },
  { name: 'a JSON array', method: 'PUT', path: register, headers: json, body: () => '[1,2]' },
  { name: 'an empty body', method: 'PUT', path: register, headers: (id) => ({ ...json(id), 'content-length': '0' }) },
  { name: 'body registrationId differs from the path', method: 'PUT', path: register, headers: json, body: () => JSON.stringify({ registrationId: 'someone-else' }) },
  { name: 'a wrong key', method: 'PUT', path: register, headers: (id) => ({ ...json(id), authorization: f.deviceSas(id, newKey()) }), body: (id) => JSON.stringify({ registrationId: id }) },
  { name: 'no authorization', method: 'PUT', path: register, headers: () => ({ 'content-type': JSON_TYPE }), body: (id) => JSON.stringify({ registrationId: id }) },
  { name: 'an unknown id scope', method: 'PUT', path: (id) => `/0neFFFFFFFF/registrations/${id}/register?${API}`, headers: json, body: (id) => JSON.stringify({ registrationId: id }) },
  { name: 'a registration id outside the charset', method: 'PUT', path: () => `/${f.idScope}/registrations/bad%20id!/register?${API}`, headers: json, body: () => JSON.stringify({ registrationId: 'bad id!' }) },
  { name: 'an unknown operation', method: 'GET', path: (id) => `/${f.idScope}/registrations/${id}/operations/4.0000000000000000.00000000-0000-0000-0000-000000000000?${API}`, headers: json },
  { name: 'text/plain (fastify parses every type)', method: 'PUT', path: register, headers: (id) => ({ ...json(id), 'content-type': 'text/plain' }), body: (id) => JSON.stringify({ registrationId: id }), viaFastify: true },
  { name: 'a Content-Length over the limit', method: 'PUT', path: register, headers: json, body: () => JSON.stringify({ registrationId: 'x', pad: 'p'.repeat(DPS_DEVICE_BODY_LIMIT) }), viaFastify: true },
  { name: 'a malformed escape in the path', method: 'PUT', path: () => `/${f.idScope}/registrations/%E0%A4%A/register?${API}`, headers: json, body: () => '{}', viaFastify: true },
];

describe('direct device routes', () => {
  test('answer exactly what the fastify routes answer, and only the expected requests reach fastify', async () => {
    let n = 0;
    for (const c of cases) {
      const idSocket = `direct-s-${++n}`;
      const idInject = `direct-i-${n}`;
      fastifySaw.length = 0;
      directSaw.length = 0;
      const path = c.path(idSocket);
      const overSocket = await send(c.method, path, { headers: c.headers?.(idSocket) ?? {}, ...(c.body ? { body: c.body(idSocket) } : {}) });
      const answeredDirectly = directSaw.includes(path);
      // fastify answers malformed URLs before its hooks run: only the direct routes' own record tells.
      if (answeredDirectly) assert.equal(fastifySaw.includes(path), false, `${c.name}: a direct answer never reaches fastify`);
      const underInject = await inject(c.method, c.path(idInject), { headers: c.headers?.(idInject) ?? {}, ...(c.body ? { body: c.body(idInject) } : {}) });
      assert.deepEqual(normalized(overSocket, idSocket), normalized(underInject, idInject), c.name);
      assert.equal(answeredDirectly, c.viaFastify !== true, `${c.name}: ${c.viaFastify ? 'handed to fastify' : 'answered directly'}`);
    }
  });

  test('an operation poll and the 202 of a zero budget answer the same way directly and under inject()', async () => {
    const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps-device', tls: { cert: pki.server.certPem, key: pki.server.keyPem } });
    registerDpsDeviceApi(app, { registration: f.service, responseBudgetMs: 0 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const zeroPort = (app.server.address() as { port: number }).port;
    try {
      const viaSocket = (m: string, p: string, id: string, body?: string) =>
        new Promise<Answer>((resolve, reject) => {
          const req = request({ host: '127.0.0.1', port: zeroPort, ca: pki.ca.certPem, method: m, path: p, agent: false, headers: json(id) }, (res) => {
            let t = '';
            res.on('data', (c: Buffer) => (t += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: t }));
          });
          req.on('error', reject);
          req.end(body);
        });
      const viaInject = async (m: string, p: string, id: string, body?: string): Promise<Answer> => {
        const r = await app.inject({ method: m as 'GET', url: p, headers: json(id), ...(body === undefined ? {} : { payload: body }) });
        return { status: r.statusCode, headers: r.headers as IncomingHttpHeaders, body: r.body };
      };
      for (const [via, id] of [[viaSocket, 'poll-s'], [viaInject, 'poll-i']] as const) {
        const put = await via('PUT', register(id), id, JSON.stringify({ registrationId: id }));
        assert.equal(put.status, 202, put.body);
        assert.equal(put.headers['retry-after'], '1');
        assert.equal(put.headers['content-type'], JSON_TYPE);
        const op = (JSON.parse(put.body) as { operationId: string }).operationId;
        await f.service.drain();
        const get = await via('GET', `/${f.idScope}/registrations/${id}/operations/${op}?${API}`, id);
        assert.equal(get.status, 200, get.body);
        const b = JSON.parse(get.body) as { status: string; operationId: string; registrationState: { deviceId: string; assignedHub: string } };
        assert.equal(b.status, 'assigned');
        assert.equal(b.operationId, op);
        assert.equal(b.registrationState.deviceId, id);
        assert.equal(b.registrationState.assignedHub, 'hub-a.test');
      }
    } finally {
      await app.close();
    }
  });

  test('a chunked body over the limit is refused with 413 and the connection closed; nothing is stored', async () => {
    const id = 'direct-chunked';
    const before = await f.store.provisioning.getRegistration(f.instanceName, id);
    const chunk = Buffer.alloc(32 * 1024, 0x20);
    const r = await send('PUT', register(id), { headers: { ...json(id), 'transfer-encoding': 'chunked' }, chunks: [Buffer.from('{"registrationId":"direct-chunked","pad":"'), chunk, chunk, chunk, chunk] });
    assert.equal(r.status, 413);
    assert.equal(r.headers.connection, 'close');
    assert.equal(r.headers['x-ms-error-code'], '413001');
    assert.equal(before, undefined);
    assert.equal(await f.store.provisioning.getRegistration(f.instanceName, id), undefined);
    // The listener still serves.
    const ok = await send('PUT', register(id), { headers: json(id), body: JSON.stringify({ registrationId: id }) });
    assert.equal(ok.status, 200, ok.body);
  });

  test('a request whose body never completes gets no answer and leaves the listener serving', async () => {
    const id = 'direct-aborted';
    await new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, ca: pki.ca.certPem, method: 'PUT', path: register(id), agent: false, headers: { ...json(id), 'content-length': '500' } });
      req.on('error', () => resolve());
      req.on('response', () => reject(new Error('an answer to an incomplete body')));
      // Half the body, then the connection goes away.
      req.write('{"registrationId":"direct-aborted",', () => setImmediate(() => req.destroy()));
      req.on('close', () => resolve());
    });
    const ok = await send('PUT', register(id), { headers: json(id), body: JSON.stringify({ registrationId: id }) });
    assert.equal(ok.status, 200, ok.body);
  });

  test('a route fastify matches first stays fastify\'s: POST /registrations/registrations/query is the service query', async () => {
    fastifySaw.length = 0;
    const r = await send('POST', '/registrations/registrations/query?api-version=2021-10-01', { headers: { 'content-type': JSON_TYPE }, body: '{}' });
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { route: 'query' });
    assert.deepEqual(fastifySaw, ['/registrations/registrations/query?api-version=2021-10-01']);
  });

  test('observeAnswers sees the direct answers; metrics count them; after close() every request goes to fastify', async () => {
    const metrics = new Metrics();
    const app = createHttpsApp({ logger: silentLogger(), metrics, errorFlavor: 'dps', api: 'dps-direct-test', tls: { cert: pki.server.certPem, key: pki.server.keyPem } });
    const counted: { idScope: string; status: number }[] = [];
    let onCount: (() => void) | undefined;
    registerDpsDeviceApi(app, {
      registration: f.service,
      onAnswer: (idScope, status) => {
        counted.push({ idScope, status });
        onCount?.();
      },
    });
    // fastify's onResponse hook runs after the answer left: wait for it rather than racing the client.
    const countedTo = (n: number) => new Promise<void>((resolve) => (counted.length >= n ? resolve() : (onCount = () => counted.length >= n && resolve())));
    const seen: string[] = [];
    app.addHook('onRequest', async (req) => void seen.push(req.url));
    await app.listen({ host: '127.0.0.1', port: 0 });
    const p = (app.server.address() as { port: number }).port;
    const direct = directRoutesOf(app);
    assert.equal(direct?.size, 3);
    const put = (id: string) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: p, ca: pki.ca.certPem, method: 'PUT', path: register(id), agent: false, headers: json(id) }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ registrationId: id }));
      });
    try {
      assert.equal(await put('direct-m-1'), 200);
      assert.equal(await put('direct-m-2'), 200);
      assert.deepEqual(counted, [{ idScope: f.idScope, status: 200 }, { idScope: f.idScope, status: 200 }]);
      assert.deepEqual(seen, []);
      const text = await metrics.registry.getSingleMetricAsString('homing_http_requests_total');
      assert.match(text, /homing_http_requests_total\{api="dps-direct-test",status="200"\} 2/);
      const histogram = await metrics.registry.getSingleMetricAsString('homing_http_request_seconds');
      assert.match(histogram, /homing_http_request_seconds_count\{api="dps-direct-test"\} 2/);
      // Closing: the direct routes step aside (fastify answers while it drains).
      direct!.close();
      assert.equal(await put('direct-m-3'), 200);
      assert.equal(seen.length, 1);
      // fastify answers of the device routes are counted too.
      await countedTo(3);
      assert.deepEqual(counted[2], { idScope: f.idScope, status: 200 });
    } finally {
      await app.close();
    }
    assert.ok(observed.some((o) => o.method === 'PUT' && o.url.includes('/direct-s-1/') && o.status === 200), 'observeAnswers saw a direct answer');
  });
});

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { HomingError } from '../../../../src/core/errors.ts';
import { createLogger, silentLogger } from '../../../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../../../src/provisioning/hub-client-inprocess.ts';
import type { HubClient } from '../../../../src/provisioning/hub-client.ts';
import { RegistrationService } from '../../../../src/provisioning/registration.ts';
import type { MqttListener } from '../../../../src/transport/mqtt/listener.ts';
import { createDpsRealm, type DpsMqttRuntime } from '../../../../src/transport/mqtt/dps/realm.ts';
import { realIds } from '../../../helpers/ids.ts';
import { createRuntimeFixture, newKey, type RuntimeFixture } from '../../../provisioning/runtime/fixture.ts';
import { RawClient, testPki } from '../helpers.ts';
import type { TestPki } from '../../../helpers/pki.ts';
import { REGISTER, RES_FILTER, STATUS, assertError, dpsUsername, nextMessageId, registerBody, request, startDpsListener } from './helpers.ts';

/**
 * DPS requests over MQTT with raw clients: register and operation status on a real registration service (in-memory
 * SQLite store, in-process hubs), the response budget (30 s: an in-process assignment always ends in time; 0: always
 * 202), and how every failure becomes a JSON answer on `$dps/registrations/res/{status}/?$rid=..`.
 */
describe('DPS over MQTT: requests and answers', () => {
  let pki: TestPki;
  let f: RuntimeFixture;
  const listeners: MqttListener[] = [];
  /** Budget 30 s. */
  let portA: number;
  /** Budget 0. */
  let portB: number;
  /** Real throttle: 1 registration per minute. */
  let portThrottled: number;
  /** Answers the throttled listener reported through `onAnswer` (what /homing/stats counts). */
  const throttledAnswers: { idScope: string; status: number }[] = [];
  /** A runtime that fails on purpose (by registration id). */
  let portFaulty: number;
  let throttledService: RegistrationService;
  const logLines: string[] = [];
  let hubGate: Promise<void> = Promise.resolve();

  before(async () => {
    pki = await testPki();
    // Hub writes wait for `hubGate` (open unless a test holds it) so a test can poll a running assignment.
    f = await createRuntimeFixture({
      hubClients: (inner) => ({
        forHub(hub) {
          const client = inner.forHub(hub);
          return new Proxy(client, {
            get(target, prop) {
              if (prop === 'provisionDevice') {
                return async (req: Parameters<HubClient['provisionDevice']>[0]) => {
                  await hubGate;
                  return target.provisionDevice(req);
                };
              }
              const v: unknown = Reflect.get(target, prop);
              return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
            },
          });
        },
        close: () => inner.close(),
      }),
    });
    const tls = { cert: pki.server.certPem, key: pki.server.keyPem };
    const start = async (runtime: DpsMqttRuntime, o: { responseBudgetMs: number; logger?: ReturnType<typeof silentLogger>; onAnswer?: (idScope: string, status: number) => void }) => {
      const l = await startDpsListener(createDpsRealm(runtime, { logger: o.logger ?? silentLogger(), responseBudgetMs: o.responseBudgetMs, ...(o.onAnswer ? { onAnswer: o.onAnswer } : {}) }), tls);
      listeners.push(l);
      return l.address().port;
    };
    portA = await start(f.service, { responseBudgetMs: 30_000 });
    portB = await start(f.service, { responseBudgetMs: 0 });
    throttledService = new RegistrationService({
      store: f.store.provisioning,
      hubs: new InProcessHubClientFactory(f.hubs.values(), f.clock),
      clock: f.clock,
      ids: realIds,
      logger: silentLogger(),
      readCacheMs: 0,
      limits: { registrationsPerMinute: 1 },
    });
    portThrottled = await start(throttledService, { responseBudgetMs: 30_000, onAnswer: (idScope, status) => throttledAnswers.push({ idScope, status }) });
    const faulty: DpsMqttRuntime = {
      async register(idScope, registrationId, body, credential) {
        if (registrationId === 'unavailable') throw new HomingError('ServiceUnavailable', 'The hub is unavailable.', { retryAfterSeconds: 7 });
        if (registrationId === 'unavailable-bare') throw new HomingError('ServiceUnavailable');
        if (registrationId === 'boom') throw new Error('database password is hunter2');
        if (registrationId === 'slow-throttle') throw new HomingError('ThrottlingException', 'Too many', { retryAfterSeconds: 0.2 });
        return f.service.register(idScope, registrationId, body, credential);
      },
      operationStatus: (...args) => f.service.operationStatus(...args),
    };
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString());
        cb();
      },
    });
    portFaulty = await start(faulty, { responseBudgetMs: 30_000, logger: createLogger({ level: 'debug', destination: sink }) });
  });

  after(async () => {
    for (const l of listeners) await l.close();
    await throttledService?.drain();
    await f?.close();
  });

  /** Connects as `registrationId` (SAS with `key`) and subscribes like the SDK. */
  async function device(port: number, registrationId: string, key: string, password?: string): Promise<RawClient> {
    const c = await RawClient.connect(port, pki.ca.certPem);
    const ack = await c.connect({ clientId: registrationId, username: dpsUsername(f.idScope, registrationId), password: password ?? f.deviceSas(registrationId, key) });
    assert.equal(ack.returnCode, 0);
    c.send({ cmd: 'subscribe', messageId: nextMessageId(), subscriptions: [{ topic: RES_FILTER, qos: 1 }] });
    const suback = await c.next('suback');
    assert.ok(suback.cmd === 'suback');
    assert.deepEqual(suback.granted, [1]);
    return c;
  }

  async function bye(c: RawClient): Promise<void> {
    const id = nextMessageId();
    c.send({ cmd: 'unsubscribe', messageId: id, unsubscriptions: [RES_FILTER] });
    const ack = await c.next('unsuback');
    assert.ok(ack.cmd === 'unsuback' && ack.messageId === id);
    c.send({ cmd: 'disconnect' });
    await c.waitClosed();
  }

  it('register within the budget: one 200 answer with the final status, QoS 0, $rid echoed verbatim; PUBACK after it', async () => {
    const g = await f.addGroup('G-ok', { initialTwin: { tags: { a: 1 } } });
    const c = await device(portA, 'ok-1', f.derivedKey(g, 'ok-1'));
    const rid = '6a7f1c52-0b0d-4a8e-9d3e-3c2b1a0f9e8d';
    const a = await request(c, `${REGISTER}?$rid=${rid}`, registerBody('ok-1', { model: 'x' }));
    assert.equal(a.status, 200);
    assert.equal(a.topic, `$dps/registrations/res/200/?$rid=${rid}`, 'no retry-after on a final answer');
    assert.equal(a.qos, 0);
    assert.equal(a.body.status, 'assigned');
    assert.equal(typeof a.body.operationId, 'string');
    const state = a.body.registrationState as Record<string, unknown>;
    assert.equal(state.registrationId, 'ok-1');
    assert.equal(state.deviceId, 'ok-1');
    assert.ok(['hub-a.test', 'hub-b.test'].includes(String(state.assignedHub)));
    assert.deepEqual(state.symmetricKey, { enrollmentGroupId: 'G-ok' });
    await bye(c);
  });

  it('budget 0: 202 assigning with retry-after=1 and an operationId; the poll (payload " ") answers 200 once the assignment ended', async () => {
    const g = await f.addGroup('G-poll');
    const c = await device(portB, 'poll-1', f.derivedKey(g, 'poll-1'));
    const first = await request(c, `${REGISTER}?$rid=r1`, registerBody('poll-1'));
    assert.equal(first.status, 202);
    assert.equal(first.topic, '$dps/registrations/res/202/?$rid=r1&retry-after=1');
    assert.equal(first.body.status, 'assigning');
    const operationId = String(first.body.operationId);
    assert.match(operationId, /^4\.[0-9a-f]{16}\.[0-9a-f-]{36}$/);
    await f.service.drain();
    const done = await request(c, `${STATUS}?$rid=r2&operationId=${operationId}`, ' ');
    assert.equal(done.status, 200);
    assert.equal(done.params.get('$rid'), 'r2');
    assert.equal(done.body.status, 'assigned');
    assert.equal(done.body.operationId, operationId);
    assert.equal((done.body.registrationState as Record<string, unknown>).deviceId, 'poll-1');
    // `%24rid` works like `$rid`; the percent-encoded operation id is decoded.
    const again = await request(c, `${STATUS}?%24rid=r3&operationId=${encodeURIComponent(operationId)}`, ' ');
    assert.equal(again.status, 200);
    assert.equal(again.params.get('$rid'), 'r3');
    await bye(c);
  });

  it('poll while the assignment runs (budget 0): 202 with retry-after and the registration state', async () => {
    const g = await f.addGroup('G-running');
    // Hold the assignment: the hub write waits until the test releases it.
    let release!: () => void;
    hubGate = new Promise<void>((resolve) => (release = resolve));
    try {
      const c = await device(portB, 'run-1', f.derivedKey(g, 'run-1'));
      const first = await request(c, `${REGISTER}?$rid=a`, registerBody('run-1'));
      assert.equal(first.status, 202);
      const poll = await request(c, `${STATUS}?$rid=b&operationId=${String(first.body.operationId)}`, ' ');
      assert.equal(poll.status, 202);
      assert.equal(poll.params.get('retry-after'), '1');
      assert.equal(poll.body.status, 'assigning');
      release();
      await f.service.drain();
      const done = await request(c, `${STATUS}?$rid=c&operationId=${String(first.body.operationId)}`, ' ');
      assert.equal(done.status, 200);
      await bye(c);
    } finally {
      release();
      hubGate = Promise.resolve();
    }
  });

  it('disabled enrollment: 200 with status disabled; nothing written to the hub', async () => {
    const off = await f.addIndividual('off-1', { status: 'disabled' });
    const c = await device(portA, 'off-1', off.attestation.symmetricKey!.primaryKey);
    const a = await request(c, `${REGISTER}?$rid=d`, registerBody('off-1'));
    assert.equal(a.status, 200);
    assert.equal(a.body.status, 'disabled');
    for (const h of f.hubs.values()) assert.equal(await h.findDevice('off-1'), undefined);
    await bye(c);
  });

  it('bad credentials are answered 401 (401000) on the response topic; the connection stays open; nothing stored', async () => {
    const g = await f.addGroup('G-auth');
    const good = f.derivedKey(g, 'auth-1');
    const before = await f.counts();
    const nowS = Math.floor(f.clock.now() / 1000);
    const cases: [string, string][] = [
      ['wrong key', f.deviceSas('auth-1', newKey())],
      ['expired', f.deviceSas('auth-1', good, { expirySeconds: nowS - 3600 })],
      ['sr of another registration', f.deviceSas('auth-2', good)],
      ['wrong skn', f.deviceSas('auth-1', good, { keyName: 'iothubowner' })],
      ['garbage', 'not a token'],
    ];
    for (const [what, password] of cases) {
      const c = await device(portA, 'auth-1', good, password);
      assertError(await request(c, `${REGISTER}?$rid=${what.replace(/ /g, '-')}`, registerBody('auth-1')), 401, 401000, what.replace(/ /g, '-'));
      // Still open: a poll on the same connection gets its own answer.
      assertError(await request(c, `${STATUS}?$rid=p&operationId=4.0000000000000000.00000000-0000-0000-0000-000000000000`, ' '), 401, 401000, 'p');
      await bye(c);
    }
    // An unknown id scope is the same 401.
    const c = await RawClient.connect(portA, pki.ca.certPem);
    const ack = await c.connect({ clientId: 'auth-1', username: dpsUsername('0neFFFFFFFF', 'auth-1'), password: f.deviceSas('auth-1', good, { sr: '0neFFFFFFFF/registrations/auth-1' }) });
    assert.equal(ack.returnCode, 0);
    assertError(await request(c, `${REGISTER}?$rid=s`, registerBody('auth-1')), 401, 401000, 's');
    c.end();
    assert.deepEqual(await f.counts(), before);
  });

  it('malformed register payloads are answered 400 with the DPS error body; nothing stored', async () => {
    const g = await f.addGroup('G-bad');
    const c = await device(portA, 'bad-1', f.derivedKey(g, 'bad-1'));
    const before = await f.counts();
    const cases: [string, string, number][] = [
      ['truncated JSON', '{"registrationId": "bad-1"', 400006],
      ['empty', '', 400006],
      ['one space', ' ', 400006],
      ['not an object', '[]', 400006],
      ['a string', '"bad-1"', 400006],
      ['__proto__ key', '{"registrationId":"bad-1","__proto__":{"x":1}}', 400006],
      ['no registrationId', '{}', 400009],
      ['another registrationId', registerBody('bad-2'), 400009],
      ['payload not an object', '{"registrationId":"bad-1","payload":5}', 400004],
      ['invalid UTF-8', '\u00ff\u00fe', 400006],
    ];
    let i = 0;
    for (const [what, payload, code] of cases) {
      const rid = `m${++i}`;
      const a = await request(c, `${REGISTER}?$rid=${rid}`, what === 'invalid UTF-8' ? Buffer.from([0xff, 0xfe, 0x7b]) : payload);
      assertError(a, 400, code, rid);
      assert.equal(a.params.get('retry-after'), null, what);
    }
    assert.deepEqual(await f.counts(), before);
    await bye(c);
  });

  it('an invalid registration id in the username is answered 400 (400008) per request', async () => {
    const c = await RawClient.connect(portA, pki.ca.certPem);
    const ack = await c.connect({ clientId: 'bad.', username: dpsUsername(f.idScope, 'bad.'), password: f.deviceSas('bad.', newKey()) });
    assert.equal(ack.returnCode, 0);
    assertError(await request(c, `${REGISTER}?$rid=i`, registerBody('bad.')), 400, 400008, 'i');
    c.end();
  });

  it('operation status errors: no operationId 400, unknown operation 404 (after authentication), another device’s operation 404', async () => {
    const g = await f.addGroup('G-ops');
    const a = await device(portB, 'ops-a', f.derivedKey(g, 'ops-a'));
    const b = await device(portB, 'ops-b', f.derivedKey(g, 'ops-b'));
    const reg = await request(a, `${REGISTER}?$rid=1`, registerBody('ops-a'));
    assert.equal(reg.status, 202);
    await f.service.drain();
    assertError(await request(a, `${STATUS}?$rid=2`, ' '), 400, 400004, '2');
    assertError(await request(a, `${STATUS}?$rid=3&operationId=`, ' '), 400, 400004, '3');
    assertError(await request(a, `${STATUS}?$rid=4&operationId=${'x'.repeat(300)}`, ' '), 400, 400004, '4');
    assertError(await request(a, `${STATUS}?$rid=5&operationId=4.0000000000000000.00000000-0000-0000-0000-000000000000`, ' '), 404, 404202, '5');
    assertError(await request(b, `${STATUS}?$rid=6&operationId=${String(reg.body.operationId)}`, ' '), 404, 404202, '6');
    const ok = await request(a, `${STATUS}?$rid=7&operationId=${String(reg.body.operationId)}`, ' ');
    assert.equal(ok.status, 200);
    await bye(a);
    await bye(b);
  });

  it('a payload over 96 KB is answered 413 (413001) on the response topic; the connection stays open; nothing stored', async () => {
    const g = await f.addGroup('G-big');
    const c = await device(portA, 'big-1', f.derivedKey(g, 'big-1'));
    const before = await f.counts();
    const big = registerBody('big-1', { blob: 'y'.repeat(100 * 1024) });
    assertError(await request(c, `${REGISTER}?$rid=big`, big), 413, 413001, 'big');
    assertError(await request(c, `${STATUS}?$rid=big2&operationId=x`, Buffer.alloc(97 * 1024, 0x20)), 413, 413001, 'big2');
    assert.deepEqual(await f.counts(), before);
    // Exactly 96 KB is fine.
    const overhead = Buffer.byteLength(registerBody('big-1', { blob: '' }));
    const padded = registerBody('big-1', { blob: 'z'.repeat(96 * 1024 - overhead) });
    assert.equal(Buffer.byteLength(padded), 96 * 1024);
    const a = await request(c, `${REGISTER}?$rid=fits`, padded);
    assert.equal(a.status, 200, JSON.stringify(a.body));
    await bye(c);
  });

  it('throttled (real limit, 1 per minute): 429 with retry-after an integer ≥ 1 and errorCode 429001; nothing stored', async () => {
    const g = await f.addGroup('G-thr');
    const c = await device(portThrottled, 'thr-1', f.derivedKey(g, 'thr-1'));
    const first = await request(c, `${REGISTER}?$rid=t1`, registerBody('thr-1'));
    assert.equal(first.status, 200, JSON.stringify(first.body));
    await throttledService.drain();
    const before = await f.counts();
    const second = await request(c, `${REGISTER}?$rid=t2`, registerBody('thr-1'));
    assertError(second, 429, 429001, 't2');
    // Every answer is reported with the connection's id scope, the 429 included.
    assert.deepEqual(throttledAnswers.slice(-2), [
      { idScope: f.idScope, status: 200 },
      { idScope: f.idScope, status: 429 },
    ]);
    const retryAfter = second.params.get('retry-after');
    assert.match(retryAfter ?? '', /^[1-9]\d*$/);
    assert.ok(Number(retryAfter) <= 60);
    assert.deepEqual(await f.counts(), before);
    await bye(c);
  });

  it('server errors are answered with a retry-after (the SDK retries them); unexpected errors say nothing of their cause', async () => {
    const c1 = await device(portFaulty, 'unavailable', newKey());
    const a1 = await request(c1, `${REGISTER}?$rid=u`, registerBody('unavailable'));
    assertError(a1, 503, 503001, 'u');
    assert.equal(a1.params.get('retry-after'), '7');
    c1.end();

    const c2 = await device(portFaulty, 'unavailable-bare', newKey());
    const a2 = await request(c2, `${REGISTER}?$rid=u2`, registerBody('unavailable-bare'));
    assertError(a2, 503, 503001, 'u2');
    assert.equal(a2.params.get('retry-after'), '5', 'the default for 5xx');
    c2.end();

    const c3 = await device(portFaulty, 'boom', newKey());
    const a3 = await request(c3, `${REGISTER}?$rid=b`, registerBody('boom'));
    assertError(a3, 500, 500001, 'b');
    assert.equal(a3.params.get('retry-after'), '5');
    assert.doesNotMatch(String(a3.body.message), /hunter2/);
    assert.ok(String(a3.body.message).includes(String(a3.body.trackingId)));
    c3.end();

    const c4 = await device(portFaulty, 'slow-throttle', newKey());
    const a4 = await request(c4, `${REGISTER}?$rid=s`, registerBody('slow-throttle'));
    assertError(a4, 429, 429001, 's');
    assert.equal(a4.params.get('retry-after'), '1', 'a fractional wait is rounded up to at least 1');
    c4.end();

    // The unexpected error is logged with its tracking id; no password or SAS reaches the log.
    const logged = logLines.join('');
    assert.ok(logged.includes(String(a3.body.trackingId)));
    assert.doesNotMatch(logged, /SharedAccessSignature/);
  });
});

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { HomingError } from '../../../../src/core/errors.ts';
import { silentLogger } from '../../../../src/observability/logger.ts';
import type { ConnectRequest } from '../../../../src/transport/mqtt/realm.ts';
import { grantFor, publishRouteFor } from '../../../../src/transport/mqtt/dps/dispatcher.ts';
import { dpsErrorAnswer } from '../../../../src/transport/mqtt/dps/errors.ts';
import { parseJsonPayload } from '../../../../src/transport/mqtt/dps/handlers/register.ts';
import { defaultDpsCredential } from '../../../../src/transport/mqtt/dps/realm.ts';
import {
  isUsableRid,
  looksLikeDpsUsername,
  parseDpsUsername,
  queryParam,
  responseTopic,
  retryAfterValue,
  topicIs,
} from '../../../../src/transport/mqtt/dps/topics.ts';
import { issueDeviceCert } from '../../../helpers/pki.ts';
import { testPki } from '../helpers.ts';

describe('DPS realm units', () => {
  it('parses the SDK username and tolerated variants', () => {
    const sdk = '0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1';
    assert.deepEqual(parseDpsUsername(sdk), {
      idScope: '0ne00000001',
      registrationId: 'dev-1',
      query: 'api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1',
    });
    assert.equal(parseDpsUsername('0ne1/registrations/dev-1/?api-version=2021-06-01')?.registrationId, 'dev-1');
    assert.equal(parseDpsUsername('0ne1/registrations/Dev-1/x=1&API-VERSION=1&ClientVersion=c/1 (linux)')?.registrationId, 'Dev-1');
    for (const bad of ['', 'dev-1', '0ne1/registrations/dev-1', '0ne1/registrations/dev-1/', '0ne1/registrations//api-version=1', '/registrations/d/api-version=1', '0ne1/registration/d/api-version=1', '0ne1/registrations/d/api-versions=1', '0ne1/registrations/d/=api-version']) {
      assert.equal(parseDpsUsername(bad), undefined, bad);
    }
    assert.equal(looksLikeDpsUsername('0ne1/registrations/x'), true);
    assert.equal(looksLikeDpsUsername('hub.local/dev/?api-version=1'), false);
    assert.equal(looksLikeDpsUsername(undefined), false);
    assert.equal(looksLikeDpsUsername('/registrations/x'), false);
  });

  it('routes only the two documented request topics; grants only the response filter', () => {
    assert.equal(publishRouteFor('$dps/registrations/PUT/iotdps-register/?$rid=1')?.name, 'register');
    assert.equal(publishRouteFor('$dps/registrations/PUT/iotdps-register/')?.name, 'register');
    assert.equal(publishRouteFor('$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=x')?.name, 'operation-status');
    for (const t of ['$dps/registrations/PUT/iotdps-register', '$dps/registrations/PUT/iotdps-register/x?$rid=1', '$dps/registrations/PUT/iotdps-registerx/?$rid=1', '$dps/registrations/res/200/?$rid=1', 'devices/d/messages/events/']) {
      assert.equal(publishRouteFor(t), undefined, t);
    }
    assert.equal(topicIs('a/b/', 'a/b/'), true);
    assert.equal(topicIs('a/b/?x', 'a/b/'), true);
    assert.equal(topicIs('a/b/c', 'a/b/'), false);
    assert.deepEqual([0, 1, 2].map((q) => grantFor('$dps/registrations/res/#', q)), [0, 1, 1]);
    assert.equal(grantFor('$dps/registrations/res/+', 1), 128);
    assert.equal(grantFor('#', 0), 128);
  });

  it('reads $rid (also as %24rid) and decides whether it can be echoed', () => {
    assert.equal(queryParam('$rid=abc&operationId=1', '$rid'), 'abc');
    assert.equal(queryParam('operationId=1&%24RID=abc', '$rid'), 'abc');
    assert.equal(queryParam('operationId=1', '$rid'), undefined);
    assert.equal(queryParam('$rid', '$rid'), '');
    assert.equal(queryParam('', '$rid'), undefined);
    assert.equal(isUsableRid('6a7f1c52-0b0d-4a8e-9d3e-3c2b1a0f9e8d'), true);
    assert.equal(isUsableRid('1'), true);
    assert.equal(isUsableRid('r'.repeat(128)), true);
    for (const bad of ['', 'r'.repeat(129), 'a b', 'a#', 'a+b', 'a/b', 'a?b', 'é', 'a\u0000']) assert.equal(isUsableRid(bad), false, JSON.stringify(bad));
  });

  it('builds response topics with an integer retry-after ≥ 1', () => {
    assert.equal(responseTopic(200, 'r'), '$dps/registrations/res/200/?$rid=r');
    assert.equal(responseTopic(202, 'r', 1), '$dps/registrations/res/202/?$rid=r&retry-after=1');
    assert.equal(retryAfterValue(undefined, 5), 5);
    assert.equal(retryAfterValue(0, 5), 1);
    assert.equal(retryAfterValue(0.2, 5), 1);
    assert.equal(retryAfterValue(2.5, 5), 3);
    assert.equal(retryAfterValue(Number.NaN, 2), 2);
  });

  it('maps errors to the DPS body; retry-after only where the SDK retries (status ≥ 429)', () => {
    const log = silentLogger();
    const at = Date.parse('2026-01-02T03:04:05.678Z');
    const a = dpsErrorAnswer(new HomingError('Unauthorized', 'Unauthorized'), log, at, 'tid1', 5);
    assert.equal(a.status, 401);
    assert.equal(a.retryAfterSeconds, undefined);
    assert.deepEqual(JSON.parse(a.body), { errorCode: 401000, trackingId: 'tid1', message: 'Unauthorized', timestampUtc: '2026-01-02T03:04:05.6780000Z' });
    const t = dpsErrorAnswer(new HomingError('ThrottlingException', 'slow down', { retryAfterSeconds: 12 }), log, at, 'tid2', 5);
    assert.equal(t.status, 429);
    assert.equal(t.retryAfterSeconds, 12);
    assert.equal(JSON.parse(t.body).errorCode, 429001);
    assert.equal(dpsErrorAnswer(new HomingError('ThrottlingException'), log, at, 'tid3', 5).retryAfterSeconds, 1);
    assert.equal(dpsErrorAnswer(new HomingError('ServiceUnavailable'), log, at, 'tid4', 5).retryAfterSeconds, 5);
    const u = dpsErrorAnswer(new TypeError('secret internals'), log, at, 'tid5', 3);
    assert.equal(u.status, 500);
    assert.equal(u.retryAfterSeconds, 3);
    assert.doesNotMatch(u.body, /secret internals/);
    assert.equal(JSON.parse(u.body).errorCode, 500001);
    const withInfo = dpsErrorAnswer(new HomingError('ArgumentInvalid', 'bad', { info: { field: 'x' } }), log, at, 'tid6', 5);
    assert.deepEqual(JSON.parse(withInfo.body).info, { field: 'x' });
  });

  it('parses register payloads as JSON, refusing empty ones and __proto__ keys', () => {
    assert.deepEqual(parseJsonPayload(Buffer.from('{"registrationId":"a","payload":{"k":[1,2]}}')), { registrationId: 'a', payload: { k: [1, 2] } });
    assert.deepEqual(parseJsonPayload(Buffer.from('{"note":"mentions __proto__ in a value"}')), { note: 'mentions __proto__ in a value' });
    for (const bad of ['', '   ', '{', '{"__proto__":{}}', '{"a":{"__proto__":1}}']) {
      assert.throws(() => parseJsonPayload(Buffer.from(bad)), (e: unknown) => e instanceof HomingError && e.errorName === 'InvalidJson', bad);
    }
  });

  it('default credential: the password as a SAS; a client chain alone is kind x509; neither is refused', async () => {
    const pki = await testPki();
    const cert = new X509Certificate((await issueDeviceCert(pki.ca, 'x')).certPem);
    const req = (password: string | undefined, certificate: X509Certificate | undefined): ConnectRequest => ({
      clientId: 'x',
      username: '0ne1/registrations/x/api-version=1',
      password: password === undefined ? undefined : Buffer.from(password),
      clean: true,
      keepalive: 0,
      peerCertificate: () => certificate,
      peerChain: () => (certificate === undefined ? [] : [certificate.raw]),
      remoteAddress: undefined,
    });
    assert.deepEqual(defaultDpsCredential(req('SharedAccessSignature sr=a', undefined)), { kind: 'sas', authorization: 'SharedAccessSignature sr=a' });
    assert.deepEqual(defaultDpsCredential(req('SharedAccessSignature sr=a', cert)), { kind: 'sas', authorization: 'SharedAccessSignature sr=a' });
    assert.deepEqual(defaultDpsCredential(req(undefined, cert)), { kind: 'x509', chain: [cert.raw] });
    assert.deepEqual(defaultDpsCredential(req('', cert)), { kind: 'x509', chain: [cert.raw] });
    assert.equal(defaultDpsCredential(req(undefined, undefined)), undefined);
  });
});

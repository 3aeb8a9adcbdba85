import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from 'mqtt-packet';
import { FRAME_MALFORMED, FRAME_OK, FRAME_TOO_LARGE, FrameGuard } from '../../../src/transport/mqtt/frame-guard.ts';
import { parsePropertyBag, queryParam } from '../../../src/transport/mqtt/hub/query.ts';
import { isHubHost, parseDeviceUsername } from '../../../src/transport/mqtt/hub/realm.ts';
import { CONNACK, connackCodeFor, errorResponse } from '../../../src/transport/mqtt/errors.ts';
import { HomingError } from '../../../src/core/errors.ts';
import { silentLogger } from '../../../src/observability/logger.ts';

describe('FrameGuard', () => {
  const pub = (n: number) => generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(n), qos: 0, dup: false, retain: false });

  it('follows packets split at any byte and refuses the first one over the limit', () => {
    const stream = Buffer.concat([pub(10), pub(200), pub(0), generate({ cmd: 'pingreq' }), pub(5000)]);
    // The 5000-byte publish starts at offset 228; its length is complete at offset 230.
    for (let cut = 1; cut <= 230; cut++) {
      const g = new FrameGuard(4096);
      assert.equal(g.feed(stream.subarray(0, cut)), FRAME_OK, `cut ${cut}`);
      assert.equal(g.feed(stream.subarray(cut, 231)), FRAME_TOO_LARGE, `cut ${cut}`);
    }
    const whole = new FrameGuard(8192);
    assert.equal(whole.feed(stream), FRAME_OK);
  });

  it('decides on the length bytes alone (the body is never needed)', () => {
    const g = new FrameGuard(1000);
    assert.equal(g.feed(Buffer.from([0x30, 0xe9])), FRAME_OK);
    assert.equal(g.feed(Buffer.from([0x07])), FRAME_TOO_LARGE); // 1001
  });

  it('refuses a length varint longer than 4 bytes', () => {
    assert.equal(new FrameGuard(1 << 30).feed(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), FRAME_MALFORMED);
  });
});

describe('telemetry property bag', () => {
  it('splits on & and the first =, decodes both sides, maps $. system properties, tolerates bad escapes', () => {
    const bag = parsePropertyBag('%24.mid=m%3D1&%24.cid=c&%24.uid=u&%24.to=%2Fdevices%2Fd&%24.ct=application%2Fjson&%24.ce=utf-8&%24.exp=2030-01-01T00%3A00%3A00.000Z&%24.ifid=urn%3Ax&%24.sub=s&%24.zz=1&a=b=c&%E0=%ZZ&&empty=&__proto__=x');
    assert.deepEqual(bag.systemProperties, {
      'message-id': 'm=1', 'correlation-id': 'c', 'user-id': 'u', to: '/devices/d', 'content-type': 'application/json',
      'content-encoding': 'utf-8', 'absolute-expiry-time': '2030-01-01T00:00:00.000Z', 'iothub-interface-id': 'urn:x', 'dt-subject': 's', '$.zz': '1',
    });
    assert.deepEqual(bag.properties, { a: 'b=c', '%E0': '%ZZ', empty: '' });
    assert.deepEqual(parsePropertyBag(''), { systemProperties: {}, properties: {} });
  });

  it('reads $rid in raw and %24 form', () => {
    assert.equal(queryParam('$rid=abc&$version=3', '$rid'), 'abc');
    assert.equal(queryParam('%24rid=x', '$rid'), 'x');
    assert.equal(queryParam('a=1', '$rid'), undefined);
  });
});

describe('hub usernames', () => {
  it('parses {host}/{deviceId}/?api-version=... with any trailing parameters', () => {
    assert.deepEqual(parseDeviceUsername('h.example/d1/?api-version=2021-04-12&DeviceClientType=x'), { host: 'h.example', deviceId: 'd1', query: 'api-version=2021-04-12&DeviceClientType=x' });
    assert.equal(parseDeviceUsername("h/a?b$'c/?api-version=1")?.deviceId, "a?b$'c");
    assert.equal(parseDeviceUsername('h/?x/?api-version=1')?.deviceId, '?x');
    for (const bad of ['', 'h', 'h/d1', 'h/d1/', 'h//?api-version=1', 'h/d/m/?api-version=1', 'h/d1/?model-id=x', '/d1/?api-version=1']) {
      assert.equal(parseDeviceUsername(bad), undefined, bad);
    }
  });

  it('matches host names case-insensitively, with or without a port', () => {
    const names = ['Hub.Example', '127.0.0.2', '[::1]'];
    for (const ok of ['hub.example', 'HUB.example:8883', '127.0.0.2', '127.0.0.2:1', '[::1]:8883']) assert.equal(isHubHost(ok, names), true, ok);
    for (const no of ['other', 'hub.example.evil', '127.0.0.3:8883', '::1']) assert.equal(isHubHost(no, names), false, no);
  });
});

describe('MQTT error mapping', () => {
  it('maps errors to CONNACK codes', () => {
    assert.equal(connackCodeFor(new HomingError('IotHubUnauthorizedAccess')), CONNACK.notAuthorized);
    assert.equal(connackCodeFor(new HomingError('DeviceNotFound')), CONNACK.notAuthorized);
    assert.equal(connackCodeFor(new HomingError('InvalidDeviceId')), CONNACK.identifierRejected);
    assert.equal(connackCodeFor(new HomingError('ThrottlingException')), CONNACK.serverUnavailable);
    assert.equal(connackCodeFor(new Error('db down')), CONNACK.serverUnavailable);
  });

  it('builds twin error bodies; unexpected errors hide their details', () => {
    const r = errorResponse(new HomingError('TwinTooLarge', 'too big'), silentLogger(), Date.parse('2026-01-01T00:00:00Z'), 'tid');
    assert.equal(r.status, 400);
    assert.deepEqual(JSON.parse(r.body), { errorCode: 400027, trackingId: 'tid', message: 'too big', timestampUtc: '2026-01-01T00:00:00.0000000Z' });
    const u = errorResponse(new Error('secret detail'), silentLogger(), 0, 'tid2');
    assert.equal(u.status, 500);
    assert.equal(u.body.includes('secret detail'), false);
  });
});

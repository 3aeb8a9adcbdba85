import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backoffDelay,
  buildSas,
  c2dSubscription,
  decodePropertyBag,
  deriveDeviceKey,
  dpsMqttUsername,
  dpsOperationStatusTopic,
  dpsRegisterTopic,
  dpsSas,
  encodePropertyBag,
  hubSas,
  hubUsername,
  methodResponseTopic,
  parseDesiredTopic,
  parseDpsResponseTopic,
  parseMethodTopic,
  parseTwinResponseTopic,
  strictEncode,
  telemetryTopic,
  twinGetTopic,
  twinReportedTopic,
  DEFAULT_RETRY_POLICY,
} from '../src/index.ts';
import { parseRetryAfter } from '../src/dps/types.ts';

/**
 * Known vectors computed independently with openssl:
 *   printf '<sr>\n1767225600' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f -binary | base64
 */
const KEY = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='; // bytes 0..31
const SE = 1767225600;

test('DPS SAS: sr not encoded, signed as sent, skn=registration, field order sr sig skn se', () => {
  assert.equal(
    dpsSas('0ne00000001', 'dev-1', KEY, SE),
    'SharedAccessSignature sr=0ne00000001/registrations/dev-1&sig=5jbGXBJ%2FkkKkF%2FBaNGc58fe3NVdC0P3nYatz5Ugrnqw%3D&skn=registration&se=1767225600',
  );
});

test('hub SAS: sr = urlencode(host/devices/id), signed encoded, no skn', () => {
  assert.equal(
    hubSas('hub.example.com', 'dev-1', KEY, SE),
    'SharedAccessSignature sr=hub.example.com%2Fdevices%2Fdev-1&sig=3iGRcdXXJQUzzeBGjk8iZLqv%2B1pxxciWkJskVK76nF8%3D&se=1767225600',
  );
  // A host with a port: the port is part of the encoded resource.
  assert.equal(
    hubSas('hub.example.com:8884', 'dev-1', KEY, SE),
    'SharedAccessSignature sr=hub.example.com%3A8884%2Fdevices%2Fdev-1&sig=xGnmX%2F5%2BYgub6JCxLcy%2B4HHUR0%2BaswyH16ccMTmUIM0%3D&se=1767225600',
  );
});

test('group key derivation: base64(HMAC-SHA256(base64decode(groupKey), registrationId))', () => {
  assert.equal(deriveDeviceKey(KEY, 'dev-1'), 'uPrGCZtSCJ9Nt+iY0r7te47dbsu7OCYEU9tz7kQloUs=');
});

test('buildSas with a key name, and strict encoding', () => {
  assert.match(buildSas({ sr: 'x', keyBase64: KEY, expirySeconds: 1, keyName: "a(b)!'*" }), /&skn=a%28b%29%21%27%2A&se=1$/);
  assert.equal(strictEncode("!'()* /:"), '%21%27%28%29%2A%20%2F%3A');
});

test('MQTT usernames', () => {
  assert.equal(hubUsername('hub.example.com', 'dev-1'), 'hub.example.com/dev-1/?api-version=2021-04-12');
  assert.equal(
    hubUsername('127.0.0.2:8884', 'dev-1', { modelId: 'dtmi:com:example;1', clientType: 'homing-device/0.1.0' }),
    '127.0.0.2:8884/dev-1/?api-version=2021-04-12&model-id=dtmi:com:example;1&DeviceClientType=homing-device%2F0.1.0',
  );
  assert.equal(dpsMqttUsername('0ne00000001', 'dev-1', '2021-10-01'), '0ne00000001/registrations/dev-1/api-version=2021-10-01');
  assert.equal(
    dpsMqttUsername('0ne00000001', 'dev-1', '2021-10-01', 'homing-device/0.1.0'),
    '0ne00000001/registrations/dev-1/api-version=2021-10-01&ClientVersion=homing-device%2F0.1.0',
  );
});

test('DPS MQTT topics', () => {
  assert.equal(dpsRegisterTopic('7'), '$dps/registrations/PUT/iotdps-register/?$rid=7');
  assert.equal(dpsOperationStatusTopic('8', '4.0bda.4a08-x'), '$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=4.0bda.4a08-x');
  assert.deepEqual(parseDpsResponseTopic('$dps/registrations/res/202/?$rid=8&retry-after=3'), { status: 202, rid: '8', retryAfterSeconds: 3 });
  assert.deepEqual(parseDpsResponseTopic('$dps/registrations/res/200/?$rid=abc'), { status: 200, rid: 'abc', retryAfterSeconds: undefined });
  assert.equal(parseDpsResponseTopic('$dps/registrations/res/200/'), undefined);
  assert.equal(parseDpsResponseTopic('$iothub/twin/res/200/?$rid=1'), undefined);
});

test('hub MQTT topics', () => {
  assert.equal(telemetryTopic('dev-1', ''), 'devices/dev-1/messages/events/');
  assert.equal(c2dSubscription('dev-1'), 'devices/dev-1/messages/devicebound/#');
  assert.equal(twinGetTopic('1'), '$iothub/twin/GET/?$rid=1');
  assert.equal(twinReportedTopic('2'), '$iothub/twin/PATCH/properties/reported/?$rid=2');
  assert.equal(methodResponseTopic(200, 'r1'), '$iothub/methods/res/200/?$rid=r1');
  assert.deepEqual(parseTwinResponseTopic('$iothub/twin/res/204/?$rid=2&$version=7'), { status: 204, rid: '2', version: 7 });
  assert.deepEqual(parseTwinResponseTopic('$iothub/twin/res/200/?$rid=1'), { status: 200, rid: '1', version: undefined });
  assert.deepEqual(parseDesiredTopic('$iothub/twin/PATCH/properties/desired/?$version=12'), { version: 12 });
  assert.deepEqual(parseMethodTopic('$iothub/methods/POST/reboot/?$rid=42'), { name: 'reboot', rid: '42' });
  assert.deepEqual(parseMethodTopic('$iothub/methods/POST/homing.reprovision/?$rid=a&x=1'), { name: 'homing.reprovision', rid: 'a' });
  assert.equal(parseMethodTopic('$iothub/methods/POST/'), undefined);
});

test('property bag encoding matches the official SDK (protocol-device.md §D.2)', () => {
  // The observed example: system properties first, `$` as %24, values and keys encodeURIComponent'ed.
  assert.equal(
    encodePropertyBag({
      messageId: 'm-1',
      correlationId: 'c-1',
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      properties: { alert: 'high temp', 'k&=': 'v/?' },
    }),
    '%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp&k%26%3D=v%2F%3F',
  );
  // Order of system properties is fixed whatever the object order; dt-subject travels as $.sub.
  assert.equal(
    encodePropertyBag({ expiryTimeUtc: '2026-01-01T00:00:00.000Z', userId: 'u', to: '/devices/d/messages/events', interfaceId: 'i', messageId: 'm', properties: { 'dt-subject': 's' } }),
    '%24.mid=m&%24.uid=u&%24.to=%2Fdevices%2Fd%2Fmessages%2Fevents&%24.ifid=i&%24.exp=2026-01-01T00%3A00%3A00.000Z&%24.sub=s',
  );
  assert.equal(encodePropertyBag({}), '');
});

test('property bag decoding (C2D), including what the real hub sends', () => {
  const d = decodePropertyBag('%24.mid=abc&%24.to=%2Fdevices%2Fdev-1%2Fmessages%2FdeviceBound&%24.exp=2026-01-01T00%3A00%3A00Z&%24.cid=c&%24.uid=u&%24.ct=text%2Fplain&%24.ce=utf-8&color=red&k%26%3D=v%2F%3F&flag');
  assert.deepEqual(d, {
    messageId: 'abc',
    to: '/devices/dev-1/messages/deviceBound',
    expiryTimeUtc: '2026-01-01T00:00:00Z',
    correlationId: 'c',
    userId: 'u',
    contentType: 'text/plain',
    contentEncoding: 'utf-8',
    properties: { color: 'red', 'k&=': 'v/?', flag: '' },
  });
  // Round trip, and `__proto__` is just a key.
  const bag = encodePropertyBag({ messageId: 'x', properties: { a: '1 2', __proto__x: 'y', 'dt-subject': 'subj' } });
  assert.deepEqual(decodePropertyBag(bag), { messageId: 'x', properties: { a: '1 2', __proto__x: 'y', 'dt-subject': 'subj' } });
  const proto = decodePropertyBag('__proto__=polluted');
  assert.equal(Object.getPrototypeOf(proto.properties), Object.prototype);
  assert.equal(proto.properties.__proto__, 'polluted');
});

test('Retry-After: delay seconds or HTTP date', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('3', now), 3000);
  assert.equal(parseRetryAfter('1.5', now), 1500);
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:10 GMT', now), 10_000);
  assert.equal(parseRetryAfter('garbage', now), undefined);
  assert.equal(parseRetryAfter(undefined, now), undefined);
});

test('back-off: exponential, capped, jitter only upward, floor honoured', () => {
  const p = DEFAULT_RETRY_POLICY.transient; // 5 s, x2, 60 s cap, jitter 0.5
  assert.equal(backoffDelay(p, 1, () => 0), 5000);
  assert.equal(backoffDelay(p, 1, () => 0.999999), 7499);
  assert.equal(backoffDelay(p, 2, () => 0), 10_000);
  assert.equal(backoffDelay(p, 5, () => 0), 60_000);
  assert.equal(backoffDelay(p, 50, () => 0.5), 75_000);
  const t = DEFAULT_RETRY_POLICY.throttled; // 1 s
  assert.equal(backoffDelay(t, 1, () => 0, 7000), 7000);
  assert.equal(backoffDelay(t, 1, () => 0.5, 7000), 8750);
  for (let i = 0; i < 1000; i++) {
    const r = i / 1000;
    const d = backoffDelay(p, 1, () => r);
    assert.ok(d >= 5000 && d < 7500, `${d}`);
  }
});

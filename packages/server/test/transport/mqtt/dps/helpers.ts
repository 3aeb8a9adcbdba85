import assert from 'node:assert/strict';
import type { IPublishPacket } from 'mqtt-packet';
import { silentLogger } from '../../../../src/observability/logger.ts';
import { startMqttListener, type MqttListener, type MqttRealm } from '../../../../src/transport/mqtt/listener.ts';
import type { RawClient } from '../helpers.ts';

/** Shared by the DPS realm tests: raw MQTT clients (TLS + mqtt-packet) speaking DPS the way the SDK does. */

export const SDK_QUERY = 'api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1';
export const RES_FILTER = '$dps/registrations/res/#';
export const REGISTER = '$dps/registrations/PUT/iotdps-register/';
export const STATUS = '$dps/registrations/GET/iotdps-get-operationstatus/';

export function dpsUsername(idScope: string, registrationId: string, query = SDK_QUERY): string {
  return `${idScope}/registrations/${registrationId}/${query}`;
}

/** A DPS listener on 127.0.0.1:0 that asks for client certificates (as the X.509 devices will need). */
export function startDpsListener(realm: MqttRealm, tls: { cert: string; key: string }, maxPacketBytes = 128 * 1024): Promise<MqttListener> {
  return startMqttListener({ host: '127.0.0.1', port: 0, tls: { ...tls, requestCert: true }, realms: [realm], logger: silentLogger(), maxPacketBytes, sweepIntervalMs: 200 });
}

let mid = 0;
export function nextMessageId(): number {
  mid = (mid % 60000) + 1;
  return mid;
}

export interface DpsAnswer {
  topic: string;
  status: number;
  /** The query of the response topic, parsed. */
  params: URLSearchParams;
  body: Record<string, unknown>;
  /** The QoS the server answered with. */
  qos: number;
}

/** Parses a response PUBLISH: `$dps/registrations/res/{status}/?{query}` with a JSON payload (asserted). */
export function parseAnswer(p: IPublishPacket): DpsAnswer {
  const m = /^\$dps\/registrations\/res\/(\d{3})\/\?(.*)$/.exec(p.topic);
  assert.ok(m, `not a DPS response topic: ${p.topic}`);
  const text = Buffer.isBuffer(p.payload) ? p.payload.toString('utf8') : p.payload;
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    assert.fail(`the answer on ${p.topic} is not JSON: ${text.slice(0, 200)}`);
  }
  return { topic: p.topic, status: Number(m[1]), params: new URLSearchParams(m[2]), body, qos: p.qos };
}

/**
 * Publishes a request and returns the answer; with QoS 1 also waits for the PUBACK, which the server sends after the
 * answer.
 */
export async function request(c: RawClient, topic: string, payload: string | Buffer, qos: 0 | 1 = 1): Promise<DpsAnswer> {
  if (qos === 1) {
    const messageId = nextMessageId();
    c.send({ cmd: 'publish', topic, payload, qos: 1, messageId, dup: false, retain: false });
    const answer = parseAnswer((await c.next('publish')) as IPublishPacket);
    const ack = await c.next('puback');
    assert.equal(ack.cmd === 'puback' ? ack.messageId : undefined, messageId);
    return answer;
  }
  c.send({ cmd: 'publish', topic, payload, qos: 0, dup: false, retain: false });
  return parseAnswer((await c.next('publish')) as IPublishPacket);
}

export function registerBody(registrationId: string, payload?: Record<string, unknown>): string {
  return JSON.stringify(payload === undefined ? { registrationId } : { registrationId, payload });
}

/** Asserts a DPS error answer: status, errorCode, the standard body fields. */
export function assertError(a: DpsAnswer, status: number, errorCode: number, rid?: string): void {
  assert.equal(a.status, status, JSON.stringify(a.body));
  assert.equal(a.body.errorCode, errorCode, JSON.stringify(a.body));
  assert.equal(typeof a.body.trackingId, 'string');
  assert.equal(typeof a.body.message, 'string');
  assert.match(String(a.body.timestampUtc), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
  if (rid !== undefined) assert.equal(a.params.get('$rid'), rid);
}

import type { MqttClient } from 'mqtt';
import { AbortedError, NetworkError, ProtocolError, TimeoutError } from '../errors.ts';
import { tryParseJson } from '../json.ts';
import { endMqtt, openMqtt } from '../mqtt/connect.ts';
import { withTimeout } from '../runtime.ts';
import { CLIENT_VERSION } from '../version.ts';
import type { ResolvedDpsConnection } from './config.ts';
import { DPS_RESPONSE_SUBSCRIPTION, dpsMqttUsername, dpsOperationStatusTopic, dpsRegisterTopic, parseDpsResponseTopic } from './topics.ts';
import type { DeviceRegistrationRequest, DpsResponse, DpsTransport } from './types.ts';

interface Pending {
  resolve(r: DpsResponse): void;
  reject(e: Error): void;
}

export interface MqttDpsOptions {
  /** Default 180 s, as the official SDK. */
  keepaliveSeconds?: number;
}

/**
 * DPS over MQTT (protocol-device.md §B): clientId = registrationId, username
 * `{idScope}/registrations/{registrationId}/api-version=..`, password = DPS SAS (none with X.509), clean session;
 * SUBSCRIBE `$dps/registrations/res/#`, then requests on `.../PUT/iotdps-register/?$rid=` and
 * `.../GET/iotdps-get-operationstatus/?$rid=&operationId=`, answers on `$dps/registrations/res/{status}/?$rid=`.
 * The connection opens on the first request and is closed by `close()`.
 */
export class MqttDpsTransport implements DpsTransport {
  private client: MqttClient | undefined;
  private opening: Promise<MqttClient> | undefined;
  private readonly pending = new Map<string, Pending>();
  private nextRid = 0;

  constructor(
    private readonly c: ResolvedDpsConnection,
    private readonly options: MqttDpsOptions = {},
  ) {}

  register(request: DeviceRegistrationRequest, signal?: AbortSignal): Promise<DpsResponse> {
    return this.request((rid) => dpsRegisterTopic(rid), JSON.stringify(request), 'register', signal);
  }

  operationStatus(operationId: string, signal?: AbortSignal): Promise<DpsResponse> {
    // The official SDK sends a single space as the payload of the poll.
    return this.request((rid) => dpsOperationStatusTopic(rid, operationId), ' ', 'operation status', signal);
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.failAll(new AbortedError('DPS MQTT transport closed'));
    if (!client) return;
    if (client.connected) {
      await withTimeout(this.c.runtime, client.unsubscribeAsync(DPS_RESPONSE_SUBSCRIPTION), 2000, 'DPS unsubscribe').catch(() => undefined);
    }
    await endMqtt(client);
  }

  private link(signal?: AbortSignal): Promise<MqttClient> {
    if (this.client?.connected) return Promise.resolve(this.client);
    this.opening ??= this.open(signal).finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async open(signal?: AbortSignal): Promise<MqttClient> {
    const c = this.c;
    const client = await openMqtt(
      c.runtime,
      {
        host: c.host,
        port: c.port,
        credential: c.credential,
        tls: c.tls,
        clientId: c.registrationId,
        username: dpsMqttUsername(c.idScope, c.registrationId, c.apiVersion, CLIENT_VERSION),
        password: c.authorization(),
        clean: true,
        keepaliveSeconds: this.options.keepaliveSeconds ?? 180,
        connectTimeoutMs: c.requestTimeoutMs,
        endpoint: 'dps',
        label: 'DPS',
      },
      signal,
    );
    client.on('error', () => undefined); // surfaced through 'close'
    client.on('message', (topic: string, payload: Buffer) => this.onMessage(topic, payload));
    client.on('close', () => {
      if (this.client !== client) return;
      this.client = undefined;
      this.failAll(new NetworkError(`DPS ${c.host}:${c.port}: connection closed`));
    });
    try {
      await withTimeout(c.runtime, client.subscribeAsync(DPS_RESPONSE_SUBSCRIPTION, { qos: 1 }), c.requestTimeoutMs, 'DPS subscribe');
    } catch (e) {
      await endMqtt(client);
      throw e instanceof TimeoutError ? e : new NetworkError(`DPS subscribe failed: ${(e as Error).message}`, e);
    }
    this.client = client;
    return client;
  }

  private async request(topic: (rid: string) => string, payload: string, what: string, signal?: AbortSignal): Promise<DpsResponse> {
    if (signal?.aborted) throw new AbortedError();
    const client = await this.link(signal);
    const rid = String(++this.nextRid);
    const response = new Promise<DpsResponse>((resolve, reject) => this.pending.set(rid, { resolve, reject }));
    const onAbort = (): void => {
      const p = this.pending.get(rid);
      this.pending.delete(rid);
      p?.reject(new AbortedError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    client.publish(topic(rid), payload, { qos: 1 }, (err) => {
      if (!err) return;
      const p = this.pending.get(rid);
      this.pending.delete(rid);
      p?.reject(new NetworkError(`DPS ${what}: publish failed: ${err.message}`, err));
    });
    try {
      return await withTimeout(this.c.runtime, response, this.c.requestTimeoutMs, `DPS ${what}`, () => this.pending.delete(rid));
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private onMessage(topic: string, payload: Buffer): void {
    const t = parseDpsResponseTopic(topic);
    if (!t) return;
    const p = this.pending.get(t.rid);
    if (!p) return; // unknown or timed-out request
    this.pending.delete(t.rid);
    const text = payload.toString('utf8');
    const retryAfterMs = t.retryAfterSeconds === undefined ? undefined : Math.round(t.retryAfterSeconds * 1000);
    if (text.trim() === '') {
      p.resolve({ status: t.status, retryAfterMs, body: undefined });
      return;
    }
    const parsed = tryParseJson(text);
    if (!parsed.ok) {
      if (t.status >= 300) p.resolve({ status: t.status, retryAfterMs, body: undefined });
      else p.reject(new ProtocolError(`DPS answer on ${topic} is not JSON`));
      return;
    }
    p.resolve({ status: t.status, retryAfterMs, body: parsed.value });
  }

  private failAll(e: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(e);
  }
}

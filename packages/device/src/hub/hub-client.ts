import { EventEmitter } from 'node:events';
import type { MqttClient } from 'mqtt';
import { splitHostPort, type HubCredential, type TlsOptions } from '../credentials.ts';
import {
  AbortedError,
  HomingDeviceError,
  HubRequestError,
  MessageTooLargeError,
  NetworkError,
  NotConnectedError,
  ProtocolError,
  type HubOperation,
} from '../errors.ts';
import { isJsonObject, tryParseJson, type JsonObject, type JsonValue } from '../json.ts';
import { endMqtt, openMqtt } from '../mqtt/connect.ts';
import { resolveRuntime, withTimeout, type Runtime } from '../runtime.ts';
import { hubSas } from '../sas.ts';
import { CLIENT_VERSION } from '../version.ts';
import { decodePropertyBag, encodePropertyBag, type MessageProperties, type MessageSystemProperties } from './property-bag.ts';
import {
  DEFAULT_HUB_API_VERSION,
  DESIRED_SUBSCRIPTION,
  METHODS_SUBSCRIPTION,
  TWIN_RESPONSE_SUBSCRIPTION,
  c2dPrefix,
  c2dSubscription,
  hubUsername,
  methodResponseTopic,
  parseDesiredTopic,
  parseMethodTopic,
  parseTwinResponseTopic,
  telemetryTopic,
  twinGetTopic,
  twinReportedTopic,
} from './topics.ts';

/** IoT Hub's largest device-to-cloud message. */
export const MAX_TELEMETRY_BYTES = 256 * 1024;

export interface HubClientOptions {
  /** The hub's host name as DPS assigned it (`assignedHub`): it goes into the username and the SAS resource. */
  hostName: string;
  deviceId: string;
  credential: HubCredential;
  /** Where to dial, when it differs from `hostName` (default: `hostName` split as host[:port], port 8883). */
  address?: { host: string; port?: number };
  tls?: TlsOptions;
  /** Default `2021-04-12`. */
  apiVersion?: string;
  /** IoT Plug and Play model id, sent in the username. */
  modelId?: string;
  /** Default 180 s. */
  keepaliveSeconds?: number;
  /** Bound on TCP + TLS + CONNACK + the initial SUBSCRIBEs (ms). Default 30 000. */
  connectTimeoutMs?: number;
  /** Bound on each telemetry send, twin request and subscription (ms). Default 30 000. */
  operationTimeoutMs?: number;
  /** SAS lifetime (s). Default 3600. */
  tokenTtlSeconds?: number;
  /** Reconnect with a fresh SAS this long before it expires (s). Default 900. */
  tokenRenewalMarginSeconds?: number;
  /** Subscribe to cloud-to-device messages on connect. Default false (see `enableMessages()`). */
  receiveMessages?: boolean;
  runtime?: Partial<Runtime>;
}

export interface Twin {
  desired: JsonObject;
  reported: JsonObject;
}

export type TelemetryOptions = MessageProperties;

export interface CloudToDeviceMessage extends MessageSystemProperties {
  body: Buffer;
  properties: Record<string, string>;
}

export interface MethodRequest {
  name: string;
  /** The request id (`$rid`), echoed in the response topic. */
  requestId: string;
  /** The JSON payload; undefined when the request had none. */
  payload: JsonValue | undefined;
}

export interface MethodResult {
  /** Any integer status; 200 for success by convention. */
  status: number;
  payload?: JsonValue;
}

export type MethodHandler = (request: MethodRequest) => MethodResult | Promise<MethodResult>;

export interface HubClientEvents {
  /** A desired-properties patch (with `$version`), and the version from the topic. */
  desired: [patch: JsonObject, version: number | undefined];
  /** A cloud-to-device message (acknowledged when the listeners return). */
  message: [message: CloudToDeviceMessage];
  /** The connection was lost (or its renewal refused) after `connect()` succeeded. The client does not reconnect. */
  disconnect: [error: Error];
  /** The connection was re-established with a fresh SAS. */
  renewed: [];
  /**
   * Application code threw: a method handler (`source` = the method name; the caller got status 500) or a
   * `desired` / `message` listener (`source` = the event name).
   */
  handlerError: [error: unknown, source: string];
}

interface PendingTwin {
  resolve(r: { status: number; version: number | undefined; body: JsonValue | undefined }): void;
  reject(e: Error): void;
  operation: HubOperation;
}

type State = 'idle' | 'connecting' | 'connected' | 'renewing' | 'closed';

/**
 * One device's MQTT connection to an IoT hub (protocol-device.md §D): telemetry, twin, desired patches, direct
 * methods, cloud-to-device messages, SAS renewal. Every request is bounded by `operationTimeoutMs`. It never
 * reconnects on its own after a loss (it emits `disconnect`): HomingDevice decides when and where to reconnect.
 */
export class HubClient extends EventEmitter<HubClientEvents> {
  readonly hostName: string;
  readonly deviceId: string;
  private readonly o: HubClientOptions;
  private readonly runtime: Runtime;
  private readonly operationTimeoutMs: number;
  private state: State = 'idle';
  private mqtt: MqttClient | undefined;
  private renewal: Promise<void> | undefined;
  private readonly closing = new AbortController();
  private renewTimer: unknown;
  private readonly pending = new Map<string, PendingTwin>();
  private readonly methods = new Map<string, MethodHandler>();
  private nextRid = 0;
  private messagesEnabled: boolean;

  constructor(options: HubClientOptions) {
    super();
    if (!options.hostName) throw new TypeError('hostName is required');
    if (!options.deviceId) throw new TypeError('deviceId is required');
    this.o = options;
    this.hostName = options.hostName;
    this.deviceId = options.deviceId;
    this.runtime = resolveRuntime(options.runtime);
    this.operationTimeoutMs = options.operationTimeoutMs ?? 30_000;
    this.messagesEnabled = options.receiveMessages ?? false;
  }

  get connected(): boolean {
    return this.state === 'connected' || this.state === 'renewing';
  }

  /** The MQTT username this client sends. */
  get username(): string {
    return hubUsername(this.hostName, this.deviceId, {
      apiVersion: this.o.apiVersion ?? DEFAULT_HUB_API_VERSION,
      ...(this.o.modelId !== undefined ? { modelId: this.o.modelId } : {}),
      clientType: CLIENT_VERSION,
    });
  }

  /**
   * Connects once. Rejects with ConnectionRefusedError (CONNACK 2/4/5: unknown, disabled, moved or deleted device;
   * 3: unavailable), NetworkError, TimeoutError or AbortedError.
   */
  async connect(signal?: AbortSignal): Promise<void> {
    if (this.state !== 'idle') throw new Error(`connect() while ${this.state}`);
    this.state = 'connecting';
    try {
      const client = await this.open(signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal);
      if (this.state !== 'connecting') {
        await endMqtt(client);
        throw new AbortedError('closed while connecting');
      }
      this.mqtt = client;
      this.state = 'connected';
      this.scheduleRenewal();
    } catch (e) {
      if (this.state === 'connecting') this.state = 'idle';
      throw e;
    }
  }

  /** Disconnects (DISCONNECT after in-flight messages, bounded). Pending requests reject with AbortedError. */
  async close(): Promise<void> {
    this.state = 'closed';
    this.closing.abort();
    this.runtime.timers.clearTimeout(this.renewTimer);
    const m = this.mqtt;
    this.mqtt = undefined;
    this.failPending(new AbortedError('hub client closed'));
    if (m) await endMqtt(m);
    if (this.renewal) await this.renewal;
  }

  /** Sends telemetry (QoS 1; resolves on PUBACK). */
  async sendTelemetry(body: string | Uint8Array, options: TelemetryOptions = {}): Promise<void> {
    const payload = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    if (payload.length > MAX_TELEMETRY_BYTES) throw new MessageTooLargeError(payload.length, MAX_TELEMETRY_BYTES);
    const client = await this.link();
    const topic = telemetryTopic(this.deviceId, encodePropertyBag(options));
    await this.bounded(client.publishAsync(topic, payload, { qos: 1 }), 'telemetry');
  }

  /** Sends a JSON value as telemetry, with content type `application/json` and encoding `utf-8`. */
  sendJson(value: JsonValue, options: TelemetryOptions = {}): Promise<void> {
    return this.sendTelemetry(JSON.stringify(value), { contentType: 'application/json', contentEncoding: 'utf-8', ...options });
  }

  /** Gets the twin's desired and reported properties. */
  async getTwin(): Promise<Twin> {
    const r = await this.twinRequest('twin.get', twinGetTopic, ' ');
    if (!isJsonObject(r.body)) throw new ProtocolError('twin GET answered without a JSON object');
    const { desired, reported } = r.body;
    return { desired: isJsonObject(desired) ? desired : {}, reported: isJsonObject(reported) ? reported : {} };
  }

  /** Patches reported properties (null deletes a key). Resolves with the new reported `$version` when the hub sends it. */
  async updateReported(patch: JsonObject): Promise<number | undefined> {
    const r = await this.twinRequest('twin.reported', twinReportedTopic, JSON.stringify(patch));
    return r.version;
  }

  /** Registers (or replaces) the handler of a direct method. Methods without a handler are answered 501. */
  onMethod(name: string, handler: MethodHandler): this {
    this.methods.set(name, handler);
    return this;
  }

  removeMethod(name: string): this {
    this.methods.delete(name);
    return this;
  }

  /** Subscribes to cloud-to-device messages (now if connected, and on every later connection). */
  async enableMessages(): Promise<void> {
    if (this.messagesEnabled) return;
    this.messagesEnabled = true;
    if (this.mqtt && this.state === 'connected') {
      const m = this.mqtt;
      await this.bounded(m.subscribeAsync(c2dSubscription(this.deviceId), { qos: 1 }), 'subscribe');
    }
  }

  // ------------------------------------------------------------------------------------------------ internals

  private token(): string | undefined {
    const c = this.o.credential;
    if (c.type !== 'symmetricKey') return undefined;
    const ttl = this.o.tokenTtlSeconds ?? 3600;
    return hubSas(this.hostName, this.deviceId, c.key, Math.floor(this.runtime.clock.now() / 1000) + ttl);
  }

  private async open(signal?: AbortSignal): Promise<MqttClient> {
    const hp = splitHostPort(this.hostName);
    const host = this.o.address?.host ?? hp.host;
    const port = this.o.address?.port ?? (this.o.address ? undefined : hp.port) ?? 8883;
    const client = await openMqtt(
      this.runtime,
      {
        host,
        port,
        credential: this.o.credential,
        tls: this.o.tls,
        clientId: this.deviceId,
        username: this.username,
        password: this.token(),
        clean: false,
        keepaliveSeconds: this.o.keepaliveSeconds ?? 180,
        connectTimeoutMs: this.o.connectTimeoutMs ?? 30_000,
        endpoint: 'hub',
        label: `hub ${this.hostName} at`,
      },
      signal,
    );
    let lastError: unknown;
    client.on('error', (e: unknown) => {
      lastError = e;
    });
    client.on('message', (topic: string, payload: Buffer) => this.onMessage(topic, payload));
    client.on('close', () => this.onClose(client, lastError));
    try {
      const subs: Promise<unknown>[] = [
        client.subscribeAsync(TWIN_RESPONSE_SUBSCRIPTION, { qos: 0 }),
        client.subscribeAsync(DESIRED_SUBSCRIPTION, { qos: 0 }),
        client.subscribeAsync(METHODS_SUBSCRIPTION, { qos: 0 }),
      ];
      if (this.messagesEnabled) subs.push(client.subscribeAsync(c2dSubscription(this.deviceId), { qos: 1 }));
      await this.bounded(Promise.all(subs), 'subscribe');
    } catch (e) {
      client.removeAllListeners('close');
      await endMqtt(client);
      throw e;
    }
    return client;
  }

  /** Waits for renewal to finish; the live client, or NotConnectedError. */
  private async link(): Promise<MqttClient> {
    if (this.state === 'renewing' && this.renewal) await this.renewal;
    if (this.state !== 'connected' || !this.mqtt) throw new NotConnectedError();
    return this.mqtt;
  }

  private async bounded<T>(p: Promise<T>, operation: HubOperation): Promise<T> {
    try {
      return await withTimeout(this.runtime, p, this.operationTimeoutMs, `hub ${operation}`);
    } catch (e) {
      if (e instanceof HomingDeviceError) throw e;
      throw new NetworkError(`hub ${operation} failed: ${(e as Error).message}`, e);
    }
  }

  private async twinRequest(operation: HubOperation, topicOf: (rid: string) => string, payload: string): Promise<{ status: number; version: number | undefined; body: JsonValue | undefined }> {
    const client = await this.link();
    const rid = String(++this.nextRid);
    const response = new Promise<{ status: number; version: number | undefined; body: JsonValue | undefined }>((resolve, reject) => {
      this.pending.set(rid, { resolve, reject, operation });
    });
    client.publish(topicOf(rid), payload, { qos: 0 }, (err) => {
      if (!err) return;
      const p = this.pending.get(rid);
      this.pending.delete(rid);
      p?.reject(new NetworkError(`hub ${operation}: publish failed: ${err.message}`, err));
    });
    return withTimeout(this.runtime, response, this.operationTimeoutMs, `hub ${operation}`, () => this.pending.delete(rid));
  }

  private scheduleRenewal(): void {
    if (this.o.credential.type !== 'symmetricKey') return;
    const ttl = this.o.tokenTtlSeconds ?? 3600;
    const margin = this.o.tokenRenewalMarginSeconds ?? 900;
    const afterSeconds = ttl > margin ? ttl - margin : ttl / 2;
    this.runtime.timers.clearTimeout(this.renewTimer);
    this.renewTimer = this.runtime.timers.setTimeout(() => {
      this.renewal = this.renew().finally(() => {
        this.renewal = undefined;
      });
    }, afterSeconds * 1000);
  }

  /** MQTT 3.1.1 cannot change the password of a live connection: reconnect with a fresh SAS (same clientId). */
  private async renew(): Promise<void> {
    if (this.state !== 'connected') return;
    this.state = 'renewing';
    const old = this.mqtt;
    this.mqtt = undefined; // its close is expected: not a disconnect
    if (old) await endMqtt(old);
    try {
      const client = await this.open(this.closing.signal);
      if (this.state !== 'renewing') {
        await endMqtt(client);
        return;
      }
      this.mqtt = client;
      this.state = 'connected';
      this.scheduleRenewal();
      this.emit('renewed');
    } catch (e) {
      if (this.state !== 'renewing') return;
      this.state = 'idle';
      const err = e instanceof Error ? e : new NetworkError(String(e));
      this.failPending(err);
      this.emit('disconnect', err);
    }
  }

  private onClose(client: MqttClient, cause: unknown): void {
    if (client !== this.mqtt) return; // replaced by a renewal, or closed by us
    this.mqtt = undefined;
    this.runtime.timers.clearTimeout(this.renewTimer);
    if (this.state === 'closed') return;
    this.state = 'idle';
    const why = cause instanceof Error ? `: ${cause.message}` : '';
    const e = new NetworkError(`hub ${this.hostName}: connection lost${why}`, cause);
    this.failPending(e);
    this.emit('disconnect', e);
  }

  private failPending(e: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(e);
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (topic.startsWith('$iothub/twin/res/')) this.onTwinResponse(topic, payload);
    else if (topic.startsWith('$iothub/twin/PATCH/properties/desired/')) this.onDesired(topic, payload);
    else if (topic.startsWith('$iothub/methods/POST/')) void this.onMethodRequest(topic, payload);
    else if (topic.startsWith(c2dPrefix(this.deviceId))) this.onC2d(topic, payload);
  }

  private onTwinResponse(topic: string, payload: Buffer): void {
    const t = parseTwinResponseTopic(topic);
    if (!t) return;
    const p = this.pending.get(t.rid);
    if (!p) return;
    this.pending.delete(t.rid);
    const text = payload.toString('utf8');
    let body: JsonValue | undefined;
    if (text.trim() !== '') {
      const parsed = tryParseJson(text);
      if (parsed.ok) body = parsed.value;
      else if (t.status < 300) {
        p.reject(new ProtocolError(`twin answer on ${topic} is not JSON`));
        return;
      }
    }
    const errorCode = isJsonObject(body) && typeof body.errorCode === 'number' ? body.errorCode : undefined;
    if (t.status >= 300 || errorCode !== undefined) {
      const message = isJsonObject(body) && typeof body.message === 'string' ? body.message : undefined;
      p.reject(new HubRequestError({ operation: p.operation, status: t.status, errorCode, message, body }));
      return;
    }
    p.resolve({ status: t.status, version: t.version, body });
  }

  private onDesired(topic: string, payload: Buffer): void {
    const t = parseDesiredTopic(topic);
    const parsed = tryParseJson(payload.toString('utf8'));
    if (!t || !parsed.ok || !isJsonObject(parsed.value)) return;
    const patch = parsed.value;
    const version = t.version ?? (typeof patch.$version === 'number' ? patch.$version : undefined);
    this.safeEmit('desired', () => this.emit('desired', patch, version));
  }

  private onC2d(topic: string, payload: Buffer): void {
    const bag = topic.slice(c2dPrefix(this.deviceId).length);
    const message: CloudToDeviceMessage = { ...decodePropertyBag(bag), body: payload };
    this.safeEmit('message', () => this.emit('message', message));
  }

  private async onMethodRequest(topic: string, payload: Buffer): Promise<void> {
    const t = parseMethodTopic(topic);
    if (!t) return;
    const respond = (status: number, body: JsonValue | undefined): void => {
      const live = this.mqtt;
      if (!live || !this.connected) return;
      live.publish(methodResponseTopic(status, t.rid), body === undefined ? '' : JSON.stringify(body), { qos: 0 }, () => undefined);
    };
    const text = payload.toString('utf8');
    let requestPayload: JsonValue | undefined;
    if (text.trim() !== '') {
      const parsed = tryParseJson(text);
      if (!parsed.ok) {
        respond(400, { message: 'the method payload is not JSON' });
        return;
      }
      requestPayload = parsed.value;
    }
    const handler = this.methods.get(t.name);
    if (!handler) {
      respond(501, { message: `method ${t.name} is not implemented by this device` });
      return;
    }
    try {
      const result = await handler({ name: t.name, requestId: t.rid, payload: requestPayload });
      const status = Number.isInteger(result.status) ? result.status : 500;
      respond(status, result.payload);
    } catch (e) {
      this.reportHandlerError(e, t.name);
      respond(500, { message: 'method handler failed' });
    }
  }

  /** Listener exceptions must not break MQTT.js's packet handling: they are reported as `handlerError`. */
  private safeEmit(source: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.reportHandlerError(e, source);
    }
  }

  private reportHandlerError(e: unknown, source: string): void {
    try {
      this.emit('handlerError', e, source);
    } catch {
      // a throwing handlerError listener has nowhere left to report to
    }
  }
}

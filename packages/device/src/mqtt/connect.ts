import { isIP } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { MqttClient, type IClientOptions } from 'mqtt';
import { tlsConnectOptions, type HubCredential, type TlsOptions } from '../credentials.ts';
import { AbortedError, ConnectionRefusedError, NetworkError, TimeoutError } from '../errors.ts';
import { withTimeout, type Runtime } from '../runtime.ts';

/** One MQTT-over-TLS connection attempt: where, as whom, and how long to wait for CONNACK. */
export interface MqttConnectRequest {
  host: string;
  port: number;
  credential: HubCredential;
  tls: TlsOptions | undefined;
  clientId: string;
  username: string;
  /** SAS token; absent with X.509. */
  password: string | undefined;
  clean: boolean;
  keepaliveSeconds: number;
  connectTimeoutMs: number;
  endpoint: 'hub' | 'dps';
  /** For messages, e.g. `hub contoso.azure-devices.net at`. */
  label: string;
}

/** True for errors MQTT.js raises from a refusing CONNACK (numeric reason code). */
function connackCode(e: unknown): number | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'number' && c > 0 && c < 256 ? c : undefined;
}

/**
 * Opens an MQTT 3.1.1 connection with MQTT.js over our own TLS socket (noDelay, SNI, client certificate), with
 * automatic reconnection off: reconnecting is a policy decision, taken above. Resolves on CONNACK 0; rejects with
 * ConnectionRefusedError (CONNACK ≠ 0), NetworkError (TCP/TLS), TimeoutError or AbortedError.
 */
export async function openMqtt(runtime: Runtime, r: MqttConnectRequest, signal?: AbortSignal): Promise<MqttClient> {
  if (signal?.aborted) throw new AbortedError();
  const where = `${r.label} ${r.host}:${r.port}`;
  const tlsOptions: ConnectionOptions = {
    host: r.host,
    port: r.port,
    ...tlsConnectOptions(r.credential, r.tls),
  };
  if (tlsOptions.servername === undefined && isIP(r.host) === 0) tlsOptions.servername = r.host;
  const options: IClientOptions = {
    protocolVersion: 4,
    protocolId: 'MQTT',
    clientId: r.clientId,
    username: r.username,
    clean: r.clean,
    keepalive: r.keepaliveSeconds,
    reconnectPeriod: 0,
    connectTimeout: r.connectTimeoutMs,
    resubscribe: false,
    queueQoSZero: false,
    ...(r.password !== undefined ? { password: r.password } : {}),
  };
  const client = new MqttClient(() => {
    const socket = tlsConnect({ ...tlsOptions, noDelay: true } as ConnectionOptions);
    socket.setNoDelay(true);
    return socket;
  }, options);

  const attempt = new Promise<MqttClient>((resolve, reject) => {
    let lastError: unknown;
    const cleanup = (): void => {
      client.removeListener('connect', onConnect);
      client.removeListener('error', onError);
      client.removeListener('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (e: Error): void => {
      cleanup();
      // Keep an error listener: MQTT.js may still emit while the socket winds down.
      client.on('error', () => undefined);
      client.end(true);
      reject(e);
    };
    const onConnect = (): void => {
      cleanup();
      // Never let an 'error' event go unheard (it would throw); owners add their own listeners as well.
      client.on('error', () => undefined);
      resolve(client);
    };
    const onError = (e: unknown): void => {
      const rc = connackCode(e);
      if (rc !== undefined) fail(new ConnectionRefusedError(rc, r.endpoint, where));
      else lastError = e;
    };
    const onClose = (): void => {
      const msg = lastError instanceof Error ? lastError.message : 'connection closed before CONNACK';
      fail(new NetworkError(`${where}: ${msg}`, lastError));
    };
    const onAbort = (): void => fail(new AbortedError());
    client.on('connect', onConnect);
    client.on('error', onError);
    client.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    // MQTT.js also bounds CONNACK with connectTimeout; this bound covers TCP and TLS too, on the injected timers.
    return await withTimeout(runtime, attempt, r.connectTimeoutMs + 1000, `${where} connect`, () => {
      client.on('error', () => undefined);
      client.end(true);
    });
  } catch (e) {
    if (e instanceof TimeoutError) client.end(true);
    throw e;
  }
}

/**
 * Ends a client: DISCONNECT once in-flight messages are acknowledged, bounded by `timeoutMs`, then forced. Never
 * rejects. (The bound uses real, unref'd timers: it is socket hygiene, not a retry rule.)
 */
export async function endMqtt(client: MqttClient, timeoutMs = 2000): Promise<void> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => {
      client.stream?.destroy();
      resolve();
    }, timeoutMs);
    t.unref();
    client.end(false, () => {
      clearTimeout(t);
      resolve();
    });
  });
}

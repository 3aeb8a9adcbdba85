import type { X509Certificate } from 'node:crypto';
import type { ISubscription } from 'mqtt-packet';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import type { ConnackCode } from './errors.ts';

/**
 * The extension point of the MQTT endpoint. The transport (listener + connection) knows packets, keepalive, limits
 * and the connection lifecycle; a realm owns everything after a CONNECT: who the client is and what its topics mean.
 * The hub device endpoint is one realm per hub (hub/realm.ts); the DPS-over-MQTT role will be another.
 *
 * Flow: for each CONNECT the listener asks the realms in order whether they `claim` it (a cheap, synchronous look at
 * the username). The first one that does gets `connect`, which authenticates and returns a session or a CONNACK
 * return code. After CONNACK 0 the session receives the connection's SUBSCRIBE / UNSUBSCRIBE / PUBLISH / PUBACK
 * events, and `closed()` exactly once when the connection ends for any reason.
 */
export interface MqttRealm {
  /** Short name for logs and metrics. */
  readonly name: string;
  /** True when this realm handles the CONNECT (decided from the username, never from the password). */
  claims(req: ConnectRequest): boolean;
  /** Authenticates the client. May reject only for unexpected failures: the connection answers CONNACK 3 then. */
  connect(req: ConnectRequest, link: MqttLink): Promise<ConnectOutcome>;
}

/** What a realm sees of a CONNECT packet. */
export interface ConnectRequest {
  readonly clientId: string;
  readonly username: string | undefined;
  /** The password bytes (a SAS token for Azure devices). Never log it. */
  readonly password: Buffer | undefined;
  readonly clean: boolean;
  /** Keepalive in seconds (0 = none). */
  readonly keepalive: number;
  /** The TLS client certificate, when the client sent one. Parsed on first call. */
  peerCertificate(): X509Certificate | undefined;
  /** The TLS client chain as sent (DER, leaf first; empty without a client certificate). Read on each call. */
  peerChain(): Buffer[];
  readonly remoteAddress: string | undefined;
}

export type ConnectOutcome =
  | { readonly ok: true; readonly session: RealmSession; readonly sessionPresent: boolean }
  | { readonly ok: false; readonly returnCode: Exclude<ConnackCode, 0>; readonly reason: string };

/** An application message the client published. */
export interface InboundPublish {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 0 | 1;
}

/** `undefined` = handled (PUBACK follows for QoS 1); `{ close }` = protocol violation, the connection is closed. */
export type PublishOutcome = undefined | { readonly close: string };

/** The per-connection side of a realm. Methods must not throw for client mistakes; the transport closes on a throw. */
export interface RealmSession {
  /** Called right after CONNACK 0 was written: from now on `MqttLink.publish` delivers. */
  opened?(): void;
  /** Returns the granted QoS per filter (0, 1, or 128 for a refused filter), in order. */
  subscribe(subscriptions: readonly ISubscription[]): number[];
  unsubscribe(topics: readonly string[]): void;
  publish(msg: InboundPublish): PublishOutcome | Promise<PublishOutcome>;
  /** The client acknowledged a QoS 1 message the server sent. */
  puback(messageId: number): void;
  /** The connection ended (client DISCONNECT, socket close, error, takeover, server close). Called exactly once. */
  closed(reason: string): void;
}

/** What a realm session may do with its connection. */
export interface MqttLink {
  /** Listener-unique connection number, for logs. */
  readonly id: number;
  readonly log: Logger;
  readonly metrics: Metrics | undefined;
  /** True once the connection is closing or closed; publishes are then dropped. */
  readonly closed: boolean;
  /**
   * Sends a PUBLISH. QoS 1 messages get a packet id; the client's PUBACK arrives at `RealmSession.puback`.
   * Dropped unless the connection is open (CONNACK 0 sent, not closing): register a session with services that may
   * publish to it in `RealmSession.opened`, not in `MqttRealm.connect`.
   */
  publish(topic: string, payload: Buffer | string, qos?: 0 | 1): void;
  /** Closes the connection from the server side. */
  close(reason: string): void;
}

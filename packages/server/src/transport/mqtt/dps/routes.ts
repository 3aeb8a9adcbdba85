import type { Clock, IdSource } from '../../../core/clock.ts';
import type { Logger } from '../../../observability/logger.ts';
import type { DeviceCredential, RegistrationService } from '../../../provisioning/registration.ts';
import type { InboundPublish, MqttLink, PublishOutcome } from '../realm.ts';

/**
 * The contract between the DPS realm's dispatcher and its topic-family handlers (one file each in handlers/).
 * A handler sees a device through `DpsScope` only: who it claims to be (from the CONNECT username), the credential it
 * presented, its connection and the realm's shared context.
 */

/** The DPS device use cases the MQTT binding needs (the HTTPS transport's `DpsDeviceRuntime` is assignable to it). */
export type DpsMqttRuntime = Pick<RegistrationService, 'register' | 'operationStatus'>;

/** Shared by every connection of one DPS realm. */
export interface DpsRealmContext {
  readonly registration: DpsMqttRuntime;
  readonly log: Logger;
  readonly clock: Clock;
  readonly ids: IdSource;
  /** How long a request waits for its assignment before answering 202 `assigning` (ms; 0: never waits). */
  readonly responseBudgetMs: number;
  /** Largest request payload (DPS: 96 KB); larger ones are answered 413. */
  readonly maxPayloadBytes: number;
  /** `retry-after` of a 5xx answer that carries none of its own (seconds, ≥ 1). The SDK retries 5xx forever. */
  readonly serverErrorRetryAfterSeconds: number;
  /** Told of every answer sent (the id scope of the connection, the status): per-minute device API counters. */
  readonly onAnswer?: ((idScope: string, status: number) => void) | undefined;
}

/** One device connection as handlers see it. */
export interface DpsScope {
  readonly idScope: string;
  /** The registration id of the CONNECT username, as the device wrote it. */
  readonly registrationId: string;
  /** Passed to every use case call: the use cases authenticate each request (SAS signature, enrollment). */
  readonly credential: DeviceCredential;
  /** The device's source IP address, as the socket reports it (geoLatency allocation, the custom webhook). */
  readonly sourceAddress?: string | undefined;
  readonly link: MqttLink;
  readonly realm: DpsRealmContext;
}

/** A request the session has validated: a known topic family, a usable `$rid`, a payload within the limit. */
export interface DpsRequest {
  /** Echoed verbatim on the response topic. */
  readonly rid: string;
  /** The raw query of the request topic (after `?`). */
  readonly query: string;
  readonly msg: InboundPublish;
}

/** A family of topics devices publish requests to. Handlers answer every request and never reject. */
export interface DpsPublishRoute {
  readonly name: string;
  matches(topic: string): boolean;
  handle(scope: DpsScope, req: DpsRequest): Promise<PublishOutcome>;
}

import type { ISubscription } from 'mqtt-packet';
import type { Clock, IdSource } from '../../../core/clock.ts';
import type { HubService } from '../../../hub/hub-service.ts';
import type { InboundPublish, MqttLink, PublishOutcome } from '../realm.ts';

/**
 * The contract between the hub realm's dispatcher and its topic-family handlers (one file each in handlers/).
 * A handler sees a device through `DeviceScope` only: its id, its connection and the realm's shared context.
 */

/** Subscription bits of a device session (kept across connections for clean=false sessions). */
export const SUB_C2D = 1;
export const SUB_TWIN_RESPONSES = 2;
export const SUB_DESIRED = 4;
export const SUB_METHODS = 8;

/** Shared by every connection of one hub realm. */
export interface HubRealmContext {
  readonly hub: HubService;
  readonly clock: Clock;
  readonly ids: IdSource;
  /** Largest telemetry payload (IoT Hub: 256 KiB). Larger closes the connection. */
  readonly maxTelemetryBytes: number;
  /** Largest reported-properties patch (IoT Hub: 32 KiB). Larger is answered 400. */
  readonly maxTwinPatchBytes: number;
}

export interface DeviceScope {
  readonly deviceId: string;
  readonly link: MqttLink;
  readonly realm: HubRealmContext;
  subscribed(flag: number): boolean;
}

/** A family of topics devices publish to. */
export interface PublishRoute {
  readonly name: string;
  matches(topic: string): boolean;
  handle(scope: DeviceScope, msg: InboundPublish): PublishOutcome | Promise<PublishOutcome>;
}

/** A topic filter devices may subscribe to; subscribing sets `flag` on the session. */
export interface SubscribeRoute {
  readonly name: string;
  readonly flag: number;
  matches(filter: string, deviceId: string): boolean;
  /** Called after the flag changed (true = subscribed). */
  changed?(scope: DeviceScope, subscribed: boolean): void;
}

export type { ISubscription };

import type { JsonObject } from '../../../core/json.ts';
import type { DeviceConnection } from '../../../hub/sessions.ts';
import type { InboundPublish, MqttLink, PublishOutcome, RealmSession } from '../realm.ts';
import { publishRouteFor, subscribeRouteFor } from './dispatcher.ts';
import { deliverDesiredPatch } from './handlers/twin-desired.ts';
import { sendMethodRequest } from './handlers/methods.ts';
import { SUB_METHODS, type DeviceScope, type HubRealmContext, type ISubscription } from './routes.ts';

/** Subscription state of a device; shared between connections of a persistent (clean=false) session. */
export interface SessionState {
  flags: number;
}

/**
 * One authenticated device connection of the hub realm: the hub's `DeviceConnection` and the transport's
 * `RealmSession` at once. It holds only ids and a flags word; topic work is done by the handlers.
 */
export class HubDeviceSession implements DeviceConnection, RealmSession, DeviceScope {
  readonly connectedAt: number;

  constructor(
    readonly deviceId: string,
    readonly link: MqttLink,
    readonly realm: HubRealmContext,
    private readonly state: SessionState,
  ) {
    this.connectedAt = realm.clock.now();
  }

  subscribed(flag: number): boolean {
    return (this.state.flags & flag) !== 0;
  }

  // ------------------------------------------------------------------ DeviceConnection (hub -> device)

  get acceptsMethods(): boolean {
    return this.subscribed(SUB_METHODS);
  }

  deliverDesiredPatch(patch: JsonObject, version: number): void {
    deliverDesiredPatch(this, patch, version);
  }

  sendMethodRequest(methodName: string, rid: string, payload: Buffer): void {
    sendMethodRequest(this, methodName, rid, payload);
  }

  close(reason: string): void {
    this.link.close(reason);
  }

  // ------------------------------------------------------------------ RealmSession (device -> hub)

  /** After CONNACK: only now may the hub send to this connection (methods, desired patches); it takes over. */
  opened(): void {
    this.realm.hub.connected(this);
  }

  subscribe(subscriptions: readonly ISubscription[]): number[] {
    return subscriptions.map((s) => {
      const route = subscribeRouteFor(s.topic, this.deviceId);
      if (!route) return 128;
      const was = this.subscribed(route.flag);
      this.state.flags |= route.flag;
      if (!was || route.flag === SUB_METHODS) route.changed?.(this, true);
      return Math.min(s.qos, 1);
    });
  }

  unsubscribe(topics: readonly string[]): void {
    for (const t of topics) {
      const route = subscribeRouteFor(t, this.deviceId);
      if (!route || !this.subscribed(route.flag)) continue;
      this.state.flags &= ~route.flag;
      route.changed?.(this, false);
    }
  }

  publish(msg: InboundPublish): PublishOutcome | Promise<PublishOutcome> {
    const route = publishRouteFor(msg.topic);
    if (!route) return { close: 'publish on an unknown topic' };
    return route.handle(this, msg);
  }

  puback(_messageId: number): void {
    // Nothing is sent with QoS 1 yet (C2D delivery will complete messages here).
  }

  closed(_reason: string): void {
    this.realm.hub.disconnected(this);
  }
}

import type { JsonObject } from '../core/json.ts';

/**
 * A live device connection as the hub role sees it. Transports (MQTT today) implement it; the hub use cases only
 * ever talk to this interface, never to sockets.
 */
export interface DeviceConnection {
  readonly deviceId: string;
  readonly connectedAt: number;
  /** True when the device subscribed to direct method requests. */
  readonly acceptsMethods: boolean;
  /** Delivers a desired-properties patch (the payload already carries `$version`). */
  deliverDesiredPatch(patch: JsonObject, version: number): void;
  /** Sends a direct method request. */
  sendMethodRequest(methodName: string, rid: string, payload: Buffer): void;
  /** Closes the connection from the server side. */
  close(reason: string): void;
}

/** Live connections of one hub, keyed by device id. A new connection for the same device takes over. */
export class SessionRegistry {
  private readonly live = new Map<string, DeviceConnection>();
  private readonly waiters = new Map<string, Set<() => void>>();

  /** Registers `conn`; returns the connection it replaced, which the caller closes. */
  attach(conn: DeviceConnection): DeviceConnection | undefined {
    const prev = this.live.get(conn.deviceId);
    this.live.set(conn.deviceId, conn);
    this.notify(conn.deviceId);
    return prev === conn ? undefined : prev;
  }

  /** Removes `conn` if it is still the live one. Returns true when it was. */
  detach(conn: DeviceConnection): boolean {
    if (this.live.get(conn.deviceId) !== conn) return false;
    this.live.delete(conn.deviceId);
    return true;
  }

  get(deviceId: string): DeviceConnection | undefined {
    return this.live.get(deviceId);
  }

  /** Called by transports when a connection starts accepting methods, so pending invocations can go on. */
  notify(deviceId: string): void {
    const w = this.waiters.get(deviceId);
    if (!w) return;
    this.waiters.delete(deviceId);
    for (const fn of w) fn();
  }

  /** Resolves when `deviceId` connects and accepts methods, or after `timeoutMs` (false). */
  waitForMethods(deviceId: string, timeoutMs: number): Promise<boolean> {
    if (this.live.get(deviceId)?.acceptsMethods) return Promise.resolve(true);
    if (timeoutMs <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      let set = this.waiters.get(deviceId);
      if (!set) {
        set = new Set();
        this.waiters.set(deviceId, set);
      }
      const s = set;
      const check = () => {
        if (this.live.get(deviceId)?.acceptsMethods) {
          clearTimeout(timer);
          resolve(true);
        } else {
          s.add(check);
          if (!this.waiters.has(deviceId)) this.waiters.set(deviceId, s);
        }
      };
      const timer = setTimeout(() => {
        s.delete(check);
        resolve(false);
      }, timeoutMs);
      s.add(check);
    });
  }

  get size(): number {
    return this.live.size;
  }

  all(): IterableIterator<DeviceConnection> {
    return this.live.values();
  }
}

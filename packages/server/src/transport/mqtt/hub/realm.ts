import { systemClock, systemIds, type Clock, type IdSource } from '../../../core/clock.ts';
import type { HubService } from '../../../hub/hub-service.ts';
import { CONNACK, connackCodeFor } from '../errors.ts';
import type { ConnectOutcome, ConnectRequest, MqttLink, MqttRealm } from '../realm.ts';
import { PersistentSessions } from './persistent-sessions.ts';
import type { HubRealmContext } from './routes.ts';
import { HubDeviceSession } from './session.ts';

export interface HubRealmOptions {
  clock?: Clock;
  ids?: IdSource;
  /** Default 256 KiB (IoT Hub). */
  maxTelemetryBytes?: number;
  /** Default 32 KiB (IoT Hub twin section limit). */
  maxTwinPatchBytes?: number;
  /** Persistent sessions kept in memory (default 1,000,000; the oldest go first). */
  maxPersistentSessions?: number;
}

const defaultIds: IdSource = systemIds();

/**
 * The hub's device endpoint as an MQTT realm. It claims CONNECTs whose username is
 * `{hostName}/{deviceId}/?api-version=...[&...]` with `hostName` one of the hub's host names (with or without a
 * `:port`), checks clientId == deviceId, authenticates with `hub.authenticateDevice` (SAS password or the TLS client
 * certificate) and registers the connection with the hub (a newer connection takes over).
 */
export function createHubRealm(hub: HubService, opts: HubRealmOptions = {}): MqttRealm {
  const ctx: HubRealmContext = {
    hub,
    clock: opts.clock ?? systemClock,
    ids: opts.ids ?? defaultIds,
    maxTelemetryBytes: opts.maxTelemetryBytes ?? 256 * 1024,
    maxTwinPatchBytes: opts.maxTwinPatchBytes ?? 32 * 1024,
  };
  const persistent = new PersistentSessions(opts.maxPersistentSessions ?? 1_000_000);

  return {
    name: `hub:${hub.hubId}`,

    claims(req: ConnectRequest): boolean {
      const u = req.username;
      if (u === undefined) return false;
      const slash = u.indexOf('/');
      return slash > 0 && isHubHost(u.slice(0, slash), hub.hostNames);
    },

    async connect(req: ConnectRequest, link: MqttLink): Promise<ConnectOutcome> {
      const parsed = parseDeviceUsername(req.username ?? '');
      if (!parsed) return { ok: false, returnCode: CONNACK.badUsernameOrPassword, reason: 'malformed hub username' };
      const { deviceId } = parsed;
      if (req.clientId !== deviceId) return { ok: false, returnCode: CONNACK.identifierRejected, reason: 'clientId differs from the device id' };
      const password = req.password !== undefined && req.password.length > 0 ? req.password.toString('utf8') : undefined;
      const certificate = password === undefined ? req.peerCertificate() : undefined;
      try {
        await hub.authenticateDevice(deviceId, password !== undefined ? { password } : certificate !== undefined ? { certificate } : {});
      } catch (e) {
        const returnCode = connackCodeFor(e);
        if (returnCode === CONNACK.serverUnavailable) link.log.error({ err: e, conn: link.id }, 'device authentication failed unexpectedly');
        return { ok: false, returnCode, reason: password !== undefined ? 'SAS refused' : certificate !== undefined ? 'certificate refused' : 'no credentials' };
      }
      if (link.closed) return { ok: false, returnCode: CONNACK.serverUnavailable, reason: 'connection closed during authentication' };
      const { state, present } = persistent.open(req.clientId, req.clean);
      // The session registers with the hub (taking over an older connection) once CONNACK is out: see opened().
      const session = new HubDeviceSession(deviceId, link, ctx, state);
      return { ok: true, session, sessionPresent: present };
    },
  };
}

/** `{host}/{deviceId}/?{query}` where the query has `api-version`. Module identities (`{d}/{m}`) are not supported. */
export function parseDeviceUsername(username: string): { host: string; deviceId: string; query: string } | undefined {
  const slash = username.indexOf('/');
  if (slash <= 0) return undefined;
  const end = username.indexOf('/?', slash + 1);
  if (end < 0) return undefined;
  const deviceId = username.slice(slash + 1, end);
  if (deviceId.length === 0 || deviceId.includes('/')) return undefined;
  const query = username.slice(end + 2);
  if (!query.split('&').some((p) => p.startsWith('api-version='))) return undefined;
  return { host: username.slice(0, slash), deviceId, query };
}

/** True when `host` (maybe `host:port`) names this hub. */
export function isHubHost(host: string, hostNames: readonly string[]): boolean {
  const h = host.toLowerCase();
  const base = /^(.+):\d{1,5}$/.exec(h)?.[1];
  const bare = base !== undefined && (!base.includes(':') || base.startsWith('[')) ? base : undefined;
  for (const name of hostNames) {
    const n = name.toLowerCase();
    if (n === h || n === bare) return true;
  }
  return false;
}

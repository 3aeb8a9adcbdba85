import { HomingError } from '../../core/errors.ts';
import type { JsonValue } from '../../core/json.ts';
import { matchesQuery, parseTwinQuery } from '../../core/twin-query.ts';
import type { HubService } from '../../hub/hub-service.ts';
import { twinJson } from '../../transport/http/hub/wire.ts';

/**
 * What a fleet job needs from the IoT hubs: invoke the reprovision method on a device, and find devices by a twin
 * query. `InProcessFleetHubs` serves the hubs of this process (the HubServices `startHoming` holds); a device on a
 * hub this process does not run fails with a clear reason.
 */
export interface FleetHubs {
  /** Invokes a direct method; rejects with a HomingError (DeviceNotOnline, DeviceNotFound, GatewayTimeout...). */
  invoke(hub: string, deviceId: string, method: string, payload: JsonValue, timeouts: { responseSeconds: number; connectSeconds: number }): Promise<{ status: number; payload: JsonValue }>;
  /** Devices whose twin matches a hub query (`SELECT * FROM devices WHERE ...`), on every hub served. */
  query(query: string): Promise<{ hub: string; deviceId: string }[]>;
}

export class InProcessFleetHubs implements FleetHubs {
  private readonly hubs: Map<string, HubService>;

  constructor(hubs: Iterable<HubService>) {
    this.hubs = new Map([...hubs].map((h) => [h.hubId.toLowerCase(), h]));
  }

  async invoke(hub: string, deviceId: string, method: string, payload: JsonValue, timeouts: { responseSeconds: number; connectSeconds: number }): Promise<{ status: number; payload: JsonValue }> {
    const service = this.hubs.get(hub.toLowerCase());
    if (!service) throw new HomingError('ServiceUnavailable', `IoT hub ${hub} is not served by this Homing process; its devices cannot be reached.`);
    return service.invokeMethod(deviceId, { methodName: method, payload, responseTimeoutInSeconds: timeouts.responseSeconds, connectTimeoutInSeconds: timeouts.connectSeconds });
  }

  async query(query: string): Promise<{ hub: string; deviceId: string }[]> {
    const q = parseTwinQuery(query);
    if (q.select.kind !== 'all') throw new HomingError('ArgumentInvalid', 'A fleet selection query selects devices: SELECT * FROM devices WHERE ...');
    const out: { hub: string; deviceId: string }[] = [];
    for (const service of this.hubs.values()) {
      let continuation: string | undefined;
      do {
        const page = await service.queryTwins((row) => matchesQuery(q, twinJson(row.device, row.twin)), 1000, continuation);
        for (const row of page.rows) out.push({ hub: service.hubId, deviceId: row.device.deviceId });
        continuation = page.continuation;
      } while (continuation !== undefined);
    }
    return out;
  }
}

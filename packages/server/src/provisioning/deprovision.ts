import { HomingError } from '../core/errors.ts';
import { isPlainObject, type JsonValue } from '../core/json.ts';
import { validateRegistrationId } from '../core/registration-id.ts';
import type { Logger } from '../observability/logger.ts';
import type { ProvisioningStore } from '../store/provisioning-ports.ts';
import type { HubClientFactory, HubFailure, HubResult } from './hub-client.ts';
import type { ProvisioningInstance } from './model.ts';

/**
 * Complete deprovisioning of one device (dps-behavior.md §5: "an admin action that deprovisions a device
 * completely"): the device is deleted from (or disabled on) the hub its registration record names, which closes its
 * live connection there, then the registration record is deleted, so the device's next registration is an initial
 * assignment. The enrollment is left alone: disabling or deleting it is a separate decision (the service API).
 *
 * Order and failures: the hub first, the record second. When the hub cannot be written the record is kept and the
 * call fails, so it can be retried (the hub write is idempotent: a device already gone is `absent`). The record is
 * deleted with the etag that was read; a concurrent change re-reads and repeats. A registration being assigned or
 * reprovisioned (record `assigning`, or an operation in flight) is refused with 409: deleting under it would let the
 * assignment recreate the device.
 */
export type DeprovisionHubAction = 'delete' | 'disable';

export interface DeprovisionSummary {
  registrationId: string;
  /** The hub the record named. */
  hub?: string;
  deviceId?: string;
  /**
   * `deleted` / `disabled`: done on the hub; `absent`: the hub did not have the device; `none`: the record named no
   * hub or device, or a hub that is no longer linked (nothing to do on a hub).
   */
  hubAction: 'deleted' | 'disabled' | 'absent' | 'none';
  recordDeleted: true;
}

export interface DeprovisionDeps {
  store: ProvisioningStore;
  hubs: HubClientFactory;
  logger?: Logger;
}

const MAX_ATTEMPTS = 4;

export class DeprovisionService {
  private readonly deps: DeprovisionDeps;

  constructor(deps: DeprovisionDeps) {
    this.deps = deps;
  }

  async deprovision(instance: ProvisioningInstance, registrationId: string, action: DeprovisionHubAction = 'delete'): Promise<DeprovisionSummary> {
    validateRegistrationId(registrationId);
    const { store } = this.deps;
    let hubDone: { hub: string; deviceId: string; result: DeprovisionSummary['hubAction'] } | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const record = await store.getRegistration(instance.name, registrationId);
      if (record === undefined) {
        // Someone else deleted it between our hub write and our delete: it is gone all the same.
        if (hubDone !== undefined) return summary(registrationId, hubDone.hub, hubDone.deviceId, hubDone.result);
        throw new HomingError('RegistrationNotFound', `No registration record for '${registrationId}'.`);
      }
      const inFlight = record.status === 'assigning' ? undefined : await store.findInFlightOperation(instance.name, registrationId);
      if (record.status === 'assigning' || inFlight !== undefined) {
        throw new HomingError('RegistrationInProgress', `Registration '${record.registrationId}' is being reprovisioned; retry.`);
      }
      const hubName = record.assignedHub;
      const deviceId = record.deviceId;
      let hubAction: DeprovisionSummary['hubAction'] = 'none';
      const linked = hubName === undefined ? undefined : instance.linkedHubs.find((h) => h.name.toLowerCase() === hubName.toLowerCase());
      if (linked !== undefined && deviceId !== undefined) {
        if (hubDone !== undefined && hubDone.hub === hubName && hubDone.deviceId === deviceId) {
          hubAction = hubDone.result; // done on an earlier attempt; the record changed only in other fields
        } else {
          const client = this.deps.hubs.forHub(linked);
          const r: HubResult<boolean> = action === 'delete' ? await client.deleteDevice(deviceId) : await client.setDeviceStatus(deviceId, 'disabled');
          if (!r.ok) throw hubError(r.failure, action, deviceId);
          hubAction = r.value ? (action === 'delete' ? 'deleted' : 'disabled') : 'absent';
          hubDone = { hub: linked.name, deviceId, result: hubAction };
        }
      } else if (hubName !== undefined && linked === undefined) {
        this.deps.logger?.info({ registrationId: record.registrationId, hub: hubName }, 'deprovision: the assigned hub is no longer linked; only the registration record is deleted');
      }
      const del = await store.deleteRegistration(instance.name, registrationId, record.etag);
      if (del === 'ok' || del === 'not-found') {
        this.deps.logger?.info({ registrationId: record.registrationId, hub: hubName, deviceId, hubAction }, 'device deprovisioned');
        return summary(record.registrationId, hubName, deviceId, hubAction);
      }
      // precondition-failed: the record changed concurrently (a registration finished?): read it again.
    }
    throw new HomingError('ServiceUnavailable', `The registration record '${registrationId}' kept changing concurrently; retry.`);
  }
}

function summary(registrationId: string, hub: string | undefined, deviceId: string | undefined, hubAction: DeprovisionSummary['hubAction']): DeprovisionSummary {
  return {
    registrationId,
    ...(hub === undefined ? {} : { hub }),
    ...(deviceId === undefined ? {} : { deviceId }),
    hubAction,
    recordDeleted: true,
  };
}

/** The error a caller sees when the hub write failed: 503 when it may pass by itself, 502 otherwise. */
function hubError(f: HubFailure, action: DeprovisionHubAction, deviceId: string): HomingError {
  const what = `Could not ${action} device '${deviceId}' on its hub: ${f.message} The registration record is kept; retry.`;
  if (f.kind === 'unavailable' || f.kind === 'timeout' || f.kind === 'conflict') return new HomingError('ServiceUnavailable', what);
  return new HomingError('LinkedHubFailed', what);
}

/** The optional body of the deprovision route: `{"hubAction": "delete" | "disable"}` (default delete). */
export function parseDeprovisionBody(body: JsonValue | undefined): DeprovisionHubAction {
  if (body === undefined || body === null) return 'delete';
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The body must be a JSON object.');
  for (const k of Object.keys(body)) {
    if (k !== 'hubAction') throw new HomingError('ArgumentInvalid', `Unknown field '${k.slice(0, 64)}'; the body takes only hubAction.`);
  }
  const a = body.hubAction ?? 'delete';
  if (a !== 'delete' && a !== 'disable') throw new HomingError('ArgumentInvalid', "hubAction must be 'delete' or 'disable'.");
  return a;
}

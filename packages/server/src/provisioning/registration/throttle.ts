import type { Clock } from '../../core/clock.ts';
import type { ProvisioningStore } from '../../store/provisioning-ports.ts';
import type { InstanceQuotaSettings, ProvisioningInstance } from '../model.ts';
import { QuotaService } from '../quotas/quota-service.ts';

/**
 * The quota checks of the device runtime (dps-behavior.md §2.2 step 2, §7; docs/api/quotas.md): what
 * RegistrationService calls at each use case. The buckets and the rules live in quotas/quota-service.ts; this is the
 * registration service's view of them.
 */

/**
 * Service-wide quota settings for instances without their own (the same fields as an instance's `quotas`):
 * `registrationsPerMinute`, `operationsPerMinute`, `pollsPer10Seconds`, `maxRegistrations`, `preset`.
 */
export type RegistrationLimits = InstanceQuotaSettings;

export interface RegistrationThrottleDeps {
  clock: Clock;
  store: Pick<ProvisioningStore, 'countRegistrations'>;
  /** The quota service shared with the service API (and, on PostgreSQL, with other nodes). */
  quotas?: QuotaService;
  /** Used only without `quotas`: the defaults of an in-memory quota service of this registration service. */
  limits?: RegistrationLimits;
}

export class RegistrationThrottle {
  private readonly quotas: QuotaService;
  private readonly store: Pick<ProvisioningStore, 'countRegistrations'>;

  constructor(deps: RegistrationThrottleDeps) {
    this.store = deps.store;
    this.quotas = deps.quotas ?? new QuotaService({ clock: deps.clock, ...(deps.limits ? { defaults: deps.limits } : {}) });
  }

  /** A register PUT (before authentication: an instance's rate is spent by whoever calls it, as in DPS). */
  registration(instance: ProvisioningInstance): Promise<void> {
    return this.quotas.admitRegistration(instance);
  }

  /** A registration status lookup: counted as a registration (dps-behavior.md §7.2, [P]). */
  lookup(instance: ProvisioningInstance): Promise<void> {
    return this.quotas.admitRegistration(instance);
  }

  /** An authenticated operation-status request. Returns the least Retry-After (s) for a still-assigning answer. */
  poll(instance: ProvisioningInstance, registrationKey: string): Promise<number> {
    return this.quotas.admitPoll(instance, registrationKey);
  }

  /** A registration about to create a new registration record (the device has none). */
  newRecord(instance: ProvisioningInstance): Promise<void> {
    return this.quotas.admitNewRecord(instance, () => this.store.countRegistrations(instance.name));
  }
}

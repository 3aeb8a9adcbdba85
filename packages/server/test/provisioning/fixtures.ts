import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { HomingError, type ErrorName, ERROR_CATALOGUE } from '../../src/core/errors.ts';
import { openStore, type OpenedStore } from '../../src/store/open.ts';
import { EnrollmentService, RegistrationRecordService, type EnrollmentLimits } from '../../src/provisioning/enrollments.ts';
import { InstanceService, StoreInstanceResolver } from '../../src/provisioning/instances.ts';
import type { ProvisioningInstance } from '../../src/provisioning/model.ts';
import { ManualClock, realIds } from '../helpers/ids.ts';
import { issueCertificate } from '../../src/transport/tls/pki.ts';

/** Asserts that `p` rejects with the HomingError `name` (and so its status and six-digit code). */
export async function rejectsWith(p: Promise<unknown>, name: ErrorName, message?: RegExp): Promise<HomingError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof HomingError, `expected HomingError ${name}, got ${String(caught)}`);
  assert.equal(caught.errorName, name, `expected ${name}, got ${caught.errorName}: ${caught.message}`);
  assert.equal(caught.code, ERROR_CATALOGUE[name].code);
  if (message) assert.match(caught.message, message);
  return caught;
}

export function throwsWith(fn: () => unknown, name: ErrorName, message?: RegExp): HomingError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof HomingError, `expected HomingError ${name}, got ${String(caught)}`);
  assert.equal(caught.errorName, name, `expected ${name}, got ${caught.errorName}: ${caught.message}`);
  if (message) assert.match(caught.message, message);
  return caught;
}

export const HUB1 = 'hub1.homing.test';
export const HUB2 = 'Hub2.Homing.Test';

export function key(bytes = 32): string {
  return randomBytes(bytes).toString('base64');
}

export function hubConnectionString(host: string): string {
  return `HostName=${host};SharedAccessKeyName=iothubowner;SharedAccessKey=${key()}`;
}

export interface Fixture {
  store: OpenedStore;
  clock: ManualClock;
  instances: InstanceService;
  resolver: StoreInstanceResolver;
  enrollments: EnrollmentService;
  registrations: RegistrationRecordService;
  instance: ProvisioningInstance;
  close(): Promise<void>;
}

/** An in-memory SQLite store with one instance ("homing-test") linking two hubs. */
export async function createFixture(opts: { limits?: Partial<EnrollmentLimits>; hostNames?: string[] } = {}): Promise<Fixture> {
  const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  const clock = new ManualClock();
  const resolver = new StoreInstanceResolver({ store: store.provisioning, clock, ttlMs: 60_000 });
  const instances = new InstanceService({ store: store.provisioning, ids: realIds, onChange: () => resolver.invalidate() });
  const { instance } = await instances.ensureInstance({
    name: 'homing-test',
    serviceHostNames: opts.hostNames ?? ['dps.homing.test'],
    linkedHubs: [
      { name: HUB1, connectionString: hubConnectionString(HUB1), location: 'west' },
      { name: HUB2, connectionString: hubConnectionString(HUB2), location: 'east', allocationWeight: 5 },
    ],
  });
  const enrollments = new EnrollmentService({ store: store.provisioning, clock, ids: realIds, ...(opts.limits ? { limits: opts.limits } : {}) });
  const registrations = new RegistrationRecordService({ store: store.provisioning });
  return { store, clock, instances, resolver, enrollments, registrations, instance, close: () => store.close() };
}

/** A PEM certificate and its parsed details, for X.509 attestation tests. */
export async function testCertificate(commonName: string): Promise<{ pem: string; der: Buffer }> {
  const c = await issueCertificate({ commonName });
  const der = Buffer.from(c.cert.rawData);
  return { pem: c.certPem, der };
}

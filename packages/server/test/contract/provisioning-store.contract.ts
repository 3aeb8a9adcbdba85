import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ProvisioningStore } from '../../src/store/provisioning-ports.ts';
import type {
  EnrollmentGroup,
  HubMove,
  IndividualEnrollment,
  ProvisioningInstance,
  RegistrationOperation,
  RegistrationRecord,
} from '../../src/provisioning/model.ts';

/** What a contract run needs from an adapter: a store on an empty, migrated database, and a way to dispose of it. */
export interface ProvisioningStoreHarness {
  store: ProvisioningStore;
  close(): Promise<void>;
}

const T0 = '2026-01-01T00:00:00.0000000Z';
const T1 = '2026-01-01T00:05:00.0000000Z';
const T2 = '2026-01-01T00:10:00.0000000Z';
const KEY_A = Buffer.alloc(32, 1).toString('base64');
const KEY_B = Buffer.alloc(32, 2).toString('base64');

export function sampleInstance(name: string, over: Partial<ProvisioningInstance> = {}): ProvisioningInstance {
  return {
    name,
    idScope: `0ne${createHash('sha256').update(name).digest('hex').slice(0, 8).toUpperCase()}`,
    serviceHostNames: [`${name}.dps.test`],
    allocationPolicy: 'hashed',
    policies: [{ keyName: 'provisioningserviceowner', primaryKey: KEY_A, secondaryKey: KEY_B, rights: ['ServiceConfig', 'EnrollmentRead', 'EnrollmentWrite'] }],
    linkedHubs: [{ name: 'hub1.test', connectionString: `HostName=hub1.test;SharedAccessKeyName=iothubowner;SharedAccessKey=${KEY_A}`, location: 'local', allocationWeight: 1, applyAllocationPolicy: true }],
    etag: 'Imluc3RhbmNlLTEi',
    ...over,
  };
}

export function sampleEnrollment(registrationId: string, over: Partial<IndividualEnrollment> = {}): IndividualEnrollment {
  return {
    registrationId,
    deviceId: `${registrationId}-device`,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: KEY_A, secondaryKey: KEY_B } },
    capabilities: { iotEdge: false },
    initialTwin: { tags: { site: 'north' }, properties: { desired: { interval: 30, nested: { a: [1, 2, { b: null }] } } } },
    provisioningStatus: 'enabled',
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false },
    allocationPolicy: 'static',
    iotHubs: ['hub1.test'],
    etag: 'ImV0YWctMSI=',
    createdDateTimeUtc: T0,
    lastUpdatedDateTimeUtc: T0,
    extra: { futureField: { kept: true }, 'ünïcode': 'ok' },
    ...over,
  };
}

export function sampleGroup(enrollmentGroupId: string, over: Partial<EnrollmentGroup> = {}): EnrollmentGroup {
  return {
    enrollmentGroupId,
    attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: KEY_A, secondaryKey: KEY_B } },
    capabilities: { iotEdge: true },
    provisioningStatus: 'enabled',
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    etag: 'Imdyb3VwLTEi',
    createdDateTimeUtc: T0,
    lastUpdatedDateTimeUtc: T0,
    ...over,
  };
}

export function sampleRecord(registrationId: string, via: { group?: string } = {}, over: Partial<RegistrationRecord> = {}): RegistrationRecord {
  return {
    registrationId,
    createdDateTimeUtc: T0,
    lastUpdatedDateTimeUtc: T0,
    assignedHub: 'hub1.test',
    deviceId: registrationId,
    status: 'assigned',
    substatus: 'initialAssignment',
    etag: 'InJlY29yZC0xIg==',
    enrollment: via.group !== undefined ? { kind: 'group', enrollmentGroupId: via.group } : { kind: 'individual', registrationId },
    attestationType: 'symmetricKey',
    payload: { hello: 'world' },
    ...over,
  };
}

export function sampleOperation(operationId: string, registrationId: string, over: Partial<RegistrationOperation> = {}): RegistrationOperation {
  return {
    operationId,
    registrationId,
    status: 'assigning',
    version: 1,
    createdDateTimeUtc: T0,
    lastUpdatedDateTimeUtc: T0,
    request: { payload: { model: 'x' } },
    ...over,
  };
}

/** Binary order of the UTF-8 bytes: SQLite BINARY and PostgreSQL COLLATE "C". */
function binaryOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function provisioningStoreContract(name: string, open: () => Promise<ProvisioningStoreHarness>): void {
  describe(`ProvisioningStore contract: ${name}`, () => {
    let harness: ProvisioningStoreHarness | undefined;
    let seq = 0;
    const store = (): ProvisioningStore => {
      if (!harness) throw new Error('store not opened');
      return harness.store;
    };
    /** Every test works in an instance of its own, so tests share one database without seeing each other. */
    const newInstance = (): string => `inst${++seq}`;

    before(async () => {
      harness = await open();
    });
    after(async () => {
      await harness?.close();
    });

    describe('instances', () => {
      it('creates an instance and reads it back by name, by id scope and in the list', async () => {
        const inst = sampleInstance(newInstance());
        assert.equal(await store().createInstance(inst), 'ok');
        assert.deepEqual(await store().getInstance(inst.name), inst);
        assert.deepEqual(await store().getInstanceByIdScope(inst.idScope), inst);
        assert.ok((await store().listInstances()).some((i) => i.name === inst.name && i.idScope === inst.idScope));
        assert.equal(await store().getInstance('no-such-instance'), undefined);
        assert.equal(await store().getInstanceByIdScope('0neFFFFFFFF'), undefined);
      });

      it('refuses a second instance with the same name or the same id scope', async () => {
        const inst = sampleInstance(newInstance());
        assert.equal(await store().createInstance(inst), 'ok');
        assert.equal(await store().createInstance({ ...inst, idScope: '0ne00000001' }), 'exists');
        assert.equal(await store().createInstance({ ...sampleInstance(newInstance()), idScope: inst.idScope }), 'exists');
        assert.deepEqual(await store().getInstance(inst.name), inst);
      });

      it('replaces an instance only when the etag matches', async () => {
        const inst = sampleInstance(newInstance());
        await store().createInstance(inst);
        const next = { ...inst, allocationPolicy: 'geoLatency' as const, linkedHubs: [], etag: 'Im5ldyI=' };
        assert.equal(await store().replaceInstance(next, 'stale'), 'precondition-failed');
        assert.deepEqual(await store().getInstance(inst.name), inst);
        assert.equal(await store().replaceInstance(next, inst.etag), 'ok');
        assert.deepEqual(await store().getInstance(inst.name), next);
        assert.equal(await store().replaceInstance({ ...next, etag: 'x' }, '*'), 'ok');
        assert.equal(await store().replaceInstance(sampleInstance('missing-one'), '*'), 'not-found');
      });
    });

    describe('individual enrollments', () => {
      it('round-trips an enrollment unchanged, looked up in any case', async () => {
        const i = newInstance();
        const e = sampleEnrollment('Dev-A');
        assert.equal(await store().createIndividualEnrollment(i, e), 'ok');
        assert.deepEqual(await store().getIndividualEnrollment(i, 'Dev-A'), e);
        assert.deepEqual(await store().getIndividualEnrollment(i, 'dev-a'), e);
        assert.deepEqual(await store().getIndividualEnrollment(i, 'DEV-A'), e);
        assert.equal(await store().getIndividualEnrollment(newInstance(), 'dev-a'), undefined, 'instances are isolated');
      });

      it('refuses a second enrollment whose id differs only in case', async () => {
        const i = newInstance();
        assert.equal(await store().createIndividualEnrollment(i, sampleEnrollment('Dev-A')), 'ok');
        assert.equal(await store().createIndividualEnrollment(i, sampleEnrollment('dev-a', { deviceId: 'other' })), 'exists');
        assert.equal((await store().getIndividualEnrollment(i, 'dev-a'))?.deviceId, 'Dev-A-device');
        assert.equal(await store().countIndividualEnrollments(i), 1);
      });

      it('replaces with compare-and-set on the etag', async () => {
        const i = newInstance();
        const e = sampleEnrollment('cas');
        await store().createIndividualEnrollment(i, e);
        const next = { ...e, provisioningStatus: 'disabled' as const, etag: 'ImV0YWctMiI=', lastUpdatedDateTimeUtc: T1 };
        assert.equal(await store().replaceIndividualEnrollment(i, next, 'wrong'), 'precondition-failed');
        assert.deepEqual(await store().getIndividualEnrollment(i, 'cas'), e);
        assert.equal(await store().replaceIndividualEnrollment(i, next, e.etag), 'ok');
        assert.deepEqual(await store().getIndividualEnrollment(i, 'CAS'), next);
        assert.equal(await store().replaceIndividualEnrollment(i, { ...next, etag: 'ImV0YWctMyI=' }, '*'), 'ok');
        assert.equal((await store().getIndividualEnrollment(i, 'cas'))?.etag, 'ImV0YWctMyI=');
        assert.equal(await store().replaceIndividualEnrollment(i, sampleEnrollment('nope'), '*'), 'not-found');
      });

      it('deletes with an optional etag, together with its own registration record only', async () => {
        const i = newInstance();
        await store().createIndividualEnrollment(i, sampleEnrollment('del-1'));
        await store().createIndividualEnrollment(i, sampleEnrollment('del-2'));
        await store().putRegistration(i, sampleRecord('del-1'), { kind: 'absent' });
        await store().putRegistration(i, sampleRecord('del-2', { group: 'g' }), { kind: 'absent' });

        assert.equal(await store().deleteIndividualEnrollment(i, 'del-1', 'stale'), 'precondition-failed');
        assert.ok(await store().getIndividualEnrollment(i, 'del-1'));
        assert.ok(await store().getRegistration(i, 'del-1'), 'a refused delete keeps the record');

        assert.equal(await store().deleteIndividualEnrollment(i, 'DEL-1', 'ImV0YWctMSI='), 'ok');
        assert.equal(await store().getIndividualEnrollment(i, 'del-1'), undefined);
        assert.equal(await store().getRegistration(i, 'del-1'), undefined, 'its record goes with it');

        assert.equal(await store().deleteIndividualEnrollment(i, 'del-2'), 'ok');
        assert.ok(await store().getRegistration(i, 'del-2'), 'a record made through a group stays');
        assert.equal(await store().deleteIndividualEnrollment(i, 'del-2'), 'not-found');
        assert.equal(await store().deleteIndividualEnrollment(i, 'del-2', 'x'), 'not-found');
      });

      it('pages in binary order of the lower-cased id with exact next markers', async () => {
        const i = newInstance();
        const ids = Array.from({ length: 25 }, (_, n) => (n % 3 === 0 ? `Dev-${n}` : n % 3 === 1 ? `dev.${n}` : `DEV_${n}:x`));
        for (const id of ids) assert.equal(await store().createIndividualEnrollment(i, sampleEnrollment(id)), 'ok');
        await store().createIndividualEnrollment(newInstance(), sampleEnrollment('other-instance'));
        const seen: string[] = [];
        let after: string | undefined;
        let pages = 0;
        do {
          const page = await store().listIndividualEnrollments(i, { limit: 10, ...(after === undefined ? {} : { after }) });
          pages++;
          seen.push(...page.items.map((e) => e.registrationId));
          assert.equal(page.items.length, pages < 3 ? 10 : 5);
          after = page.next;
        } while (after !== undefined);
        assert.equal(pages, 3);
        assert.deepEqual(seen, [...ids].sort((a, b) => binaryOrder(a.toLowerCase(), b.toLowerCase())));
        assert.equal(await store().countIndividualEnrollments(i), 25);

        const exact = await store().listIndividualEnrollments(i, { limit: 25 });
        assert.equal(exact.items.length, 25);
        assert.equal(exact.next, undefined, 'no next marker when nothing follows');
        assert.deepEqual(await store().listIndividualEnrollments(newInstance(), { limit: 10 }), { items: [], next: undefined });
      });
    });

    describe('enrollment groups', () => {
      it('round-trips groups, counts them by attestation type and lists by type', async () => {
        const i = newInstance();
        const sym = sampleGroup('Group-Sym');
        const x509 = sampleGroup('group-x509', {
          attestation: { type: 'x509', x509: { caReferences: { primary: 'root-ca' } } },
          extra: { note: 'x' },
        });
        assert.equal(await store().createEnrollmentGroup(i, sym), 'ok');
        assert.equal(await store().createEnrollmentGroup(i, x509), 'ok');
        assert.equal(await store().createEnrollmentGroup(i, sampleGroup('group-sym')), 'exists');
        assert.deepEqual(await store().getEnrollmentGroup(i, 'GROUP-SYM'), sym);
        assert.deepEqual(await store().getEnrollmentGroup(i, 'group-x509'), x509);
        assert.deepEqual(await store().countEnrollmentGroups(i), { symmetricKey: 1, x509: 1 });
        assert.deepEqual(await store().countEnrollmentGroups(newInstance()), { symmetricKey: 0, x509: 0 });
        const onlyX509 = await store().listEnrollmentGroups(i, { limit: 10, attestationType: 'x509' });
        assert.deepEqual(onlyX509.items.map((g) => g.enrollmentGroupId), ['group-x509']);
        const all = await store().listEnrollmentGroups(i, { limit: 1 });
        assert.equal(all.items.length, 1);
        assert.equal(all.items[0]?.enrollmentGroupId, 'Group-Sym');
        const rest = await store().listEnrollmentGroups(i, { limit: 1, after: all.next ?? '' });
        assert.deepEqual(rest.items.map((g) => g.enrollmentGroupId), ['group-x509']);
        assert.equal(rest.next, undefined);
      });

      it('replaces and deletes with etags; deleting a group keeps its registration records', async () => {
        const i = newInstance();
        const g = sampleGroup('grp');
        await store().createEnrollmentGroup(i, g);
        await store().putRegistration(i, sampleRecord('member-1', { group: 'GRP' }), { kind: 'absent' });
        const next = { ...g, provisioningStatus: 'disabled' as const, etag: 'Imdyb3VwLTIi' };
        assert.equal(await store().replaceEnrollmentGroup(i, next, 'stale'), 'precondition-failed');
        assert.equal(await store().replaceEnrollmentGroup(i, next, g.etag), 'ok');
        assert.deepEqual(await store().getEnrollmentGroup(i, 'grp'), next);
        assert.equal(await store().replaceEnrollmentGroup(i, sampleGroup('none'), '*'), 'not-found');
        assert.equal(await store().deleteEnrollmentGroup(i, 'grp', g.etag), 'precondition-failed');
        assert.equal(await store().deleteEnrollmentGroup(i, 'GRP', next.etag), 'ok');
        assert.equal(await store().getEnrollmentGroup(i, 'grp'), undefined);
        assert.equal(await store().deleteEnrollmentGroup(i, 'grp'), 'not-found');
        assert.ok(await store().getRegistration(i, 'member-1'), 'orphaned records stay');
        assert.equal((await store().listGroupRegistrations(i, 'grp', { limit: 10 })).items.length, 1);
      });
    });

    describe('registration records', () => {
      it('writes records under absent / etag / any expectations', async () => {
        const i = newInstance();
        const r = sampleRecord('Rec-1');
        assert.equal(await store().putRegistration(i, r, { kind: 'absent' }), 'ok');
        assert.equal(await store().putRegistration(i, { ...r, registrationId: 'rec-1' }, { kind: 'absent' }), 'precondition-failed');
        assert.deepEqual(await store().getRegistration(i, 'REC-1'), r);
        const next = { ...r, status: 'failed' as const, errorCode: 400208, errorMessage: 'no hub', etag: 'InJlY29yZC0yIg==', lastUpdatedDateTimeUtc: T1 };
        assert.equal(await store().putRegistration(i, next, { kind: 'etag', etag: 'stale' }), 'precondition-failed');
        assert.equal(await store().putRegistration(i, next, { kind: 'etag', etag: r.etag }), 'ok');
        assert.deepEqual(await store().getRegistration(i, 'rec-1'), next);
        const moved = { ...next, enrollment: { kind: 'group' as const, enrollmentGroupId: 'G1' }, etag: 'InJlY29yZC0zIg==' };
        assert.equal(await store().putRegistration(i, moved, { kind: 'any' }), 'ok');
        assert.deepEqual(await store().getRegistration(i, 'rec-1'), moved);
        assert.equal((await store().listGroupRegistrations(i, 'g1', { limit: 5 })).items.length, 1, 'the group key follows the record');
        assert.equal(await store().putRegistration(i, sampleRecord('fresh'), { kind: 'any' }), 'ok');
        assert.equal(await store().putRegistration(i, sampleRecord('absent-etag'), { kind: 'etag', etag: 'x' }), 'precondition-failed');
        assert.equal(await store().countRegistrations(i), 2);
      });

      it('deletes a record with an optional etag', async () => {
        const i = newInstance();
        const r = sampleRecord('gone');
        await store().putRegistration(i, r, { kind: 'absent' });
        assert.equal(await store().deleteRegistration(i, 'gone', 'stale'), 'precondition-failed');
        assert.equal(await store().deleteRegistration(i, 'GONE', r.etag), 'ok');
        assert.equal(await store().getRegistration(i, 'gone'), undefined);
        assert.equal(await store().deleteRegistration(i, 'gone'), 'not-found');
      });

      it('lists the records of one group, paged', async () => {
        const i = newInstance();
        for (let n = 0; n < 7; n++) await store().putRegistration(i, sampleRecord(`m-${n}`, { group: 'Fleet' }), { kind: 'absent' });
        await store().putRegistration(i, sampleRecord('other', { group: 'other-group' }), { kind: 'absent' });
        await store().putRegistration(i, sampleRecord('solo'), { kind: 'absent' });
        const first = await store().listGroupRegistrations(i, 'fleet', { limit: 5 });
        assert.deepEqual(first.items.map((r) => r.registrationId), ['m-0', 'm-1', 'm-2', 'm-3', 'm-4']);
        assert.equal(first.next, 'm-4');
        const second = await store().listGroupRegistrations(i, 'FLEET', { limit: 5, after: first.next ?? '' });
        assert.deepEqual(second.items.map((r) => r.registrationId), ['m-5', 'm-6']);
        assert.equal(second.next, undefined);
        assert.deepEqual(await store().listGroupRegistrations(i, 'nobody', { limit: 5 }), { items: [], next: undefined });
      });
    });

    describe('registration operations', () => {
      it('allows one in-flight operation per registration id, in any case', async () => {
        const i = newInstance();
        const op = sampleOperation('op-1', 'Dev-1');
        assert.equal(await store().createOperation(i, op), 'ok');
        assert.deepEqual(await store().getOperation(i, 'op-1'), op);
        assert.equal(await store().createOperation(i, sampleOperation('op-1', 'dev-2')), 'exists', 'operation ids are unique');
        assert.equal(await store().createOperation(i, sampleOperation('op-2', 'dev-1')), 'exists', 'one assigning operation per id');
        assert.deepEqual(await store().findInFlightOperation(i, 'DEV-1'), op);
        assert.equal(await store().createOperation(newInstance(), sampleOperation('op-2', 'dev-1')), 'ok', 'instances are isolated');

        const done: RegistrationOperation = { ...op, status: 'assigned', version: 2, lastUpdatedDateTimeUtc: T1, result: { status: 'assigned' } };
        assert.equal(await store().updateOperation(i, done, 1), 'ok');
        assert.equal(await store().findInFlightOperation(i, 'dev-1'), undefined);
        assert.equal(await store().createOperation(i, sampleOperation('op-2', 'dev-1')), 'ok', 'a new attempt once the first ended');
        assert.equal(await store().createOperation(i, sampleOperation('op-3', 'dev-1', { status: 'failed' })), 'ok', 'finished operations do not block');
      });

      it('updates with compare-and-set on the version', async () => {
        const i = newInstance();
        const op = sampleOperation('cas-op', 'dev');
        await store().createOperation(i, op);
        const v2: RegistrationOperation = { ...op, version: 2, progress: { step: 'hub-written' }, lastUpdatedDateTimeUtc: T1 };
        assert.equal(await store().updateOperation(i, v2, 1), 'ok');
        assert.equal(await store().updateOperation(i, { ...v2, version: 2 }, 1), 'precondition-failed');
        assert.deepEqual(await store().getOperation(i, 'cas-op'), v2);
        assert.equal(await store().updateOperation(i, sampleOperation('missing', 'x', { version: 2 }), 1), 'not-found');
        await assert.rejects(store().updateOperation(i, { ...v2, version: 9 }, 2), /version/);
      });

      it('finishes an operation and writes its record atomically', async () => {
        const i = newInstance();
        const op = sampleOperation('atomic', 'Dev-Z');
        await store().createOperation(i, op);
        const existing = sampleRecord('dev-z', {}, { etag: 'ImV4aXN0aW5nIg==' });
        await store().putRegistration(i, existing, { kind: 'absent' });
        const done: RegistrationOperation = { ...op, status: 'assigned', version: 2, lastUpdatedDateTimeUtc: T1 };
        const record = sampleRecord('Dev-Z', {}, { etag: 'Im5ldyI=', lastUpdatedDateTimeUtc: T1 });

        assert.equal(await store().updateOperation(i, done, 1, { record, expect: { kind: 'etag', etag: 'stale' } }), 'precondition-failed');
        assert.deepEqual(await store().getOperation(i, 'atomic'), op, 'the operation is rolled back with the record');
        assert.deepEqual(await store().getRegistration(i, 'dev-z'), existing);

        assert.equal(await store().updateOperation(i, { ...done, version: 6 }, 5, { record, expect: { kind: 'any' } }), 'precondition-failed');
        assert.deepEqual(await store().getRegistration(i, 'dev-z'), existing, 'a stale operation writes no record');

        assert.equal(await store().updateOperation(i, done, 1, { record, expect: { kind: 'etag', etag: existing.etag } }), 'ok');
        assert.deepEqual(await store().getOperation(i, 'atomic'), done);
        assert.deepEqual(await store().getRegistration(i, 'dev-z'), record);
      });

      it('creates a finished operation and its record in one transaction, unless the registration is in flight', async () => {
        const i = newInstance();
        const done = sampleOperation('fin-1', 'Dev-F', { status: 'assigned', lastUpdatedDateTimeUtc: T1, result: { status: 'assigned' } });
        const record = sampleRecord('dev-f', {}, { etag: 'ImZpbi0xIg==' });
        assert.equal(await store().createOperation(i, done, { record, expect: { kind: 'absent' } }), 'ok');
        assert.deepEqual(await store().getOperation(i, 'fin-1'), done);
        assert.deepEqual(await store().getRegistration(i, 'DEV-F'), record);

        // The record expectation decides: nothing is written when it does not hold.
        const again = sampleOperation('fin-2', 'dev-f', { status: 'assigned', lastUpdatedDateTimeUtc: T2 });
        const next = { ...record, etag: 'ImZpbi0yIg==', lastUpdatedDateTimeUtc: T2 };
        assert.equal(await store().createOperation(i, again, { record: next, expect: { kind: 'absent' } }), 'precondition-failed');
        assert.equal(await store().createOperation(i, again, { record: next, expect: { kind: 'etag', etag: 'stale' } }), 'precondition-failed');
        assert.equal(await store().getOperation(i, 'fin-2'), undefined, 'no operation without its record');
        assert.deepEqual(await store().getRegistration(i, 'dev-f'), record);
        assert.equal(await store().createOperation(i, again, { record: next, expect: { kind: 'etag', etag: record.etag } }), 'ok');
        assert.deepEqual(await store().getRegistration(i, 'dev-f'), next);

        // A taken operation id, or an `assigning` operation of the same registration id: 'exists', nothing written.
        const third = { ...next, etag: 'ImZpbi0zIg==' };
        assert.equal(await store().createOperation(i, { ...again, registrationId: 'dev-f' }, { record: third, expect: { kind: 'any' } }), 'exists');
        assert.deepEqual(await store().getRegistration(i, 'dev-f'), next, 'the record is rolled back with the operation');
        assert.equal(await store().createOperation(i, sampleOperation('busy', 'DEV-F')), 'ok');
        assert.equal(await store().createOperation(i, sampleOperation('fin-3', 'dev-f', { status: 'failed' }), { record: third, expect: { kind: 'any' } }), 'exists');
        assert.deepEqual(await store().getRegistration(i, 'dev-f'), next);
        assert.equal(await store().getOperation(i, 'fin-3'), undefined);
        await assert.rejects(store().createOperation(i, sampleOperation('fin-4', 'other'), { record: sampleRecord('other'), expect: { kind: 'any' } }), /assigning/);
        await assert.rejects(
          store().createOperation(i, sampleOperation('fin-5', 'other', { status: 'failed' }), { record: sampleRecord('someone-else'), expect: { kind: 'any' } }),
          /record/,
        );
      });

      it('reads the record, the individual enrollment and the in-flight operation of a registration id at once', async () => {
        const i = newInstance();
        assert.deepEqual(await store().getRegistrationContext(i, 'ctx-1'), { record: undefined, individualEnrollment: undefined, inFlightOperation: undefined });
        const e = sampleEnrollment('Ctx-1');
        await store().createIndividualEnrollment(i, e);
        assert.deepEqual(await store().getRegistrationContext(i, 'CTX-1'), { record: undefined, individualEnrollment: e, inFlightOperation: undefined });
        const r = sampleRecord('ctx-1');
        await store().putRegistration(i, r, { kind: 'absent' });
        const finished = sampleOperation('ctx-done', 'ctx-1', { status: 'assigned' });
        await store().createOperation(i, finished);
        assert.deepEqual(await store().getRegistrationContext(i, 'ctx-1'), { record: r, individualEnrollment: e, inFlightOperation: undefined }, 'finished operations are not in flight');
        const op = sampleOperation('ctx-op', 'CTX-1', { version: 3 });
        await store().createOperation(i, op);
        assert.deepEqual(await store().getRegistrationContext(i, 'Ctx-1'), { record: r, individualEnrollment: e, inFlightOperation: op });
        assert.deepEqual(await store().getRegistrationContext(newInstance(), 'ctx-1'), { record: undefined, individualEnrollment: undefined, inFlightOperation: undefined }, 'instances are isolated');
        // Each part on its own.
        const j = newInstance();
        await store().createOperation(j, sampleOperation('only-op', 'solo'));
        const only = await store().getRegistrationContext(j, 'solo');
        assert.equal(only.record, undefined);
        assert.equal(only.individualEnrollment, undefined);
        assert.equal(only.inFlightOperation?.operationId, 'only-op');
      });

      it('lists stale in-flight operations and purges old finished ones', async () => {
        const i = newInstance();
        await store().createOperation(i, sampleOperation('old-1', 'a', { lastUpdatedDateTimeUtc: T0 }));
        await store().createOperation(i, sampleOperation('new-1', 'b', { lastUpdatedDateTimeUtc: T2 }));
        await store().createOperation(i, sampleOperation('old-done', 'c', { status: 'assigned', lastUpdatedDateTimeUtc: T0 }));
        await store().createOperation(i, sampleOperation('new-done', 'd', { status: 'failed', lastUpdatedDateTimeUtc: T2 }));
        assert.deepEqual((await store().listStaleOperations(i, T1, 10)).map((o) => o.operationId), ['old-1']);
        assert.equal(await store().purgeFinishedOperations(i, T1), 1);
        assert.equal(await store().getOperation(i, 'old-done'), undefined);
        assert.ok(await store().getOperation(i, 'new-done'));
        assert.ok(await store().getOperation(i, 'old-1'), 'in-flight operations are never purged');
      });
    });

    describe('hub moves', () => {
      const move = (registrationId: string, over: Partial<HubMove> = {}): HubMove => ({
        registrationId,
        operationId: `op-${registrationId}`,
        kind: 'migrate',
        deviceId: registrationId,
        fromHub: 'hub1.test',
        toHub: 'hub2.test',
        step: 'planned',
        version: 1,
        owner: 'node-a',
        leaseUntil: T1,
        createdDateTimeUtc: T0,
        lastUpdatedDateTimeUtc: T0,
        credentials: { type: 'sas', primaryKey: KEY_A, secondaryKey: KEY_B },
        capabilities: { iotEdge: false },
        record: sampleRecord(registrationId, {}, { assignedHub: 'hub2.test', status: 'assigned' }),
        prior: sampleRecord(registrationId),
        attempts: 0,
        ...over,
      });

      it('creates a move with its record in one transaction; one move per registration id (case-insensitive)', async () => {
        const i = newInstance();
        const prior = sampleRecord('Mv-1', {}, { etag: 'InByaW9yIg==' });
        await store().putRegistration(i, prior, { kind: 'absent' });
        const assigning = { ...prior, status: 'assigning' as const, etag: 'ImFzc2lnbmluZyI=' };
        assert.equal(await store().createHubMove(i, move('Mv-1'), { record: assigning, expect: { kind: 'etag', etag: 'stale' } }), 'precondition-failed');
        assert.equal(await store().getHubMove(i, 'mv-1'), undefined, 'rolled back with the record');
        assert.equal(await store().createHubMove(i, move('Mv-1'), { record: assigning, expect: { kind: 'etag', etag: prior.etag } }), 'ok');
        assert.deepEqual(await store().getHubMove(i, 'MV-1'), move('Mv-1'));
        assert.equal((await store().getRegistration(i, 'mv-1'))?.status, 'assigning');
        assert.equal(await store().createHubMove(i, move('mv-1', { operationId: 'other' }), { record: assigning, expect: { kind: 'any' } }), 'exists');
        assert.equal(await store().createHubMove(i, move('mv-1', { operationId: 'other' }), { record: { ...assigning, etag: 'Im5leHQi' }, expect: { kind: 'etag', etag: assigning.etag } }), 'exists');
        assert.equal((await store().getRegistration(i, 'mv-1'))?.etag, assigning.etag, 'a refused move leaves the record as it was');
        assert.equal(await store().countHubMoves(i), 1);
      });

      it('updates with compare-and-set on the version and lists by owner or ended lease', async () => {
        const i = newInstance();
        await store().createHubMove(i, move('a', { owner: 'node-a', leaseUntil: T2 }), { record: sampleRecord('a'), expect: { kind: 'any' } });
        await store().createHubMove(i, move('b', { owner: 'node-b', leaseUntil: T0 }), { record: sampleRecord('b'), expect: { kind: 'any' } });
        await store().createHubMove(i, move('c', { owner: 'node-b', leaseUntil: T2 }), { record: sampleRecord('c'), expect: { kind: 'any' } });
        const ids = async (f: { owner?: string; leaseBefore?: string }) => (await store().listHubMoves(i, { ...f, limit: 10 })).map((m) => m.registrationId).sort();
        assert.deepEqual(await ids({ owner: 'node-a', leaseBefore: T1 }), ['a', 'b']);
        assert.deepEqual(await ids({ leaseBefore: T1 }), ['b']);
        assert.deepEqual(await ids({ owner: 'node-b' }), ['b', 'c']);
        const a = (await store().getHubMove(i, 'a'))!;
        const next: HubMove = { ...a, version: 2, step: 'copied', twin: { tags: { t: 1 }, desired: {}, reported: { r: 1 }, desiredVersion: 1, reportedVersion: 2 } };
        assert.equal(await store().updateHubMove(i, next, 1), 'ok');
        assert.equal(await store().updateHubMove(i, { ...next, version: 2 }, 1), 'precondition-failed');
        assert.deepEqual(await store().getHubMove(i, 'a'), next);
        assert.equal(await store().updateHubMove(i, move('zz', { version: 2 }), 1), 'not-found');
        await assert.rejects(store().updateHubMove(i, { ...next, version: 7 }, 2), /version/);
      });

      it('finishes a move: deletes it, ends the operation and writes the record atomically', async () => {
        const i = newInstance();
        const op = sampleOperation('op-f', 'f');
        await store().createOperation(i, op);
        await store().createHubMove(i, move('f', { operationId: 'op-f' }), { record: sampleRecord('f', {}, { status: 'assigning' }), expect: { kind: 'any' } });
        const done: RegistrationOperation = { ...op, status: 'assigned', version: 2, lastUpdatedDateTimeUtc: T1 };
        const record = sampleRecord('f', {}, { status: 'assigned', assignedHub: 'hub2.test', etag: 'ImRvbmUi' });
        assert.equal(await store().finishHubMove(i, 'f', 1, { operation: { ...done, version: 6 }, expectedVersion: 5 }, { record, expect: { kind: 'any' } }), 'precondition-failed');
        assert.ok(await store().getHubMove(i, 'f'), 'a stale operation keeps the move');
        assert.equal((await store().getOperation(i, 'op-f'))?.status, 'assigning');
        assert.equal(await store().finishHubMove(i, 'f', 3, { operation: done, expectedVersion: 1 }, { record, expect: { kind: 'any' } }), 'precondition-failed');
        assert.equal(await store().finishHubMove(i, 'f', 1, { operation: done, expectedVersion: 1 }, { record, expect: { kind: 'any' } }), 'ok');
        assert.equal(await store().getHubMove(i, 'f'), undefined);
        assert.deepEqual(await store().getOperation(i, 'op-f'), done);
        assert.deepEqual(await store().getRegistration(i, 'f'), record);
        assert.equal(await store().finishHubMove(i, 'f', 1, undefined, { record, expect: { kind: 'any' } }), 'not-found');
      });
    });
  });
}

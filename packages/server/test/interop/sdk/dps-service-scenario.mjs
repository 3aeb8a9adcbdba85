// The DPS service API interop scenario, written the way an application developer uses azure-iot-provisioning-service.
// Run with NODE_EXTRA_CA_CERTS=<ca.pem>; argv[2] = the owner connection string, argv[3] = an enrollmentread one.
// Prints one JSON line per step: {"step": "...", "ok": true|false, ...}. A step that expects an SDK error reports
// ok=true with the error's class name and HTTP status; any unexpected failure reports ok=false.
import crypto from 'node:crypto';
import provisioningService from 'azure-iot-provisioning-service';

const { ProvisioningServiceClient } = provisioningService;

const ownerCs = process.argv[2];
const readCs = process.argv[3];

const report = (step, ok, data = {}) => process.stdout.write(`${JSON.stringify({ step, ok, ...data })}\n`);
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timeout: ${what}`)), ms).unref())]);
const key = (n) => crypto.randomBytes(n).toString('base64');
const errorInfo = (err) => ({
  errorName: err && err.name,
  errorClass: err && err.constructor && err.constructor.name,
  statusCode: err && err.response ? err.response.statusCode : undefined,
  responseBody: err && typeof err.responseBody === 'string' ? err.responseBody.slice(0, 500) : undefined,
});

/** Runs a call that must fail; resolves with the error's details. */
async function expectError(p) {
  try {
    await withTimeout(p, 20000, 'call');
  } catch (err) {
    return errorInfo(err);
  }
  throw new Error('the call succeeded but an error was expected');
}

/** Query pages in callback style (T13: promise-style next() without a token drops the continuation). */
function pagesByCallback(query) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const pages = [];
      const step = () =>
        query.next((err, result, response) => {
          if (err) return reject(err);
          pages.push({ items: result, continuation: response.headers['x-ms-continuation'], itemType: response.headers['x-ms-item-type'] });
          if (query.hasMoreResults) step();
          else resolve(pages);
        });
      step();
    }),
    30000,
    'query pages',
  );
}

/** Query pages in promise style, passing the token explicitly each time. */
async function pagesByToken(query) {
  const pages = [];
  let token;
  for (;;) {
    const r = await withTimeout(token === undefined ? query.next() : query.next(token), 20000, 'query page');
    pages.push(r.responseBody.map((e) => e.registrationId));
    token = r.httpResponse.headers['x-ms-continuation'];
    if (token === undefined) return pages;
  }
}

/** Bulk in callback style (T14: the promise never settles). */
function bulk(client, op) {
  return withTimeout(
    new Promise((resolve, reject) => client.runBulkEnrollmentOperation(op, (err, result) => (err ? reject(err) : resolve(result)))),
    20000,
    'bulk',
  );
}

async function step(name, fn) {
  try {
    report(name, true, (await fn()) || {});
  } catch (err) {
    report(name, false, { error: String((err && err.stack) || err), ...errorInfo(err) });
  }
}

async function main() {
  const client = ProvisioningServiceClient.fromConnectionString(ownerCs);
  const reader = ProvisioningServiceClient.fromConnectionString(readCs);
  const sym = (primaryKey, secondaryKey) => ({ type: 'symmetricKey', symmetricKey: { primaryKey, secondaryKey } });

  // Paging first, so the instance holds exactly these 25 enrollments.
  await step('query paging', async () => {
    for (let n = 0; n < 25; n++) {
      await client.createOrUpdateIndividualEnrollment({ registrationId: `page-${String(n).padStart(2, '0')}`, attestation: sym('', '') });
    }
    const byCallback = await pagesByCallback(client.createIndividualEnrollmentQuery({ query: '*' }, 10));
    const byToken = await pagesByToken(client.createIndividualEnrollmentQuery({ query: 'SELECT * FROM enrollments' }, 10));
    return {
      callbackPageSizes: byCallback.map((p) => p.items.length),
      callbackIds: byCallback.flatMap((p) => p.items.map((e) => e.registrationId)),
      lastContinuation: byCallback[byCallback.length - 1].continuation === undefined ? 'absent' : 'present',
      itemType: byCallback[0].itemType,
      tokenPageSizes: byToken.map((p) => p.length),
    };
  });

  let generated;
  await step('create enrollment with generated keys', async () => {
    const r = await client.createOrUpdateIndividualEnrollment({ registrationId: 'sdk-gen', attestation: sym('', '') });
    generated = r.responseBody;
    return {
      statusCode: r.httpResponse.statusCode,
      registrationId: generated.registrationId,
      primaryKeyBytes: Buffer.from(generated.attestation.symmetricKey.primaryKey, 'base64').length,
      secondaryKeyBytes: Buffer.from(generated.attestation.symmetricKey.secondaryKey, 'base64').length,
      etag: generated.etag,
      provisioningStatus: generated.provisioningStatus,
    };
  });

  const k1 = key(32);
  const k2 = key(32);
  let given;
  await step('create enrollment with given keys', async () => {
    const r = await client.createOrUpdateIndividualEnrollment({
      registrationId: 'Sdk-Given',
      deviceId: 'sdk-device-1',
      attestation: sym(k1, k2),
      provisioningStatus: 'enabled',
      reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false },
      initialTwin: { tags: { site: 'lab' }, properties: { desired: { interval: 30 } } },
      capabilities: { iotEdge: false },
    });
    given = r.responseBody;
    return {
      keysKept: given.attestation.symmetricKey.primaryKey === k1 && given.attestation.symmetricKey.secondaryKey === k2,
      deviceId: given.deviceId,
      reprovisionPolicy: given.reprovisionPolicy,
      initialTwin: given.initialTwin,
      etag: given.etag,
      created: given.createdDateTimeUtc,
    };
  });

  await step('get enrollment case-insensitively', async () => {
    const r = await client.getIndividualEnrollment('sdk-given');
    return { registrationId: r.responseBody.registrationId, keysKept: r.responseBody.attestation.symmetricKey.primaryKey === k1, etag: r.responseBody.etag };
  });

  await step('create again without etag', async () => expectError(client.createOrUpdateIndividualEnrollment({ registrationId: 'sdk-given', attestation: sym(k1, k2) })));

  let updated;
  await step('update with etag', async () => {
    const r = await client.createOrUpdateIndividualEnrollment({ ...given, provisioningStatus: 'disabled' });
    updated = r.responseBody;
    return { provisioningStatus: updated.provisioningStatus, etagChanged: updated.etag !== given.etag, keysKept: updated.attestation.symmetricKey.primaryKey === k1 };
  });

  await step('update with stale etag', async () => expectError(client.createOrUpdateIndividualEnrollment({ ...given, provisioningStatus: 'enabled' })));

  await step('attestation mechanism', async () => {
    const r = await client.getIndividualEnrollmentAttestationMechanism('sdk-given');
    return { type: r.responseBody.type, keysKept: r.responseBody.symmetricKey.primaryKey === k1 && r.responseBody.symmetricKey.secondaryKey === k2 };
  });

  await step('enrollment group create get delete', async () => {
    const created = (await client.createOrUpdateEnrollmentGroup({ enrollmentGroupId: 'sdk-group', attestation: sym('', ''), provisioningStatus: 'enabled' })).responseBody;
    const got = (await client.getEnrollmentGroup('SDK-GROUP')).responseBody;
    const att = (await client.getEnrollmentGroupAttestationMechanism('sdk-group')).responseBody;
    const groups = await pagesByCallback(client.createEnrollmentGroupQuery({ query: '*' }, 5));
    await client.deleteEnrollmentGroup(got);
    const afterDelete = await expectError(client.getEnrollmentGroup('sdk-group'));
    return {
      enrollmentGroupId: got.enrollmentGroupId,
      sameEtag: created.etag === got.etag,
      groupKeyBytes: Buffer.from(att.symmetricKey.primaryKey, 'base64').length,
      queried: groups.flatMap((p) => p.items.map((g) => g.enrollmentGroupId)),
      afterDelete,
    };
  });

  await step('bulk create with a per-item error', async () => {
    const r = await bulk(client, {
      mode: 'create',
      enrollments: [
        { registrationId: 'bulk-1', attestation: sym('', '') },
        { registrationId: 'bulk bad!', attestation: sym('', '') },
        { registrationId: 'bulk-2', attestation: sym('', '') },
      ],
    });
    const got = await client.getIndividualEnrollment('bulk-2');
    return { isSuccessful: r.isSuccessful, errors: r.errors, bulk2: got.responseBody.registrationId };
  });

  await step('bulk delete', async () => {
    const r = await bulk(client, { mode: 'delete', enrollments: [{ registrationId: 'bulk-1' }, { registrationId: 'bulk-2' }] });
    const gone = await expectError(client.getIndividualEnrollment('bulk-1'));
    return { isSuccessful: r.isSuccessful, errors: r.errors, gone };
  });

  await step('read-only policy', async () => {
    const write = await expectError(reader.createOrUpdateIndividualEnrollment({ registrationId: 'ro-write', attestation: sym('', '') }));
    const read = await reader.getIndividualEnrollment('sdk-gen');
    const notCreated = await expectError(client.getIndividualEnrollment('ro-write'));
    return { write, readId: read.responseBody.registrationId, notCreated: notCreated.statusCode };
  });

  await step('registration state of an unknown id', async () => expectError(client.getDeviceRegistrationState('never-registered')));

  await step('group registration query', async () => {
    const pages = await pagesByCallback(client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, 'sdk-fleet', 2));
    const one = (await client.getDeviceRegistrationState('fleet-dev-1')).responseBody;
    await client.deleteDeviceRegistrationState(one);
    const gone = await expectError(client.getDeviceRegistrationState('fleet-dev-1'));
    return {
      pageSizes: pages.map((p) => p.items.length),
      ids: pages.flatMap((p) => p.items.map((r) => r.registrationId)),
      statuses: pages.flatMap((p) => p.items.map((r) => r.status)),
      itemType: pages[0].itemType,
      assignedHub: one.assignedHub,
      gone: gone.statusCode,
    };
  });

  await step('delete enrollments with etags', async () => {
    const stale = await expectError(client.deleteIndividualEnrollment('sdk-given', given.etag));
    await client.deleteIndividualEnrollment(updated);
    await client.deleteIndividualEnrollment('sdk-gen', generated.etag);
    const gone = await expectError(client.getIndividualEnrollment('sdk-given'));
    const again = await expectError(client.deleteIndividualEnrollment('sdk-gen'));
    return { stale, gone, again };
  });
}

main().then(
  () => process.exit(0),
  (err) => {
    report('main', false, { error: String((err && err.stack) || err) });
    process.exit(1);
  },
);
